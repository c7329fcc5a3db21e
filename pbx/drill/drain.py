"""A site drained for a drill: it refuses new calls and gives its callbacks up.

The front door's dispatcher probes every site with OPTIONS; a drained site answers 503, so
the dispatcher takes it out of the rotation, and a new INVITE that still arrives is
answered 503 too, which the front door fails over to the next site (a 5xx is a failure,
a 486 would not be). Calls in progress (and in-dialog requests) carry on. Callback
requests: no new try starts here; once the tries under way have ended, ``hand_over``
gives this site's requests up and the other sites adopt them at once (their leases end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from events import EventBus
from events.drills import CallbacksHandedOver, DrainEnded, DrainStarted

log = logging.getLogger("pbx.drill")

# Seconds a front door or phone is asked to wait before trying this site again.
RETRY_AFTER_SECONDS = 30


class DrainConflict(Exception):
    """The drain cannot do that now (the reason is the message)."""


class Callbacks(Protocol):
    @property
    def dialing(self) -> list[str]: ...

    def pause(self) -> None: ...

    async def hand_over(self) -> int: ...

    def resume(self) -> None: ...


class SiteDrain:
    def __init__(self, site: str, events: EventBus, calls_in_progress: Callable[[], int],
                 callbacks: Callable[[], Callbacks | None]) -> None:
        self.site = site
        self._events = events
        self._calls_in_progress = calls_in_progress
        self._callbacks = callbacks
        self.draining = False
        self.since: float | None = None
        self.by: str | None = None
        self.callbacks_handed_over: int | None = None

    def start(self, by: str) -> None:
        if self.draining:
            raise DrainConflict(f"site {self.site} is already drained (since "
                                f"{_when(self.since)}, by {self.by}): a drill is running")
        self.draining, self.since, self.by, self.callbacks_handed_over = True, time.time(), by, None
        callbacks = self._callbacks()
        if callbacks is not None:
            callbacks.pause()
        log.warning("site %s drained by %s: new calls answered 503 (the front door sends them "
                    "to the other sites); %d call(s) in progress carry on", self.site, by,
                    self._calls_in_progress())
        self._events.publish(DrainStarted(self.site, by, at=self.since))

    async def hand_over_callbacks(self) -> int:
        if not self.draining:
            raise DrainConflict(f"site {self.site} is not drained: its callbacks stay here")
        callbacks = self._callbacks()
        if callbacks is None:
            return 0
        if callbacks.dialing:
            raise DrainConflict(f"site {self.site} is still trying {len(callbacks.dialing)} "
                                "callback(s): hand over once they end")
        count = await callbacks.hand_over()
        self.callbacks_handed_over = (self.callbacks_handed_over or 0) + count
        log.warning("site %s gave up %d callback request(s) for the other sites to adopt",
                    self.site, count)
        self._events.publish(CallbacksHandedOver(self.site, count))
        return count

    def end(self, by: str) -> None:
        if not self.draining:
            raise DrainConflict(f"site {self.site} is not drained: nothing to end")
        self.draining, self.since, self.by = False, None, None
        callbacks = self._callbacks()
        if callbacks is not None:
            callbacks.resume()
        log.warning("site %s takes new calls again (%s)", self.site, by)
        self._events.publish(DrainEnded(self.site, by))

    def view(self) -> dict[str, Any]:
        callbacks = self._callbacks()
        return {"site": self.site, "draining": self.draining, "since": self.since, "by": self.by,
                "calls_in_progress": self._calls_in_progress(),
                "callback_tries": len(callbacks.dialing) if callbacks is not None else 0,
                "callbacks_handed_over": self.callbacks_handed_over}


def _when(moment: float | None) -> str:
    return "?" if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
