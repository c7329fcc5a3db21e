"""Finished calls are freed by reference counting: the collector finds none of them in cycles.

A collector pass that finds garbage in reference cycles runs inside whatever allocated, so
under load the full passes that free cycles left by finished calls stall the event loop for
hundreds of milliseconds. Here the real server runs with ``http.cycle_census`` on: every
collector pass keeps what it finds in cycles instead of freeing it, and ``GET /debug/cycles``
runs a pass and reports those objects per type (then frees them).

SIPp agents answer; SIPp callers place, one kind after another:

- queue calls: IVR, digit 1, the queue, an agent answers, talks and hangs up;
- direct calls: an account (digest authentication) calls an agent's account, talks and
  hangs up itself;
- abandoned calls: IVR, digit 1, a queue no agent serves, the caller hangs up waiting.

A warm-up round of each kind comes first (lazy caches), then the census is read once to
start clean; after the measured calls, once the server is idle again, the census must show
no object of ours in a cycle, and hardly any object at all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from integration import sipp_agents as sa
from peers import sipp
from peers.procs import peer_unavailable, require_binary

pytestmark = pytest.mark.integration

AGENTS = 4
TALK_MS = 2500
DIRECT_CALLER = ("3001", "direct3001")
UNSERVED_QUEUE = "nobody"
OUR_PACKAGES = ("pbx.", "ivr.", "router.", "monitoring.", "callbacks.", "events.", "settings.")
SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    require_binary("sipp", "sip-tester")  # fails when CI=true, skips elsewhere
    if not (sa.SCENARIOS / "pcap" / "g711a.pcap").exists():
        peer_unavailable("SIPp's pcaps (/usr/share/sip-tester/g711a.pcap) are missing")


def _config(tmp_path: Path) -> str:
    config = yaml.safe_load(sa.contact_center_config(sa.agent_accounts(AGENTS), wrap_up_seconds=0,
                                                     ring_timeout_seconds=30, max_wait_seconds=600))
    config["http"]["cycle_census"] = True
    config["accounts"].append({"user": DIRECT_CALLER[0], "password": DIRECT_CALLER[1],
                               "name": "Direct caller"})
    # Extension 102: the same menu into a queue that no agent serves, so its callers abandon.
    flow = yaml.safe_load(sa.BENCH_FLOW.read_text())
    flow["name"] = "unserved"
    flow["nodes"]["queue"]["queue"] = UNSERVED_QUEUE
    flow_path = tmp_path / "unserved_flow.yaml"
    flow_path.write_text(yaml.safe_dump(flow, sort_keys=False))
    config["extensions"]["102"] = {"application": "ivr", "flow": str(flow_path)}
    config["queues"].append({"name": UNSERVED_QUEUE, "skills": {UNSERVED_QUEUE: 1},
                             "strategy": "longest_idle", "wrap_up_seconds": 0,
                             "ring_timeout_seconds": 30, "max_wait_seconds": 600})
    return yaml.safe_dump(config, sort_keys=False)


def _cycles(server) -> dict:
    status, body = server.http_get("/debug/cycles", timeout=60)
    assert status == 200, f"/debug/cycles answered {status}: {body[:300]}"
    return json.loads(body)


def _busy(server) -> dict[str, float]:
    """What is still going on (empty when idle): calls, dialogs, transactions, RTP, waiting."""
    levels: dict[str, float] = {}
    for key, value in server.metrics().items():
        if key.partition("{")[0] in ("centralita_calls_active", "centralita_sip_dialogs_active",
                                     "centralita_sip_transactions", "centralita_rtp_sessions",
                                     "centralita_queue_calls_waiting") and value:
            levels[key] = levels.get(key, 0.0) + value
    return levels


def _wait_idle(server, timeout: float = 120.0) -> None:
    # SIP transactions linger 32 s (64*T1) after their last message; then all is quiet.
    deadline = time.monotonic() + timeout
    while _busy(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _busy(server), f"the server did not become idle: {_busy(server)}"


def _place_calls(server, workdir: Path, queue: int, direct: int, abandoned: int) -> list[sipp.SippResult]:
    """Each kind in turn, so that the direct calls find their agent free."""
    results = []
    if queue:
        results.append(sipp.run(server.sip_address, scenario=sa.CALLER_WAIT_BYE_XML, service="100",
                                calls=queue, rate=2, limit=AGENTS, workdir=workdir / "queue",
                                timeout=queue / 2 + 90))
    if direct:
        results.append(sipp.run(server.sip_address, scenario=SCENARIOS / "late_offer_auth_uac.xml",
                                service=sa.agent_accounts(1)[0][0], calls=direct, rate=1, limit=1,
                                auth=DIRECT_CALLER, auth_uri=f"sip:{server.sip_address}",
                                workdir=workdir / "direct", timeout=direct * 3 + 60))
    if abandoned:
        results.append(sipp.run(server.sip_address, scenario=sa.CALLER_HANGUP_XML, service="102",
                                calls=abandoned, rate=4, limit=20, duration_ms=1500,
                                workdir=workdir / "abandoned", timeout=abandoned / 4 + 60))
    return results


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_finished_calls_leave_nothing_for_the_collector(pbx_server, tmp_path):
    server = pbx_server(_config(tmp_path))
    accounts = sa.agent_accounts(AGENTS)
    with sa.SippAgents(server.sip_address, accounts, tmp_path / "agents", talk_ms=TALK_MS) as agents:
        states = sa.wait_for_agents(server, agents.users, timeout=60)
        assert all(state == "available" for state in states.values()), states

        warmup = _place_calls(server, tmp_path / "warmup", queue=2, direct=1, abandoned=2)
        assert all(result.returncode == 0 for result in warmup), "\n".join(
            result.describe() for result in warmup)
        _wait_idle(server)
        _cycles(server)  # start clean: what start-up and the warm-up left
        ended_before = server.metric("centralita_calls_ended_total", 0.0) or 0.0
        abandoned_before = server.metric("centralita_queue_calls_abandoned_total", 0.0,
                                         queue=UNSERVED_QUEUE) or 0.0

        results = _place_calls(server, tmp_path / "calls", queue=12, direct=4, abandoned=8)
        _wait_idle(server)
        census = _cycles(server)

    assert all(result.returncode == 0 for result in results), "\n".join(
        result.describe() for result in results)
    queue, direct, abandoned = (result.successful for result in results)
    assert (queue, direct, abandoned) == (12, 4, 8)
    ended = (server.metric("centralita_calls_ended_total", 0.0) or 0.0) - ended_before
    assert ended >= 24
    abandons = (server.metric("centralita_queue_calls_abandoned_total", 0.0,
                              queue=UNSERVED_QUEUE) or 0.0) - abandoned_before
    assert abandons == 8, f"{abandons} calls abandoned in queue {UNSERVED_QUEUE!r}, 8 expected"

    ours = {kind: count for kind, count in census["objects"].items() if kind.startswith(OUR_PACKAGES)}
    assert not ours, (f"after {int(ended)} calls the collector found our objects in cycles: {ours}; "
                      f"all {census['objects_in_cycles']} objects: {census['objects']}")
    # Nor anything per call: the smallest cycle is two objects.
    assert census["objects_in_cycles"] < ended, census
