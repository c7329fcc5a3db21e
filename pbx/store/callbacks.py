"""Callback requests in SQL (SQLite or PostgreSQL): ``callbacks.CallbackStore`` on the store's engine.

Every write of one request is ``UPDATE ... WHERE id = :id AND version = :version``
in its own transaction: a single statement, atomic on both databases (PostgreSQL
re-checks the WHERE after waiting for a concurrent writer; SQLite writes one at a
time), so of two sites writing the same version exactly one changes the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from callbacks import ACTIVE_STATES, CallbackRequest, CallbackState, Outcome, OutcomeRecord
from pbx.store.records import as_utc
from pbx.store.store import check_page
from pbx.store.tables import CallbackRequestRow

_TABLE: sa.Table = CallbackRequestRow.__table__  # type: ignore[attr-defined]
_ACTIVE = sorted(state.value for state in ACTIVE_STATES)


def _columns(request: CallbackRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "number": request.number,
        "queue": request.queue,
        "priority": request.priority,
        "requested_at": as_utc(request.requested_at),
        "earliest_at": as_utc(request.earliest_at),
        "expires_at": as_utc(request.expires_at),
        "state": request.state.value,
        "attempts": request.attempts,
        "history": [
            {"at": as_utc(record.at).isoformat(), "outcome": record.outcome.value,
             "site": record.site, "detail": record.detail}
            for record in request.history
        ],
        "origin_call_id": request.origin_call_id,
        "site": request.site,
        "lease_expires_at": as_utc(request.lease_expires_at),
        "version": request.version,
    }


def _request(row: Mapping[str, Any]) -> CallbackRequest:
    return CallbackRequest(
        id=row["id"],
        number=row["number"],
        queue=row["queue"],
        requested_at=as_utc(row["requested_at"]),
        earliest_at=as_utc(row["earliest_at"]),
        expires_at=as_utc(row["expires_at"]),
        site=row["site"],
        lease_expires_at=as_utc(row["lease_expires_at"]),
        priority=row["priority"],
        state=CallbackState(row["state"]),
        attempts=row["attempts"],
        history=tuple(
            OutcomeRecord(as_utc(datetime.fromisoformat(entry["at"])), Outcome(entry["outcome"]),
                          entry["site"], entry.get("detail", ""))
            for entry in row["history"]
        ),
        origin_call_id=row["origin_call_id"],
        version=row["version"],
    )


_LINE_ORDER = (_TABLE.c.priority.desc(), _TABLE.c.requested_at, _TABLE.c.id)


class SqlCallbackStore:
    """Callback requests in the store's database (migration step 5 creates the table)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _select(self, query: sa.Select[Any]) -> list[CallbackRequest]:
        async with self._engine.connect() as connection:
            result = await connection.execute(query)
            return [_request(row) for row in result.mappings()]

    async def insert_callback(self, request: CallbackRequest) -> CallbackRequest | None:
        try:
            async with self._engine.begin() as connection:
                await connection.execute(sa.insert(_TABLE).values(**_columns(request)))
        except IntegrityError:
            if await self.callback(request.id) is not None:
                raise  # the id is taken: not a duplicate request but a broken id
            return None  # an active request for the same number and queue exists
        return request

    async def callback(self, request_id: str) -> CallbackRequest | None:
        found = await self._select(sa.select(_TABLE).where(_TABLE.c.id == request_id))
        return found[0] if found else None

    async def active_callbacks(self, number: str, queue: str | None = None) -> list[CallbackRequest]:
        query = sa.select(_TABLE).where(_TABLE.c.number == number, _TABLE.c.state.in_(_ACTIVE))
        if queue is not None:
            query = query.where(_TABLE.c.queue == queue)
        return await self._select(query.order_by(*_LINE_ORDER))

    async def callbacks(self, *, state: CallbackState | None = None, queue: str | None = None,
                        site: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[CallbackRequest]:
        check_page(limit, offset)
        query = sa.select(_TABLE)
        if state is not None:
            query = query.where(_TABLE.c.state == CallbackState(state).value)
        if queue is not None:
            query = query.where(_TABLE.c.queue == queue)
        if site is not None:
            query = query.where(_TABLE.c.site == site)
        return await self._select(
            query.order_by(_TABLE.c.requested_at, _TABLE.c.id).limit(limit).offset(offset))

    async def due_callbacks(self, now: datetime, *, site: str | None = None,
                            queue: str | None = None, limit: int = 100) -> list[CallbackRequest]:
        check_page(limit)
        moment = as_utc(now)
        query = sa.select(_TABLE).where(
            _TABLE.c.state == CallbackState.PENDING.value,
            _TABLE.c.earliest_at <= moment,
            _TABLE.c.expires_at > moment,
        )
        if site is not None:
            query = query.where(sa.or_(_TABLE.c.site == site, _TABLE.c.lease_expires_at <= moment))
        if queue is not None:
            query = query.where(_TABLE.c.queue == queue)
        return await self._select(query.order_by(*_LINE_ORDER).limit(limit))

    async def lapsed_callbacks(self, site: str, now: datetime, *,
                               limit: int = 100) -> list[CallbackRequest]:
        check_page(limit)
        query = sa.select(_TABLE).where(
            _TABLE.c.state.in_(_ACTIVE),
            _TABLE.c.site != site,
            _TABLE.c.lease_expires_at <= as_utc(now),
        )
        return await self._select(query.order_by(*_LINE_ORDER).limit(limit))

    async def overdue_callbacks(self, now: datetime, *, limit: int = 100) -> list[CallbackRequest]:
        check_page(limit)
        query = sa.select(_TABLE).where(
            _TABLE.c.state == CallbackState.PENDING.value,
            _TABLE.c.expires_at <= as_utc(now),
        )
        return await self._select(query.order_by(_TABLE.c.expires_at, _TABLE.c.id).limit(limit))

    async def count_callbacks(self, state: CallbackState) -> dict[str, int]:
        query = (sa.select(_TABLE.c.queue, sa.func.count())
                 .where(_TABLE.c.state == CallbackState(state).value)
                 .group_by(_TABLE.c.queue))
        async with self._engine.connect() as connection:
            result = await connection.execute(query)
            return {queue: int(count) for queue, count in result.all()}

    async def replace_callback(self, previous: CallbackRequest, updated: CallbackRequest) -> bool:
        if updated.id != previous.id or updated.version != previous.version + 1:
            raise ValueError(f"callback {previous.id}: version {updated.version} of "
                             f"{updated.id} cannot replace version {previous.version}")
        columns = _columns(updated)
        del columns["id"]
        statement = (sa.update(_TABLE)
                     .where(_TABLE.c.id == previous.id, _TABLE.c.version == previous.version)
                     .values(**columns))
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def renew_leases(self, site: str, until: datetime) -> int:
        statement = (sa.update(_TABLE)
                     .where(_TABLE.c.site == site, _TABLE.c.state.in_(_ACTIVE))
                     .values(lease_expires_at=as_utc(until), version=_TABLE.c.version + 1))
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return int(result.rowcount)

    async def release_leases(self, site: str, now: datetime) -> int:
        moment = as_utc(now)
        statement = (sa.update(_TABLE)
                     .where(_TABLE.c.site == site, _TABLE.c.state.in_(_ACTIVE),
                            _TABLE.c.lease_expires_at > moment)
                     .values(lease_expires_at=moment, version=_TABLE.c.version + 1))
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return int(result.rowcount)
