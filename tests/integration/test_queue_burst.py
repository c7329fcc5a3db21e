"""A burst of callers through the IVR into one queue, served by SIPp agents.

200 SIPp callers arrive at once at extension 100 (the short bench flow: a 0.6 s menu,
RFC 2833 "1" -> queue ``bench``); 20 SIPp agents (auto-login on REGISTER, wrap-up 0) answer,
play A-law and hang up after a second. What must hold:

- every caller's call completes (INVITE .. the agent's BYE relayed to it), and every
  agent-side call completes;
- no agent is ever offered a second call while one is open: from the agents' own SIPp
  traces (peak simultaneous INVITE dialogs per agent), and the server's routing decisions
  (``GET /api/v1/calls/{id}/routing``) name the agent that really got each caller;
- afterwards nothing is stuck: every agent is available again, and /metrics shows no
  active call, dialog, waiting caller or RTP session.

And an abandon: a caller who hangs up while waiting (nobody logged in) leaves the agents'
states as they were and counts as abandoned in the queue's statistics.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest

from integration import sipp_agents as sa
from peers import sipp
from peers.procs import require_binary

pytestmark = pytest.mark.integration

AGENTS = 20
CALLERS = 200
TALK_MS = 1000


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    require_binary("sipp", "sip-tester")  # fails when CI=true, skips elsewhere
    if not (sa.SCENARIOS / "pcap" / "g711a.pcap").exists():
        from peers.procs import peer_unavailable
        peer_unavailable("SIPp's pcaps (/usr/share/sip-tester/g711a.pcap) are missing")


def _wait_until(predicate, timeout: float, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes; returns the last
    value (a liveness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def _idle_metrics(server) -> dict[str, float]:
    return {
        "centralita_sip_dialogs_active": server.metric("centralita_sip_dialogs_active", 0.0),
        "centralita_calls_active": server.metric("centralita_calls_active", 0.0),
        "centralita_queue_calls_waiting": server.metric("centralita_queue_calls_waiting", 0.0),
        "centralita_rtp_sessions": server.metric("centralita_rtp_sessions", 0.0),
    }


def _queue_stats(server) -> dict:
    status, body = server.http_get(f"/api/v1/queues/{sa.QUEUE}/stats")
    assert status == 200, f"queue stats: {status} {body[:300]}"
    return json.loads(body)


def _exported(server, name: str) -> bool:
    """Whether /metrics carries the family at all (the queue metrics are being wired in)."""
    return f"# TYPE {name} " in server.metrics_text()


def _routing(server, call_id: str) -> list[dict]:
    status, body = server.http_get(f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/routing")
    assert status == 200, f"routing of {call_id}: {status} {body[:300]}"
    return json.loads(body)["decisions"]


def test_checker_catches_a_double_offer(tmp_path: Path) -> None:
    """The concurrency check itself: a second INVITE to an agent with a dialog open is caught."""
    log = tmp_path / "messages.log"
    blocks = []
    for call_id, first in (("a", "INVITE sip:2001@127.0.0.1:5 SIP/2.0"),
                           ("b", "INVITE sip:2001@127.0.0.1:5 SIP/2.0"),
                           ("a", "BYE sip:x@127.0.0.1:6 SIP/2.0"),
                           ("c", "INVITE sip:2001@127.0.0.1:5 SIP/2.0")):
        blocks.append(f"----------------------------------------------- 2026-01-01 00:00:00.0\n"
                      f"UDP message received [100] bytes :\n\n{first}\nCall-ID: {call_id}\n"
                      f"From: <sip:+34915551@x>;tag=1\nCSeq: 1 {first.split()[0]}\n\n")
    log.write_text("".join(blocks))
    load = sa.load_from_message_log(log)
    assert load.offered["2001"] == 3
    assert load.max_concurrent["2001"] == 2
    assert load.overlaps == ["2001: b offered while a was open",
                             "2001: c offered while b was open"]
    assert load.open_at_end == {"2001": ["b", "c"]}


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_burst_of_callers_never_double_offers_an_agent(pbx_server, tmp_path: Path) -> None:
    accounts = sa.agent_accounts(AGENTS)
    server = pbx_server(sa.contact_center_config(accounts, wrap_up_seconds=0,
                                                 ring_timeout_seconds=30, max_wait_seconds=600))
    agents = sa.SippAgents(server.sip_address, accounts, tmp_path / "agents", processes=2,
                           talk_ms=TALK_MS)
    with agents:
        states = sa.wait_for_agents(server, agents.users, "available", timeout=30)
        assert all(states.get(user) == "available" for user in agents.users), states

        callers = sipp.run(server.sip_address, scenario=sa.CALLER_WAIT_BYE_XML, service="100",
                           calls=CALLERS, rate=CALLERS, limit=CALLERS, trace_msg=True,
                           workdir=tmp_path / "callers", timeout=240)
        # The agents' last BYE/200 may still be in flight when the callers finish.
        _wait_until(lambda: agents.stats().get("SuccessfulCall(C)", 0)
                    + agents.stats().get("FailedCall(C)", 0) >= CALLERS, 30)
        states_after = sa.wait_for_agents(server, agents.users, "available", timeout=30)
        idle = _wait_until(lambda: (lambda m: m if not any(m.values()) else None)(
            _idle_metrics(server)), 30) or _idle_metrics(server)
        assert agents.alive(), "an agent SIPp exited early:\n" + agents.describe()
    agents.stop()
    agent_results = [group.result for group in agents.groups]

    # Every call completed on both sides.
    assert callers.returncode == 0 and callers.successful == CALLERS and callers.failed == 0, \
        callers.describe()
    agent_ok = sum(r.successful for r in agent_results if r)
    agent_failed = sum(r.failed for r in agent_results if r)
    assert agent_ok == CALLERS and agent_failed == 0, agents.describe()

    # No agent was ever offered two calls at once (agents' own traces).
    load = agents.load()
    assert sum(load.offered.values()) == CALLERS, dict(load.offered)
    assert not load.overlaps, load.overlaps[:20]
    assert load.worst == 1, load.max_concurrent
    assert not load.open_at_end, load.open_at_end
    assert set(load.offered) <= set(agents.users)

    # The server's routing decisions name the agent that really got each caller, once.
    caller_calls = sa.caller_numbers(callers.workdir / "messages.log")
    assert len(caller_calls) == CALLERS
    mismatches = []
    for call_id, number in caller_calls.items():
        chosen = [d["chosen"] for d in _routing(server, call_id) if d["chosen"]]
        if chosen != [load.callers.get(number)]:
            mismatches.append(f"{call_id} ({number}): router chose {chosen}, "
                              f"agent trace says {load.callers.get(number)}")
    assert not mismatches, mismatches[:20]
    stats = _queue_stats(server)
    assert stats["answered"] == CALLERS and stats["abandoned"] == 0, stats
    if _exported(server, "centralita_queue_calls_answered"):
        assert server.metric("centralita_queue_calls_answered_total", 0.0,
                             queue=sa.QUEUE) == CALLERS
        assert server.metric("centralita_queue_reservation_failures_total", 0.0) == 0

    # Nothing stuck afterwards.
    assert all(states_after.get(user) == "available" for user in agents.users), states_after
    assert not any(idle.values()), idle


def test_caller_hanging_up_while_waiting_is_an_abandon(pbx_server, tmp_path: Path) -> None:
    accounts = sa.agent_accounts(3)
    server = pbx_server(sa.contact_center_config(accounts))
    before = sa.agent_states(server)  # nobody registered: nobody logged in
    assert set(before) == {user for user, _ in accounts}
    assert "available" not in before.values(), before

    caller = sipp.run(server.sip_address, scenario=sa.CALLER_HANGUP_XML, service="100", calls=1,
                      rate=1, duration_ms=3000, trace_msg=True, workdir=tmp_path / "caller",
                      timeout=60)
    assert caller.returncode == 0 and caller.successful == 1, caller.describe()
    (call_id,) = sa.caller_numbers(caller.workdir / "messages.log")

    queue = _wait_until(lambda: (lambda s: s if s["abandoned"] >= 1 else None)(
        _queue_stats(server)), 10) or _queue_stats(server)
    assert queue["abandoned"] == 1, queue
    assert queue["answered"] == 0 and queue["waiting"] == 0, queue
    if _exported(server, "centralita_queue_calls_abandoned"):
        assert server.metric("centralita_queue_calls_abandoned_total", 0.0, queue=sa.QUEUE) == 1
    decisions = _routing(server, call_id)
    assert decisions and not any(d["chosen"] for d in decisions), decisions
    assert sa.agent_states(server) == before
    idle = _wait_until(lambda: (lambda m: m if not any(m.values()) else None)(
        _idle_metrics(server)), 10) or _idle_metrics(server)
    assert not any(idle.values()), idle
