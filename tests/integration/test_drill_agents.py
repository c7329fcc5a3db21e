"""A drill moves agents, and its drain outlives a restart of the drained site.

Two real sites (`pbx serve --site`, PostgreSQL, Mosquitto). Agent 2001 belongs to madrid;
its phone (SIPp) registers there. `pbx drill --from madrid --to bogota` moves 2001 to
bogota: bogota claims it on the bus and calls the phone at the registration it made at
madrid (kept in the shared store), without the phone registering again; madrid answers the
phone's REGISTER 503 (a front door then tries bogota). Madrid is killed -9 and started
again: it is still drained (the retained drain on the bus) and, having read bogota's claim
before serving anything, does not count 2001 as reachable though it restored 2001's
registration; bogota knows madrid is drained. A caller at bogota reaches 2001's phone.
Bogota killed -9 and started again still serves 2001 at once. `pbx drill --back` ends the
drain and brings 2001 home.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration import sipp_agents as sa
from integration.call_peers import random_port_range
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import PbxServer, start_pbx
from integration.test_drill import SITES, api, options_status, run_drill, two_sites_config
from integration.test_queue_agents import caller_xml, wait_until
from peers import sipp
from peers.procs import LOOPBACK, require_binary

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix


def live(server: PbxServer, agent: str) -> dict:
    status, body = api(server, "GET", f"/agents/{agent}")
    assert status == 200, body
    return body.get("live") or {}


def register_status(server: PbxServer, user: str) -> int:
    """The status a site answers a REGISTER of ``user`` (no credentials) with."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto((f"REGISTER sip:{server.sip_address} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-reg{port}\r\n"
                     "Max-Forwards: 70\r\n"
                     f"From: <sip:{user}@{server.sip_address}>;tag=reg\r\n"
                     f"To: <sip:{user}@{server.sip_address}>\r\n"
                     f"Call-ID: reg-{port}@drill\r\nCSeq: 1 REGISTER\r\n"
                     f"Contact: <sip:{user}@{LOOPBACK}:{port}>\r\nExpires: 600\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), (server.host, server.sip_port))
        reply = sock.recv(4096).decode()
    return int(reply.split()[1])


def test_a_drill_moves_madrids_agent_to_bogota_stays_drained_over_a_restart_and_back_brings_it_home(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(2)
    agent = accounts[0][0]
    name = asyncio.run(create_database(postgres_server))
    config = two_sites_config(accounts, postgres_server.url(name), mqtt_url, bus_prefix,
                              rtp_timeout=600)
    servers: dict[str, PbxServer] = {}
    restarted = None
    phone = caller = None
    try:
        for site in SITES:
            low, high = random_port_range(200)
            config["media"].update(port_min=low, port_max=high)
            servers[site] = pbx_server(yaml.safe_dump(config, sort_keys=False),
                                       extra_args=("--site", site))
        madrid, bogota = servers["madrid"], servers["bogota"]
        apis = ["--api", f"madrid={madrid.http_url}", "--api", f"bogota={bogota.http_url}"]
        phone = sa.SippAgents(madrid.sip_address, [accounts[0]], tmp_path / "phone")
        phone.start()
        assert wait_until(lambda: live(madrid, agent).get("reachable"), 15)
        assert not live(bogota, agent).get("reachable")

        report_path = tmp_path / "drill.json"
        drill = run_drill("--from", "madrid", "--to", "bogota", "--wait", "60",
                          "--report", str(report_path), *apis)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        report = json.loads(report_path.read_text())
        assert report["agents_moved"] == 1, report
        assert [moved["agent"] for moved in report["moved_agents"]] == [agent]
        assert report["agents_at_drained_site"] == [agent]
        assert f"agents moved to bogota: 1 of 1\n    {agent} at " in drill.stdout
        # Bogota serves 2001 now, at the phone's registration; madrid offers it nothing.
        assert wait_until(lambda: live(bogota, agent).get("state") == "available", 15), \
            live(bogota, agent)
        assert not live(madrid, agent).get("reachable")
        assert (f"agent {agent} is served by site bogota now (was madrid; version 1: drill "
                "from madrid)") in madrid.log_text()
        assert register_status(madrid, agent) == 503
        assert bogota.healthz()["bus"]["sites"]["madrid"]["drained"] is True
        status, drain = api(madrid, "GET", "/sites/madrid/drain")
        assert status == 200 and drain["draining"] and [
            released["agent"] for released in drain["agents_released"]] == [agent]

        # kill -9 and start again in place: still drained, and 2001 is still bogota's.
        os.kill(madrid.pid, signal.SIGKILL)
        madrid.process.wait(10)
        restarted = start_pbx(tmp_path / "restarted", config_yaml=madrid.config_path.read_text(),
                              extra_args=("--site", "madrid", "--var-dir", str(madrid.var_dir)),
                              ports=(madrid.sip_port, madrid.http_port))
        status, after = api(restarted, "GET", "/sites/madrid/drain")
        assert status == 200 and after["draining"] and after["since"] == drain["since"], after
        assert options_status(restarted) == 503
        assert "site madrid stays drained" in restarted.log_text()
        # Its stored registration came back, but the claim was read before it listened.
        text = restarted.log_text()
        assert "restored 1 registration(s) from the store" in text
        claim_read = text.index(f"agent {agent} is served by site bogota now")
        assert claim_read < text.index("listening for SIP on UDP"), text
        assert not live(restarted, agent).get("reachable")
        assert wait_until(lambda: bogota.healthz()["bus"]["sites"]["madrid"]["up"], 10)
        assert bogota.healthz()["bus"]["sites"]["madrid"]["drained"] is True

        # Calls land where the agent is: a caller at bogota reaches 2001's phone.
        caller = sipp.start(bogota.sip_address, service="100", calls=1,
                            scenario=caller_xml(digit="1", number="+34915550088", hold_ms=3000),
                            workdir=tmp_path / "caller")

        def answered_by_agent() -> list[dict]:
            status, calls = api(bogota, "GET", "/calls?limit=100")
            return [r for r in calls if r["caller"] == "+34915550088" and r["agent"] == agent
                    and r["answered"]]
        assert wait_until(lambda: answered_by_agent() != [], 40)

        # Bogota killed and started again: its own claim, read back, brings 2001's stored
        # registration with it (no waiting for the phone's next REGISTER).
        os.kill(bogota.pid, signal.SIGKILL)
        bogota.process.wait(10)
        bogota = start_pbx(tmp_path / "bogota-restarted", config_yaml=bogota.config_path.read_text(),
                           extra_args=("--site", "bogota", "--var-dir", str(bogota.var_dir)),
                           ports=(bogota.sip_port, bogota.http_port))
        servers["bogota-restarted"] = bogota
        assert wait_until(lambda: live(bogota, agent).get("reachable"), 15), live(bogota, agent)

        apis = ["--api", f"madrid={restarted.http_url}", "--api", f"bogota={bogota.http_url}"]
        back = run_drill("--back", *apis)
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"agent {agent} is served by madrid again" in back.stderr
        assert options_status(restarted) == 200
        assert wait_until(lambda: live(restarted, agent).get("reachable"), 15)
        assert wait_until(lambda: not live(bogota, agent).get("reachable"), 15)
        assert wait_until(lambda: not bogota.healthz()["bus"]["sites"]["madrid"]["drained"], 10)
        assert register_status(restarted, agent) == 401  # challenged as always
    finally:
        for peer in (phone, caller):
            if peer is not None:
                peer.stop()
        for server in [*servers.values(), *([restarted] if restarted else [])]:
            server.stop()
        asyncio.run(drop_database(postgres_server, name))
