"""A planned drill under load: SIPp callers through the Kamailio front door, two real sites
(PostgreSQL, Mosquitto, `pbx serve --site`), `pbx drill --from madrid --to bogota`.

While callers arrive at 4 calls/s, the drill drains madrid: its OPTIONS and new INVITEs are
answered 503, so the dispatcher fails those calls over to bogota and takes madrid out of
the rotation; madrid's calls in progress talk to their end. Every call is answered and
hung up cleanly (0 lost), every call placed after the drain is answered by bogota, and the
report's figures are what the callers saw: the calls answered during the drill, and at
which site. ``pbx drill --back`` puts madrid back in the rotation.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration import sipp_agents as sa
from integration.call_peers import random_port_range
from integration.front_door_calls import read_call_traces, start_callers
from integration.kamailio_fixture import KamailioMissing, start_front_door
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import PbxServer
from integration.test_drill import SITES, api, options_status, run_drill, two_sites_config
from integration.test_queue_agents import wait_until
from peers import sipp
from peers.procs import require_binary

# Two sites, Kamailio and SIPp callers at a steady rate: the drill must start while callers
# still wait at madrid, which a machine busy with other tests can spoil, so these run alone.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("heavy")]

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix

CALLS, RATE, TALK_MS = 60, 4, 2000
# A call answered this close to the drill's start or end may fall on either side of it
# (the site and the caller stamp the answer a moment apart).
EDGE_S = 0.3


def _epoch(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text).timestamp()


def test_a_drill_under_load_loses_no_call_and_reports_what_the_callers_saw(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path) -> None:
    name = asyncio.run(create_database(postgres_server))
    config = two_sites_config(sa.agent_accounts(2), postgres_server.url(name), mqtt_url, bus_prefix)
    # The greeting answers at once and plays until the caller hangs up.
    config["extensions"]["101"] = {"application": "greeting", "prompt": "welcome", "language": "en"}
    servers: dict[str, PbxServer] = {}
    door = None
    try:
        for site in SITES:
            low, high = random_port_range(400)
            config["media"].update(port_min=low, port_max=high)
            servers[site] = pbx_server(yaml.safe_dump(config, sort_keys=False),
                                       extra_args=("--site", site))
        madrid, bogota = servers["madrid"], servers["bogota"]
        apis = ["--api", f"madrid={madrid.http_url}", "--api", f"bogota={bogota.http_url}"]
        try:
            door = start_front_door({site: server.sip_address for site, server in servers.items()},
                                    folder=tmp_path / "kamailio")
        except KamailioMissing as missing:
            pytest.fail(str(missing), pytrace=False)

        callers, log_path = start_callers(door.address, tmp_path / "callers", calls=CALLS,
                                          rate=RATE, talk_ms=TALK_MS)
        # Calls spread over both sites first.
        assert wait_until(lambda: {t.site_port for t in read_call_traces(log_path)
                                   if t.answered_at} == {madrid.sip_port, bogota.sip_port}, 20)
        report_path = tmp_path / "drill.json"
        drill = run_drill("--from", "madrid", "--to", "bogota", "--wait", "60",
                          "--report", str(report_path), *apis)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        result = callers.wait(CALLS / RATE + 60)
        traces = read_call_traces(log_path)
        assert result.returncode == 0, result.describe()

        # 0 calls lost: every caller was answered and hung up cleanly.
        assert len(traces) == CALLS
        assert [t for t in traces if t.answered_at is None or t.bye_status != 200] == []
        report = json.loads(report_path.read_text())
        assert report["calls_lost"] == 0 and report["lost_calls"] == []
        started, ended = _epoch(report["timestamps"]["started"]), _epoch(report["timestamps"]["ended"])
        drained = _epoch(report["timestamps"]["drained"])
        # After the drain, only bogota answers new calls (madrid's 503s fail over).
        after = [t for t in traces if t.invited_at > drained + EDGE_S]
        assert after and {t.site_port for t in after} == {bogota.sip_port}, after
        # Madrid had calls in progress; they were let finish (BYE 200 above), and the
        # drill waited for them.
        assert report["calls_in_progress_at_start"] > 0
        assert _epoch(report["timestamps"]["calls_finished"]) >= drained

        # The report's answered calls are the callers' answered calls of the drill's span.
        port_site = {madrid.sip_port: "madrid", bogota.sip_port: "bogota"}
        candidates = {t.call_id: port_site[t.site_port] for t in traces
                      if started - EDGE_S <= t.answered_at <= ended + EDGE_S}
        surely = {t.call_id for t in traces
                  if started + EDGE_S <= t.answered_at <= ended - EDGE_S}
        reported = {call["call_id"]: call["site"] for call in report["answered_calls"]}
        assert report["calls_answered"] == len(reported)
        assert surely <= set(reported), surely - set(reported)
        assert set(reported) <= set(candidates), set(reported) - set(candidates)
        assert {call_id: candidates[call_id] for call_id in reported} == reported
        by_site: dict[str, int] = {}
        for site in reported.values():
            by_site[site] = by_site.get(site, 0) + 1
        assert report["calls_answered_by_site"] == by_site
        print(f"drill under load: {report['rto_seconds']} s to switch; "
              f"{report['calls_answered']} calls answered during it ({by_site}); "
              f"{report['calls_in_progress_at_start']} let finish at madrid")

        # Back: madrid answers probes again and the dispatcher sends it calls again.
        back = run_drill("--back", *apis)
        assert back.returncode == 0, back.stderr
        assert options_status(madrid) == 200
        time.sleep(2.5)  # a probe interval and its answer
        again, again_log = start_callers(door.address, tmp_path / "after-back", calls=20,
                                         rate=10, talk_ms=200)
        assert again.wait(60).returncode == 0
        assert madrid.sip_port in {t.site_port for t in read_call_traces(again_log)}
    finally:
        if door is not None:
            door.stop()
            print(f"--- kamailio log tail ---\n{door.log_tail(30)}")
        for server in servers.values():
            server.stop()
        asyncio.run(drop_database(postgres_server, name))


QUEUE_CALLER = Path(__file__).resolve().parent / "scenarios" / "front_door_queue_caller.xml"
AGENT_HANGS_UP = Path(__file__).resolve().parent / "scenarios" / "front_door_agent_hangup.xml"
QUEUE_CALLS, QUEUE_RATE, AGENT_TALK_MS = 30, 2, 5000
QUEUE_EXTENSION = "102"


def _records(server: PbxServer) -> list[dict]:
    status, calls = api(server, "GET", "/calls?limit=1000")
    assert status == 200, calls
    return calls


def _available(server: PbxServer, users: list[str]) -> bool:
    status, agents = api(server, "GET", "/agents")
    assert status == 200, agents
    states = {agent["extension"]: (agent.get("live") or {}).get("state") for agent in agents}
    return all(states.get(user) == "available" for user in users)


def _waiting(server: PbxServer) -> int:
    status, stats = api(server, "GET", f"/queues/{sa.QUEUE}/stats")
    assert status == 200, stats
    return int(stats["waiting"])


def test_a_drill_under_load_moves_madrids_agents_and_waiting_callers_to_bogota(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents 2001 and 2003 at madrid, 2002 at bogota, their phones (SIPp, hanging up after
    5 s) registered through the front door; SIPp callers through the front door wait in
    the queue at both sites. The drill starts while callers wait at madrid: madrid's agents
    move to bogota, madrid's waiting callers are answered by bogota's agents (moved or
    not) as cross-site calls, nobody is lost, and the report says exactly that."""
    require_binary("sipp", "sip-tester")
    monkeypatch.setattr(sa, "UAS_HANGUP_XML", AGENT_HANGS_UP)  # their BYE follows the route
    name = asyncio.run(create_database(postgres_server))
    accounts = sa.agent_accounts(3)
    config = two_sites_config(accounts[:2], postgres_server.url(name), mqtt_url, bus_prefix,
                              rtp_timeout=600)
    third, password = accounts[2]
    config["accounts"].append({"user": third, "password": password, "name": f"Agent {third}"})
    config["agents"].append({**config["agents"][0], "extension": third, "name": f"Agent {third}"})
    homes = {agent["extension"]: agent["site"] for agent in config["agents"]}
    assert homes == {"2001": "madrid", "2002": "bogota", "2003": "madrid"}
    flow = tmp_path / "queue-flow.yaml"
    flow.write_text(yaml.safe_dump({"name": "drill", "start": "queue", "language": "en",
                                    "languages": ["en"],
                                    "nodes": {"queue": {"type": "enqueue", "queue": sa.QUEUE}}}))
    config["extensions"][QUEUE_EXTENSION] = {"application": "ivr", "flow": str(flow)}
    servers: dict[str, PbxServer] = {}
    door = None
    peers: list = []
    try:
        for site in SITES:
            low, high = random_port_range(400)
            config["media"].update(port_min=low, port_max=high)
            servers[site] = pbx_server(yaml.safe_dump(config, sort_keys=False),
                                       extra_args=("--site", site))
        madrid, bogota = servers["madrid"], servers["bogota"]
        apis = ["--api", f"madrid={madrid.http_url}", "--api", f"bogota={bogota.http_url}"]
        try:
            door = start_front_door({site: server.sip_address for site, server in servers.items()},
                                    homes, folder=tmp_path / "kamailio")
        except KamailioMissing as missing:
            pytest.fail(str(missing), pytrace=False)
        moving = [account for account in accounts if homes[account[0]] == "madrid"]
        for site, group in (("madrid", moving), ("bogota", [accounts[1]])):
            agents = sa.SippAgents(door.address, group, tmp_path / f"{site}-agents",
                                   talk_ms=AGENT_TALK_MS)
            agents.start()
            peers.append(agents)
            users = [user for user, _ in group]
            server = servers[site]
            assert wait_until(lambda: _available(server, users), 30), users  # noqa: B023 (called here)

        (tmp_path / "callers").mkdir()
        log_path = tmp_path / "callers" / "calls.log"
        callers = sipp.start(door.address, workdir=tmp_path / "callers", scenario=QUEUE_CALLER,
                             service=QUEUE_EXTENSION, calls=QUEUE_CALLS, rate=QUEUE_RATE,
                             limit=QUEUE_CALLS,
                             global_timeout_s=QUEUE_CALLS / QUEUE_RATE + 120,
                             extra=["-trace_logs", "-log_file", str(log_path)])
        peers.append(callers)
        # The drill starts with callers waiting at madrid for madrid's (busy) agents.
        assert wait_until(lambda: _waiting(madrid) >= 3, 60), _waiting(madrid)
        report_path = tmp_path / "drill.json"
        drill = run_drill("--from", "madrid", "--to", "bogota", "--wait", "120",
                          "--report", str(report_path), *apis)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        result = callers.wait(QUEUE_CALLS / QUEUE_RATE + 150)
        traces = read_call_traces(log_path)
        assert result.returncode == 0, result.describe()

        # 0 calls lost: every caller was answered by the queue, served and let go by the site.
        assert len(traces) == QUEUE_CALLS
        assert [t for t in traces if t.answered_at is None or t.bye_status != 200] == []
        report = json.loads(report_path.read_text())
        assert report["calls_lost"] == 0 and report["lost_calls"] == []
        # The agents moved: both of madrid's, each once (a busy one when its call ended).
        assert sorted(moved["agent"] for moved in report["moved_agents"]) == ["2001", "2003"]
        assert report["agents_moved"] == 2
        drained = _epoch(report["timestamps"]["drained"])
        moved_at = max(_epoch(moved["at"]) for moved in report["moved_agents"])
        # The callers moved: every madrid caller answered by an agent after the drain
        # (settled: a phone ringing as the drain came may still answer there) was answered
        # by an agent at bogota, and the report names exactly those.
        madrid_records = {r["call_id"]: r for r in _records(madrid) if r["site"] == "madrid"}
        moved = {caller["call_id"]: caller for caller in report["moved_callers"]}
        assert report["callers_moved"] == len(moved) >= 1, report
        later = {call_id for call_id, r in madrid_records.items()
                 if r["answered"] and r["agent"] and _epoch(r["answered"]) > drained + 1.0}
        assert later <= set(moved), later - set(moved)
        for call_id, caller in moved.items():
            record = madrid_records[call_id]
            assert caller["site"] == "bogota" and record["agent"] == caller["agent"], (caller, record)
            assert record["disposition"] == "answered", record
            assert _epoch(record["answered"]) >= drained - EDGE_S
        # Calls land where the agents are: the moved agents take calls at bogota.
        at_bogota = {r["agent"] for r in _records(bogota)
                     if r["answered"] and _epoch(r["answered"]) > moved_at}
        assert at_bogota & {"2001", "2003"}, at_bogota
        print(f"drill moving agents and callers: {report['rto_seconds']} s to switch; "
              f"{report['callers_moved']} caller(s) moved, agents moved "
              f"{[(m['agent'], m['at']) for m in report['moved_agents']]}, "
              f"{report['calls_answered']} calls answered during it")

        # Visible in madrid's metrics.
        assert madrid.metric("centralita_drill_agents_released_total", site="madrid") == 2
        assert madrid.metric("centralita_drill_callers_moved_total",
                             site="madrid") == report["callers_moved"]

        back = run_drill("--back", *apis)
        assert back.returncode == 0, back.stdout + back.stderr
        for agent in ("2001", "2003"):
            assert f"agent {agent} is served by madrid again" in back.stderr
        assert wait_until(lambda: _available(madrid, ["2001", "2003"]), 30)
    finally:
        for peer in peers:
            peer.stop()
        if door is not None:
            door.stop()
            print(f"--- kamailio log tail ---\n{door.log_tail(30)}")
        for server in servers.values():
            server.stop()
        asyncio.run(drop_database(postgres_server, name))
