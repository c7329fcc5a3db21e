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

# The service's rounds (every poll interval) and each answered call run the same queries with
# new values:
# built once with bind parameters, since a statement built per round leaves its parameters
# in reference cycles for the garbage collector.
_MOMENT = sa.bindparam("moment", type_=_TABLE.c.expires_at.type)
_LIMIT = sa.bindparam("limit", type_=sa.Integer)


def _due_query(by_site: bool, by_queue: bool) -> sa.Select[Any]:
    query = sa.select(_TABLE).where(
        _TABLE.c.state == CallbackState.PENDING.value,
        _TABLE.c.earliest_at <= _MOMENT,
        _TABLE.c.expires_at > _MOMENT,
    )
    if by_site:
        query = query.where(sa.or_(_TABLE.c.site == sa.bindparam("site"),
                                   _TABLE.c.lease_expires_at <= _MOMENT))
    if by_queue:
        query = query.where(_TABLE.c.queue == sa.bindparam("queue"))
    return query.order_by(*_LINE_ORDER).limit(_LIMIT)


_DUE = {(by_site, by_queue): _due_query(by_site, by_queue)
        for by_site in (False, True) for by_queue in (False, True)}
_LAPSED = (sa.select(_TABLE)
           .where(_TABLE.c.state.in_(_ACTIVE), _TABLE.c.site != sa.bindparam("site"),
                  _TABLE.c.lease_expires_at <= _MOMENT)
           .order_by(*_LINE_ORDER).limit(_LIMIT))
_ACTIVE_FOR = {by_queue: (sa.select(_TABLE)
                          .where(_TABLE.c.number == sa.bindparam("number"), _TABLE.c.state.in_(_ACTIVE),
                                 *([_TABLE.c.queue == sa.bindparam("queue")] if by_queue else []))
                          .order_by(*_LINE_ORDER))
               for by_queue in (False, True)}
_ACTIVE_NUMBERS = sa.select(_TABLE.c.number).where(_TABLE.c.state.in_(_ACTIVE)).distinct()
_RENEW = (sa.update(_TABLE)
          .where(_TABLE.c.site == sa.bindparam("owner"), _TABLE.c.state.in_(_ACTIVE))
          .values(lease_expires_at=sa.bindparam("until", type_=_TABLE.c.lease_expires_at.type),
                  version=_TABLE.c.version + 1))
_PENDING_BY_QUEUE = (sa.select(_TABLE.c.queue, sa.func.count())
                     .where(_TABLE.c.state == CallbackState.PENDING.value)
                     .group_by(_TABLE.c.queue))
_OVERDUE = (sa.select(_TABLE)
            .where(_TABLE.c.state == CallbackState.PENDING.value, _TABLE.c.expires_at <= _MOMENT)
            .order_by(_TABLE.c.expires_at, _TABLE.c.id).limit(_LIMIT))


class SqlCallbackStore:
    """Callback requests in the store's database (migration step 5 creates the table)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _select(self, query: sa.Select[Any],
                      parameters: dict[str, Any] | None = None) -> list[CallbackRequest]:
        async with self._engine.connect() as connection:
            result = await connection.execute(query, parameters)
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
        if queue is None:
            return await self._select(_ACTIVE_FOR[False], {"number": number})
        return await self._select(_ACTIVE_FOR[True], {"number": number, "queue": queue})

    async def active_numbers(self) -> set[str]:
        async with self._engine.connect() as connection:
            result = await connection.execute(_ACTIVE_NUMBERS)
            return {row[0] for row in result}

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
        parameters: dict[str, Any] = {"moment": as_utc(now), "limit": limit}
        if site is not None:
            parameters["site"] = site
        if queue is not None:
            parameters["queue"] = queue
        return await self._select(_DUE[site is not None, queue is not None], parameters)

    async def lapsed_callbacks(self, site: str, now: datetime, *,
                               limit: int = 100) -> list[CallbackRequest]:
        check_page(limit)
        return await self._select(_LAPSED, {"site": site, "moment": as_utc(now), "limit": limit})

    async def overdue_callbacks(self, now: datetime, *, limit: int = 100) -> list[CallbackRequest]:
        check_page(limit)
        return await self._select(_OVERDUE, {"moment": as_utc(now), "limit": limit})

    async def count_callbacks(self, state: CallbackState) -> dict[str, int]:
        if CallbackState(state) is CallbackState.PENDING:  # what the service counts each round
            query = _PENDING_BY_QUEUE
        else:
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
        async with self._engine.begin() as connection:
            result = await connection.execute(_RENEW, {"owner": site, "until": as_utc(until)})
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
