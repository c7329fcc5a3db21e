"""Another site's reservation of this site's agent, over the real Mosquitto.

A real `pbx serve --site bogota` (shared PostgreSQL, the local broker) decides requests
that madrid sends on the bus; madrid here is the bus client a madrid server runs
(`MqttSiteBus`), driven by the test. Only bogota decides: its agent turns reserved and
back to available when madrid cancels, or when madrid's call never comes; a request
nobody free can take is refused with the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration.call_peers import agent_state, wait_for
from integration.test_sites import (
    BOGOTA_AGENT,
    bus_view,
    register,
    shared_database,  # noqa: F401 - a fixture
    site_up,
    sites_config,
    start_site,
)
from pbx.bus import MqttSiteBus, Topics
from pbx.bus.codec import CallerContext, ReservationOutcome

mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix
postgres_server = postgres_fixture.postgres_server

CALLER = CallerContext(ivr_path=("language", "menu", "billing"), language="es", priority=2,
                       enqueued_at=time.time() - 30)


def _agent_sites(config: str) -> dict[str, str]:
    return {agent["extension"]: agent["site"] for agent in yaml.safe_load(config)["agents"]}


@pytest.fixture
def bogota_and_madrids_bus(shared_database, mqtt_url, bus_prefix, pbx_server):  # noqa: F811
    config = sites_config(mqtt_url, bus_prefix, shared_database)
    bogota = start_site(pbx_server, config, "bogota")
    return bogota, config


def _break(server, extension: str, reason: str) -> None:
    request = urllib.request.Request(server.http_url + f"/api/v1/agents/{extension}/break",
                                     data=json.dumps({"reason": reason}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200


def test_bogota_reserves_its_agent_for_madrid_releases_it_on_cancel_and_expiry_and_refuses(
        bogota_and_madrids_bus, mqtt_url, bus_prefix) -> None:
    bogota, config = bogota_and_madrids_bus
    phone, status = register(bogota, *BOGOTA_AGENT)
    assert status == 200
    assert wait_for(lambda: agent_state(bogota, "1006") == "available", 5)

    async def as_madrid() -> dict[str, object]:
        madrid = MqttSiteBus(mqtt_url, "madrid", ("madrid", "bogota"), _agent_sites(config),
                             topics=Topics(bus_prefix), heartbeat_interval=0.5)
        await madrid.start()
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
            # 1. Reserved: bogota's router picks its free billing agent; released on cancel.
            first = await madrid.reserve("bogota", "madrid-call-1", "billing", CALLER, 5.0)
            seen["first"] = first
            assert first.reserved and first.agent == "1006", first
            assert await asyncio.to_thread(agent_state, bogota, "1006") == "reserved"
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
            # 3. Nobody free: refused, with bogota's reason; and a queue bogota lacks.
            await asyncio.to_thread(_break, bogota, "1006", "lunch")
            refused = await madrid.reserve("bogota", "madrid-call-3", "billing", CALLER, 5.0)
            seen["refused"] = refused
            unknown = await madrid.reserve("bogota", "madrid-call-4", "nope", CALLER, 5.0)
            seen["unknown"] = unknown
        finally:
            await madrid.close()
        return seen

    seen = asyncio.run(as_madrid())
    refused = seen["refused"]
    assert refused.outcome is ReservationOutcome.REFUSED, refused
    assert "no free agent qualifies" in refused.reason
    unknown = seen["unknown"]
    assert unknown.outcome is ReservationOutcome.REFUSED and "no queue 'nope'" in unknown.reason
    assert agent_state(bogota, "1006") == "break"
    assert bogota.alive
    phone.close()
