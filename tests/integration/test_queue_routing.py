"""Routing keeps its promises, end to end: SIPp callers with chosen From numbers (customers
of the store) reach SIPp agents through ``flows/queue_lookup.yaml`` (customer lookup, then
digit 1: billing).

- the customer's preferred agent is offered the call first when free, the agent who answers
  is stored as the customer's ``last_agent``, and that survives a restart (and is then
  preferred again);
- a VIP held for a busy preferred agent goes to a free qualified agent at the queue's bound;
- strict tiers serve VIP, paid, free whatever the waits;
- a caller silent in line (on hold: no RTP) is probed in-dialog, never hung up, and answered;
- estimates and available counts count only agents speaking the caller's language, and the
  announcements played leave a trace (queue log, metric);
- an agent who rang out comes back by itself after ``rona_return_seconds``, and the caller's
  next routing decision says who rang out.

What the server says is read from its API (routing decisions, customers, queue statistics,
the CDR and queue log) and /metrics.
"""

from __future__ import annotations

import re
import urllib.parse
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.sipp_agents import iter_message_log
from integration.test_queue_agents import (
    SippAgent,
    call_record,
    caller_xml,
    cc_config,
    get_json,
    need_sipp,
    queue_stats,
    wait_agent_state,
    wait_until,
)
from integration.test_queue_scenarios import caller_call_id, finish_caller
from peers import sipp

pytestmark = pytest.mark.integration

FLOW = Path(__file__).resolve().parent / "flows" / "queue_lookup.yaml"

ACME = "+34910000001"  # vip, preferred agent 1001
GLOBEX = "+34910000002"  # paid
INITECH = "+34910000003"  # vip, no preferred agent
STRANGER = "+34915550001"  # not a customer: free


@pytest.fixture(autouse=True)
def _sipp_required() -> None:
    need_sipp()


def routing_config(*, agents: dict[str, dict[str, int]], queue: dict[str, Any] | None = None,
                   languages: dict[str, list[str]] | None = None, store: Path | None = None,
                   media: dict[str, Any] | None = None, routing: dict[str, Any] | None = None,
                   ring_timeout: float = 15) -> str:
    """cc_config plus customers, billing-queue options, per-agent languages and a store."""
    config = yaml.safe_load(cc_config(agents=agents, wrap_up=0, ring_timeout=ring_timeout))
    config["extensions"]["100"]["flow"] = str(FLOW)
    config["customers"] = [
        {"number": ACME, "name": "Acme SL", "tier": "vip", "preferred_agent": "1001"},
        {"number": GLOBEX, "name": "Globex", "tier": "paid"},
        {"number": INITECH, "name": "Initech", "tier": "vip"},
    ]
    for agent in config["agents"]:
        agent["languages"] = (languages or {}).get(agent["extension"], ["en", "es"])
    billing = next(q for q in config["queues"] if q["name"] == "billing")
    billing.update(queue or {})
    if store is not None:
        config["store"] = {"url": f"sqlite+aiosqlite:///{store}"}
    config["media"].update(media or {})
    config["routing"].update(routing or {})
    return yaml.safe_dump(config, sort_keys=False)


def call(server, workdir: Path, number: str, *, hold_ms: int = 60_000, silent: bool = False
         ) -> sipp.SippProcess:
    """A SIPp caller from ``number`` choosing billing; ``silent``: no audio after the digit,
    and in-dialog OPTIONS answered (-aa) like a phone on hold."""
    return sipp.start(server.sip_address,
                      scenario=caller_xml(digit="1", number=number, hold_ms=hold_ms,
                                          play_audio=not silent),
                      service="100", calls=1, trace_msg=True, workdir=workdir,
                      extra=["-aa"] if silent else [])


def decisions(server, call_id: str) -> list[dict]:
    status, body = get_json(server, f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/routing")
    assert status == 200, f"routing of {call_id}: {status} {body}"
    return body["decisions"]  # type: ignore[index]


def customer(server, number: str) -> dict:
    status, body = get_json(server, f"/api/v1/customers/{urllib.parse.quote(number, safe='')}")
    assert status == 200, f"customer {number}: {status} {body}"
    return body  # type: ignore[return-value]


def offered_callers(agent: SippAgent) -> list[str]:
    """The From users of the INVITEs the agent received, in order."""
    callers = []
    for direction, first_line, headers in iter_message_log(agent.uas.workdir / "messages.log"):
        if direction == "R" and first_line.startswith("INVITE "):
            found = re.search(r"sips?:([^@>;]+)@", headers.get("from", ""))
            callers.append(found.group(1) if found else "?")
    return callers


def received_requests(result_or_log: str, method: str) -> int:
    return len(re.findall(rf"message received[^\n]*\n\s*\n?\s*{method} sip:", result_or_log))


def caller_log(workdir: Path) -> str:
    path = workdir / "messages.log"
    return path.read_text(errors="replace") if path.exists() else ""


# ------------------------------------------------------------------ preference and last agent

def test_preferred_agent_first_and_last_agent_survives_a_restart(pbx_server, tmp_path) -> None:
    store = tmp_path / "centralita.db"
    config = routing_config(agents={"1001": {"billing": 8}, "1005": {"billing": 8}},
                            queue={"preferred_agent_wait_seconds": 5}, store=store)
    server = pbx_server(config)
    with ExitStack() as stack:
        # 1005 registers first: the longest idle, whom longest_idle alone would choose.
        idle_longest = SippAgent(tmp_path / "a1005", server, "1005", hold_ms=1000)
        stack.callback(idle_longest.stop)
        wait_agent_state(server, "1005", "available")
        preferred = SippAgent(tmp_path / "a1001", server, "1001", hold_ms=1000)
        stack.callback(preferred.stop)
        wait_agent_state(server, "1001", "available")

        acme = call(server, tmp_path / "acme", ACME)
        stack.callback(acme.stop)
        finish_caller(acme)
        acme_call = caller_call_id(tmp_path / "acme")
        first = decisions(server, acme_call)[0]
        assert (first["chosen"], first["policy"]) == ("1001", "preferred_agent"), first
        assert first["preference"]["source"] == "customer", first
        assert first["preference"]["outcome"] == "offered", first
        assert idle_longest.received("INVITE") == 0

        wait_agent_state(server, "1001", "available")
        globex = call(server, tmp_path / "globex", GLOBEX)
        stack.callback(globex.stop)
        finish_caller(globex)
        globex_call = caller_call_id(tmp_path / "globex")
        assert [d["chosen"] for d in decisions(server, globex_call)] == ["1005"]
        assert wait_until(lambda: customer(server, GLOBEX)["last_agent"] == "1005", 15)
        assert wait_until(lambda: customer(server, ACME)["last_agent"] == "1001", 15)
    server.stop()

    server = pbx_server(config)  # same store file: a restart
    assert customer(server, GLOBEX)["last_agent"] == "1005"
    with ExitStack() as stack:
        # Now 1001 is the longest idle, yet Globex's last agent 1005 is offered the call.
        other = SippAgent(tmp_path / "b1001", server, "1001", hold_ms=1000)
        stack.callback(other.stop)
        wait_agent_state(server, "1001", "available")
        last = SippAgent(tmp_path / "b1005", server, "1005", hold_ms=1000)
        stack.callback(last.stop)
        wait_agent_state(server, "1005", "available")
        globex = call(server, tmp_path / "globex-again", GLOBEX)
        stack.callback(globex.stop)
        finish_caller(globex)
        again = decisions(server, caller_call_id(tmp_path / "globex-again"))[0]
        assert again["chosen"] == "1005", again
        assert (again["preference"]["source"], again["preference"]["outcome"]) == \
            ("last_agent", "offered"), again
        assert other.received("INVITE") == 0


def test_vip_held_for_a_busy_preferred_agent_goes_to_a_free_one_at_the_bound(
        pbx_server, tmp_path) -> None:
    server = pbx_server(routing_config(
        agents={"1001": {"billing": 8}, "1003": {"billing": 8}},
        queue={"preferred_agent_wait_seconds": 60, "preferred_agent_max_hold_seconds": 2}))
    with ExitStack() as stack:
        preferred = SippAgent(tmp_path / "a1001", server, "1001", hold_ms=30_000)
        stack.callback(preferred.stop)
        wait_agent_state(server, "1001", "available")
        keeps_busy = call(server, tmp_path / "stranger", STRANGER)
        stack.callback(keeps_busy.stop)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        free_agent = SippAgent(tmp_path / "a1003", server, "1003", hold_ms=1000)
        stack.callback(free_agent.stop)
        wait_agent_state(server, "1003", "available")

        vip = call(server, tmp_path / "acme", ACME)
        stack.callback(vip.stop)
        finish_caller(vip)  # 1003 answered and hung up, while 1001 is still on its call
        assert preferred.received("INVITE") == 1
        vip_call = caller_call_id(tmp_path / "acme")
        held, routed = decisions(server, vip_call)[:2]
        hold = held["preference"]
        assert (held["chosen"], hold["outcome"], hold["agent"]) == (None, "held", "1001"), held
        assert hold["hold_bound"] == "preferred_agent_max_hold_seconds", held
        assert hold["hold_until"] - held["at"] <= 2, held
        assert routed["chosen"] == "1003", routed
        assert routed["preference"]["outcome"] == "not_free", routed
        assert routed["at"] >= hold["hold_until"], routed


# ------------------------------------------------------------------------------- strict tiers

def test_strict_tiers_serve_vip_then_paid_then_free_whatever_the_waits(
        pbx_server, tmp_path) -> None:
    # sla_seconds 1: under 'aging' the free caller, waiting longest, would outrank the others.
    server = pbx_server(routing_config(agents={"1001": {"billing": 8}},
                                       queue={"priority_order": "strict", "sla_seconds": 1}))
    with ExitStack() as stack:
        for waiting, (name, number) in enumerate(
                (("free", STRANGER), ("paid", GLOBEX), ("vip", INITECH)), start=1):
            caller = call(server, tmp_path / name, number)
            stack.callback(caller.stop)
            assert wait_until(lambda n=waiting: queue_stats(server, "billing")["waiting"] == n, 30), \
                queue_stats(server, "billing")
        agent = SippAgent(tmp_path / "a1001", server, "1001", hold_ms=800, calls=3)
        stack.callback(agent.stop)
        assert wait_until(lambda: len(offered_callers(agent)) == 3, 60), agent.messages[-3000:]
        assert offered_callers(agent) == [INITECH, GLOBEX, STRANGER]
        decision = decisions(server, caller_call_id(tmp_path / "free"))[-1]
        assert decision["order"]["priority_order"] == "strict", decision
        assert decision["order"]["score"] == 1, decision


# -------------------------------------------------------------------- silent waiting callers

def test_silent_caller_waits_past_the_rtp_timeout_many_times_and_is_answered(
        pbx_server, tmp_path) -> None:
    """rtp_timeout 1 s: the caller (on hold, no RTP) is probed with in-dialog OPTIONS every
    second while it waits, is never hung up, and is answered once an agent registers."""
    server = pbx_server(routing_config(agents={"1001": {"billing": 8}}, media={"rtp_timeout": 1}))
    with ExitStack() as stack:
        workdir = tmp_path / "silent"
        caller = call(server, workdir, STRANGER, hold_ms=120_000, silent=True)
        stack.callback(caller.stop)
        assert wait_until(lambda: received_requests(caller_log(workdir), "OPTIONS") >= 6, 60), \
            caller_log(workdir)[-3000:]
        assert queue_stats(server, "billing")["waiting"] == 1
        agent = SippAgent(tmp_path / "a1001", server, "1001", hold_ms=3000, auto_answer=True)
        stack.callback(agent.stop)
        result = finish_caller(caller, timeout=90)  # the agent hangs up: the caller gets a BYE
        assert received_requests(result.messages_log, "BYE") == 1
        record = call_record(server, caller_call_id(workdir))
        assert (record["disposition"], record["agent"]) == ("answered", "1001"), record
        events = [line["event"] for line in record["queue_log"]]
        assert "ABANDON" not in events and "DROP" not in events, events
        stats = queue_stats(server, "billing")
        assert (stats["abandoned"], stats["dropped"]) == (0, 0), stats
    assert re.search(r"no RTP from 127\.0\.0\.1:\d+ \(SIP ", server.log_text()), server.log_tail()


# ------------------------------------------------------------- estimates and announcements

def test_estimates_follow_language_and_announcements_are_recorded(pbx_server, tmp_path) -> None:
    """Two billing agents who speak only Spanish are free; an English caller waits. The
    queue counts nobody available for them, and each 'you are next' is in the call's record."""
    server = pbx_server(routing_config(
        agents={"1001": {"billing": 8}, "1003": {"billing": 8}},
        languages={"1001": ["es"], "1003": ["es"]},
        queue={"announce_interval_seconds": 1}))
    with ExitStack() as stack:
        for extension in ("1001", "1003"):
            agent = SippAgent(tmp_path / f"a{extension}", server, extension, hold_ms=1000)
            stack.callback(agent.stop)
            wait_agent_state(server, extension, "available")
        workdir = tmp_path / "english"
        caller = call(server, workdir, STRANGER, hold_ms=6000)
        stack.callback(caller.stop)
        assert wait_until(lambda: queue_stats(server, "billing")["waiting"] == 1, 30)
        stats = queue_stats(server, "billing")
        assert (stats["agents_available"], stats["agents_staffed"], stats["ewt_seconds"]) == \
            (0, 0, None), stats
        assert wait_until(lambda: (server.metric("centralita_queue_announcements_total",
                                                 queue="billing", kind="you_are_next") or 0) >= 2,
                          30), server.metrics_text()
        finish_caller(caller)  # hangs up after 6 s: nobody could take the call
        record = call_record(server, caller_call_id(workdir))
        assert record["disposition"] == "abandoned", record
        announced = [line for line in record["queue_log"] if line["event"] == "ANNOUNCE"]
        assert len(announced) >= 2, record["queue_log"]
        assert all(line["data"]["kind"] == "you_are_next" and line["data"]["position"] == 1
                   and line["data"]["ewt_seconds"] is None for line in announced), announced
        # A 6 s abandon is within the 20 s SLA: under the default definition (short abandons
        # excluded) it is no miss, so no call counts yet.
        stats = queue_stats(server, "billing")
        assert stats["service_level_definition"] == "short_abandons_excluded", stats
        assert (stats["abandoned"], stats["abandoned_within_sla"], stats["service_level"]) == \
            (1, 1, None), stats


# ---------------------------------------------------------------------------- ring-no-answer

def test_rona_agent_returns_by_itself_and_the_next_decision_says_who_rang_out(
        pbx_server, tmp_path) -> None:
    server = pbx_server(routing_config(agents={"1001": {"billing": 8}, "1003": {"billing": 8}},
                                       ring_timeout=2, routing={"rona_return_seconds": 10}))
    with ExitStack() as stack:
        ringer = SippAgent(tmp_path / "a1001", server, "1001", mode="ring")
        stack.callback(ringer.stop)
        wait_agent_state(server, "1001", "available")
        answerer = SippAgent(tmp_path / "a1003", server, "1003", hold_ms=1000)
        stack.callback(answerer.stop)
        wait_agent_state(server, "1003", "available")
        caller = call(server, tmp_path / "caller", STRANGER)
        stack.callback(caller.stop)
        finish_caller(caller)
        routed = decisions(server, caller_call_id(tmp_path / "caller"))
        assert [d["chosen"] for d in routed] == ["1001", "1003"], routed
        assert routed[1]["earlier_offers"] == [{"agent": "1001", "outcome": "rang_out"}], routed
        rona = wait_agent_state(server, "1001", "break")
        assert rona.get("reason") == "rona", rona
        wait_agent_state(server, "1001", "available", timeout=60)  # back from 'rona' by itself
