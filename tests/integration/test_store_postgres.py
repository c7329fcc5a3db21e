"""The store on a real PostgreSQL: round trips, seeding, upgrades, concurrent migration."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from integration import postgres_fixture
from integration.postgres_fixture import PostgresServer, fresh_postgres_database
from pbx.store import (
    MIGRATIONS,
    AgentRecord,
    AlreadyExists,
    CallDetails,
    CallRecord,
    CustomerRecord,
    CustomerTier,
    LiveCallRecord,
    QueueLogEntry,
    RegistrationRecord,
    SiteRecord,
    Store,
    create_store_engine,
    migrate,
)
from router import AgentProfile, QueueConfig, SkillExpansion, Strategy

pytestmark = pytest.mark.integration

# The shared fixtures, by name, for pytest to find in this module.
postgres_server = postgres_fixture.postgres_server
postgres_url = postgres_fixture.postgres_url

REPOSITORY = Path(__file__).resolve().parents[2]


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _applied_versions(url: str) -> list[int]:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        rows = await connection.fetch("SELECT version FROM schema_version ORDER BY version")
        return [row["version"] for row in rows]
    finally:
        await connection.close()


@pytest.fixture
async def store(postgres_server: PostgresServer) -> AsyncIterator[Store]:
    async with fresh_postgres_database(postgres_server) as url:
        opened = await Store.open(url)
        try:
            yield opened
        finally:
            await opened.close()


async def test_session_database_is_migrated(postgres_url: str) -> None:
    store = await Store.open(postgres_url)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()


async def test_configuration_round_trip(store: Store) -> None:
    await store.create_site(SiteRecord("madrid", "Europe/Madrid"))
    profile = AgentProfile("1001", "Ana", "madrid", {"sales": 7, "billing": 3}, frozenset({"es", "en"}))
    queue = QueueConfig(
        "sales",
        {"sales": 5},
        language="es",
        strategy=Strategy.LEAST_OCCUPANCY,
        max_wait_seconds=300,
        expansion=(SkillExpansion(45, {"sales": 2}),),
    )
    await store.create_agent(profile)
    await store.create_queue(queue)
    with pytest.raises(AlreadyExists):
        await store.create_agent(profile)
    assert await store.agents() == [AgentRecord(profile)]
    assert await store.queue_configs() == [queue]
    customer = CustomerRecord("+34600000001", "Bob", CustomerTier.VIP, "es", "1001")
    await store.create_customer(customer)
    assert await store.customer("+34600000001") == customer


async def test_seed_is_idempotent(store: Store) -> None:
    arguments = (
        [AgentProfile("1001", "Ana", "madrid", {"sales": 7})],
        [QueueConfig("sales", {"sales": 5}, overflow="general"), QueueConfig("general")],
        [SiteRecord("madrid", "Europe/Madrid")],
        [CustomerRecord("+1", "Bob")],
    )
    assert (await store.seed(*arguments)).changed
    assert not (await store.seed(*arguments)).changed
    assert len(await store.queue_configs()) == 2


async def test_history_times_come_back_as_the_same_instants(store: Store) -> None:
    start = datetime(2024, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5)))
    await store.append_call_record(
        CallRecord("c1", "+1", "100", start, ended=start + timedelta(minutes=3), ivr_path=("menu",))
    )
    await store.append_queue_log([QueueLogEntry(start, "c1", "ENTERQUEUE", "sales", data={"n": 1})])
    [record] = await store.call_records(since=start.astimezone(UTC), until=start + timedelta(seconds=1))
    assert record.started == start and record.started.tzinfo == UTC
    assert record.ended == start + timedelta(minutes=3)
    [entry] = await store.queue_log(call_id="c1")
    assert dict(entry.data) == {"n": 1} and entry.time == start


async def test_upgrade_from_step_one_keeps_data(postgres_server: PostgresServer) -> None:
    async with fresh_postgres_database(postgres_server) as url:
        engine = create_store_engine(url)
        try:
            assert await migrate(engine, target=1) == 1
        finally:
            await engine.dispose()
        connection = await asyncpg.connect(_asyncpg_dsn(url))
        try:
            await connection.execute("INSERT INTO sites VALUES ('lima', 'America/Lima', true)")
            await connection.execute(
                "INSERT INTO customers VALUES ('+51', 'Eva', 'paid', 'es', NULL, NULL, 'likes tea')"
            )
        finally:
            await connection.close()

        store = await Store.open(url)
        try:
            assert await store.sites() == [SiteRecord("lima", "America/Lima", True)]
            assert await store.customer("+51") == CustomerRecord(
                "+51", "Eva", CustomerTier.PAID, "es", notes="likes tea"
            )
            assert await store.call_records() == []
        finally:
            await store.close()
        assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_concurrent_opens_apply_each_step_once(postgres_server: PostgresServer) -> None:
    async with fresh_postgres_database(postgres_server) as url:
        stores = await asyncio.gather(*(Store.open(url) for _ in range(6)))
        for store in stores:
            await store.close()
        assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_two_processes_opening_together_apply_each_step_once(
    postgres_server: PostgresServer,
) -> None:
    program = (
        "import asyncio, sys\n"
        "from pbx.store import Store\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    print(await store.schema_version())\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    async with fresh_postgres_database(postgres_server) as url:
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                program,
                url,
                cwd=REPOSITORY,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        outputs = await asyncio.gather(*(process.communicate() for process in processes))
        for process, (stdout, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr.decode()
            assert stdout.decode().strip() == str(len(MIGRATIONS))
        assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_durable_state_round_trip(store: Store) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    record = RegistrationRecord(
        user="1001", contact="<sip:1001@127.0.0.1:5071>;expires=3600",
        contact_uri="sip:1001@127.0.0.1:5071", expires_at=now + timedelta(hours=1),
        call_id="reg-1", cseq=2**31 + 5, source_host="127.0.0.1", source_port=5071,
        transport="udp", user_agent=None)
    await store.replace_registrations({"1001": [record], "1002": []})
    assert await store.registrations(now) == [record]
    assert await store.registrations(now + timedelta(hours=2)) == []

    await store.append_history([], [], started=[LiveCallRecord("a", "600", "100", now, "application")])
    assert [call.call_id for call in await store.live_calls()] == ["a"]
    [interrupted] = await store.close_interrupted_calls()
    assert (interrupted.call_id, interrupted.disposition, interrupted.started) == ("a", "interrupted", now)
    assert await store.live_calls() == []

    details = CallDetails("a", now, [{"chosen": "1001"}], {"path": []}, {"agent": "1001"})
    await store.append_history([], [], details=[details])
    assert await store.call_details("a") == details
    # A router score of an agent who never took a call is -inf: JSONB cannot hold it.
    scored = CallDetails("b", now, [{"eligible": [{"score": [float("-inf"), 2.5]}]}])
    await store.append_history([], [], details=[scored])
    stored = await store.call_details("b")
    assert stored is not None and stored.routing == [{"eligible": [{"score": [None, 2.5]}]}]


async def test_two_sites_adopting_a_dead_sites_calls_at_once_record_each_once(
        postgres_server: PostgresServer) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    notes = [LiveCallRecord(f"madrid-{n}", f"600{n:03}", "100", now + timedelta(seconds=n),
                            "application", site="madrid") for n in range(200)]
    async with fresh_postgres_database(postgres_server) as url:
        # Two surviving sites, each with its own connections to the same database.
        bogota, lima = await Store.open(url), await Store.open(url)
        try:
            await bogota.append_history([], [], started=notes)
            first, second = await asyncio.gather(bogota.close_interrupted_calls(site="madrid"),
                                                 lima.close_interrupted_calls(site="madrid"))
            records = await bogota.call_records(limit=1000)
        finally:
            await bogota.close()
            await lima.close()
    expected = sorted(note.call_id for note in notes)
    assert sorted(record.call_id for record in first + second) == expected
    assert sorted(record.call_id for record in records) == expected
    assert {record.disposition for record in records} == {"interrupted"}
