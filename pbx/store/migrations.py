"""Versioned schema migrations: an ordered list of steps, each applied once, in a transaction.

Rules for adding a step: append it with the next version number, write its DDL
against a ``MetaData`` of its own (never import the current models: a step must
create the same schema forever), never edit a released step, never drop data.
The ``schema_version`` table records which steps ran.

Concurrency: every step runs under a lock (a transaction-scoped advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and re-reads the version after taking
it, so two processes opening the same database apply each step exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pbx.store.engine import SQLITE_BEGIN_OPTION
from pbx.store.errors import MigrationError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any fixed 64-bit number unique to this application.
MIGRATION_LOCK_KEY = 0x43454E5452414C  # "CENTRAL"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sa.Connection], None]


_schema_version_metadata = sa.MetaData()
SCHEMA_VERSION = sa.Table(
    "schema_version",
    _schema_version_metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def _create_configuration_tables(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "sites",
        metadata,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("timezone", sa.String, nullable=False),
        sa.Column("healthy", sa.Boolean, nullable=False),
    )
    sa.Table(
        "skills",
        metadata,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("description", sa.String, nullable=False),
    )
    sa.Table(
        "agents",
        metadata,
        sa.Column("extension", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("site", sa.String, sa.ForeignKey("sites.name"), nullable=False),
        sa.Column("languages", _json(), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Index("ix_agents_site", "site"),
    )
    sa.Table(
        "agent_skills",
        metadata,
        sa.Column(
            "agent",
            sa.String,
            sa.ForeignKey("agents.extension", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("skill", sa.String, sa.ForeignKey("skills.name"), primary_key=True),
        sa.Column("proficiency", sa.Integer, nullable=False),
        sa.CheckConstraint("proficiency BETWEEN 1 AND 10", name="ck_agent_skills_proficiency"),
        sa.Index("ix_agent_skills_skill", "skill", "proficiency"),
    )
    sa.Table(
        "queues",
        metadata,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("language", sa.String, nullable=True),
        sa.Column("sla_seconds", sa.Float, nullable=False),
        sa.Column("sla_percent", sa.Float, nullable=False),
        sa.Column("strategy", sa.String, nullable=False),
        sa.Column("wrap_up_seconds", sa.Float, nullable=False),
        sa.Column("ring_timeout_seconds", sa.Float, nullable=False),
        sa.Column("max_wait_seconds", sa.Float, nullable=True),
        sa.Column("overflow", sa.String, nullable=True),
        sa.Column("announce_interval_seconds", sa.Float, nullable=False),
        sa.Column("preferred_agent_wait_seconds", sa.Float, nullable=False),
        sa.Column("aging_weight", sa.Float, nullable=False),
        sa.Column("expansion", _json(), nullable=False),
    )
    sa.Table(
        "queue_skills",
        metadata,
        sa.Column(
            "queue", sa.String, sa.ForeignKey("queues.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("skill", sa.String, sa.ForeignKey("skills.name"), primary_key=True),
        sa.Column("min_proficiency", sa.Integer, nullable=False),
        sa.CheckConstraint(
            "min_proficiency BETWEEN 1 AND 10", name="ck_queue_skills_min_proficiency"
        ),
    )
    sa.Table(
        "customers",
        metadata,
        sa.Column("number", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("tier", sa.String, nullable=False),
        sa.Column("language", sa.String, nullable=True),
        sa.Column("preferred_agent", sa.String, nullable=True),
        sa.Column("last_agent", sa.String, nullable=True),
        sa.Column("notes", sa.Text, nullable=False),
        sa.CheckConstraint("tier IN ('vip', 'paid', 'free')", name="ck_customers_tier"),
    )
    metadata.create_all(connection)


def _create_history_tables(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    timestamp = sa.DateTime(timezone=True)
    sa.Table(
        "call_records",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String, nullable=False),
        sa.Column("caller", sa.String, nullable=False),
        sa.Column("callee", sa.String, nullable=False),
        sa.Column("started", timestamp, nullable=False),
        sa.Column("answered", timestamp, nullable=True),
        sa.Column("ended", timestamp, nullable=True),
        sa.Column("queue", sa.String, nullable=True),
        sa.Column("agent", sa.String, nullable=True),
        sa.Column("disposition", sa.String, nullable=False),
        sa.Column("ivr_path", _json(), nullable=False),
        sa.Column("wait_seconds", sa.Float, nullable=True),
        sa.Column("talk_seconds", sa.Float, nullable=True),
        sa.Column("site", sa.String, nullable=True),
        sa.Index("ix_call_records_call_id", "call_id"),
        sa.Index("ix_call_records_started", "started"),
        sa.Index("ix_call_records_queue_started", "queue", "started"),
        sa.Index("ix_call_records_agent_started", "agent", "started"),
    )
    sa.Table(
        "queue_log",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", timestamp, nullable=False),
        sa.Column("call_id", sa.String, nullable=False),
        sa.Column("queue", sa.String, nullable=True),
        sa.Column("agent", sa.String, nullable=True),
        sa.Column("event", sa.String, nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Index("ix_queue_log_time", "time"),
        sa.Index("ix_queue_log_call_id", "call_id"),
        sa.Index("ix_queue_log_queue_time", "queue", "time"),
    )
    metadata.create_all(connection)


def _add_queue_routing_options(connection: sa.Connection) -> None:
    # Plain DDL: the same statements work on SQLite and PostgreSQL.
    for column in (
        "priority_order VARCHAR NOT NULL DEFAULT 'aging'",
        "preferred_agent_max_hold_seconds FLOAT",
        "service_level_definition VARCHAR NOT NULL DEFAULT 'short_abandons_excluded'",
    ):
        connection.execute(sa.text(f"ALTER TABLE queues ADD COLUMN {column}"))


def _create_durable_state_tables(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    timestamp = sa.DateTime(timezone=True)
    sa.Table(
        "registrations",
        metadata,
        sa.Column("user", sa.String, primary_key=True),
        sa.Column("contact_uri", sa.String, primary_key=True),
        sa.Column("contact", sa.String, nullable=False),
        sa.Column("expires_at", timestamp, nullable=False),
        sa.Column("call_id", sa.String, nullable=False),
        sa.Column("cseq", sa.BigInteger, nullable=False),
        sa.Column("source_host", sa.String, nullable=False),
        sa.Column("source_port", sa.Integer, nullable=False),
        sa.Column("transport", sa.String, nullable=False),
        sa.Column("user_agent", sa.String, nullable=True),
        sa.Index("ix_registrations_expires_at", "expires_at"),
    )
    sa.Table(
        "live_calls",
        metadata,
        sa.Column("call_id", sa.String, primary_key=True),
        sa.Column("caller", sa.String, nullable=False),
        sa.Column("callee", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=True),
        sa.Column("started", timestamp, nullable=False),
        sa.Column("answered", timestamp, nullable=True),
        sa.Column("queue", sa.String, nullable=True),
        sa.Column("agent", sa.String, nullable=True),
        sa.Column("site", sa.String, nullable=True),
    )
    sa.Table(
        "call_details",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String, nullable=False),
        sa.Column("ended", timestamp, nullable=False),
        sa.Column("routing", _json(), nullable=True),
        sa.Column("ivr", _json(), nullable=True),
        sa.Column("context", _json(), nullable=True),
        sa.Index("ix_call_details_call_id", "call_id"),
    )
    metadata.create_all(connection)


def _create_callback_requests(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    timestamp = sa.DateTime(timezone=True)
    active = sa.text("state IN ('pending', 'dialing')")
    sa.Table(
        "callback_requests",
        metadata,
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("number", sa.String, nullable=False),
        sa.Column("queue", sa.String, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("requested_at", timestamp, nullable=False),
        sa.Column("earliest_at", timestamp, nullable=False),
        sa.Column("expires_at", timestamp, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("history", _json(), nullable=False),
        sa.Column("origin_call_id", sa.String, nullable=True),
        sa.Column("site", sa.String, nullable=False),
        sa.Column("lease_expires_at", timestamp, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'dialing', 'completed', 'failed', 'expired', 'cancelled')",
            name="ck_callback_requests_state"),
        sa.Index("ix_callback_requests_state_earliest", "state", "earliest_at"),
        sa.Index("ix_callback_requests_site_lease", "site", "lease_expires_at"),
        sa.Index("ix_callback_requests_queue_requested", "queue", "requested_at"),
        # One active request per number and queue, even when two sites insert at once.
        sa.Index("ux_callback_requests_active_number", "number", "queue", unique=True,
                 sqlite_where=active, postgresql_where=active),
    )
    metadata.create_all(connection)


def _add_queue_sites(connection: sa.Connection) -> None:
    document = "JSONB" if connection.dialect.name == "postgresql" else "JSON"
    connection.execute(sa.text(f"ALTER TABLE queues ADD COLUMN sites {document} NOT NULL DEFAULT '[]'"))


def _keep_interrupted_callers_places(connection: sa.Connection) -> None:
    timestamp = sa.DateTime(timezone=True)
    timestamp_type = timestamp.compile(dialect=connection.dialect)
    for column in ("priority INTEGER", f"enqueued_at {timestamp_type}"):
        connection.execute(sa.text(f"ALTER TABLE live_calls ADD COLUMN {column}"))
    metadata = sa.MetaData()
    sa.Table(
        "interrupted_waits",
        metadata,
        sa.Column("call_id", sa.String, primary_key=True),
        sa.Column("number", sa.String, nullable=False),
        sa.Column("queue", sa.String, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("enqueued_at", timestamp, nullable=False),
        sa.Column("site", sa.String, nullable=True),
        sa.Column("interrupted_at", timestamp, nullable=False),
        sa.Index("ix_interrupted_waits_number_queue", "number", "queue", "interrupted_at"),
    )
    metadata.create_all(connection)


def _link_callback_calls(connection: sa.Connection) -> None:
    for column in ("origin_call_id VARCHAR", "callback_request_id VARCHAR"):
        connection.execute(sa.text(f"ALTER TABLE call_records ADD COLUMN {column}"))


def _keep_registrations_paths(connection: sa.Connection) -> None:
    json_type = _json().compile(dialect=connection.dialect)
    connection.execute(sa.text(f"ALTER TABLE registrations ADD COLUMN path {json_type}"))


def _add_site_rules(connection: sa.Connection) -> None:
    json_type = _json().compile(dialect=connection.dialect)
    connection.execute(sa.text(f"ALTER TABLE sites ADD COLUMN business_hours {json_type}"))
    connection.execute(sa.text(
        "ALTER TABLE queues ADD COLUMN sites_after_seconds FLOAT NOT NULL DEFAULT 0"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "configuration: sites, skills, agents, queues, customers", _create_configuration_tables),
    Migration(2, "history: call records and queue log", _create_history_tables),
    Migration(3, "queues: priority order, preferred-agent hold bound, service-level definition",
              _add_queue_routing_options),
    Migration(4, "durable state: registrations, live calls, finished calls' details",
              _create_durable_state_tables),
    Migration(5, "callback requests, leased by their owning site", _create_callback_requests),
    Migration(6, "queues: the other sites whose agents may take their calls", _add_queue_sites),
    Migration(7, "callers keep their place: waiting calls' priority and enqueue time, interrupted waits",
              _keep_interrupted_callers_places),
    Migration(8, "call records of callback calls name the call and the request they came from",
              _link_callback_calls),
    Migration(9, "registrations keep their Path (the proxies toward the phone)",
              _keep_registrations_paths),
    Migration(10, "sites' business hours; queues ask other sites after N seconds",
              _add_site_rules),
)


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [step.version for step in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise MigrationError(f"migration versions must be 1..n in order, got {versions}")


async def _take_lock(connection: AsyncConnection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.


async def _current_version(connection: AsyncConnection) -> int:
    await connection.run_sync(lambda sync: SCHEMA_VERSION.create(sync, checkfirst=True))
    result = await connection.execute(sa.select(sa.func.max(SCHEMA_VERSION.c.version)))
    return int(result.scalar_one_or_none() or 0)


async def schema_version(engine: AsyncEngine) -> int:
    """The highest migration step applied to the database (0 for an empty database)."""
    async with engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync: sa.inspect(sync).has_table(SCHEMA_VERSION.name)
        )
        if not has_table:
            return 0
        result = await connection.execute(sa.select(sa.func.max(SCHEMA_VERSION.c.version)))
        return int(result.scalar_one_or_none() or 0)


async def migrate(
    engine: AsyncEngine,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    target: int | None = None,
) -> int:
    """Apply every step above the database's version, up to ``target`` (default: all).

    Returns the version the database is at afterwards. Refuses a database whose
    version is newer than the steps this code knows, rather than run on a schema
    it does not understand.
    """
    _check_sequence(migrations)
    latest = len(migrations) if target is None else target
    if not 0 <= latest <= len(migrations):
        raise MigrationError(f"target version {target} is outside 0..{len(migrations)}")
    async with engine.connect() as base_connection:
        connection = await base_connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with connection.begin():
            await _take_lock(connection)
            version = await _current_version(connection)
        if version > len(migrations):
            raise MigrationError(
                f"database schema version {version} is newer than this code "
                f"(knows {len(migrations)}); upgrade Centralita"
            )
        for step in migrations[version:latest]:
            async with connection.begin():
                await _take_lock(connection)
                # Another process may have applied it while we waited for the lock.
                version = await _current_version(connection)
                if version >= step.version:
                    continue
                log.info("applying schema migration %d: %s", step.version, step.name)
                await connection.run_sync(step.apply)
                await connection.execute(
                    SCHEMA_VERSION.insert().values(
                        version=step.version, name=step.name, applied_at=datetime.now(UTC)
                    )
                )
                version = step.version
    return version
