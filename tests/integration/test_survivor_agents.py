"""Agents move with the calls: a dead site's agent re-registers through the front door at
the survivor, which takes over the agent (one writer per agent: a claim on the bus), and a
caller arriving at the survivor reaches that agent.

Two real sites of one contact center (`pbx serve --site`, PostgreSQL, Mosquitto) behind
the real Kamailio front door. Agent 2001 belongs to madrid: its phone (SIPp) registers
through the front door, at madrid. Madrid is killed -9; the phone's next REGISTER goes to
bogota (madrid's backup), which accepts it because madrid is down, and claims 2001. A
SIPp caller calls bogota's queue and is put through to 2001's phone, through the front
door (the Path it registered with).
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
from integration.kamailio_fixture import KamailioMissing, start_front_door
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import PbxServer
from integration.test_drill import SITES, two_sites_config
from integration.test_front_door import AGENT, register_agent
from integration.test_queue_agents import caller_xml, wait_until
from peers import sipp
from peers.procs import free_port, require_binary

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix


def _get(server: PbxServer, path: str):
    status, body = server.http_get(path, timeout=10)
    assert status == 200, f"GET {path}: {status} {body[:300]}"
    return json.loads(body)


def _reachable_at(server: PbxServer, agent: str) -> bool:
    live = _get(server, f"/api/v1/agents/{agent}").get("live") or {}
    return bool(live.get("reachable"))


def test_a_dead_sites_agent_registers_at_the_survivor_which_takes_it_over(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(2)
    (agent, password), (bogota_agent, _) = accounts
    name = asyncio.run(create_database(postgres_server))
    config = two_sites_config(accounts, postgres_server.url(name), mqtt_url, bus_prefix,
                              rtp_timeout=600)
    config["http"]["api_token"] = None
    servers: dict[str, PbxServer] = {}
    door = None
    phone = caller = None
    try:
        for site in SITES:
            low, high = random_port_range(200)
            config["media"].update(port_min=low, port_max=high)
            servers[site] = pbx_server(yaml.safe_dump(config, sort_keys=False),
                                       extra_args=("--site", site))
        madrid, bogota = servers["madrid"], servers["bogota"]
        try:
            door = start_front_door({site: server.sip_address for site, server in servers.items()},
                                    {agent: "madrid", bogota_agent: "bogota"},
                                    folder=tmp_path / "kamailio")
        except KamailioMissing as missing:
            pytest.fail(str(missing), pytrace=False)
        phone_port = free_port(udp=True, tcp=False)
        register_agent(door, tmp_path / "register-home", agent, password, phone_port)
        assert wait_until(lambda: _reachable_at(madrid, agent), 10)
        assert not _reachable_at(bogota, agent)

        madrid.process.kill()
        madrid.process.wait(5)
        assert wait_until(lambda: not _get(bogota, "/healthz")["bus"]["sites"]["madrid"]["up"], 10)
        time.sleep(2.5)  # the front door's probe marks madrid down
        register_agent(door, tmp_path / "register-survivor", agent, password, phone_port)
        assert wait_until(lambda: _reachable_at(bogota, agent), 10)
        log = bogota.log_text()
        assert (f"agent {agent} is served by site bogota now (was madrid; version 1: its phone "
                "registered at bogota)") in log

        # A caller arriving at bogota reaches 2001's phone, through the front door.
        agent_log = tmp_path / "phone" / "phone.log"
        (tmp_path / "phone").mkdir()
        phone = sipp.start(None, workdir=tmp_path / "phone", scenario=AGENT, port=phone_port,
                           calls=1, extra=["-trace_logs", "-log_file", str(agent_log)])
        caller = sipp.start(bogota.sip_address, service="100", calls=1,
                            scenario=caller_xml(digit="1", number="+34915550077", hold_ms=3000),
                            workdir=tmp_path / "caller")

        def answered_by_agent() -> list[dict]:
            return [r for r in _get(bogota, "/api/v1/calls?limit=100")
                    if r["caller"] == "+34915550077" and r["agent"] == agent and r["answered"]]
        assert wait_until(lambda: answered_by_agent() != [], 40), _get(bogota, "/api/v1/calls?limit=100")
        assert wait_until(lambda: "bye-received" in agent_log.read_text(errors="replace"), 10)
        [via] = [line.split(" ", 1)[1] for line in agent_log.read_text().splitlines()
                 if line.startswith("invite-via ")]
        assert f"SIP/2.0/UDP {door.address}" in via, via
    finally:
        for peer in (phone, caller):
            if peer is not None:
                peer.stop()
        if door is not None:
            door.stop()
        for server in servers.values():
            server.stop()
        asyncio.run(drop_database(postgres_server, name))
