"""After a thousand calls, the server holds what it held before: no per-call leak, no cycles.

The real server (history limits lowered to a 10-second age, ``http.object_census`` on) with
SIPp agents; SIPp callers at a moderate rate: most go through the IVR into the queue and
talk to an agent, some hang up in the IVR or while waiting, some call the greeting. Around
them, ``GET /debug/objects`` counts live objects per type after a full collection:

- baseline: after a warm-up round of the same calls, once everything is idle again;
- during the calls: the census sees per-call objects (calls, legs, dialogs), so it is not
  blind to what it checks; the in-memory history holders fill (``centralita_history_entries``);
- afterwards, once idle (no call, dialog, transaction, RTP session, waiting caller, and the
  history aged out): no type of ours has more objects than at the baseline, no other type
  grew by more than one object per ten calls, the allocated blocks (strings included) grew
  by less than bounded caches account for, and the collector found (almost) no objects in
  reference cycles.

Nothing here depends on timing: every wait is for a condition, with a generous timeout.
"""

from __future__ import annotations

import json

import pytest
import yaml

from integration import sipp_agents as sa
from integration.test_queue_agents import wait_until
from peers import sipp
from peers.procs import peer_unavailable, require_binary

pytestmark = pytest.mark.integration

AGENTS = 20
TALK_MS = 800
WARMUP_CALLS = 200
QUEUE_CALLS = 700
ABANDONING_CALLS = 150
GREETING_CALLS = 150
CALLS = QUEUE_CALLS + ABANDONING_CALLS + GREETING_CALLS
RATE = 16.0  # calls/s over all callers
OUR_PACKAGES = ("pbx.", "ivr.", "router.", "monitoring.", "callbacks.")


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    require_binary("sipp", "sip-tester")  # fails when CI=true, skips elsewhere
    if not (sa.SCENARIOS / "pcap" / "g711a.pcap").exists():
        peer_unavailable("SIPp's pcaps (/usr/share/sip-tester/g711a.pcap) are missing")


def _config() -> str:
    config = yaml.safe_load(sa.contact_center_config(sa.agent_accounts(AGENTS), wrap_up_seconds=0,
                                                     ring_timeout_seconds=30, max_wait_seconds=600))
    config["extensions"]["101"] = {"application": "greeting", "prompt": "welcome"}
    config["http"]["object_census"] = True
    config["history"] = {"max_age_seconds": 10}
    return yaml.safe_dump(config, sort_keys=False)


def _census(server) -> dict:
    status, body = server.http_get("/debug/objects", timeout=60)
    assert status == 200, f"/debug/objects answered {status}: {body[:300]}"
    return json.loads(body)


def _busy(server) -> dict[str, float]:
    """What is still going on (empty when idle): live calls, protocol state and history."""
    metrics = server.metrics()
    levels: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.partition("{")[0]
        if name in ("centralita_calls_active", "centralita_sip_dialogs_active",
                    "centralita_sip_transactions", "centralita_rtp_sessions",
                    "centralita_queue_calls_waiting", "centralita_history_entries",
                    "centralita_call_records_pending") and value:
            levels[key] = levels.get(key, 0.0) + value
    return levels


def _wait_idle(server) -> None:
    # SIP transactions linger 32 s (64*T1) after their last message; then all is quiet.
    wait_until(lambda: not _busy(server), 120, interval=0.5)
    assert not _busy(server), f"the server did not become idle: {_busy(server)}"


def _collected_in_cycles(server) -> float:
    """Objects every collector pass so far found unreachable (python_gc_objects_collected_total)."""
    return server.metric("python_gc_objects_collected_total", 0.0) or 0.0


def _place_calls(server, workdir, queue: int, abandoning: int, greeting: int) -> list[sipp.SippResult]:
    total = queue + abandoning + greeting
    runs = []
    for name, scenario, count, extra in (
        ("queue", sa.CALLER_WAIT_BYE_XML, queue, {"service": "100"}),
        ("abandoning", sa.CALLER_HANGUP_XML, abandoning, {"service": "100", "duration_ms": 300}),
        ("greeting", "uac", greeting, {"service": "101", "duration_ms": 500}),
    ):
        if count:
            rate = RATE * count / total
            runs.append(sipp.start(server.sip_address, scenario=scenario, calls=count, rate=rate,
                                   limit=100, workdir=workdir / name, global_timeout_s=count / rate + 120,
                                   **extra))
    return runs


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_live_objects_return_to_their_level_after_a_thousand_calls(pbx_server, tmp_path):
    server = pbx_server(_config())
    accounts = sa.agent_accounts(AGENTS)
    with sa.SippAgents(server.sip_address, accounts, tmp_path / "agents", talk_ms=TALK_MS,
                       short_trace=True) as agents:
        states = sa.wait_for_agents(server, agents.users, timeout=60)
        assert all(state == "available" for state in states.values()), states

        # Warm-up: first calls fill lazy caches (prompt encodings, SQL statements, ...).
        for run in _place_calls(server, tmp_path / "warmup", WARMUP_CALLS * 7 // 10,
                                WARMUP_CALLS * 15 // 100, WARMUP_CALLS * 15 // 100):
            run.wait(180)
        _wait_idle(server)
        _census(server)  # the first census primes what serving one creates lazily
        baseline = _census(server)
        cycles_before = _collected_in_cycles(server)
        ended_before = server.metric("centralita_calls_ended_total", 0.0) or 0.0

        runs = _place_calls(server, tmp_path / "calls", QUEUE_CALLS, ABANDONING_CALLS, GREETING_CALLS)
        assert wait_until(lambda: (server.metric("centralita_calls_active", 0.0) or 0) >= 5, 60, 0.5), \
            "calls never got under way"
        during = _census(server)
        history_seen = wait_until(
            lambda: (server.metric("centralita_history_entries", 0.0, holder="routing_decisions") or 0) > 0
            and (server.metric("centralita_history_entries", 0.0, holder="ivr_calls") or 0) > 0, 60, 0.5)
        results = [run.wait(CALLS / RATE + 180) for run in runs]
        _wait_idle(server)
        after = _census(server)
        cycles = _collected_in_cycles(server) - cycles_before

    ended = (server.metric("centralita_calls_ended_total", 0.0) or 0.0) - ended_before
    completed = sum(result.successful for result in results)
    assert completed >= 0.9 * CALLS, "too few calls completed to say anything:\n" + "\n".join(
        result.describe() for result in results)
    assert ended >= completed

    # The census sees per-call objects while calls are up, and the history was in use.
    assert during["objects"].get("pbx.calls.manager.SipCall", 0) > 0, "the census did not see live calls"
    assert during["objects"].get("pbx.sip.dialog.Dialog", 0) > 0
    assert history_seen, "the in-memory history never held a call"

    grew = {}
    for kind, count in after["objects"].items():
        growth = count - baseline["objects"].get(kind, 0)
        allowed = 0 if kind.startswith(OUR_PACKAGES) else ended / 10
        if kind == "weakref.ReferenceType":
            # The standard library's ABC caches (weak references to classes and to the
            # caches themselves) grew by 140-190 over a thousand calls here, not traced to
            # a per-call owner yet; a weak reference per call would still show.
            allowed = ended / 2
        if growth > allowed:
            grew[kind] = (baseline["objects"].get(kind, 0), count)
    assert not grew, f"live objects grew over {int(ended)} calls (type: before, after): {grew}"
    # Untracked objects (strings, numbers) show only in the block count. Bounded caches fill
    # during the run by a few blocks per call: uvloop's address cache (2,048 RTP addresses),
    # the router's arrival-rate window (15 minutes) and callers' last agents (10,000); one
    # leaked call would be hundreds.
    blocks = after["allocated_blocks"] - baseline["allocated_blocks"]
    assert blocks < 10 * ended, f"{blocks} more allocated blocks after {int(ended)} calls"
    # Calls are freed by reference counting, not by collector passes finding cycles: each
    # call left 90-170 objects in cycles before they were broken, and the store's per-call
    # deletes by key lists (SQLAlchemy bind parameters built per statement) about 28 more.
    # None are left now; the smallest cycle is two objects, so a cycle left by one call in
    # two fails, while a few calls failing on error paths (a traceback) stay well within.
    assert cycles <= ended, f"collector passes found {int(cycles)} objects in cycles over {int(ended)} calls"
