"""A surviving site records a dead site's calls in progress by itself, exactly once.

Three real sites of one contact center (``pbx serve --site``), one PostgreSQL database,
one Mosquitto broker. Madrid carries SIPp calls, one talking to a SIPp agent and two
waiting in the queue, and is killed -9. The broker publishes madrid's last will; bogota and
lima both hear it and both try to record madrid's calls: every call madrid had accepted
gets exactly one ``interrupted`` record, and madrid, restarted on the same database, finds
nothing left to record.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration import sipp_agents as sa
from integration.call_peers import random_port_range
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import PbxServer
from integration.test_interrupted_calls import _get, _noted_in_progress, place_talking_then_waiting
from integration.test_queue_agents import wait_until
from peers import sipp
from peers.procs import require_binary

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix

SITES = {"madrid": "Europe/Madrid", "bogota": "America/Bogota", "lima": "America/Lima"}
TALKING_CALLER = "+34915550040"
WAITING_CALLERS = ("+34915550041", "+34915550042")


def three_sites_config(accounts: list[tuple[str, str]], store_url: str, mqtt_url: str,
                       bus_prefix: str) -> dict:
    """One agent per site, in site order; a shared PostgreSQL database and broker."""
    config = yaml.safe_load(sa.contact_center_config(accounts, rtp_timeout=600))
    config["sites"] = [{"name": name, "timezone": zone} for name, zone in SITES.items()]
    for agent, site in zip(config["agents"], SITES, strict=True):
        agent["site"] = site
    config["store"]["url"] = store_url
    config["bus"] = {"url": mqtt_url, "topic_prefix": bus_prefix, "heartbeat_interval": 0.5}
    return config


def test_survivors_record_a_killed_sites_calls_in_progress_exactly_once(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(3)
    madrid_agent = accounts[0][0]
    name = asyncio.run(create_database(postgres_server))
    store_url = postgres_server.url(name)
    config = three_sites_config(accounts, store_url, mqtt_url, bus_prefix)
    callers: list[sipp.SippProcess] = []
    servers: dict[str, PbxServer] = {}

    def start_site(site: str) -> PbxServer:
        low, high = random_port_range(200)  # each site its own RTP ports
        config["media"].update(port_min=low, port_max=high)
        server = pbx_server(yaml.safe_dump(config, sort_keys=False), extra_args=("--site", site))
        servers[site] = server
        return server

    try:
        madrid, bogota, lima = (start_site(site) for site in SITES)
        for survivor in (bogota, lima):
            assert wait_until(lambda s=survivor: _get(s, "/healthz")["bus"]["sites"]["madrid"]["up"],
                              15)
        with sa.SippAgents(madrid.sip_address, accounts[:1], tmp_path / "agents"):
            assert sa.wait_for_agents(madrid, [madrid_agent], "available")[madrid_agent] == "available"
            place_talking_then_waiting(madrid, TALKING_CALLER, WAITING_CALLERS, tmp_path, callers)
            # Every call madrid accepted is noted in the shared store before the kill.
            assert wait_until(lambda: {n.caller for n in _noted_in_progress(store_url, "madrid")}
                              == {TALKING_CALLER, *WAITING_CALLERS}, 30)
            accepted = {call["call_id"]: call["caller"] for call in _get(madrid, "/api/v1/calls/live")}
            assert sorted(accepted.values()) == sorted([TALKING_CALLER, *WAITING_CALLERS])

            os.kill(madrid.pid, signal.SIGKILL)
            madrid.process.wait(10)
            for caller in callers:
                caller.stop()

            # Nobody asked: the survivors hear the last will and record madrid's calls.
            def recorded(server: PbxServer) -> Counter[str]:
                return Counter(r["call_id"] for r in _get(server, "/api/v1/calls?limit=1000")
                               if r["call_id"] in accepted)
            assert wait_until(lambda: set(recorded(bogota)) == set(accepted), 30), recorded(bogota)
            assert wait_until(lambda: _noted_in_progress(store_url, "madrid") == [], 10)
            records = {r["call_id"]: r for r in _get(lima, "/api/v1/calls?limit=1000")
                       if r["call_id"] in accepted}
            assert recorded(lima) == Counter(list(accepted)), "one record per call madrid accepted"
            for call_id, number in accepted.items():
                record = records[call_id]
                assert (record["disposition"], record["site"], record["caller"]) == (
                    "interrupted", "madrid", number), record
            assert records[next(c for c, n in accepted.items() if n == TALKING_CALLER)]["agent"] \
                == madrid_agent
            # Both survivors tried; between them each call was recorded once.
            logs = bogota.log_text() + lima.log_text()
            assert logs.count("(adopted by") == len(accepted), logs[-3000:]
            assert "site madrid died (offline: connection lost)" in bogota.log_text()
            assert "site madrid died (offline: connection lost)" in lima.log_text()

        # Madrid restarted on the same database: nothing left for it to record.
        restarted = start_site("madrid")
        assert "recorded as interrupted" not in restarted.log_text()
        assert Counter(r["call_id"] for r in _get(restarted, "/api/v1/calls?limit=1000")
                       if r["call_id"] in accepted) == Counter(list(accepted))
    finally:
        for caller in callers:
            caller.stop()
        for server in servers.values():
            server.stop()  # before its database goes
        asyncio.run(drop_database(postgres_server, name))
