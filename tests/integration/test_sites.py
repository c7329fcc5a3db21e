"""Several sites, each its own `pbx serve --site`, sharing the real Mosquitto and PostgreSQL.

Two real server processes on loopback (madrid and bogota, one configuration file): each
publishes its own agents' state on the bus and sees the other's (read only); an agent's
phone registers with its own site only; a site killed with -9 is marked down by the other
through its last will, and an operator's override reaches every site.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration.call_peers import Caller, agent_state, random_port_range, wait_for
from integration.server_fixture import default_config_yaml, parse_prometheus
from peers import raw

mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix
private_mosquitto = mosquitto_fixture.private_mosquitto
postgres_server = postgres_fixture.postgres_server

BOGOTA_AGENT = ("1006", "demo1006")  # Fernando, billing, of site bogota in the demo
MADRID_AGENT = ("1001", "demo1001")  # Ana, of site madrid


@pytest.fixture
def shared_database(postgres_server) -> Iterator[str]:
    name = asyncio.run(postgres_fixture.create_database(postgres_server))
    try:
        yield postgres_server.url(name)
    finally:
        asyncio.run(postgres_fixture.drop_database(postgres_server, name))


def sites_config(broker: str, prefix: str, database: str) -> str:
    """The demo contact center (agents at madrid and bogota), shared by both sites."""
    return default_config_yaml(bus={"url": broker, "topic_prefix": prefix,
                                    "heartbeat_interval": 0.5},
                               store={"url": database})


def start_site(pbx_server, config: str, site: str, rtp_ports: int = 200):
    low, high = random_port_range(rtp_ports)  # each site its own RTP ports
    media = yaml.safe_load(config)
    media["media"].update(port_min=low, port_max=high)
    return pbx_server(yaml.safe_dump(media, sort_keys=False), extra_args=("--site", site))


def bus_view(server) -> dict:
    bus = server.healthz()["bus"]
    assert bus is not None, "the server is not one site of several"
    return bus


def site_up(server, site: str) -> bool:
    return bus_view(server)["sites"][site]["up"]


def agent(server, extension: str) -> dict:
    status, body = server.http_get(f"/api/v1/agents/{extension}")
    assert status == 200, body
    return json.loads(body)


def put(server, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(server.http_url + path, data=json.dumps(body).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored_registrations(database_url: str, user: str) -> int:
    import asyncpg

    async def count() -> int:
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return await connection.fetchval('SELECT count(*) FROM registrations WHERE "user" = $1', user)
        finally:
            await connection.close()

    return asyncio.run(count())


def register(server, user: str, password: str) -> tuple[raw.UdpPeer, int | None]:
    phone = raw.UdpPeer((server.host, server.sip_port))
    result = raw.register(phone, user, password, expires=300,
                          contact=f"<sip:{user}@{phone.local[0]}:{phone.local[1]}>")
    return phone, None if result.final is None else result.final.status


@pytest.fixture
def two_sites(shared_database, mqtt_url, bus_prefix, pbx_server):
    # The database is asked for first, so that it outlives the servers (fixtures end in
    # reverse order).
    config = sites_config(mqtt_url, bus_prefix, shared_database)
    madrid = start_site(pbx_server, config, "madrid")
    bogota = start_site(pbx_server, config, "bogota")
    assert wait_for(lambda: site_up(madrid, "bogota") and site_up(bogota, "madrid"), 10), \
        (bus_view(madrid), bus_view(bogota))
    return madrid, bogota


def test_each_site_owns_its_agents_and_sees_the_others_through_the_bus(two_sites) -> None:
    madrid, bogota = two_sites
    assert bus_view(madrid)["connected"] and bus_view(bogota)["connected"]
    # The bogota agent's phone registers with bogota, and is logged in there (auto_login).
    phone, status = register(bogota, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: agent_state(bogota, "1006") == "available", 5)
    # Madrid sees it, read only, from bogota's retained state on the bus.
    assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "available", 5), \
        bus_view(madrid)
    # ...and bogota sees madrid's agents, offline until their phones register with madrid.
    assert bus_view(bogota)["remote_agents"].get("1001") == "offline"
    # A phone of a bogota agent is not registered at madrid: madrid does not serve it.
    stray, stray_status = register(madrid, *BOGOTA_AGENT)
    assert stray_status != 200
    assert agent_state(madrid, "1006") == "offline"
    # Madrid's API shows the agent as bogota publishes it; bogota's own view has no "remote".
    remote = agent(madrid, "1006")["remote"]
    assert remote["site"] == "bogota" and remote["presence"] == "available" and remote["site_up"]
    assert agent(bogota, "1006")["remote"] is None and agent(madrid, "1001")["remote"] is None
    # A state change at the owner reaches the other site.
    request = urllib.request.Request(bogota.http_url + "/api/v1/agents/1006/break",
                                     data=json.dumps({"reason": "lunch"}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200
    assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "break", 5)
    metrics = parse_prometheus(madrid.http_get("/metrics")[1])
    assert metrics['centralita_bus_connected{site="madrid"}'] == 1
    assert metrics['centralita_site_up{site="bogota"}'] == 1
    assert metrics['centralita_remote_agents{presence="break",site="bogota"}'] == 1
    phone.close()
    stray.close()


def test_each_call_record_in_the_shared_database_names_the_site_that_handled_it(two_sites) -> None:
    madrid, bogota = two_sites
    records = {}
    for site, server in (("madrid", madrid), ("bogota", bogota)):
        caller = Caller(server, "101")  # the greeting
        caller.answered()
        caller.bye()
        records[site] = caller.dialog.call_id
        caller.close()

    def record(server, call_id: str) -> dict | None:
        status, body = server.http_get(f"/api/v1/calls/{call_id}")
        found = json.loads(body) if status == 200 else None
        return found if found and found.get("status") != "live" else None

    # Both sites read every record from the one database, each naming its own site.
    for reader in (madrid, bogota):
        assert wait_for(lambda reader=reader: all(record(reader, call_id) for call_id in records.values()), 15)
        assert record(reader, records["madrid"])["site"] == "madrid"
        assert record(reader, records["bogota"])["site"] == "bogota"


def test_forged_and_malformed_bus_messages_are_ignored_and_change_nothing(
        two_sites, mqtt_url, bus_prefix) -> None:
    import aiomqtt

    madrid, bogota = two_sites
    phone, status = register(madrid, *MADRID_AGENT)
    assert status == 200
    assert wait_for(lambda: bus_view(bogota)["remote_agents"].get("1001") == "available", 5)
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    forged = [
        # bogota "claiming" madrid's agent 1001 as on a call
        (f"{bus_prefix}/v1/sites/bogota/agents/1001",
         {"schema": 1, "site": "bogota", "agent": "1001", "presence": "on_call", "since": 1.0}),
        # madrid's topic, another schema version
        (f"{bus_prefix}/v1/sites/madrid/agents/1001",
         {"schema": 2, "site": "madrid", "agent": "1001", "presence": "break", "since": 1.0}),
        # a site nobody configured
        (f"{bus_prefix}/v1/sites/lima/status",
         {"schema": 1, "site": "lima", "state": "online", "at": 1.0, "heartbeat_interval": 1.0,
          "reason": ""}),
        (f"{bus_prefix}/v1/sites/madrid/heartbeat", "not json"),
    ]

    async def publish() -> None:
        async with aiomqtt.Client(host, int(port), identifier="forger") as client:
            for topic, payload in forged:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                await client.publish(topic, data.encode(), qos=1)

    asyncio.run(publish())

    def ignored(server) -> int:
        return sum(bus_view(server)["ignored_messages"].values())

    # bogota ignores madrid's message of schema 2, the unknown site and the garbage beat (the
    # forged message on its own topic is its own echo); madrid ignores the claim on its
    # agent and the unknown site.
    assert wait_for(lambda: ignored(bogota) >= 3 and ignored(madrid) >= 2, 5), \
        (bus_view(bogota)["ignored_messages"], bus_view(madrid)["ignored_messages"])
    assert "refused message" in bus_view(madrid)["ignored_messages"]
    view = bus_view(bogota)
    assert view["remote_agents"]["1001"] == "available"
    assert set(view["sites"]) == {"madrid", "bogota"} and site_up(bogota, "madrid")
    assert bogota.alive and madrid.alive
    assert agent_state(madrid, "1001") == "available"
    phone.close()


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_a_site_killed_with_sigkill_is_marked_down_by_the_other_at_once(two_sites) -> None:
    madrid, bogota = two_sites
    assert agent(madrid, "1006")["live"]["site_healthy"] is True
    killed = time.monotonic()
    bogota.process.kill()  # SIGKILL: no goodbye, the broker publishes bogota's last will
    bogota.process.wait(5)
    assert wait_for(lambda: not site_up(madrid, "bogota"), 3.0), bus_view(madrid)
    seen_down = time.monotonic() - killed
    # Madrid's router no longer offers bogota's agents; madrid's own stay healthy.
    assert agent(madrid, "1006")["live"]["site_healthy"] is False
    assert agent(madrid, "1001")["live"]["site_healthy"] is True
    metrics = parse_prometheus(madrid.http_get("/metrics")[1])
    assert metrics['centralita_site_up{site="bogota"}'] == 0
    assert metrics['centralita_site_healthy{site="bogota"}'] == 0
    print(f"bogota seen down by madrid {seen_down * 1000:.0f} ms after kill -9")


def test_a_site_restarted_after_sigkill_gets_its_agents_back_from_the_shared_database(
        shared_database, two_sites, pbx_server) -> None:
    madrid, bogota = two_sites
    phone, status = register(bogota, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "available", 5)
    # Registrations are written in the background: the kill comes once this one is stored.
    assert wait_for(lambda: stored_registrations(shared_database, "1006") == 1, 10)
    bogota.process.kill()
    bogota.process.wait(5)
    assert wait_for(lambda: not site_up(madrid, "bogota"), 3.0)
    # The same site again: its agent's registration comes back from the shared database
    # (the phone does not re-register), and the other site sees it available again.
    again = start_site(pbx_server, bogota.config_path.read_text(), "bogota")
    assert wait_for(lambda: agent_state(again, "1006") == "available", 10)
    assert wait_for(lambda: site_up(madrid, "bogota")
                    and bus_view(madrid)["remote_agents"].get("1006") == "available", 10), bus_view(madrid)
    # Madrid, restarted too, does not take bogota's agent's registration for its own.
    madrid.process.kill()
    madrid.process.wait(5)
    madrid = start_site(pbx_server, madrid.config_path.read_text(), "madrid")
    assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "available", 10)
    assert agent_state(madrid, "1006") == "offline"
    assert madrid.healthz()["registered_contacts"] == 0
    phone.close()


def test_an_operator_forces_a_site_down_and_up_on_every_site(two_sites) -> None:
    madrid, bogota = two_sites
    status, body = put(madrid, "/api/v1/sites/bogota/override", {"forced": "down", "by": "ana"})
    assert status == 200 and body == {"site": "bogota", "forced": "down", "by": "ana", "up": False}
    # Published: bogota hears that every site must treat it as down.
    assert wait_for(lambda: bus_view(bogota)["sites"]["bogota"]["forced"] == "down", 5)
    assert not site_up(bogota, "bogota")
    assert agent(madrid, "1006")["live"]["site_healthy"] is False
    status, body = put(madrid, "/api/v1/sites/bogota/override", {"forced": None})
    assert status == 200 and body["up"] is True
    assert wait_for(lambda: site_up(bogota, "bogota") and bus_view(bogota)["sites"]["bogota"]["forced"] is None, 5)
    assert agent(madrid, "1006")["live"]["site_healthy"] is True
    status, body = put(madrid, "/api/v1/sites/atlantis/override", {"forced": "down"})
    assert status == 404, body
    status, body = put(madrid, "/api/v1/sites/bogota/override", {"forced": "sideways"})
    assert status in (400, 422), body


def test_one_server_has_no_bus_and_refuses_an_override(pbx_server) -> None:
    server = pbx_server()
    assert server.healthz()["bus"] is None
    status, body = put(server, "/api/v1/sites/bogota/override", {"forced": "down"})
    assert status == 409 and body["error"]["code"] == "not_multi_site"
    assert agent_state(server, "1006") == "offline"  # every agent is this server's to serve
    phone, status = register(server, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: agent_state(server, "1006") == "available", 5)
    phone.close()


def test_broker_down_each_site_keeps_serving_its_own_agents_and_resynchronises(
        shared_database, private_mosquitto, bus_prefix, pbx_server) -> None:
    config = sites_config(private_mosquitto.url, bus_prefix, shared_database)
    madrid = start_site(pbx_server, config, "madrid")
    bogota = start_site(pbx_server, config, "bogota")
    assert wait_for(lambda: site_up(madrid, "bogota") and site_up(bogota, "madrid"), 10)
    private_mosquitto.stop()
    assert wait_for(lambda: not bus_view(madrid)["connected"] and not bus_view(bogota)["connected"], 5)
    # Still serving: bogota's agent registers and is logged in while the broker is away.
    phone, status = register(bogota, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: agent_state(bogota, "1006") == "available", 5)
    assert bogota.alive and madrid.alive
    metrics = parse_prometheus(madrid.http_get("/metrics")[1])
    assert metrics['centralita_bus_connected{site="madrid"}'] == 0
    private_mosquitto.start()
    # Reconnected (backoff up to 5 s): the broker forgot everything, the sites republish.
    assert wait_for(lambda: bus_view(madrid)["connected"] and bus_view(bogota)["connected"], 15)
    assert wait_for(lambda: site_up(madrid, "bogota")
                    and bus_view(madrid)["remote_agents"].get("1006") == "available", 10), bus_view(madrid)
    phone.close()


def test_two_sites_started_at_the_same_instant_on_a_fresh_database_both_come_up(
        shared_database, tmp_path, mqtt_url, bus_prefix) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from integration.server_fixture import start_pbx

    config = sites_config(mqtt_url, bus_prefix, shared_database)

    def start(site: str):
        low, high = random_port_range(200)
        document = yaml.safe_load(config)
        document["media"].update(port_min=low, port_max=high)
        return start_pbx(tmp_path / site, config_yaml=yaml.safe_dump(document, sort_keys=False),
                         extra_args=("--site", site))

    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start, site) for site in ("madrid", "bogota")]
    started = [future.result() for future in starting if future.exception() is None]
    try:
        assert len(started) == 2, [str(future.exception()) for future in starting]
        madrid, bogota = started
        assert wait_for(lambda: site_up(madrid, "bogota") and site_up(bogota, "madrid"), 10)
        status, body = madrid.http_get("/api/v1/agents")
        configured = {str(a["extension"]) for a in yaml.safe_load(config)["agents"]}
        assert status == 200 and {a["extension"] for a in json.loads(body)} == configured
    finally:
        for server in started:
            server.stop()


def sipp_agents_at_sites(pbx_server, accounts: dict, broker: str, prefix: str, database: str,
                         workdir, queue_sites: str | list[str] | None = None):
    """Two sites (madrid, bogota) of one contact center whose agents are SIPp phones
    (``accounts``: site -> SIPp agent accounts, each registered with its own site), both
    up, the agents started: (servers, agents) by site. ``queue_sites``: the queue's
    ``sites`` (None: each site's callers for its own agents only)."""
    from integration import sipp_agents as sa

    config = yaml.safe_load(sa.contact_center_config(accounts["madrid"] + accounts["bogota"]))
    config["sites"] = [{"name": site, "timezone": "UTC"} for site in accounts]
    site_of = {user: site for site, users in accounts.items() for user, _ in users}
    for item in config["agents"]:
        item["site"] = site_of[item["extension"]]
    if queue_sites is not None:
        config["queues"][0]["sites"] = queue_sites
    config.update(bus={"url": broker, "topic_prefix": prefix, "heartbeat_interval": 0.5},
                  store={"url": database})
    text = yaml.safe_dump(config, sort_keys=False)
    # Every SIPp caller comes from one address: the per-source cap is half the RTP ports.
    servers = {site: start_site(pbx_server, text, site, rtp_ports=2000) for site in accounts}
    assert wait_for(lambda: site_up(servers["madrid"], "bogota") and site_up(servers["bogota"], "madrid"), 10)
    agents = {site: sa.SippAgents(servers[site].sip_address, accounts[site], workdir / f"agents-{site}",
                                  talk_ms=1000) for site in accounts}
    for group in agents.values():
        group.start()
    return servers, agents


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_a_burst_over_both_sites_with_agents_split_never_double_offers_an_agent(
        shared_database, mqtt_url, bus_prefix, pbx_server, tmp_path) -> None:
    """100 callers at each site at once, 10 SIPp agents per site registered with their own
    site: every call completes, each site's agents take only their own site's calls, no
    agent ever has two calls, and each site sees the other's agents available afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from integration import sipp_agents as sa
    from peers import sipp
    from peers.procs import require_binary

    require_binary("sipp", "sip-tester")
    per_site, callers_per_site = 10, 100
    accounts = {"madrid": sa.agent_accounts(per_site, first=2001),
                "bogota": sa.agent_accounts(per_site, first=3001)}
    servers, agents = sipp_agents_at_sites(pbx_server, accounts, mqtt_url, bus_prefix,
                                           shared_database, tmp_path)
    try:
        for site, group in agents.items():
            states = sa.wait_for_agents(servers[site], group.users, "available", timeout=30)
            assert all(states.get(user) == "available" for user in group.users), states

        def burst(site: str):
            return sipp.run(servers[site].sip_address, scenario=sa.CALLER_WAIT_BYE_XML, service="100",
                            calls=callers_per_site, rate=callers_per_site, limit=callers_per_site,
                            trace_msg=True, workdir=tmp_path / f"callers-{site}", timeout=240)

        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(accounts, pool.map(burst, accounts), strict=True))
        for group in agents.values():
            assert wait_for(lambda group=group: group.stats().get("SuccessfulCall(C)", 0)
                            + group.stats().get("FailedCall(C)", 0) >= callers_per_site, 30), \
                (group.stats(), [r.describe() for r in results.values()])
            assert group.alive(), group.describe()
    finally:
        for group in agents.values():
            group.stop()
    for site, callers in results.items():
        assert callers.returncode == 0 and callers.successful == callers_per_site, callers.describe()
        load = agents[site].load()
        assert sum(load.offered.values()) == callers_per_site, dict(load.offered)
        assert set(load.offered) <= set(agents[site].users)  # only this site's agents
        assert not load.overlaps and load.worst == 1, (load.overlaps[:10], load.max_concurrent)
    # One writer per agent: after the burst each site sees the other's agents available.
    for site, other in (("madrid", "bogota"), ("bogota", "madrid")):
        view = bus_view(servers[site])["remote_agents"]
        assert wait_for(lambda view_of=servers[site], other=other: all(
            bus_view(view_of)["remote_agents"].get(user) == "available"
            for user in agents[other].users), 10), view


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_a_burst_crossing_sites_with_the_broker_restarted_mid_run_converges(
        shared_database, private_mosquitto, bus_prefix, pbx_server, tmp_path) -> None:
    """200 callers, 100 at each site at once, with few agents at madrid (4) and many at
    bogota (12), the queue open to any site's agents: madrid's backlog is served by
    bogota's agents too. The broker is stopped 2 s into the burst and started again 2 s
    later. Every caller is answered, no agent ever has two calls at once, some of madrid's
    callers were answered by bogota's agents, and afterwards every agent is available at
    its own site and as the other site sees it (nothing stuck reserved or on a call)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from integration import sipp_agents as sa
    from peers import sipp
    from peers.procs import require_binary

    require_binary("sipp", "sip-tester")
    callers_per_site = 100
    accounts = {"madrid": sa.agent_accounts(4, first=2001),
                "bogota": sa.agent_accounts(12, first=3001)}
    servers, agents = sipp_agents_at_sites(pbx_server, accounts, private_mosquitto.url, bus_prefix,
                                           shared_database, tmp_path, queue_sites="any")
    restarted = threading.Event()

    def restart_broker() -> None:
        time.sleep(2.0)
        private_mosquitto.stop()
        time.sleep(2.0)
        private_mosquitto.start()
        restarted.set()

    try:
        for site, group in agents.items():
            states = sa.wait_for_agents(servers[site], group.users, "available", timeout=30)
            assert all(states.get(user) == "available" for user in group.users), states
        assert wait_for(lambda: all(bus_view(servers["madrid"])["remote_agents"].get(user) == "available"
                                    for user in agents["bogota"].users), 10)

        def burst(site: str):
            return sipp.run(servers[site].sip_address, scenario=sa.CALLER_WAIT_BYE_XML, service="100",
                            calls=callers_per_site, rate=callers_per_site, limit=callers_per_site,
                            trace_msg=True, workdir=tmp_path / f"callers-{site}", timeout=240)

        breaker = threading.Thread(target=restart_broker, daemon=True)
        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(burst, site) for site in accounts]
            breaker.start()
            results = dict(zip(accounts, [future.result() for future in running], strict=True))
        breaker.join(15)
        assert restarted.is_set(), "the broker was not started again"
        total = 2 * callers_per_site
        assert wait_for(lambda: sum(group.stats().get("SuccessfulCall(C)", 0)
                                    + group.stats().get("FailedCall(C)", 0)
                                    for group in agents.values()) >= total, 30), \
            ([group.stats() for group in agents.values()], [r.describe() for r in results.values()])
        for group in agents.values():
            assert group.alive(), group.describe()
    finally:
        for group in agents.values():
            group.stop()
    for callers in results.values():
        assert callers.returncode == 0 and callers.successful == callers_per_site, callers.describe()
    loads = {site: group.load() for site, group in agents.items()}
    assert sum(sum(load.offered.values()) for load in loads.values()) == 2 * callers_per_site, \
        {site: dict(load.offered) for site, load in loads.items()}
    for site, load in loads.items():
        assert set(load.offered) <= set(agents[site].users)  # rung by their own site only
        assert not load.overlaps and load.worst == 1, (site, load.overlaps[:10], load.max_concurrent)
    # Madrid's 4 agents could not take its 100 callers alone: bogota's took the rest.
    assert sum(loads["bogota"].offered.values()) > callers_per_site, dict(loads["bogota"].offered)
    status, body = servers["madrid"].http_get("/api/v1/queues/bench/stats")
    assert status == 200 and json.loads(body)["answered"] == callers_per_site, body
    # Converged: the broker is back, each site up at the other, every agent free (the
    # SIPp agents unregistered at stop: offline) at its own site and in the other's view.
    for site, other in (("madrid", "bogota"), ("bogota", "madrid")):
        assert wait_for(lambda site=site, other=other: bus_view(servers[site])["connected"]
                        and site_up(servers[site], other), 15), bus_view(servers[site])
        assert wait_for(lambda site=site: all(
            sa.agent_states(servers[site])[user] in ("available", "offline")
            for user in agents[site].users), 15), sa.agent_states(servers[site])
        assert wait_for(lambda site=site, other=other: all(
            bus_view(servers[site])["remote_agents"].get(user) == sa.agent_states(servers[other]).get(user)
            for user in agents[other].users), 15), (bus_view(servers[site])["remote_agents"],
                                                    sa.agent_states(servers[other]))
        assert held_nothing(servers[site]), servers[site].healthz()["resources"]


def held_nothing(server) -> bool:
    from integration.call_peers import held

    return wait_for(lambda: not held(server), 15)
