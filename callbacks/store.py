"""Where callback requests are kept: the interface the desk needs, whatever the database.

``pbx.store.callbacks.SqlCallbackStore`` implements it on SQLite and PostgreSQL.
Every write of one request is a compare-and-set on its ``version``, so two sites
acting on the same request cannot both succeed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from callbacks.requests import CallbackRequest, CallbackState


class CallbackStore(Protocol):
    async def insert_callback(self, request: CallbackRequest) -> CallbackRequest | None:
        """Store a new request; None (and nothing stored) when an active request for the
        same number and queue exists already: there is at most one."""
        ...

    async def callback(self, request_id: str) -> CallbackRequest | None:
        ...

    async def active_callbacks(self, number: str, queue: str | None = None) -> list[CallbackRequest]:
        """The pending or dialing requests for ``number`` (in ``queue``, or in any queue)."""
        ...

    async def active_numbers(self) -> set[str]:
        """Every number with a pending or dialing request, in any queue."""
        ...

    async def callbacks(self, *, state: CallbackState | None = None, queue: str | None = None,
                        site: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[CallbackRequest]:
        """Requests matching the filters (``site``: the owner), oldest original enqueue time first."""
        ...

    async def due_callbacks(self, now: datetime, *, site: str | None = None,
                            queue: str | None = None, limit: int = 100) -> list[CallbackRequest]:
        """Pending requests due at ``now`` in line order (``callbacks.scheduling.line_key``);
        with ``site``, only those it may claim: its own, and those whose lease ran out."""
        ...

    async def lapsed_callbacks(self, site: str, now: datetime, *,
                               limit: int = 100) -> list[CallbackRequest]:
        """Active requests owned by other sites whose lease ran out before ``now``."""
        ...

    async def overdue_callbacks(self, now: datetime, *, limit: int = 100) -> list[CallbackRequest]:
        """Pending requests whose expiry is at or before ``now``."""
        ...

    async def count_callbacks(self, state: CallbackState) -> dict[str, int]:
        """How many requests are in ``state``, per queue (queues with none are absent)."""
        ...

    async def replace_callback(self, previous: CallbackRequest, updated: CallbackRequest) -> bool:
        """Write ``updated`` over the stored request only if it is still at ``previous.version``;
        False when it changed meanwhile (nothing written)."""
        ...

    async def renew_leases(self, site: str, until: datetime) -> int:
        """Extend the lease of every active request ``site`` owns to ``until``; how many."""
        ...

    async def release_leases(self, site: str, now: datetime) -> int:
        """End the lease of every active request ``site`` owns at ``now``; how many."""
        ...
