"""Contact-center scenarios end to end with real peers: skills routing, ring-no-answer, abandon,
an agent's blind transfer to another queue, and hang-ups from either side.

Callers are SIPp (RFC 2833 digit from SIPp's pcap, then A-law) through
``flows/queue_menu.yaml`` (1 billing, 2 support); agents are SIPp, baresip and pyVoIP phones
that registered with digest and auto-answer (see test_queue_agents.py for the helpers and for
the audio-both-ways proofs). What the server says is read from its API: live agent state,
queue statistics, routing decisions, the CDR and queue log (``GET /api/v1/calls/{id}``,
available once the call has ended) and ``/metrics``.
"""

from __future__ import annotations

import re
import urllib.parse
from contextlib import ExitStack
from pathlib import Path

import pytest

from integration.test_queue_agents import (
    SippAgent,
    agent_state,
    baresip_agent,
    call_record,
    caller_xml,
    cc_config,
    get_json,
    need_sipp,
    pjsua_agent,
    pyvoip_agent,
    queue_stats,
    wait_agent_state,
    wait_idle,
    wait_until,
)
from peers import sipp

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _sipp_required() -> None:
    need_sipp()  # every scenario has SIPp callers: fails with CI=true, skips elsewhere


def caller_call_id(workdir: Path) -> str:
    """The Call-ID of the INVITE a SIPp caller sent (from its -trace_msg file)."""
    path = workdir / "messages.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    found = re.search(r"^\s*INVITE sip:.*?^\s*Call-ID:\s*(\S+)", text, re.M | re.S)
    assert found, f"no INVITE in the caller's trace {path}"
    return found.group(1)


def start_caller(server, workdir: Path, *, digit: str, hold_ms: int = 600_000,
                 number: str = "+34915550001") -> sipp.SippProcess:
    return sipp.start(server.sip_address, scenario=caller_xml(digit=digit, hold_ms=hold_ms,
                                                              number=number),
                      service="100", calls=1, trace_msg=True, workdir=workdir)


def finish_caller(caller: sipp.SippProcess, timeout: float = 60) -> sipp.SippResult:
    result = caller.wait(timeout)
    assert result.returncode == 0 and result.successful == 1, (
        result.describe() + "\n--- caller messages (tail) ---\n" + result.messages_log[-4000:])
    return result


def caller_got_bye(result: sipp.SippResult) -> bool:
    """Whether the caller received a BYE (the agent's side hung up) rather than sending one."""
    text = result.messages_log
    return bool(re.search(r"message received[^\n]*\n\s*\n?\s*BYE sip:", text))


def routing_chosen(server, call_id: str) -> list[str]:
    status, body = get_json(server, f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/routing")
    assert status == 200, f"routing of {call_id}: {status} {body}"
    return [d["chosen"] for d in body["decisions"] if d.get("chosen")]  # type: ignore[index]


def log_events(record: dict) -> list[tuple[str, str | None, str | None]]:
    return [(line["event"], line.get("queue"), line.get("agent")) for line in record["queue_log"]]


# ------------------------------------------------------------------------------------- skills

def test_billing_caller_reaches_only_the_billing_agent(pbx_server, tmp_path) -> None:
    """Two agents registered: 1002 (support only, SIPp) logged in first, so the longest idle,
    and 1001 (billing, baresip). The billing caller rings 1001 only; a support caller then
    rings 1002 only."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1002": {"support": 8}},
                                  wrap_up=1), sip_trace=True)
    with ExitStack() as stack:
        support = SippAgent(tmp_path / "support-agent", server, "1002", hold_ms=2000)
        stack.callback(support.stop)
        wait_agent_state(server, "1002", "available")
        billing = baresip_agent(tmp_path / "billing-agent", server, "1001")
        stack.callback(billing.stop)
        wait_agent_state(server, "1001", "available")

        caller = start_caller(server, tmp_path / "billing-caller", digit="1", hold_ms=6000)
        stack.callback(caller.stop)
        established = billing.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
        assert established["type"] == "CALL_ESTABLISHED", established
        assert agent_state(server, "1002") == "available"
        finish_caller(caller)
        billing.wait_event("CALL_CLOSED", timeout=15)
        assert support.received("INVITE") == 0, (
            "the support-only agent was offered a billing call:\n" + support.messages[-3000:])
        billing_call = caller_call_id(tmp_path / "billing-caller")
        assert routing_chosen(server, billing_call) == ["1001"]
        record = call_record(server, billing_call)
        assert (record["queue"], record["agent"], record["disposition"]) == \
            ("billing", "1001", "answered"), record

        # And the other way round: a support caller reaches 1002, never the billing agent.
        wait_agent_state(server, "1001", "available", timeout=20)
        caller = start_caller(server, tmp_path / "support-caller", digit="2", hold_ms=60_000,
                              number="+34915550002")
        stack.callback(caller.stop)
        result = finish_caller(caller)  # the SIPp agent hangs up after 2 s
        assert caller_got_bye(result), result.messages_log[-3000:]
        assert support.received("INVITE") == 1, support.messages[-3000:]
        assert "X-Centralita-Queue: support" in support.messages
        assert len(billing.seen("CALL_INCOMING")) <= 1, billing.history
        support_call = caller_call_id(tmp_path / "support-caller")
        assert routing_chosen(server, support_call) == ["1002"]
        record = call_record(server, support_call)
        assert (record["queue"], record["agent"], record["disposition"]) == \
            ("support", "1002", "answered"), record
        idle = wait_idle(server)
        assert not any(idle.values()), idle


# ------------------------------------------------------------------------ ring-no-answer

def test_ring_no_answer_puts_agent_on_rona_break_and_rings_the_next(pbx_server, tmp_path) -> None:
    """1001 (SIPp) only rings. After the queue's ring timeout the server CANCELs, 1001 goes on
    break 'rona' and the caller reaches 1003 (pyVoIP), who registered while 1001 rang (so the
    router cannot have picked it first)."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1003": {"billing": 7}},
                                  ring_timeout=3, wrap_up=1), sip_trace=True)
    with ExitStack() as stack:
        silent = SippAgent(tmp_path / "rona-agent", server, "1001", mode="ring")
        stack.callback(silent.stop)
        wait_agent_state(server, "1001", "available")
        caller = start_caller(server, tmp_path / "caller", digit="1", hold_ms=8000)
        stack.callback(caller.stop)
        assert wait_until(lambda: silent.received("INVITE") >= 1, 30), (
            "the first agent was never rung:\n" + silent.messages[-2000:])
        answering = pyvoip_agent(tmp_path / "next-agent", server, "1003")
        stack.callback(answering.stop)

        answering.wait_event("answered", timeout=30)
        assert silent.received("CANCEL") == 1, silent.messages[-3000:]
        assert silent.sent("SIP/2.0 487") == 1, silent.messages[-3000:]  # never answered
        live = wait_agent_state(server, "1001", "break")
        assert live.get("reason") == "rona", live
        assert wait_agent_state(server, "1003", "on_call")

        result = finish_caller(caller)
        assert not caller_got_bye(result)  # the caller hung up after its talk
        answering.wait_event("ended", timeout=15)
        call_id = caller_call_id(tmp_path / "caller")
        assert routing_chosen(server, call_id) == ["1001", "1003"]
        record = call_record(server, call_id)
        assert (record["agent"], record["disposition"]) == ("1003", "answered"), record
        events = log_events(record)
        assert ("RINGNOANSWER", "billing", "1001") in events, events
        assert ("CONNECT", "billing", "1003") in events, events
        # 1001 is still on break (nobody ended it), 1003 back to available after wrap-up.
        assert agent_state(server, "1001") == "break"
        wait_agent_state(server, "1003", "available", timeout=20)
        idle = wait_idle(server)
        assert not any(idle.values()), idle


# ------------------------------------------------------------------------------- abandon

def test_caller_abandons_while_waiting(pbx_server, tmp_path) -> None:
    """Nobody with the billing skill is logged in (only a support agent is): the billing
    caller waits, hears hold, hangs up. Queue stats count one abandon, the CDR says
    abandoned, the support agent was never offered the call."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1002": {"support": 8}}),
                        sip_trace=True)
    with ExitStack() as stack:
        support = SippAgent(tmp_path / "support-agent", server, "1002")
        stack.callback(support.stop)
        wait_agent_state(server, "1002", "available")
        caller = start_caller(server, tmp_path / "caller", digit="1", hold_ms=4000)
        stack.callback(caller.stop)
        waiting = wait_until(lambda: (lambda s: s if s["waiting"] == 1 else None)(
            queue_stats(server, "billing")), 20)
        assert waiting, f"the caller never waited in billing: {queue_stats(server, 'billing')}"
        result = finish_caller(caller)
        assert not caller_got_bye(result), "the server hung up on the waiting caller"
        stats = wait_until(lambda: (lambda s: s if s["abandoned"] >= 1 else None)(
            queue_stats(server, "billing")), 15) or queue_stats(server, "billing")
        assert stats["abandoned"] == 1 and stats["answered"] == 0 and stats["waiting"] == 0, stats
        call_id = caller_call_id(tmp_path / "caller")
        record = call_record(server, call_id)
        assert record["disposition"] == "abandoned", record
        assert record["queue"] == "billing" and record["agent"] is None, record
        events = [event for event, _, _ in log_events(record)]
        assert "ENTERQUEUE" in events and "ABANDON" in events, events
        assert support.received("INVITE") == 0
        assert agent_state(server, "1002") == "available"
        idle = wait_idle(server)
        assert not any(idle.values()), idle


# ------------------------------------------------------------------------------ transfer

@pytest.mark.parametrize("transferor", ["sipp", "baresip"])
def test_agent_blind_transfer_to_another_queue(pbx_server, tmp_path, transferor: str) -> None:
    """The billing agent 1001 answers and REFERs the caller to sip:support@server; the caller
    reaches the support agent 1002 (baresip, auto-answer); 1001 is released into wrap-up."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}, "1002": {"support": 8}},
                                  wrap_up=2), sip_trace=True)
    refer_to = f"sip:support@{server.sip_address}"
    with ExitStack() as stack:
        target = baresip_agent(tmp_path / "support-agent", server, "1002")
        stack.callback(target.stop)
        wait_agent_state(server, "1002", "available")
        if transferor == "sipp":
            first = SippAgent(tmp_path / "billing-agent", server, "1001", mode="refer",
                              refer_to=refer_to, refer_after_ms=1500)
        else:
            first = baresip_agent(tmp_path / "billing-agent", server, "1001")
        stack.callback(first.stop)
        wait_agent_state(server, "1001", "available")

        caller = start_caller(server, tmp_path / "caller", digit="1", hold_ms=15_000)
        stack.callback(caller.stop)
        if transferor == "baresip":
            event = first.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
            assert event["type"] == "CALL_ESTABLISHED", event
            answer = first.command("transfer", refer_to)
            assert answer.get("ok", True), f"baresip refused the transfer: {answer}"
        answered = target.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
        assert answered["type"] == "CALL_ESTABLISHED", answered
        # The transferring agent's leg is gone and it wraps up, then is available.
        if transferor == "sipp":
            assert wait_until(lambda: first.received("SIP/2.0 202") == 1, 10), first.messages
            assert wait_until(lambda: first.received("SIP/2.0 200") >= 1
                              and first.sent("BYE") == 1, 10), first.messages[-3000:]
        else:
            first.wait_event("CALL_CLOSED", timeout=15)
        wait_agent_state(server, "1001", "wrap_up", "available", timeout=15)
        wait_agent_state(server, "1001", "available", timeout=20)
        assert agent_state(server, "1002") == "on_call"
        # The caller stays up through all of it, with the support agent.
        frames = wait_until(lambda: target.received_audio_frames() >= 8000, 10)
        assert frames, f"the support agent decoded no caller audio ({target.received_audio_frames()})"

        result = finish_caller(caller)
        assert not caller_got_bye(result), "the caller was hung up on during the transfer"
        target.wait_event("CALL_CLOSED", timeout=15)
        call_id = caller_call_id(tmp_path / "caller")
        assert routing_chosen(server, call_id) == ["1001", "1002"]
        record = call_record(server, call_id)
        assert (record["queue"], record["agent"]) == ("support", "1002"), record
        events = log_events(record)
        assert ("CONNECT", "billing", "1001") in events, events
        assert any(e == "TRANSFER" for e, _, _ in events), events
        assert ("CONNECT", "support", "1002") in events, events
        wait_agent_state(server, "1002", "available", timeout=20)
        idle = wait_idle(server)
        assert not any(idle.values()), idle


# ----------------------------------------------------------------------------- hang-ups

@pytest.mark.parametrize("hangup_by", ["caller", "agent"])
@pytest.mark.parametrize("stack_name", ["sipp", "baresip", "pjsua"])
def test_hangup_ends_both_legs_then_wrap_up(pbx_server, tmp_path, hangup_by: str,
                                            stack_name: str) -> None:
    """Either side's BYE ends both legs; the agent wraps up, then is available; /metrics shows
    no dialog, call or RTP session left; the CDR has the agent and the talk time."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}}, wrap_up=3), sip_trace=True)
    with ExitStack() as stack:
        if stack_name == "sipp":
            agent = SippAgent(tmp_path / "agent", server, "1001",
                              hold_ms=2500 if hangup_by == "agent" else 600_000)
        elif stack_name == "pjsua":
            agent = pjsua_agent(tmp_path / "agent", server, "1001",
                                hangup_after=2.5 if hangup_by == "agent" else None)
        else:
            agent = baresip_agent(tmp_path / "agent", server, "1001")
        stack.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        caller = start_caller(server, tmp_path / "caller", digit="1",
                              hold_ms=6000 if hangup_by == "caller" else 60_000)
        stack.callback(caller.stop)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        assert server.metric("centralita_sip_dialogs_active", 0.0) >= 2, "caller + agent dialogs"
        if stack_name == "baresip":
            agent.wait_event("CALL_ESTABLISHED", timeout=10)
            if hangup_by == "agent":
                wait_until(lambda: agent.received_audio_frames() >= 8000, 10)
                agent.hangup()

        result = finish_caller(caller)
        assert caller_got_bye(result) == (hangup_by == "agent"), result.messages_log[-3000:]
        if stack_name == "sipp":
            if hangup_by == "caller":
                assert wait_until(lambda: agent.received("BYE") == 1, 10), agent.messages[-3000:]
            else:
                assert agent.sent("BYE") == 1 and agent.received("BYE") == 0, agent.messages[-3000:]
        elif stack_name == "pjsua":
            agent.wait_event("ended", timeout=15)
            if hangup_by == "agent":
                assert agent.last("hung_up"), agent.history
        else:
            agent.wait_event("CALL_CLOSED", timeout=15)
        wait_agent_state(server, "1001", "wrap_up", timeout=15)
        wait_agent_state(server, "1001", "available", timeout=20)
        idle = wait_idle(server)
        assert not any(idle.values()), f"a leg stayed up: {idle}"
        record = call_record(server, caller_call_id(tmp_path / "caller"))
        assert (record["agent"], record["disposition"]) == ("1001", "answered"), record
        assert record["talk_seconds"] and record["talk_seconds"] > 0, record
        events = [event for event, _, _ in log_events(record)]
        assert "CONNECT" in events and "COMPLETE" in events, events
