"""Calls in progress when a site's server is killed -9: recorded as interrupted, once.

A real server (site ``madrid``, SQLite store) carries SIPp calls in several states: one
talking to a SIPp agent, others waiting in the queue. The test reads the store itself to
see the calls noted in progress, kills the server with SIGKILL, and starts it again on the
same store: every one of those calls has exactly one record, disposition ``interrupted``,
naming the site, queue and (for the call that was talking) the agent. A clean restart
after that writes nothing more.

Callers keep their place: callers waiting when the server died who call again after the
restart go back in line with the priority and original enqueue time they had, ahead of a
caller who arrived after the restart but before them. With a shared PostgreSQL, a
surviving site adopts the dead site's calls (by itself, on the dead site's last will:
``SurvivorAdoption``) and a caller of the dead site who calls the survivor gets their
place there.
"""

from __future__ import annotations

import asyncio
import json
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
from integration.test_queue_agents import caller_xml, wait_until
from pbx.records.interruptions import record_interrupted_calls
from pbx.store import CallRecord, LiveCallRecord, Store
from peers import sipp
from peers.procs import require_binary

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix

SITE = "madrid"
WAITING_CALLERS = ("+34915550011", "+34915550012", "+34915550013")
TALKING_CALLER = "+34915550010"


def _get(server: PbxServer, path: str):
    status, body = server.http_get(path, timeout=10)
    assert status == 200, f"GET {path}: {status} {body[:300]}"
    return json.loads(body)


PRIORITY_FLOW = Path(__file__).resolve().parent / "flows" / "priority_menu.yaml"


def _site_config(accounts: list[tuple[str, str]], store_url: str, **options) -> str:
    """One server that is the whole contact center (its calls are noted without a site)."""
    config = yaml.safe_load(sa.contact_center_config(accounts, rtp_timeout=600, **options))
    config["sites"] = [{"name": SITE, "timezone": "Europe/Madrid"}]
    for agent in config["agents"]:
        agent["site"] = SITE
    config["store"]["url"] = store_url
    return yaml.safe_dump(config, sort_keys=False)


def _noted_in_progress(store_url: str, site: str | None = None) -> list[LiveCallRecord]:
    async def read() -> list[LiveCallRecord]:
        store = await Store.open(store_url)
        try:
            return await store.live_calls(site=site)
        finally:
            await store.close()
    return asyncio.run(read())


def place_talking_then_waiting(server: PbxServer, talking: str, waiting: tuple[str, ...],
                               workdir: Path, callers: list[sipp.SippProcess]) -> None:
    """SIPp callers pressing 1: the one agent takes ``talking``; ``waiting`` stay queued.
    Each is added to ``callers`` as it starts, so the test's cleanup stops them all."""
    for number in (talking, *waiting):
        callers.append(sipp.start(server.sip_address, service="100", calls=1,
                                  scenario=caller_xml(digit="1", number=number, dtmf_after_ms=800),
                                  workdir=workdir / f"caller-{number[1:]}"))
        if number == talking:
            assert wait_until(lambda: any(c["state"] == "talking"
                                          for c in _get(server, "/api/v1/calls/live")), 30)


def test_calls_in_progress_at_a_kill_9_are_recorded_as_interrupted_once(
        pbx_server, tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(1)
    [(agent, _)] = accounts
    store_url = f"sqlite+aiosqlite:///{tmp_path}/madrid.db"
    config_yaml = _site_config(accounts, store_url)
    first = pbx_server(config_yaml)
    callers: list[sipp.SippProcess] = []
    with sa.SippAgents(first.sip_address, accounts, tmp_path / "agents"):
        try:
            assert sa.wait_for_agents(first, [agent], "available")[agent] == "available"
            place_talking_then_waiting(first, TALKING_CALLER, WAITING_CALLERS, tmp_path, callers)

            def in_progress() -> dict[str, dict]:
                return {call["caller"]: call for call in _get(first, "/api/v1/calls/live")}
            assert wait_until(lambda: [in_progress().get(n, {}).get("state") for n in WAITING_CALLERS]
                              == ["queued"] * 3, 30), in_progress()
            live = in_progress()
            assert live[TALKING_CALLER]["state"] == "talking"
            # What the crash must not lose is in the store before the kill.
            # The queue is noted with the caller's entry, which the record writer may store
            # in a later batch than the call's start: wait for it too.
            assert wait_until(lambda: {(n.caller, n.queue, n.agent)
                                       for n in _noted_in_progress(store_url)}
                              == {(TALKING_CALLER, sa.QUEUE, agent)}
                              | {(n, sa.QUEUE, None) for n in WAITING_CALLERS},
                              15), _noted_in_progress(store_url)
            call_ids = {number: call["call_id"] for number, call in live.items()}

            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(10)
            for caller in callers:
                caller.stop()
            second = pbx_server(config_yaml)

            records = [r for r in _get(second, "/api/v1/calls?limit=1000")
                       if r["call_id"] in call_ids.values()]
            assert Counter(r["call_id"] for r in records) == Counter(call_ids.values())
            by_caller = {r["caller"]: r for r in records}
            for number in (TALKING_CALLER, *WAITING_CALLERS):
                record = by_caller[number]
                assert (record["disposition"], record["queue"], record["ended"]) == (
                    "interrupted", sa.QUEUE, None), record
            assert by_caller[TALKING_CALLER]["agent"] == agent
            assert by_caller[TALKING_CALLER]["answered"] is not None
            assert all(by_caller[n]["answered"] is None for n in WAITING_CALLERS)
            assert second.log_text().count("recorded as interrupted") == 4
            assert _noted_in_progress(store_url) == []

            # A clean restart finds nothing left to record: still one record per call.
            second.stop()
            third = pbx_server(config_yaml)
            records = [r for r in _get(third, "/api/v1/calls?limit=1000")
                       if r["call_id"] in call_ids.values()]
            assert Counter(r["call_id"] for r in records) == Counter(call_ids.values())
            assert "recorded as interrupted" not in third.log_text()
        finally:
            for caller in callers:
                caller.stop()


def _caller(server: PbxServer, number: str, digit: str, workdir: Path) -> sipp.SippProcess:
    """A caller who waits until the server hangs up (the agent did)."""
    return sipp.start(server.sip_address, service="100", calls=1,
                      scenario=caller_xml(digit=digit, number=number, dtmf_after_ms=800),
                      workdir=workdir)


def _queued_numbers(server: PbxServer) -> set[str]:
    return {call["caller"] for call in _get(server, "/api/v1/calls/live") if call["state"] == "queued"}


def test_callers_waiting_when_the_server_died_call_again_and_keep_their_place(
        pbx_server, tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(1)
    [(agent, _)] = accounts
    vip, plain, newcomer = "+34915550021", "+34915550022", "+34915550023"
    store_url = f"sqlite+aiosqlite:///{tmp_path}/madrid.db"
    config_yaml = _site_config(accounts, store_url, flow=PRIORITY_FLOW)
    first = pbx_server(config_yaml)
    callers: list[sipp.SippProcess] = []
    try:
        # No agent yet: both wait, the first at priority 3, the second at priority 1.
        callers.append(_caller(first, vip, "1", tmp_path / "vip-1"))
        assert wait_until(lambda: _queued_numbers(first) == {vip}, 30), _get(first, "/api/v1/calls/live")
        callers.append(_caller(first, plain, "2", tmp_path / "plain-1"))
        assert wait_until(lambda: _queued_numbers(first) == {vip, plain}, 30)
        assert wait_until(lambda: {(n.caller, n.priority) for n in _noted_in_progress(store_url)
                                   if n.enqueued_at is not None} == {(vip, 3), (plain, 1)}, 15)
        original = {n.caller: n.enqueued_at for n in _noted_in_progress(store_url)}

        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(10)
        for caller in callers:
            caller.stop()
        second = pbx_server(config_yaml)

        # A new caller queues first; then the two call again, both choosing priority 1.
        callers.append(_caller(second, newcomer, "2", tmp_path / "newcomer"))
        assert wait_until(lambda: _queued_numbers(second) == {newcomer}, 30)
        callers.append(_caller(second, vip, "2", tmp_path / "vip-2"))
        assert wait_until(lambda: _queued_numbers(second) == {newcomer, vip}, 30)
        callers.append(_caller(second, plain, "2", tmp_path / "plain-2"))
        assert wait_until(lambda: _queued_numbers(second) == {newcomer, vip, plain}, 30)
        live = {call["caller"]: call["call_id"] for call in _get(second, "/api/v1/calls/live")}

        def entered(number: str) -> dict:
            def lines() -> list[dict]:
                return [line for line in _get(second, f"/api/v1/calls/{live[number]}")["queue_log"]
                        if line["event"] == "ENTERQUEUE"]
            # The queue log reaches the store in the record writer's next batch.
            assert wait_until(lambda: lines(), 10), number
            [line] = lines()
            return line["data"]
        # The priority caller is back at priority 3 and at the head; the other, priority 1,
        # ahead of the newcomer who arrived after the restart but before they called again.
        assert (entered(newcomer)["priority"], entered(newcomer)["position"]) == (1, 1)
        assert (entered(vip)["priority"], entered(vip)["position"]) == (3, 1)
        assert (entered(plain)["priority"], entered(plain)["position"]) == (1, 2)
        log = second.log_text()
        for number in (vip, plain):
            assert f"{number} calls again after call" in log
            assert f"in line since {original[number].isoformat(timespec='seconds')}" in log
        assert f"{newcomer} calls again" not in log

        # The agent arrives and takes them in that order (hanging up after a moment each).
        with sa.SippAgents(second.sip_address, accounts, tmp_path / "agents", talk_ms=500):
            def answered() -> list[str]:
                records = [r for r in _get(second, "/api/v1/calls?limit=1000")
                           if r["call_id"] in live.values() and r["disposition"] == "answered"]
                return [r["caller"] for r in sorted(records, key=lambda r: r["answered"])]
            assert wait_until(lambda: len(answered()) == 3, 60), answered()
            assert answered() == [vip, plain, newcomer]
    finally:
        for caller in callers:
            caller.stop()


def _adopt(store_url: str, dead_site: str, survivor: str) -> list[CallRecord]:
    async def adopt() -> list[CallRecord]:
        store = await Store.open(store_url)
        try:
            return await record_interrupted_calls(store, dead_site, by=survivor)
        finally:
            await store.close()
    return asyncio.run(adopt())


def test_a_survivor_adopts_a_dead_sites_calls_and_its_waiting_caller_keeps_their_place(
        pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str,
        tmp_path: Path) -> None:
    require_binary("sipp", "sip-tester")
    accounts = sa.agent_accounts(2)
    caller_number = "+34915550031"
    name = asyncio.run(create_database(postgres_server))
    store_url = postgres_server.url(name)
    callers: list[sipp.SippProcess] = []
    servers: list[PbxServer] = []
    try:
        # Two sites of one contact center: an agent each (not registered: callers wait), one
        # PostgreSQL database, one broker.
        config = yaml.safe_load(_site_config(accounts, store_url, flow=PRIORITY_FLOW))
        config["sites"].append({"name": "bogota", "timezone": "America/Bogota"})
        config["agents"][1]["site"] = "bogota"
        config["bus"] = {"url": mqtt_url, "topic_prefix": bus_prefix, "heartbeat_interval": 0.5}

        def start_site(site: str) -> PbxServer:
            low, high = random_port_range(200)  # each site its own RTP ports
            config["media"].update(port_min=low, port_max=high)
            return pbx_server(yaml.safe_dump(config, sort_keys=False), extra_args=("--site", site))
        madrid = start_site(SITE)
        bogota = start_site("bogota")
        servers += [madrid, bogota]
        callers.append(_caller(madrid, caller_number, "1", tmp_path / "at-madrid"))
        assert wait_until(lambda: _queued_numbers(madrid) == {caller_number}, 30)
        assert wait_until(lambda: [(n.caller, n.priority, n.site)
                                   for n in _noted_in_progress(store_url, SITE)]
                          == [(caller_number, 3, SITE)], 15)
        [madrid_call] = [c["call_id"] for c in _get(madrid, "/api/v1/calls/live")]

        os.kill(madrid.pid, signal.SIGKILL)
        madrid.process.wait(10)
        callers[0].stop()
        # Bogota hears madrid's last will and adopts its calls by itself; an adoption
        # after that finds none left.
        def adopted() -> list[dict]:
            return [r for r in _get(bogota, "/api/v1/calls?limit=1000") if r["call_id"] == madrid_call]
        assert wait_until(lambda: adopted() != [], 30)
        assert _adopt(store_url, SITE, "bogota") == []
        [record] = adopted()
        assert (record["site"], bogota.log_text().count("(adopted by bogota)")) == (SITE, 1)
        assert (record["disposition"], record["queue"], record["caller"]) == (
            "interrupted", sa.QUEUE, caller_number)

        # The caller calls again, reaches bogota, picks the plain option: priority 3 still.
        callers.append(_caller(bogota, caller_number, "2", tmp_path / "at-bogota"))
        assert wait_until(lambda: _queued_numbers(bogota) == {caller_number}, 30)
        [again] = [c["call_id"] for c in _get(bogota, "/api/v1/calls/live")]
        def entered() -> list[dict]:
            return [line for line in _get(bogota, f"/api/v1/calls/{again}")["queue_log"]
                    if line["event"] == "ENTERQUEUE"]
        assert wait_until(entered, 15), "the call waits but its queue log has no ENTERQUEUE"
        [line] = entered()
        assert line["data"]["priority"] == 3
        assert f"after call {madrid_call} was interrupted at site {SITE}" in bogota.log_text()
    finally:
        for caller in callers:
            caller.stop()
        for server in servers:
            server.stop()  # before its database goes
        asyncio.run(drop_database(postgres_server, name))
