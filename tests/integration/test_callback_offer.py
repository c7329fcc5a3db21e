"""A caller waiting in a queue asks for a callback with a key, end to end with SIPp as the caller.

The server: extension 100 queues every caller in ``general`` at once
(``flows/straight_to_general.yaml``); no agent is registered, so nobody is free and the wait
cannot be estimated; ``callbacks.offer_digit`` is 9 and the queue announces the offer past
60 s of estimated wait. No trunk is configured: requests stay pending, and
``GET /api/v1/callbacks`` shows them.

Each SIPp caller sends its keys as RFC 4733 events from SIPp's pcaps, well apart. SIPp
replays each pcap with its own RTP timestamp, and the server reports one key per
timestamp, so a caller never presses the same key twice.
"""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from integration.server_fixture import default_config_yaml
from integration.test_queue_agents import (
    SippAgent,
    caller_xml,
    cc_config,
    get_json,
    need_sipp,
    wait_until,
)
from integration.test_queue_scenarios import caller_got_bye, finish_caller
from peers import sipp

pytestmark = pytest.mark.integration

FLOW = Path(__file__).resolve().parent / "flows" / "straight_to_general.yaml"
KEY_GAP_MS = 700


def server_config() -> str:
    config = yaml.safe_load(cc_config())
    config["extensions"]["100"]["flow"] = str(FLOW)
    config["queues"].append({"name": "general", "strategy": "longest_idle",
                             "announce_interval_seconds": 4})
    config["callbacks"] = {"offer_digit": "9", "queues": {"general": {"offer_after_wait": 60}}}
    return yaml.safe_dump(config, sort_keys=False)


def key(value: str) -> str:
    name = {"*": "star", "#": "pound"}.get(value, value)
    return f'<nop><action><exec play_pcap_audio="pcap/dtmf_2833_{name}.pcap"/></action></nop>'


def start_caller(server, workdir: Path, number: str, keys: str, *, first_key_ms: int = 2500,
                 gaps_ms: dict[int, int] | None = None, hold_ms: int = 40_000) -> sipp.SippProcess:
    """A SIPp caller from ``number``: waits ``first_key_ms`` after its ACK, presses ``keys``
    ``KEY_GAP_MS`` apart (``gaps_ms``: a longer gap before the key at that index), then waits
    for the server's BYE, or hangs up itself after ``hold_ms``."""
    assert len(set(keys)) == len(keys), "one RFC 4733 timestamp per key: no key twice"
    scenario = caller_xml(digit=keys[0], number=number, hold_ms=hold_ms, play_audio=False,
                          dtmf_after_ms=first_key_ms)
    steps = [key(keys[0])]
    for index, value in enumerate(keys[1:], start=1):
        pause = (gaps_ms or {}).get(index, KEY_GAP_MS)
        steps.append(f'<pause milliseconds="{pause}"/>\n  {key(value)}')
    scenario = scenario.replace(key(keys[0]), "\n  ".join(steps))
    return sipp.start(server.sip_address, scenario=scenario, service="100", calls=1,
                      trace_msg=True, workdir=workdir)


def call_id_of(caller: sipp.SippProcess) -> str:
    def found() -> str | None:
        path = caller.workdir / "messages.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(r"^Call-ID:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
        return match.group(1) if match else None
    call_id = wait_until(found, 10)
    assert call_id, "no Call-ID in SIPp's message trace"
    return call_id


def callbacks(server) -> list[dict]:
    status, body = get_json(server, "/api/v1/callbacks?queue=general")
    assert status == 200, body
    assert isinstance(body, list)
    return body


def callback_of(server, call_id: str) -> dict | None:
    return next((c for c in callbacks(server) if c["origin_call_id"] == call_id), None)


def queue_log(server, call_id: str) -> list[dict]:
    """The call's queue-log lines. A call that just ended is neither live nor stored for a
    moment (its record is being written): asked again until it is one or the other."""
    path = f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}"

    def found() -> tuple[int, object] | None:
        status, body = get_json(server, path)
        return None if status == 404 else (status, body)

    answer = wait_until(found, 10)
    assert answer is not None, f"no call {call_id} live or recorded"
    status, body = answer
    assert status == 200 and isinstance(body, dict), body
    return body["queue_log"]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def server(pbx_server):
    need_sipp()
    return pbx_server(server_config())


def test_a_waiting_caller_presses_9_and_confirms_their_number(server, tmp_path) -> None:
    caller = start_caller(server, tmp_path / "caller", "+34915550101", "91")
    call_id = call_id_of(caller)
    result = finish_caller(caller)
    assert caller_got_bye(result), "the server hangs up once the callback is booked"
    request = wait_until(lambda: callback_of(server, call_id), 15)
    assert request is not None, callbacks(server)
    assert request["number"] == "+34915550101"
    assert request["queue"] == "general" and request["state"] == "pending"
    # Its place in line is the caller's original enqueue time, not the time they asked.
    entered = [line for line in queue_log(server, call_id) if line["event"] == "ENTERQUEUE"]
    assert len(entered) == 1
    assert moment(request["requested_at"]) == moment(entered[0]["time"])
    assert moment(request["requested_at"]) < moment(request["earliest_at"])
    # The caller left the line with a callback: not counted as an abandon.
    log = wait_until(lambda: [line["event"] for line in queue_log(server, call_id)
                              if line["event"] in ("DROP", "ABANDON")], 10)
    assert log == ["DROP"]
    drop = next(line for line in queue_log(server, call_id) if line["event"] == "DROP")
    assert drop["data"].get("reason") == "callback_requested", drop

    # The same customer asks again: told a request is pending, nothing booked twice.
    again = start_caller(server, tmp_path / "again", "+34915550101", "91")
    finish_caller(again)
    pending = [c for c in callbacks(server) if c["number"] == "+34915550101"]
    assert [c["id"] for c in pending] == [request["id"]]
    # Nobody is staffed, so "please hold" ended with the offer (past offer_after_wait) too.
    offers = {how: server.metric("centralita_callback_offers_total", queue="general", how=how)
              for how in ("announced", "asked")}
    assert offers["asked"] == 2
    assert offers["announced"] >= 2  # at least after each "please hold" (announcements may add)
    outcomes = {outcome: server.metric("centralita_callback_offer_outcomes_total",
                                       queue="general", outcome=outcome)
                for outcome in ("booked", "already_pending")}
    assert outcomes == {"booked": 1, "already_pending": 1}
    assert server.metric("centralita_callbacks_requested_total", queue="general") == 1


def test_a_caller_keys_another_number_after_a_refused_one(server, tmp_path) -> None:
    # 9: the offer; 2: another number; 1 3 #: too short (said why, asked again);
    # 4 5 6 7 8 then silence ends the entry.
    caller = start_caller(server, tmp_path / "caller", "+34915550102", "9213#45678",
                          gaps_ms={2: 2000, 5: 1500})
    call_id = call_id_of(caller)
    result = finish_caller(caller)
    assert caller_got_bye(result)
    request = wait_until(lambda: callback_of(server, call_id), 15)
    assert request is not None, callbacks(server)
    assert request["number"] == "45678" and request["queue"] == "general"
    assert not any(c["number"] in ("13", "+34915550102") for c in callbacks(server))


def test_a_caller_who_declines_keeps_their_place(server, tmp_path) -> None:
    first = start_caller(server, tmp_path / "first", "+34915550103", "9*", first_key_ms=3000,
                         hold_ms=14_000)
    first_id = call_id_of(first)
    wait_until(lambda: any(line["event"] == "ENTERQUEUE" for line in queue_log(server, first_id)), 10)
    # The second caller presses 0 (no offer: only 9 asks) and waits behind the first.
    second = start_caller(server, tmp_path / "second", "+34915550104", "0", first_key_ms=500,
                          hold_ms=12_000)
    second_id = call_id_of(second)
    first_result = finish_caller(first)
    finish_caller(second)
    assert not caller_got_bye(first_result), "a caller who declined is not hung up on"
    assert callbacks(server) == []

    def announced(call_id: str) -> list[dict]:
        return [line for line in queue_log(server, call_id) if line["event"] == "ANNOUNCE"]

    first_log = queue_log(server, first_id)
    assert [line["event"] for line in first_log].count("ENTERQUEUE") == 1  # never left the line
    entered = moment(next(line["time"] for line in first_log if line["event"] == "ENTERQUEUE"))
    after_decline = [line for line in announced(first_id)
                     if (moment(line["time"]) - entered).total_seconds() > 4.0]
    assert after_decline, first_log  # the * went 3.7 s after the call was answered
    assert {line["data"]["position"] for line in announced(first_id)} == {1}
    assert {line["data"]["position"] for line in announced(second_id)} == {2}


def test_an_agent_who_answers_during_the_offer_takes_the_call(server, tmp_path) -> None:
    """The caller presses 9 and is still listening to the offer when agent 1001 logs in:
    the agent is rung (the caller never left the line), answers, and the two talk; the
    offer stops and nothing is booked. The agent hangs up 2 s later."""
    caller = start_caller(server, tmp_path / "caller", "+34915550105", "9", hold_ms=40_000)
    call_id = call_id_of(caller)
    assert wait_until(lambda: "asks for a callback" in server.log_text(), 15), server.log_tail()
    agent = SippAgent(tmp_path / "agent", server, "1001", hold_ms=2000)
    try:
        result = finish_caller(caller)
        assert caller_got_bye(result), "the agent's hang-up ends the caller's call"
        assert agent.received("INVITE") == 1, agent.describe()
    finally:
        agent.stop()
    events = wait_until(lambda: [line["event"] for line in queue_log(server, call_id)
                                 if line["event"] in ("CONNECT", "COMPLETE")], 15)
    assert events and events[0] == "CONNECT", queue_log(server, call_id)
    assert callbacks(server) == []
    assert "booked" not in server.log_text()


DEMO_CALLER = Path(__file__).resolve().parents[2] / "docs" / "sipp" / "callback_caller.xml"


def test_the_readme_demo_caller_asks_for_a_callback(pbx_server, tmp_path) -> None:
    """The README's walk-through against the demo configuration as shipped: the demo's
    customer Globex calls 100, presses 0 (general queue), 9 while waiting, 1 to confirm."""
    need_sipp()
    server = pbx_server(default_config_yaml())
    caller = sipp.start(server.sip_address, scenario=DEMO_CALLER, service="100", calls=1,
                        trace_msg=True, workdir=tmp_path / "demo-caller")
    call_id = call_id_of(caller)
    result = finish_caller(caller)
    assert caller_got_bye(result)
    request = wait_until(lambda: callback_of(server, call_id), 15)
    assert request is not None, callbacks(server)
    assert request["number"] == "+34910000002" and request["state"] == "pending"
    assert request["priority"] == 2  # Globex is a paid customer: its tier's priority, no bump
