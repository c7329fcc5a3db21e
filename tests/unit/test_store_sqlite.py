"""The store on SQLite: configuration CRUD, seeding, conversions, call history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pbx.store import (
    MIGRATIONS,
    AgentRecord,
    AlreadyExists,
    CallRecord,
    CustomerRecord,
    CustomerTier,
    InUse,
    MissingReference,
    NotFound,
    QueueLogEntry,
    SiteRecord,
    SkillRecord,
    Store,
)
from router import AgentProfile, QueueConfig, Router, SkillExpansion, Strategy

MADRID = SiteRecord("madrid", "Europe/Madrid")
LIMA = SiteRecord("lima", "America/Lima", healthy=False)


def ana(**changes: object) -> AgentProfile:
    fields: dict[str, object] = {
        "extension": "1001",
        "name": "Ana",
        "site": "madrid",
        "skills": {"sales": 7, "billing": 4},
        "languages": frozenset({"es", "en"}),
    }
    fields.update(changes)
    return AgentProfile(**fields)  # type: ignore[arg-type]


def sales_queue(**changes: object) -> QueueConfig:
    fields: dict[str, object] = {
        "name": "sales",
        "skills": {"sales": 5},
        "language": "es",
        "sla_seconds": 30,
        "sla_percent": 90,
        "strategy": Strategy.SKILL_WEIGHTED,
        "wrap_up_seconds": 5,
        "ring_timeout_seconds": 12,
        "max_wait_seconds": 600,
        "announce_interval_seconds": 45,
        "preferred_agent_wait_seconds": 20,
        "expansion": (SkillExpansion(60, {"sales": 2}), SkillExpansion(30, {"sales": 3})),
        "aging_weight": 0.5,
        "priority_order": "strict",
        "preferred_agent_max_hold_seconds": 15,
        "service_level_definition": "short_abandons_met",
        "sites": ("bogota",),
    }
    fields.update(changes)
    return QueueConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/nested/folder/centralita.db")
    await opened.save_site(MADRID)
    yield opened
    await opened.close()


async def test_open_creates_the_sqlite_folder_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "var" / "db" / "centralita.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        assert path.exists()
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()


async def test_open_rejects_an_unsupported_backend() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        await Store.open("mysql+aiomysql://localhost/db")


async def test_agent_round_trip_keeps_skills_languages_and_flag(store: Store) -> None:
    await store.create_agent(ana(), active=False)
    record = await store.agent("1001")
    assert record == AgentRecord(ana(), active=False)
    assert await store.agent_profiles() == []
    assert await store.agent_profiles(include_inactive=True) == [ana()]
    assert {skill.name for skill in await store.skills()} == {"sales", "billing"}


async def test_create_agent_twice_is_refused(store: Store) -> None:
    await store.create_agent(ana())
    with pytest.raises(AlreadyExists, match="1001"):
        await store.create_agent(ana(name="Other"))
    assert (await store.agent("1001")) == AgentRecord(ana())


async def test_agent_on_unknown_site_names_the_site(store: Store) -> None:
    with pytest.raises(MissingReference, match="atlantis") as caught:
        await store.create_agent(ana(site="atlantis"))
    assert caught.value.field == "site"
    assert await store.agent("1001") is None


async def test_save_agent_replaces_skills_and_keeps_active_flag(store: Store) -> None:
    await store.create_agent(ana(), active=False)
    created = await store.save_agent(ana(skills={"support": 9}, languages=frozenset({"fr"})))
    assert created is False
    record = await store.agent("1001")
    assert record is not None
    assert dict(record.profile.skills) == {"support": 9}
    assert record.profile.languages == frozenset({"fr"})
    assert record.active is False
    assert await store.save_agent(ana(extension="1002"), active=True) is True


async def test_delete_agent_removes_it_and_its_skills(store: Store) -> None:
    await store.create_agent(ana())
    await store.delete_agent("1001")
    assert await store.agent("1001") is None
    await store.create_agent(ana(skills={}))  # re-create: no leftover skill rows conflict
    assert dict((await store.agents())[0].profile.skills) == {}
    with pytest.raises(NotFound):
        await store.delete_agent("9999")


async def test_queue_round_trip_keeps_every_field(store: Store) -> None:
    await store.create_queue(sales_queue())
    assert await store.queue("sales") == sales_queue()
    assert await store.queue_configs() == [sales_queue()]
    assert await store.queue("nope") is None


async def test_queue_overflow_must_exist_and_blocks_deleting_its_target(store: Store) -> None:
    with pytest.raises(MissingReference, match="general") as caught:
        await store.create_queue(sales_queue(overflow="general"))
    assert caught.value.field == "overflow"
    await store.create_queue(QueueConfig("general"))
    await store.create_queue(sales_queue(overflow="general"))
    with pytest.raises(InUse, match="sales"):
        await store.delete_queue("general")
    await store.save_queue(sales_queue(overflow=None))
    await store.delete_queue("general")
    assert [config.name for config in await store.queue_configs()] == ["sales"]


async def test_site_with_agents_cannot_be_deleted(store: Store) -> None:
    await store.create_agent(ana())
    with pytest.raises(InUse, match="1001"):
        await store.delete_site("madrid")
    await store.delete_agent("1001")
    await store.delete_site("madrid")
    assert await store.sites() == []


async def test_site_crud(store: Store) -> None:
    with pytest.raises(AlreadyExists):
        await store.create_site(MADRID)
    await store.create_site(LIMA)
    assert await store.site("lima") == LIMA
    assert await store.save_site(SiteRecord("lima", "America/Lima", healthy=True)) is False
    assert await store.sites() == [SiteRecord("lima", "America/Lima", True), MADRID]
    with pytest.raises(NotFound):
        await store.delete_site("atlantis")
    hours = {"weekly": {"mon-fri": "08:00-20:00"}, "holidays": ["2026-12-25"]}
    await store.save_site(SiteRecord("lima", "America/Lima", True, hours))
    assert await store.site("lima") == SiteRecord("lima", "America/Lima", True, hours)
    await store.save_site(SiteRecord("lima", "America/Lima", True, None))
    assert (await store.site("lima")).business_hours is None


async def test_skill_descriptions(store: Store) -> None:
    assert await store.save_skill(SkillRecord("sales", "Sells things")) is True
    await store.create_agent(ana())
    assert await store.save_skill(SkillRecord("sales", "Sells more")) is False
    assert await store.skills() == [SkillRecord("billing", ""), SkillRecord("sales", "Sells more")]


async def test_customer_crud_and_last_agent(store: Store) -> None:
    bob = CustomerRecord("+34600000001", "Bob", CustomerTier.VIP, "es", preferred_agent="1001")
    await store.create_customer(bob)
    with pytest.raises(AlreadyExists):
        await store.create_customer(bob)
    assert await store.customer("+34600000001") == bob
    assert await store.customer("+1") is None
    assert await store.record_last_agent("+34600000001", "1002") is True
    assert await store.record_last_agent("+1", "1002") is False
    stored = await store.customer("+34600000001")
    assert stored is not None and stored.last_agent == "1002"
    assert bob.tier.priority == 3
    await store.delete_customer("+34600000001")
    with pytest.raises(NotFound):
        await store.delete_customer("+34600000001")


async def test_customers_are_paged_in_number_order(store: Store) -> None:
    for number in ("300", "100", "200"):
        await store.create_customer(CustomerRecord(number))
    first = await store.customers(limit=2)
    second = await store.customers(limit=2, offset=2)
    assert [customer.number for customer in first + second] == ["100", "200", "300"]
    with pytest.raises(ValueError, match="limit"):
        await store.customers(limit=0)


async def test_seed_twice_changes_nothing_the_second_time(store: Store) -> None:
    arguments = (
        [ana(), ana(extension="1002", name="Luis", site="lima")],
        [sales_queue(overflow="general"), QueueConfig("general")],
        [MADRID, LIMA],
        [CustomerRecord("+34600000001", "Bob", CustomerTier.PAID)],
    )
    first = await store.seed(*arguments)
    assert first.inserted["agents"] == ("1001", "1002")
    assert first.inserted["queues"] == ("sales", "general")
    assert first.inserted["sites"] == ("lima",)  # madrid existed already
    second = await store.seed(*arguments)
    assert not second.changed
    assert len(await store.agents()) == 2
    assert len(await store.queue_configs()) == 2


async def test_seed_updates_configuration_but_keeps_runtime_fields(store: Store) -> None:
    await store.seed([ana()], [sales_queue()], [LIMA], [CustomerRecord("+1", "Bob")])
    await store.save_agent(ana(), active=False)
    await store.save_site(SiteRecord("lima", "America/Lima", healthy=True))
    await store.record_last_agent("+1", "1001")

    report = await store.seed(
        [ana(name="Ana María", skills={"sales": 9})],
        [sales_queue(sla_seconds=15)],
        [SiteRecord("lima", "America/Bogota", healthy=False)],
        [CustomerRecord("+1", "Robert", CustomerTier.VIP)],
    )

    assert report.updated == {
        "sites": ("lima",),
        "agents": ("1001",),
        "queues": ("sales",),
        "customers": ("+1",),
    }
    agent = await store.agent("1001")
    assert agent == AgentRecord(ana(name="Ana María", skills={"sales": 9}), active=False)
    assert await store.site("lima") == SiteRecord("lima", "America/Bogota", healthy=True)
    assert await store.customer("+1") == CustomerRecord(
        "+1", "Robert", CustomerTier.VIP, last_agent="1001"
    )
    queue = await store.queue("sales")
    assert queue is not None and queue.sla_seconds == 15


async def test_seed_with_a_dangling_reference_changes_nothing(store: Store) -> None:
    with pytest.raises(MissingReference, match="nowhere"):
        await store.seed([ana(), ana(extension="1002", site="nowhere")], [], [], [])
    assert await store.agents() == []
    with pytest.raises(MissingReference, match="missing"):
        await store.seed([], [sales_queue(overflow="missing")], [], [])
    assert await store.queue_configs() == []


async def test_load_into_gives_the_router_active_agents_and_queues(store: Store) -> None:
    await store.seed(
        [ana(), ana(extension="1002", site="lima")],
        [QueueConfig("general"), sales_queue(overflow="general")],
        [LIMA],
        [],
    )
    await store.save_agent(ana(extension="1002", site="lima"), active=False)
    router = Router(clock=lambda: 0.0)
    await store.load_into(router)
    assert [snapshot.extension for snapshot in router.agents()] == ["1001"]
    assert sorted(config.name for config in router.queues()) == ["general", "sales"]
    assert router.queue("sales") == sales_queue(overflow="general")


async def test_call_records_filter_by_call_and_time_range(store: Store) -> None:
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    madrid_time = timezone(timedelta(hours=2))
    for minute in range(5):
        await store.append_call_record(
            CallRecord(
                call_id=f"call-{minute}",
                caller="+34600000001",
                callee="100",
                started=start + timedelta(minutes=minute),
                answered=start + timedelta(minutes=minute, seconds=12),
                queue="sales" if minute % 2 == 0 else "support",
                agent="1001",
                disposition="answered",
                ivr_path=("welcome", "menu:1"),
                wait_seconds=12.0,
            )
        )
    one = await store.call_records(call_id="call-3")
    assert [record.call_id for record in one] == ["call-3"]
    assert one[0].ivr_path == ("welcome", "menu:1")
    assert one[0].answered == start + timedelta(minutes=3, seconds=12)
    assert one[0].id is not None

    # The same instants given in another offset select the same rows.
    window = await store.call_records(
        since=(start + timedelta(minutes=1)).astimezone(madrid_time),
        until=(start + timedelta(minutes=4)).astimezone(madrid_time),
    )
    assert [record.call_id for record in window] == ["call-1", "call-2", "call-3"]
    sales = await store.call_records(queue="sales", limit=2, offset=1)
    assert [record.call_id for record in sales] == ["call-2", "call-4"]
    # An agent's recent calls (the agent page): newest first, a page at a time.
    recent = await store.call_records(agent="1001", limit=2, newest_first=True)
    assert [record.call_id for record in recent] == ["call-4", "call-3"]
    assert await store.call_records(agent="1002", newest_first=True) == []


async def test_queue_log_appends_in_bulk_and_reads_in_time_order(store: Store) -> None:
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    written = await store.append_queue_log(
        [
            QueueLogEntry(start + timedelta(seconds=20), "c1", "CONNECT", "sales", "1001", {"hold": 20}),
            QueueLogEntry(start, "c1", "ENTERQUEUE", "sales", data={"position": 1}),
            QueueLogEntry(start + timedelta(seconds=5), "c2", "ENTERQUEUE", "support"),
        ]
    )
    assert all(entry.id is not None for entry in written)
    c1 = await store.queue_log(call_id="c1")
    assert [entry.event for entry in c1] == ["ENTERQUEUE", "CONNECT"]
    assert dict(c1[1].data) == {"hold": 20}
    assert [entry.call_id for entry in await store.queue_log(since=start + timedelta(seconds=1))] == [
        "c2",
        "c1",
    ]
    assert [entry.event for entry in await store.queue_log(queue="support")] == ["ENTERQUEUE"]
