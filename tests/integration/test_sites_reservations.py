"""Another site's reservation of this site's agent, over the real Mosquitto.

A real `pbx serve --site bogota` (shared PostgreSQL, the local broker) decides requests
that madrid sends on the bus; madrid here is what a madrid server runs (`SiteLink`: its
router, loaded with the shared configuration, and its site bus), driven by the test.
Only bogota decides: its agent turns reserved and back to available when madrid cancels,
or when madrid's call never comes; a request nobody free can take, or for a queue that
does not allow bogota's agents, is refused with the reason. Madrid asks only the sites
its queue allows that have a matching agent available.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from events import EventBus
from integration import mosquitto_fixture, postgres_fixture
from integration.call_peers import Caller, agent_state, offer, wait_for
from integration.server_fixture import parse_prometheus
from integration.test_sites import (
    BOGOTA_AGENT,
    bus_view,
    register,
    shared_database,  # noqa: F401 - a fixture
    site_up,
    sites_config,
    start_site,
)
from pbx.bus.codec import CallerContext, ReservationOutcome
from pbx.configuration.server import build_config
from pbx.site_link import SiteLink
from router import Router
from settings.located_yaml import load_yaml

mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix
postgres_server = postgres_fixture.postgres_server

CALLER = CallerContext(ivr_path=("language", "menu", "billing"), language="es", priority=2,
                       enqueued_at=time.time() - 30)


def billing_served_by_bogota_too(config: str) -> str:
    """The demo's billing queue lets bogota's agents take calls waiting at madrid."""
    document = yaml.safe_load(config)
    next(q for q in document["queues"] if q["name"] == "billing")["sites"] = ["bogota"]
    return yaml.safe_dump(document, sort_keys=False)


def madrid_link(config: str, tmp_path: Path) -> SiteLink:
    """What a madrid server builds: its configuration, its router, its link to the sites."""
    server_config = build_config(load_yaml(config, "sites.yaml"), var_dir=tmp_path,
                                 base_dir=None, site="madrid")
    router = Router(time.monotonic, wall_clock=time.time)
    for queue in server_config.contact_center.queues:
        router.upsert_queue(queue)
    for record in server_config.contact_center.agents:
        router.upsert_agent(record.profile)
    return SiteLink(server_config, router, EventBus())


@pytest.fixture
def bogota_and_madrids_bus(shared_database, mqtt_url, bus_prefix, pbx_server):  # noqa: F811
    config = billing_served_by_bogota_too(sites_config(mqtt_url, bus_prefix, shared_database))
    bogota = start_site(pbx_server, config, "bogota")
    return bogota, config


def invite_with(server, agent: str, reservation_id: str, site: str) -> int:
    """The final status of an INVITE to ``agent`` carrying a site's reservation."""
    caller = Caller(server, agent)
    try:
        caller.invite(offer(), headers=(("X-Centralita-Reservation", reservation_id),
                                        ("X-Centralita-Site", site)))
        return caller.final().status
    finally:
        caller.close()


def _break(server, extension: str, reason: str) -> None:
    request = urllib.request.Request(server.http_url + f"/api/v1/agents/{extension}/break",
                                     data=json.dumps({"reason": reason}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200


def test_bogota_reserves_its_agent_for_madrid_releases_it_on_cancel_and_expiry_and_refuses(
        bogota_and_madrids_bus, tmp_path) -> None:
    bogota, config = bogota_and_madrids_bus
    phone, status = register(bogota, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: agent_state(bogota, "1006") == "available", 5)

    async def as_madrid() -> dict[str, object]:
        link = madrid_link(config, tmp_path)
        madrid = link.bus
        await link.start()
        seen: dict[str, object] = {}
        loop = asyncio.get_running_loop()

        async def until(check, seconds: float) -> bool:
            deadline = loop.time() + seconds
            while loop.time() < deadline:
                if await asyncio.to_thread(check):
                    return True
                await asyncio.sleep(0.05)
            return False

        try:
            assert await until(lambda: madrid.health.is_up("bogota"), 10)
            assert await until(lambda: site_up(bogota, "madrid"), 10), bus_view(bogota)
            assert await until(lambda: link.sites_to_ask("billing", "es") == ["bogota"], 10)
            # Madrid asks only where the queue allows and an agent could take the call.
            seen["support"] = link.sites_to_ask("support", "es")  # sites: [] (madrid only)
            seen["english"] = link.sites_to_ask("billing", "en")  # 1006 speaks Spanish only
            # 1. Reserved: bogota's router picks its free billing agent; released on cancel.
            first = await link.reserve_elsewhere("madrid-call-1", "billing", CALLER, 5.0)
            seen["first"] = first
            assert first is not None and first.site == "bogota" and first.agent == "1006", first
            assert await asyncio.to_thread(agent_state, bogota, "1006") == "reserved"
            # Without a password, bogota takes a call for its agent only with a reservation
            # it made for that very agent and site: a made-up one, or madrid's real one
            # presented for another agent or by another site, is refused.
            seen["forged"] = await asyncio.to_thread(
                invite_with, bogota, "1006", "made-up", "madrid")
            seen["other_agent"] = await asyncio.to_thread(
                invite_with, bogota, "1008", first.reservation_id, "madrid")
            seen["other_site"] = await asyncio.to_thread(
                invite_with, bogota, "1006", first.reservation_id, "bogota")
            # Madrid's view follows bogota's word: nobody free there now, so nobody to ask.
            assert await until(lambda: link.sites_to_ask("billing", "es") == [], 5)
            madrid.cancel_reservation("bogota", first.reservation_id, "caller hung up")
            assert await until(lambda: agent_state(bogota, "1006") == "available", 5)
            # The same cancel again (the asker's timeout crossing its answer) changes nothing.
            madrid.cancel_reservation("bogota", first.reservation_id, "timed out")
            # 2. Reserved, and the call never comes: bogota's reservation timer lets go.
            second = await madrid.reserve("bogota", "madrid-call-2", "billing", CALLER, 5.0)
            seen["second"] = second
            assert second.reserved and second.agent == "1006", second
            assert await asyncio.to_thread(agent_state, bogota, "1006") == "reserved"
            assert await until(lambda: agent_state(bogota, "1006") == "available", 30)
            # 3. Refusals: a queue that keeps its calls to madrid's agents, a queue bogota
            # lacks, and nobody free.
            seen["not_allowed"] = await madrid.reserve("bogota", "madrid-call-3", "support",
                                                       CALLER, 5.0)
            seen["unknown"] = await madrid.reserve("bogota", "madrid-call-4", "nope", CALLER, 5.0)
            await asyncio.to_thread(_break, bogota, "1006", "lunch")
            seen["refused"] = await madrid.reserve("bogota", "madrid-call-5", "billing", CALLER,
                                                   5.0)
            assert await until(lambda: link.sites_to_ask("billing", "es") == [], 5)
            seen["elsewhere"] = await link.reserve_elsewhere("madrid-call-6", "billing", CALLER,
                                                             5.0)
        finally:
            await link.close()
        return seen

    seen = asyncio.run(as_madrid())
    assert seen["forged"] == seen["other_agent"] == seen["other_site"] == 403, seen
    assert seen["support"] == [] and seen["english"] == []
    not_allowed = seen["not_allowed"]
    assert not_allowed.outcome is ReservationOutcome.REFUSED, not_allowed
    assert "does not allow site bogota" in not_allowed.reason
    unknown = seen["unknown"]
    assert unknown.outcome is ReservationOutcome.REFUSED and "no queue 'nope'" in unknown.reason
    refused = seen["refused"]
    assert refused.outcome is ReservationOutcome.REFUSED, refused
    assert "no free agent qualifies" in refused.reason
    assert seen["elsewhere"] is None  # nobody free anywhere: the call keeps waiting at madrid
    assert agent_state(bogota, "1006") == "break"
    # Bogota counts what it decided: 2 reserved, 3 refused (support, nope, billing while on
    # break: reserve_elsewhere did not even ask), 1 released by madrid's cancel (the second
    # cancel and the expiry are not).
    metrics = parse_prometheus(bogota.http_get("/metrics")[1])

    def counted(queue: str, outcome: str) -> float:
        return metrics.get("centralita_foreign_reservations_total{asking_site=\"madrid\","
                           f"outcome=\"{outcome}\",queue=\"{queue}\"}}", 0)

    assert counted("billing", "reserved") == 2 and counted("billing", "released") == 1, metrics
    assert counted("billing", "refused") == 1
    assert counted("support", "refused") == 1 and counted("nope", "refused") == 1
    assert bogota.alive
    phone.close()
