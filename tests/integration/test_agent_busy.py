"""An agent on any call through the server that no queue gave them is busy for routing.

Real phones: baresip agents (auto-answer) make and take direct calls and call the IVR as
customers; SIPp callers queue through ``flows/queue_menu.yaml`` (1 -> billing). What the
router thinks is read through the API: ``live.personal_calls`` of ``GET /api/v1/agents``,
``GET /api/v1/queues/{name}/stats`` and ``GET /api/v1/calls/{id}/routing``.
"""

from __future__ import annotations

import urllib.parse
from contextlib import ExitStack

import pytest

from integration.test_queue_agents import (
    SippAgent,
    agent_live,
    baresip_agent,
    baresip_dials_queue,
    caller_xml,
    cc_config,
    get_json,
    need_sipp,
    queue_stats,
    wait_agent_state,
    wait_idle,
    wait_until,
)
from peers import sipp

pytestmark = pytest.mark.integration


def _personal_calls(server, ext: str) -> int:
    return int(agent_live(server, ext).get("personal_calls", 0))


def test_agents_on_a_direct_call_either_way_are_not_offered_queue_calls(pbx_server,
                                                                      tmp_path) -> None:
    need_sipp()
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1003": {"billing": 5}}))
    with ExitStack() as stack:
        ana = baresip_agent(tmp_path / "1001", server, "1001")
        stack.callback(ana.stop)
        carmen = baresip_agent(tmp_path / "1003", server, "1003")
        stack.callback(carmen.stop)
        wait_agent_state(server, "1001", "available")
        wait_agent_state(server, "1003", "available")

        ana.dial(f"sip:1003@{server.sip_address}")  # Ana calls Carmen directly
        assert ana.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)["type"] == \
            "CALL_ESTABLISHED"
        assert wait_until(lambda: _personal_calls(server, "1001") == 1
                          and _personal_calls(server, "1003") == 1, 10), (
            agent_live(server, "1001"), agent_live(server, "1003"))

        caller = sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=60_000),
                            service="100", calls=1, trace_msg=True, workdir=tmp_path / "caller")
        stack.callback(caller.stop)
        # The caller waits in line: both billing agents are talking to each other.
        assert wait_until(lambda: queue_stats(server, "billing")["waiting"] == 1, 30), \
            queue_stats(server, "billing")
        stats = queue_stats(server, "billing")
        assert stats["agents_available"] == 0, stats
        for ext in ("1001", "1003"):
            live = agent_live(server, ext)
            assert live["state"] == "available" and live["reserved_call"] is None, live
        # Neither phone was rung for the queue: each saw only the direct call.
        assert len(ana.seen("CALL_ESTABLISHED")) == 1 and len(carmen.seen("CALL_ESTABLISHED")) == 1

        ana.hangup()  # the direct call ends: both are free, one of them takes the caller
        assert wait_until(lambda: {agent_live(server, e)["state"] for e in ("1001", "1003")}
                          & {"ringing", "on_call"}, 30), (
            agent_live(server, "1001"), agent_live(server, "1003"))
        assert _personal_calls(server, "1001") == 0 and _personal_calls(server, "1003") == 0
        result = caller.wait(90)
        assert result.returncode == 0 and result.successful == 1, result.describe()
    assert not any(wait_idle(server).values())


def test_an_agent_calling_the_ivr_is_never_offered_her_own_call(pbx_server, tmp_path) -> None:
    need_sipp()
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1003": {"billing": 5}}))
    with ExitStack() as stack:
        ana = baresip_agent(tmp_path / "1001", server, "1001")
        stack.callback(ana.stop)
        wait_agent_state(server, "1001", "available")

        baresip_dials_queue(ana, server, "1")  # Ana calls the IVR as a customer: billing
        call_id = ana.seen("CALL_ESTABLISHED")[0]["id"]
        assert wait_until(lambda: queue_stats(server, "billing")["waiting"] == 1, 30), \
            queue_stats(server, "billing")
        assert _personal_calls(server, "1001") == 1
        assert agent_live(server, "1001")["reserved_call"] is None

        # Another billing agent registers: the call goes to Carmen, never to Ana.
        carmen = SippAgent(tmp_path / "1003", server, "1003", hold_ms=2000)
        stack.callback(carmen.stop)
        wait_agent_state(server, "1003", "on_call", "ringing", timeout=30)
        status, routing = get_json(
            server, f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/routing")
        assert status == 200, routing
        decisions = routing["decisions"]
        assert {d["chosen"] for d in decisions} - {None} == {"1003"}, decisions
        for decision in decisions:
            eligible = {candidate["extension"] for candidate in decision["eligible"]}
            assert "1001" not in eligible, f"Ana listed eligible for her own call: {decision}"
        assert len(ana.seen("CALL_ESTABLISHED")) == 1, "Ana's phone was offered her own call"
        ana.wait_event("CALL_CLOSED", timeout=30)  # Carmen hangs up after 2 s
    assert not any(wait_idle(server).values())
