"""The migration runner on SQLite: versions, upgrade with data in place, atomic steps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from pbx.store import (
    MIGRATIONS,
    Migration,
    MigrationError,
    SiteRecord,
    Store,
    create_store_engine,
    migrate,
    schema_version,
)
from pbx.store.tables import STORE_TABLES
from router import AgentProfile


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/centralita.db"


async def _applied_versions(url: str) -> list[int]:
    engine = create_store_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text("SELECT version FROM schema_version ORDER BY version"))
            return [row[0] for row in result]
    finally:
        await engine.dispose()


def _describe_schema(connection: sa.Connection) -> dict[str, object]:
    inspector = sa.inspect(connection)
    described: dict[str, object] = {}
    for table in STORE_TABLES:
        name = table.__table__.name  # type: ignore[attr-defined]
        described[name] = {
            "columns": {
                column["name"]: column["nullable"] for column in inspector.get_columns(name)
            },
            "indexes": sorted(index["name"] for index in inspector.get_indexes(name)),
            "foreign_keys": sorted(
                (tuple(key["constrained_columns"]), key["referred_table"])
                for key in inspector.get_foreign_keys(name)
            ),
        }
    return described


def _describe_models() -> dict[str, object]:
    described: dict[str, object] = {}
    for model in STORE_TABLES:
        table: sa.Table = model.__table__  # type: ignore[attr-defined]
        described[table.name] = {
            "columns": {column.name: column.nullable for column in table.columns},
            "indexes": sorted(str(index.name) for index in table.indexes),
            "foreign_keys": sorted(
                ((key.parent.name,), key.column.table.name) for key in table.foreign_keys
            ),
        }
    return described


async def test_fully_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    engine = create_store_engine(_url(tmp_path))
    try:
        assert await migrate(engine) == len(MIGRATIONS)
        async with engine.connect() as connection:
            described = await connection.run_sync(_describe_schema)
    finally:
        await engine.dispose()
    assert described == _describe_models()


async def test_upgrade_from_step_one_keeps_existing_data(tmp_path: Path) -> None:
    url = _url(tmp_path)
    engine = create_store_engine(url)
    try:
        assert await migrate(engine, target=1) == 1
        assert await schema_version(engine) == 1
        async with engine.begin() as connection:
            has_history = await connection.run_sync(
                lambda sync: sa.inspect(sync).has_table("call_records")
            )
            assert not has_history
            await connection.execute(
                sa.text("INSERT INTO sites (name, timezone, healthy) VALUES ('madrid', 'Europe/Madrid', 1)")
            )
            await connection.execute(
                sa.text(
                    "INSERT INTO agents (extension, name, site, languages, capacity, active) "
                    "VALUES ('1001', 'Ana', 'madrid', '[\"es\"]', 1, 1)"
                )
            )
    finally:
        await engine.dispose()

    store = await Store.open(url)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.sites() == [SiteRecord("madrid", "Europe/Madrid", True)]
        assert await store.agent_profiles() == [
            AgentProfile("1001", "Ana", "madrid", {}, frozenset({"es"}))
        ]
        assert await store.call_records() == []
    finally:
        await store.close()
    assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    url = _url(tmp_path)
    for _ in range(3):
        store = await Store.open(url)
        await store.close()
    assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_concurrent_opens_of_one_file_apply_each_step_once(tmp_path: Path) -> None:
    url = _url(tmp_path)
    stores = await asyncio.gather(*(Store.open(url) for _ in range(4)))
    for store in stores:
        assert await store.schema_version() == len(MIGRATIONS)
        await store.close()
    assert await _applied_versions(url) == list(range(1, len(MIGRATIONS) + 1))


async def test_a_failing_step_leaves_no_trace(tmp_path: Path) -> None:
    def create_then_fail(connection: sa.Connection) -> None:
        connection.execute(sa.text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        connection.execute(sa.text("INSERT INTO sites (name, timezone, healthy) VALUES ('x', 'UTC', 1)"))
        raise RuntimeError("the new step is broken")

    broken = len(MIGRATIONS) + 1
    steps = (*MIGRATIONS, Migration(broken, "broken", create_then_fail))
    engine = create_store_engine(_url(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="the new step is broken"):
            await migrate(engine, steps)
        assert await schema_version(engine) == len(MIGRATIONS)
        async with engine.connect() as connection:
            has_table = await connection.run_sync(lambda sync: sa.inspect(sync).has_table("half_done"))
            sites = (await connection.execute(sa.text("SELECT count(*) FROM sites"))).scalar_one()
        assert not has_table
        assert sites == 0
    finally:
        await engine.dispose()


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = _url(tmp_path)
    future = len(MIGRATIONS) + 1
    steps = (*MIGRATIONS, Migration(future, "from the future", lambda connection: None))
    engine = create_store_engine(url)
    try:
        assert await migrate(engine, steps) == future
        with pytest.raises(MigrationError, match="newer than this code"):
            await migrate(engine)
    finally:
        await engine.dispose()
    with pytest.raises(MigrationError):
        await Store.open(url)


async def test_steps_must_be_numbered_in_order(tmp_path: Path) -> None:
    engine = create_store_engine(_url(tmp_path))
    try:
        with pytest.raises(MigrationError, match="1..n"):
            await migrate(engine, (MIGRATIONS[1], MIGRATIONS[0]))
        with pytest.raises(MigrationError, match="outside"):
            await migrate(engine, target=len(MIGRATIONS) + 1)
    finally:
        await engine.dispose()
