"""Calls a crash left in progress: recorded as ``interrupted`` when their site (or a survivor) comes to it.

Every call is noted in the store while it is in progress (the recorder's ``LiveCallRecord``);
its record replaces the note. Notes left behind belong to a server that died. Its own site
turns them into records at its next start (``pbx serve`` does, before taking calls), and a
surviving site that knows the site dead does the same for it with
``record_interrupted_calls(store, dead_site, by=own_site)``: each note is taken once,
whoever comes first. ``SurvivorAdoption`` does it by itself when the site bus brings the
dead site's last will. If the site was alive after all, its own record of the call replaces
the ``interrupted`` one when the call ends.

A caller who was waiting in a queue leaves their place (number, queue, priority, original
enqueue time, site) with the record. ``KeptPlaces.place_of`` gives it back, once, when the
same number reaches the same queue again within ``keep_seconds`` of the interruption being
recorded: the queueing code enqueues them with that priority and enqueue time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from events import EventBus
from events.sites import SiteDown
from pbx.store import CallRecord, InterruptedWait, Store

log = logging.getLogger("pbx.records")


async def record_interrupted_calls(store: Store, site: str | None, *, by: str | None = None,
                                   started_before: datetime | None = None) -> list[CallRecord]:
    """Write an ``interrupted`` record for each call ``site`` left in progress; returns them.

    ``site`` None: calls noted without a site (by a server version that did not name it).
    ``by``: the surviving site doing it for a dead one, for the log. ``started_before``:
    only calls started before then.
    """
    records = await store.close_interrupted_calls(site=site, started_before=started_before)
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


# The reason a site's health gives when the broker published the site's last will: its
# connection was lost without a goodbye (a clean stop says "offline: shutdown").
LAST_WILL = "offline: connection lost"


class SurvivorAdoption:
    """A surviving site records a dead site's calls in progress as interrupted.

    Only a last will counts as a death: a site forced down by an operator (a drill) or
    whose heartbeat is late may still be carrying calls. The notes are the claim: each is
    taken by one ``DELETE ... RETURNING`` in the shared store, so of several survivors (and
    the dead site's own server, restarted) exactly one records each call; calls started
    after the death was heard of belong to the site's restarted server and are left alone.
    """

    def __init__(self, store: Store, own_site: str, events: EventBus,
                 is_up: Callable[[str], bool]) -> None:
        self._store = store
        self._own_site = own_site
        self._is_up = is_up
        self._tasks: set[asyncio.Task[None]] = set()
        self.adopted: dict[str, int] = {}  # dead site -> calls recorded for it here
        events.subscribe(self._site_down, SiteDown)

    def _site_down(self, event: SiteDown) -> None:
        if event.site == self._own_site or event.reason != LAST_WILL:
            return
        task = asyncio.get_running_loop().create_task(self._adopt(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adopt(self, event: SiteDown) -> None:
        if self._is_up(event.site):
            return  # back already: its own server records what it left
        try:
            records = await record_interrupted_calls(
                self._store, event.site, by=self._own_site,
                started_before=datetime.fromtimestamp(event.at, UTC))
        except Exception:
            log.exception("cannot record the calls site %s left in progress", event.site)
            return
        self.adopted[event.site] = self.adopted.get(event.site, 0) + len(records)
        log.warning("site %s died (%s): %d call(s) it had in progress recorded as interrupted "
                    "by site %s", event.site, event.reason, len(records), self._own_site)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
