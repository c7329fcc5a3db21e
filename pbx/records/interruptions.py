"""Calls a crash left in progress: recorded as ``interrupted`` when their site (or a survivor) comes to it.

Every call is noted in the store while it is in progress (the recorder's ``LiveCallRecord``);
its record replaces the note. Notes left behind belong to a server that died. Its own site
turns them into records at its next start (``pbx serve`` does, before taking calls), and a
surviving site that knows the site dead does the same for it with
``record_interrupted_calls(store, dead_site, by=own_site)``: each note is taken once,
whoever comes first. If the site was alive after all, its own record of the call replaces
the ``interrupted`` one when the call ends.

A caller who was waiting in a queue leaves their place (number, queue, priority, original
enqueue time, site) with the record. ``KeptPlaces.place_of`` gives it back, once, when the
same number reaches the same queue again within ``keep_seconds`` of the interruption being
recorded: the queueing code enqueues them with that priority and enqueue time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from events.sites import SiteDown
from pbx.store import CallRecord, InterruptedWait, Store

log = logging.getLogger("pbx.records")


async def record_interrupted_calls(store: Store, site: str | None, *,
                                   by: str | None = None) -> list[CallRecord]:
    """Write an ``interrupted`` record for each call ``site`` left in progress; returns them.

    ``site`` None: calls noted without a site (by a server version that did not name it).
    ``by``: the surviving site doing it for a dead one, for the log.
    """
    records = await store.close_interrupted_calls(site=site)
    whose = "the server" if by is None else f"site {site or '(unnamed)'} (adopted by {by})"
    for record in records:
        log.warning("call %s (%s -> %s, started %s) was in progress when %s stopped "
                    "unexpectedly: recorded as interrupted", record.call_id, record.caller,
                    record.callee, record.started.isoformat(timespec="seconds"), whose)
    return records


class KeptPlaces:
    """The places interrupted callers left, given back when they call again in time.

    Nearly every caller never had one, so the store is asked only for the (number, queue)
    pairs known to hold a place, read once at start (the server's own start-up writes its
    site's places before), or, in a contact center of several sites, while another site
    is down or was within the window (a survivor may be writing that site's places).
    """

    def __init__(self, store: Store, keep_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._keep = timedelta(seconds=keep_seconds)
        self._clock = clock
        self._holders: Counter[tuple[str, str]] | None = None
        self._others_may_write_until = 0.0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def load(self) -> None:
        """Read which (number, queue) pairs hold a place now."""
        self._holders = Counter(await self._store.interrupted_wait_holders(self._now() - self._keep))

    def site_down(self, event: SiteDown) -> None:
        """Another site went down: its places may be written by a survivor for a while."""
        self._others_may_write_until = self._clock() + self._keep.total_seconds()

    async def place_of(self, number: str, queue: str) -> InterruptedWait | None:
        """``number``'s place in ``queue`` from an interrupted call, taken (given once)."""
        if not self._keep:
            return None
        if self._holders is None:
            await self.load()
        assert self._holders is not None
        key = (number, queue)
        if not self._holders[key] and self._clock() >= self._others_may_write_until:
            return None
        kept = await self._store.take_interrupted_wait(number, queue, self._now() - self._keep)
        if kept is None or self._holders[key] <= 1:
            self._holders.pop(key, None)
        else:
            self._holders[key] -= 1
        return kept

    async def forget_expired(self) -> int:
        """Drop places older than the window (nobody can claim them any more)."""
        return await self._store.forget_interrupted_waits(self._now() - self._keep)
