"""A surviving site records a dead site's calls in progress when the bus brings its last
will, and only then; calls its restarted server noted after the death are left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events import EventBus
from events.sites import SiteDown
from pbx.records.interruptions import LAST_WILL, SurvivorAdoption
from pbx.store import LiveCallRecord, Store

DEATH = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    yield opened
    await opened.close()


def noted(call_id: str, site: str, started: datetime) -> LiveCallRecord:
    return LiveCallRecord(call_id, "+34915550000", "100", started, "application", site=site)


async def adopted_after(store: Store, event: SiteDown, up: bool = False) -> dict[str, int]:
    events = EventBus()
    survivor = SurvivorAdoption(store, "bogota", events, is_up=lambda site: up)
    events.publish(event)
    await asyncio.sleep(0)
    await survivor.close()
    return survivor.adopted


async def test_a_last_will_has_the_survivor_record_the_dead_sites_calls(store: Store) -> None:
    await store.append_history([], [], started=[
        noted("before", "madrid", DEATH - timedelta(seconds=30)),
        noted("after", "madrid", DEATH + timedelta(seconds=5)),  # madrid restarted meanwhile
        noted("own", "bogota", DEATH - timedelta(seconds=30))])
    adopted = await adopted_after(store, SiteDown("madrid", LAST_WILL, at=DEATH.timestamp()))
    assert adopted == {"madrid": 1}
    [record] = await store.call_records()
    assert (record.call_id, record.disposition, record.site) == ("before", "interrupted", "madrid")
    assert sorted(call.call_id for call in await store.live_calls(site="madrid")) == ["after"]
    assert [call.call_id for call in await store.live_calls(site="bogota")] == ["own"]


@pytest.mark.parametrize("reason", ["forced down by bogota:drill", "heartbeat missed",
                                    "offline: shutdown"])
async def test_a_site_forced_down_late_or_shut_down_keeps_its_calls(store: Store, reason: str) -> None:
    await store.append_history([], [], started=[noted("m", "madrid", DEATH - timedelta(seconds=30))])
    assert await adopted_after(store, SiteDown("madrid", reason, at=DEATH.timestamp())) == {}
    assert [call.call_id for call in await store.live_calls(site="madrid")] == ["m"]


async def test_a_site_back_before_the_survivor_got_to_it_records_its_own_calls(store: Store) -> None:
    await store.append_history([], [], started=[noted("m", "madrid", DEATH - timedelta(seconds=30))])
    event = SiteDown("madrid", LAST_WILL, at=DEATH.timestamp())
    assert await adopted_after(store, event, up=True) == {}
    assert [call.call_id for call in await store.live_calls(site="madrid")] == ["m"]
