"""The SQL store: configuration (sites, skills, agents, queues, customers) and call history.

Every public method runs in its own short transaction. Rows are converted to the
router's dataclasses (``AgentProfile``, ``QueueConfig``) or to the records in
``pbx.store.records`` at the boundary, so no ORM object escapes this module.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pbx.store.engine import create_store_engine
from pbx.store.errors import (
    AlreadyExists,
    ConstraintViolation,
    InUse,
    MissingReference,
    NotFound,
)
from pbx.store.migrations import migrate, schema_version
from pbx.store.records import (
    AgentRecord,
    CallDetails,
    CallRecord,
    CustomerRecord,
    CustomerTier,
    InterruptedWait,
    LastAgent,
    LiveCallRecord,
    QueueLogEntry,
    RegistrationRecord,
    SeedReport,
    SiteRecord,
    SkillRecord,
    as_utc,
)
from pbx.store.tables import (
    AgentRow,
    AgentSkillRow,
    CallDetailsRow,
    CallRecordRow,
    CustomerRow,
    InterruptedWaitRow,
    LiveCallRow,
    QueueLogRow,
    QueueRow,
    QueueSkillRow,
    RegistrationRow,
    SiteRow,
    SkillRow,
)
from router import (
    AgentProfile,
    QueueConfig,
    Router,
)

MAX_PAGE_SIZE = 1000

# The per-call writes delete rows by lists of keys. Built once, with a named expanding
# parameter: ``column.in_(list)`` built per write makes SQLAlchemy leave its bind parameters
# in reference cycles (about 10 objects per statement) for the garbage collector.
_LIVE_CALLS = LiveCallRow.__table__  # type: ignore[attr-defined]
_DELETE_LIVE_CALLS = sa.delete(_LIVE_CALLS).where(
    _LIVE_CALLS.c.call_id.in_(sa.bindparam("call_ids", expanding=True)))
_CALL_RECORDS = CallRecordRow.__table__  # type: ignore[attr-defined]
_DELETE_INTERRUPTED_RECORDS = sa.delete(_CALL_RECORDS).where(
    _CALL_RECORDS.c.call_id.in_(sa.bindparam("call_ids", expanding=True)),
    _CALL_RECORDS.c.disposition == "interrupted")
_INTERRUPTED_WAITS = InterruptedWaitRow.__table__  # type: ignore[attr-defined]
_DELETE_INTERRUPTED_WAITS = sa.delete(_INTERRUPTED_WAITS).where(
    _INTERRUPTED_WAITS.c.call_id.in_(sa.bindparam("call_ids", expanding=True)))
_CUSTOMERS = CustomerRow.__table__  # type: ignore[attr-defined]
_UPDATE_LAST_AGENT = sa.update(_CUSTOMERS).where(
    _CUSTOMERS.c.number == sa.bindparam("caller")).values(last_agent=sa.bindparam("agent"))
_REGISTRATIONS = RegistrationRow.__table__  # type: ignore[attr-defined]
_DELETE_USERS_REGISTRATIONS = sa.delete(_REGISTRATIONS).where(
    _REGISTRATIONS.c.user.in_(sa.bindparam("users", expanding=True)))


# The router's AgentProfile and QueueConfig are the records; a row holds their fields
# but the skills, which have a table of their own (so agents can be found by skill).
def _profile_from_rows(row: AgentRow, skills: Mapping[str, int]) -> AgentProfile:
    return AgentProfile.from_dict({**row.model_dump(), "skills": skills})


def _queue_from_rows(row: QueueRow, skills: Mapping[str, int]) -> QueueConfig:
    return QueueConfig.from_dict({**row.model_dump(), "skills": skills})


def _queue_columns(config: QueueConfig) -> dict[str, Any]:
    return {key: value for key, value in config.to_dict().items() if key != "skills"}


def _hours_column(site: SiteRecord) -> dict[str, Any] | None:
    return None if site.business_hours is None else dict(site.business_hours)


def _site_row(site: SiteRecord) -> SiteRow:
    return SiteRow(name=site.name, timezone=site.timezone, healthy=site.healthy,
                   business_hours=_hours_column(site))


def _site_from_row(row: SiteRow) -> SiteRecord:
    return SiteRecord(row.name, row.timezone, row.healthy, row.business_hours)


def _customer_from_row(row: CustomerRow) -> CustomerRecord:
    return CustomerRecord(
        number=row.number,
        name=row.name,
        tier=CustomerTier(row.tier),
        language=row.language,
        preferred_agent=row.preferred_agent,
        last_agent=row.last_agent,
        notes=row.notes,
    )


def _customer_columns(customer: CustomerRecord) -> dict[str, Any]:
    return {
        "number": customer.number,
        "name": customer.name,
        "tier": CustomerTier(customer.tier).value,
        "language": customer.language,
        "preferred_agent": customer.preferred_agent,
        "last_agent": customer.last_agent,
        "notes": customer.notes,
    }


def _call_record_from_row(row: CallRecordRow) -> CallRecord:
    return CallRecord(
        id=row.id,
        call_id=row.call_id,
        caller=row.caller,
        callee=row.callee,
        started=row.started,
        answered=row.answered,
        ended=row.ended,
        queue=row.queue,
        agent=row.agent,
        disposition=row.disposition,
        ivr_path=tuple(row.ivr_path),
        wait_seconds=row.wait_seconds,
        talk_seconds=row.talk_seconds,
        site=row.site,
        origin_call_id=row.origin_call_id,
        callback_request_id=row.callback_request_id,
    )


def _queue_log_from_row(row: QueueLogRow) -> QueueLogEntry:
    return QueueLogEntry(
        id=row.id,
        time=row.time,
        call_id=row.call_id,
        queue=row.queue,
        agent=row.agent,
        event=row.event,
        data=dict(row.data),
    )


def check_page(limit: int, offset: int = 0) -> None:
    """Refuses a page size or offset no query of the store accepts."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be 1-{MAX_PAGE_SIZE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


class Store:
    """Async access to Centralita's database. Create with ``await Store.open(url)``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, echo: bool = False) -> Store:
        """Connect to ``url``, bring the schema up to date and return the store.

        ``url`` is ``sqlite+aiosqlite:///relative/or//absolute/path.db`` (its folder is
        created) or ``postgresql+asyncpg://user@host:port/database``.
        """
        engine = create_store_engine(url, echo=echo)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def schema_version(self) -> int:
        return await schema_version(self._engine)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except IntegrityError as error:
            # Only reachable through a race with another writer (or a constraint the
            # checks above do not cover): report it as a conflict, not a crash.
            raise ConstraintViolation(str(error.orig)) from error

    # -- helpers shared by the writers -------------------------------------------------

    def _insert(self, session: AsyncSession, table: type[SQLModel]) -> Any:
        """A dialect-specific INSERT that offers ``on_conflict_do_*`` on both backends."""
        dialect = session.bind.dialect.name if session.bind is not None else ""
        module = postgresql if dialect == "postgresql" else sqlite
        return module.insert(table)

    async def _ensure_skills(self, session: AsyncSession, names: Iterable[str]) -> None:
        wanted = sorted(set(names))
        if not wanted:
            return
        statement = (
            self._insert(session, SkillRow)
            .values([{"name": name, "description": ""} for name in wanted])
            .on_conflict_do_nothing(index_elements=["name"])
        )
        await session.exec(statement)

    async def _require_site(self, session: AsyncSession, site: str, owner: str) -> None:
        if await session.get(SiteRow, site) is None:
            raise MissingReference("site", f"{owner}: unknown site {site!r}")

    async def _write_agent(
        self, session: AsyncSession, profile: AgentProfile, active: bool | None
    ) -> None:
        """Insert or update one agent and replace its skills; ``active=None`` keeps the stored flag."""
        await self._require_site(session, profile.site, f"agent {profile.extension}")
        await self._ensure_skills(session, profile.skills)
        columns = {key: value for key, value in profile.to_dict().items() if key != "skills"}
        updated = {key: value for key, value in columns.items() if key != "extension"}
        if active is not None:
            updated["active"] = active
        statement = (
            self._insert(session, AgentRow)
            .values(**columns, active=True if active is None else active)
            .on_conflict_do_update(index_elements=["extension"], set_=updated)
        )
        await session.exec(statement)
        await session.exec(
            sa.delete(AgentSkillRow).where(col(AgentSkillRow.agent) == profile.extension)
        )
        if profile.skills:
            await session.exec(
                sa.insert(AgentSkillRow).values(
                    [
                        {"agent": profile.extension, "skill": skill, "proficiency": level}
                        for skill, level in sorted(profile.skills.items())
                    ]
                )
            )

    async def _write_queue(self, session: AsyncSession, config: QueueConfig) -> None:
        await self._ensure_skills(
            session,
            [*config.skills, *(skill for ring in config.expansion for skill in ring.skills)],
        )
        columns = _queue_columns(config)
        statement = (
            self._insert(session, QueueRow)
            .values(**columns)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={key: value for key, value in columns.items() if key != "name"},
            )
        )
        await session.exec(statement)
        await session.exec(sa.delete(QueueSkillRow).where(col(QueueSkillRow.queue) == config.name))
        if config.skills:
            await session.exec(
                sa.insert(QueueSkillRow).values(
                    [
                        {"queue": config.name, "skill": skill, "min_proficiency": level}
                        for skill, level in sorted(config.skills.items())
                    ]
                )
            )

    async def _check_overflow_targets(self, session: AsyncSession) -> None:
        targets = (
            await session.exec(
                select(QueueRow.name, QueueRow.overflow).where(col(QueueRow.overflow).is_not(None))
            )
        ).all()
        known = set((await session.exec(select(QueueRow.name))).all())
        for name, overflow in targets:
            if overflow not in known:
                raise MissingReference("overflow", f"queue {name}: unknown overflow queue {overflow!r}")

    async def _agent_skills(
        self, session: AsyncSession, extension: str | None = None
    ) -> dict[str, dict[str, int]]:
        query = select(AgentSkillRow)
        if extension is not None:  # equality: ``in_`` would leave bind-parameter cycles
            query = query.where(col(AgentSkillRow.agent) == extension)
        skills: dict[str, dict[str, int]] = defaultdict(dict)
        for row in (await session.exec(query)).all():
            skills[row.agent][row.skill] = row.proficiency
        return skills

    async def _queue_skills(
        self, session: AsyncSession, name: str | None = None
    ) -> dict[str, dict[str, int]]:
        query = select(QueueSkillRow)
        if name is not None:
            query = query.where(col(QueueSkillRow.queue) == name)
        skills: dict[str, dict[str, int]] = defaultdict(dict)
        for row in (await session.exec(query)).all():
            skills[row.queue][row.skill] = row.min_proficiency
        return skills

    async def _load_agents(
        self, session: AsyncSession, extension: str | None = None
    ) -> list[AgentRecord]:
        query = select(AgentRow).order_by(col(AgentRow.extension))
        if extension is not None:
            query = query.where(col(AgentRow.extension) == extension)
        rows = (await session.exec(query)).all()
        skills = await self._agent_skills(session, extension)
        return [
            AgentRecord(_profile_from_rows(row, skills.get(row.extension, {})), active=row.active)
            for row in rows
        ]

    async def _load_queues(self, session: AsyncSession, name: str | None = None) -> list[QueueConfig]:
        query = select(QueueRow).order_by(col(QueueRow.name))
        if name is not None:
            query = query.where(col(QueueRow.name) == name)
        rows = (await session.exec(query)).all()
        skills = await self._queue_skills(session, name)
        return [_queue_from_rows(row, skills.get(row.name, {})) for row in rows]

    # -- sites ---------------------------------------------------------------------------

    async def sites(self) -> list[SiteRecord]:
        async with self._transaction() as session:
            rows = (await session.exec(select(SiteRow).order_by(col(SiteRow.name)))).all()
            return [_site_from_row(row) for row in rows]

    async def site(self, name: str) -> SiteRecord | None:
        async with self._transaction() as session:
            row = await session.get(SiteRow, name)
            return None if row is None else _site_from_row(row)

    async def create_site(self, site: SiteRecord) -> None:
        async with self._transaction() as session:
            if await session.get(SiteRow, site.name) is not None:
                raise AlreadyExists(f"site {site.name!r} already exists")
            session.add(_site_row(site))

    async def save_site(self, site: SiteRecord) -> bool:
        """Insert or replace a site; True when it was created."""
        async with self._transaction() as session:
            row = await session.get(SiteRow, site.name)
            if row is None:
                session.add(_site_row(site))
                return True
            row.timezone = site.timezone
            row.healthy = site.healthy
            row.business_hours = _hours_column(site)
            return False

    async def delete_site(self, name: str) -> None:
        async with self._transaction() as session:
            row = await session.get(SiteRow, name)
            if row is None:
                raise NotFound(f"unknown site {name!r}")
            users = (
                await session.exec(select(AgentRow.extension).where(col(AgentRow.site) == name).limit(5))
            ).all()
            if users:
                raise InUse(f"site {name!r} still has agents: {', '.join(users)}")
            await session.delete(row)

    # -- skills --------------------------------------------------------------------------

    async def skills(self) -> list[SkillRecord]:
        async with self._transaction() as session:
            rows = (await session.exec(select(SkillRow).order_by(col(SkillRow.name)))).all()
            return [SkillRecord(row.name, row.description) for row in rows]

    async def save_skill(self, skill: SkillRecord) -> bool:
        """Insert a skill or update its description; True when it was created."""
        async with self._transaction() as session:
            row = await session.get(SkillRow, skill.name)
            if row is None:
                session.add(SkillRow(name=skill.name, description=skill.description))
                return True
            row.description = skill.description
            return False

    # -- agents --------------------------------------------------------------------------

    async def agents(self) -> list[AgentRecord]:
        async with self._transaction() as session:
            return await self._load_agents(session)

    async def agent(self, extension: str) -> AgentRecord | None:
        async with self._transaction() as session:
            found = await self._load_agents(session, extension)
            return found[0] if found else None

    async def agent_profiles(self, *, include_inactive: bool = False) -> list[AgentProfile]:
        """Profiles for the router: the active agents (or all, when asked)."""
        return [
            record.profile
            for record in await self.agents()
            if record.active or include_inactive
        ]

    async def create_agent(self, profile: AgentProfile, *, active: bool = True) -> None:
        async with self._transaction() as session:
            if await session.get(AgentRow, profile.extension) is not None:
                raise AlreadyExists(f"agent {profile.extension!r} already exists")
            await self._write_agent(session, profile, active)

    async def save_agent(self, profile: AgentProfile, *, active: bool | None = None) -> bool:
        """Insert or replace an agent and its skills; True when it was created.

        ``active=None`` keeps the stored flag (new agents start active).
        """
        async with self._transaction() as session:
            created = await session.get(AgentRow, profile.extension) is None
            await self._write_agent(session, profile, active)
            return created

    async def delete_agent(self, extension: str) -> None:
        async with self._transaction() as session:
            row = await session.get(AgentRow, extension)
            if row is None:
                raise NotFound(f"unknown agent {extension!r}")
            # Explicit, so SQLite without foreign-key enforcement cannot leave orphans.
            await session.exec(sa.delete(AgentSkillRow).where(col(AgentSkillRow.agent) == extension))
            await session.delete(row)

    # -- queues --------------------------------------------------------------------------

    async def queue_configs(self) -> list[QueueConfig]:
        async with self._transaction() as session:
            return await self._load_queues(session)

    async def queue(self, name: str) -> QueueConfig | None:
        async with self._transaction() as session:
            found = await self._load_queues(session, name)
            return found[0] if found else None

    async def create_queue(self, config: QueueConfig) -> None:
        async with self._transaction() as session:
            if await session.get(QueueRow, config.name) is not None:
                raise AlreadyExists(f"queue {config.name!r} already exists")
            await self._write_queue(session, config)
            await self._check_overflow_targets(session)

    async def save_queue(self, config: QueueConfig) -> bool:
        """Insert or replace a queue and its required skills; True when it was created."""
        async with self._transaction() as session:
            created = await session.get(QueueRow, config.name) is None
            await self._write_queue(session, config)
            await self._check_overflow_targets(session)
            return created

    async def delete_queue(self, name: str) -> None:
        async with self._transaction() as session:
            row = await session.get(QueueRow, name)
            if row is None:
                raise NotFound(f"unknown queue {name!r}")
            feeders = (
                await session.exec(select(QueueRow.name).where(col(QueueRow.overflow) == name))
            ).all()
            if feeders:
                raise InUse(f"queue {name!r} is the overflow of: {', '.join(sorted(feeders))}")
            await session.exec(sa.delete(QueueSkillRow).where(col(QueueSkillRow.queue) == name))
            await session.delete(row)

    # -- customers -----------------------------------------------------------------------

    async def customers(self, *, limit: int = 100, offset: int = 0) -> list[CustomerRecord]:
        check_page(limit, offset)
        async with self._transaction() as session:
            query = select(CustomerRow).order_by(col(CustomerRow.number)).limit(limit).offset(offset)
            return [_customer_from_row(row) for row in (await session.exec(query)).all()]

    async def customer(self, number: str) -> CustomerRecord | None:
        async with self._transaction() as session:
            row = await session.get(CustomerRow, number)
            return None if row is None else _customer_from_row(row)

    async def create_customer(self, customer: CustomerRecord) -> None:
        async with self._transaction() as session:
            if await session.get(CustomerRow, customer.number) is not None:
                raise AlreadyExists(f"customer {customer.number!r} already exists")
            session.add(CustomerRow(**_customer_columns(customer)))

    async def save_customer(self, customer: CustomerRecord) -> bool:
        """Insert or replace a customer; True when it was created."""
        async with self._transaction() as session:
            row = await session.get(CustomerRow, customer.number)
            if row is None:
                session.add(CustomerRow(**_customer_columns(customer)))
                return True
            for key, value in _customer_columns(customer).items():
                setattr(row, key, value)
            return False

    async def delete_customer(self, number: str) -> None:
        async with self._transaction() as session:
            row = await session.get(CustomerRow, number)
            if row is None:
                raise NotFound(f"unknown customer {number!r}")
            await session.delete(row)

    async def record_last_agent(self, number: str, extension: str) -> bool:
        """Remember who last served a known customer; False when the number is not a customer."""
        async with self._transaction() as session:
            result = await session.exec(
                sa.update(CustomerRow)
                .where(col(CustomerRow.number) == number)
                .values(last_agent=extension)
            )
            return bool(result.rowcount)

    # -- seeding from configuration ------------------------------------------------------

    async def seed(
        self,
        agents: Sequence[AgentProfile],
        queues: Sequence[QueueConfig],
        sites: Sequence[SiteRecord],
        customers: Sequence[CustomerRecord],
    ) -> SeedReport:
        """Make the database hold the configured records, idempotently, in one transaction.

        Missing records are inserted; existing ones get their configuration-owned
        fields updated. Runtime fields are left alone: a site's ``healthy``, an
        agent's ``active``, a customer's ``last_agent``. Nothing is deleted: a record
        dropped from the configuration stays until removed through the API.
        """
        inserted: dict[str, list[str]] = defaultdict(list)
        updated: dict[str, list[str]] = defaultdict(list)
        async with self._transaction() as session:
            for site in sites:
                site_row = await session.get(SiteRow, site.name)
                if site_row is None:
                    session.add(_site_row(site))
                    inserted["sites"].append(site.name)
                elif (site_row.timezone, site_row.business_hours) != (site.timezone,
                                                                      _hours_column(site)):
                    site_row.timezone = site.timezone
                    site_row.business_hours = _hours_column(site)
                    updated["sites"].append(site.name)
            await session.flush()

            stored_agents = {
                record.extension: record.profile for record in await self._load_agents(session)
            }
            for profile in agents:
                previous = stored_agents.get(profile.extension)
                if previous == profile:
                    continue
                await self._write_agent(session, profile, active=None)
                (inserted if previous is None else updated)["agents"].append(profile.extension)

            stored_queues = {config.name: config for config in await self._load_queues(session)}
            for config in queues:
                previous_queue = stored_queues.get(config.name)
                if previous_queue == config:
                    continue
                await self._write_queue(session, config)
                (inserted if previous_queue is None else updated)["queues"].append(config.name)
            await self._check_overflow_targets(session)

            for customer in customers:
                customer_row = await session.get(CustomerRow, customer.number)
                if customer_row is None:
                    session.add(CustomerRow(**_customer_columns(customer)))
                    inserted["customers"].append(customer.number)
                    continue
                changed = False
                for key, value in _customer_columns(customer).items():
                    if key in {"number", "last_agent"} or getattr(customer_row, key) == value:
                        continue
                    setattr(customer_row, key, value)
                    changed = True
                if changed:
                    updated["customers"].append(customer.number)
        kinds = ("sites", "agents", "queues", "customers")
        return SeedReport(
            inserted={kind: tuple(inserted[kind]) for kind in kinds},
            updated={kind: tuple(updated[kind]) for kind in kinds},
        )

    async def load_into(self, router: Router) -> None:
        """Give the router every site's health, every queue and every active agent."""
        for site in await self.sites():
            router.set_site_health(site.name, site.healthy)
        for config in await self.queue_configs():
            router.upsert_queue(config)
        for profile in await self.agent_profiles():
            router.upsert_agent(profile)

    # -- call history --------------------------------------------------------------------

    async def append_call_record(self, record: CallRecord) -> CallRecord:
        """Store one call-detail record; returns it with its ``id``."""
        row = CallRecordRow(
            call_id=record.call_id,
            caller=record.caller,
            callee=record.callee,
            started=as_utc(record.started),
            answered=None if record.answered is None else as_utc(record.answered),
            ended=None if record.ended is None else as_utc(record.ended),
            queue=record.queue,
            agent=record.agent,
            disposition=record.disposition,
            ivr_path=list(record.ivr_path),
            wait_seconds=record.wait_seconds,
            talk_seconds=record.talk_seconds,
            site=record.site,
        )
        async with self._transaction() as session:
            session.add(row)
            await session.flush()
            return _call_record_from_row(row)

    async def append_history(self, records: Sequence[CallRecord],
                             entries: Sequence[QueueLogEntry], *,
                             started: Sequence[LiveCallRecord] = (),
                             details: Sequence[CallDetails] = (),
                             last_agents: Sequence[LastAgent] = ()) -> None:
        """Store a batch of call records and queue-log lines in one transaction.

        The call recorder's path: one multi-row INSERT per table, without the ORM's
        per-row bookkeeping and without reading the rows back (it needs no ids).
        ``started`` calls are noted as in progress; each call record closes its call's
        in-progress row; ``details`` are finished calls' routing, IVR path and context;
        ``last_agents`` go on the callers' customer records (a caller who is not a
        customer is left alone, as by ``record_last_agent``).
        """
        if not records and not entries and not started and not details and not last_agents:
            return
        async with self._engine.begin() as connection:
            if last_agents:
                await connection.execute(_UPDATE_LAST_AGENT, [
                    {"caller": note.number, "agent": note.agent} for note in last_agents])
            if started:
                latest = {call.call_id: call for call in started}  # a call noted again wins
                await connection.execute(_DELETE_LIVE_CALLS, {"call_ids": list(latest)})
                await connection.execute(sa.insert(_LIVE_CALLS), [
                    {"call_id": call.call_id, "caller": call.caller, "callee": call.callee,
                     "kind": call.kind, "started": as_utc(call.started),
                     "answered": None if call.answered is None else as_utc(call.answered),
                     "queue": call.queue, "agent": call.agent, "site": call.site,
                     "priority": call.priority,
                     "enqueued_at": None if call.enqueued_at is None else as_utc(call.enqueued_at)}
                    for call in latest.values()])
            if records:
                call_ids = {"call_ids": [record.call_id for record in records]}
                await connection.execute(_DELETE_LIVE_CALLS, call_ids)
                # A call another site recorded as interrupted (it took this site for dead)
                # has its real record now, which replaces that one; its caller's place goes.
                await connection.execute(_DELETE_INTERRUPTED_RECORDS, call_ids)
                await connection.execute(_DELETE_INTERRUPTED_WAITS, call_ids)
            if details:
                await connection.execute(sa.insert(CallDetailsRow.__table__), [  # type: ignore[attr-defined]
                    {"call_id": d.call_id, "ended": as_utc(d.ended), "routing": _json_safe(d.routing),
                     "ivr": _json_safe(d.ivr), "context": _json_safe(d.context)}
                    for d in details])
            if entries:
                await connection.execute(sa.insert(QueueLogRow.__table__), [  # type: ignore[attr-defined]
                    {"time": as_utc(e.time), "call_id": e.call_id, "queue": e.queue, "agent": e.agent,
                     "event": e.event, "data": dict(e.data)}
                    for e in entries])
            if records:
                await connection.execute(sa.insert(CallRecordRow.__table__), [  # type: ignore[attr-defined]
                    {"call_id": r.call_id, "caller": r.caller, "callee": r.callee,
                     "started": as_utc(r.started),
                     "answered": None if r.answered is None else as_utc(r.answered),
                     "ended": None if r.ended is None else as_utc(r.ended),
                     "queue": r.queue, "agent": r.agent, "disposition": r.disposition,
                     "ivr_path": list(r.ivr_path), "wait_seconds": r.wait_seconds,
                     "talk_seconds": r.talk_seconds, "site": r.site,
                     "origin_call_id": r.origin_call_id, "callback_request_id": r.callback_request_id}
                    for r in records])

    async def call_records(
        self,
        *,
        call_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        agent: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[CallRecord]:
        """Records matching every given filter, oldest start first (or newest, for an agent's
        recent calls); ``since`` <= started < ``until``."""
        check_page(limit, offset)
        query = select(CallRecordRow)
        if call_id is not None:
            query = query.where(col(CallRecordRow.call_id) == call_id)
        if since is not None:
            query = query.where(col(CallRecordRow.started) >= as_utc(since))
        if until is not None:
            query = query.where(col(CallRecordRow.started) < as_utc(until))
        if queue is not None:
            query = query.where(col(CallRecordRow.queue) == queue)
        if agent is not None:
            query = query.where(col(CallRecordRow.agent) == agent)
        order = ((col(CallRecordRow.started).desc(), col(CallRecordRow.id).desc()) if newest_first
                 else (col(CallRecordRow.started), col(CallRecordRow.id)))
        query = query.order_by(*order).limit(limit).offset(offset)
        async with self._transaction() as session:
            return [_call_record_from_row(row) for row in (await session.exec(query)).all()]

    async def append_queue_log(self, entries: Sequence[QueueLogEntry]) -> list[QueueLogEntry]:
        """Store queue-log lines in one transaction; returns them with their ``id``."""
        rows = [
            QueueLogRow(
                time=as_utc(entry.time),
                call_id=entry.call_id,
                queue=entry.queue,
                agent=entry.agent,
                event=entry.event,
                data=dict(entry.data),
            )
            for entry in entries
        ]
        async with self._transaction() as session:
            session.add_all(rows)
            await session.flush()
            return [_queue_log_from_row(row) for row in rows]

    async def queue_log(
        self,
        *,
        call_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[QueueLogEntry]:
        """Queue-log lines matching every given filter, in time order; ``since`` <= time < ``until``."""
        check_page(limit, offset)
        query = select(QueueLogRow)
        if call_id is not None:
            query = query.where(col(QueueLogRow.call_id) == call_id)
        if since is not None:
            query = query.where(col(QueueLogRow.time) >= as_utc(since))
        if until is not None:
            query = query.where(col(QueueLogRow.time) < as_utc(until))
        if queue is not None:
            query = query.where(col(QueueLogRow.queue) == queue)
        query = query.order_by(col(QueueLogRow.time), col(QueueLogRow.id)).limit(limit).offset(offset)
        async with self._transaction() as session:
            return [_queue_log_from_row(row) for row in (await session.exec(query)).all()]


    # -- finished calls' details ---------------------------------------------------------

    async def call_details(self, call_id: str) -> CallDetails | None:
        """The latest stored routing, IVR path and context of a finished call."""
        query = (select(CallDetailsRow).where(col(CallDetailsRow.call_id) == call_id)
                 .order_by(col(CallDetailsRow.id).desc()).limit(1))
        async with self._transaction() as session:
            row = (await session.exec(query)).first()
        if row is None:
            return None
        return CallDetails(row.call_id, row.ended, row.routing, row.ivr, row.context)

    # -- calls in progress ----------------------------------------------------------------

    async def live_calls(self, *, site: str | None = None) -> list[LiveCallRecord]:
        """The calls noted as in progress by ``site``'s server, oldest first."""
        query = select(LiveCallRow).where(_same_site(col(LiveCallRow.site), site))
        async with self._transaction() as session:
            rows = (await session.exec(query.order_by(col(LiveCallRow.started)))).all()
        return [LiveCallRecord(row.call_id, row.caller, row.callee, row.started, row.kind, row.site,
                               row.queue, row.agent, row.answered, row.priority, row.enqueued_at)
                for row in rows]

    async def close_interrupted_calls(self, *, site: str | None = None,
                                      now: datetime | None = None,
                                      started_before: datetime | None = None) -> list[CallRecord]:
        """Turn the calls ``site``'s server noted in progress and never closed (it crashed)
        into call records with disposition ``interrupted``; returns those records, oldest first.

        Called by a server at start-up for its own site, before any new call is noted, and
        by a surviving site for a site it knows dead. Each note is taken once, whoever asks.
        A caller who was waiting in a queue (not yet answered by an agent) leaves their place
        (``InterruptedWait``, interrupted ``now``) for ``take_interrupted_wait``.
        ``started_before``: only calls started before then (a survivor leaves alone the calls
        of the dead site's server if it was restarted meanwhile).
        """
        interrupted_at = as_utc(now or datetime.now(UTC))
        async with self._engine.begin() as connection:
            # One DELETE ... RETURNING takes the notes: of two sites adopting the same dead
            # site's calls at once (PostgreSQL), the second finds them gone and writes nothing.
            whose = _same_site(_LIVE_CALLS.c.site, site)
            if started_before is not None:
                whose = sa.and_(whose, _LIVE_CALLS.c.started < as_utc(started_before))
            taken = await connection.execute(
                sa.delete(_LIVE_CALLS).where(whose).returning(*_LIVE_CALLS.c))
            rows = sorted(taken.all(), key=lambda row: (as_utc(row.started), row.call_id))
            records = [CallRecord(call_id=row.call_id, caller=row.caller, callee=row.callee,
                                  started=row.started, answered=row.answered, queue=row.queue,
                                  agent=row.agent, disposition="interrupted", site=row.site)
                       for row in rows]
            waits = [{"call_id": row.call_id, "number": row.caller, "queue": row.queue,
                      "priority": row.priority, "enqueued_at": as_utc(row.enqueued_at),
                      "site": row.site, "interrupted_at": interrupted_at}
                     for row in rows
                     if row.queue is not None and row.answered is None and row.caller
                     and row.priority is not None and row.enqueued_at is not None]
            if records:
                # A call noted again after an earlier adoption (its site was alive then) and
                # taken again now keeps one interrupted record and one place.
                call_ids = {"call_ids": [record.call_id for record in records]}
                await connection.execute(_DELETE_INTERRUPTED_RECORDS, call_ids)
                await connection.execute(_DELETE_INTERRUPTED_WAITS, call_ids)
                await connection.execute(sa.insert(_CALL_RECORDS), [
                    {"call_id": r.call_id, "caller": r.caller, "callee": r.callee,
                     "started": r.started, "answered": r.answered, "ended": None,
                     "queue": r.queue, "agent": r.agent, "disposition": r.disposition,
                     "ivr_path": [], "wait_seconds": None, "talk_seconds": None, "site": r.site}
                    for r in records])
            if waits:
                await connection.execute(sa.insert(_INTERRUPTED_WAITS), waits)
            return records

    async def take_interrupted_wait(self, number: str, queue: str,
                                    since: datetime) -> InterruptedWait | None:
        """The place ``number`` had in ``queue`` when its call was interrupted at ``since`` or
        later (the earliest-queued such place), removed so that it is given back once."""
        table = _INTERRUPTED_WAITS
        earliest = (sa.select(table.c.call_id)
                    .where(table.c.number == number, table.c.queue == queue,
                           table.c.interrupted_at >= as_utc(since))
                    .order_by(table.c.enqueued_at).limit(1).scalar_subquery())
        async with self._engine.begin() as connection:
            row = (await connection.execute(
                sa.delete(table).where(table.c.call_id == earliest).returning(*table.c))).first()
        if row is None:
            return None
        return InterruptedWait(row.call_id, row.number, row.queue, row.priority, row.enqueued_at,
                               row.site, row.interrupted_at)

    async def interrupted_wait_holders(self, since: datetime) -> list[tuple[str, str]]:
        """(number, queue) of each place kept from a call interrupted at ``since`` or later."""
        table = _INTERRUPTED_WAITS
        async with self._engine.connect() as connection:
            rows = await connection.execute(sa.select(table.c.number, table.c.queue)
                                            .where(table.c.interrupted_at >= as_utc(since)))
            return [(row.number, row.queue) for row in rows]

    async def forget_interrupted_waits(self, before: datetime) -> int:
        """Drop the places of calls interrupted before ``before``; returns how many."""
        async with self._engine.begin() as connection:
            result = await connection.execute(sa.delete(_INTERRUPTED_WAITS).where(
                _INTERRUPTED_WAITS.c.interrupted_at < as_utc(before)))
            return int(result.rowcount or 0)

    # -- registrations ------------------------------------------------------------------

    async def replace_registrations(self, bindings: Mapping[str, Sequence[RegistrationRecord]]) -> None:
        """Make each user's stored bindings exactly the ones given (none: unregistered)."""
        if not bindings:
            return
        rows = [
            {"user": r.user, "contact_uri": r.contact_uri, "contact": r.contact,
             "expires_at": as_utc(r.expires_at), "call_id": r.call_id, "cseq": r.cseq,
             "source_host": r.source_host, "source_port": r.source_port,
             "transport": r.transport, "user_agent": r.user_agent, "path": list(r.path) or None}
            for records in bindings.values() for r in records
        ]
        async with self._engine.begin() as connection:
            await connection.execute(_DELETE_USERS_REGISTRATIONS, {"users": list(bindings)})
            if rows:
                await connection.execute(sa.insert(_REGISTRATIONS), rows)

    async def registrations(self, now: datetime) -> list[RegistrationRecord]:
        """Every binding still valid at ``now``; expired ones are deleted on the way."""
        table = RegistrationRow.__table__  # type: ignore[attr-defined]
        async with self._engine.begin() as connection:
            await connection.execute(sa.delete(table).where(table.c.expires_at <= as_utc(now)))
            result = await connection.execute(
                sa.select(table).order_by(table.c.user, table.c.contact_uri))
            return [
                RegistrationRecord(
                    user=row.user, contact=row.contact, contact_uri=row.contact_uri,
                    expires_at=row.expires_at, call_id=row.call_id, cseq=row.cseq,
                    source_host=row.source_host, source_port=row.source_port,
                    transport=row.transport, user_agent=row.user_agent, path=tuple(row.path or ()))
                for row in result
            ]


def _json_safe(value: Any) -> Any:
    """``value`` with infinite and NaN floats as null, which JSON (and PostgreSQL's JSONB)
    cannot hold; the API shows them as null anyway. A router score can be -inf."""
    try:  # most values have none: one pass of the C encoder instead of a walk in Python
        json.dumps(value, allow_nan=False)
    except ValueError:
        return _finite_floats_only(value)
    return value


def _finite_floats_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_floats_only(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_floats_only(item) for item in value]
    return value


def _same_site(column: Any, site: str | None) -> Any:
    return column.is_(None) if site is None else column == site
