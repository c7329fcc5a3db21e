"""A site drained for a drill: it refuses new calls, hands its agents, waiting callers and
callbacks to another site.

The front door's dispatcher probes every site with OPTIONS; a drained site answers 503, so
the dispatcher takes it out of the rotation, and a new INVITE that still arrives is
answered 503 too, which the front door fails over to the next site (a 5xx is a failure,
a 486 would not be). Calls in progress (and in-dialog requests) carry on. Callback
requests: no new try starts here; once the tries under way have ended, ``hand_over``
gives this site's requests up and the other sites adopt them at once (their leases end).

Agents: ``release_agents`` stops offering new calls to this site's agents and gives those
not on a call to the target site to claim (``pbx.drill.agents``); an agent on a call goes
once that call ends (the drill asks again). Callers waiting here are offered to the other
sites' agents (``pbx.calls.cross_site``), each counted here as moved. The drain is on the
bus (retained): a restart of this site finds it and stays drained until it ends, and the
other sites send it no cross-site call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from events import EventBus
from events.drills import (
    AgentsReleased,
    CallbacksHandedOver,
    CallerMoved,
    DrainAnnounced,
    DrainEnded,
    DrainStarted,
)

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


class Agents(Protocol):
    """What the drain needs of the site link's agents (``pbx.server`` wires it)."""

    def release(self, to: str) -> tuple[list[str], list[str]]:
        """(released, still on a call): this site's agents it stops offering calls to."""
        ...

    def restore_released(self) -> None: ...

    async def claim(self, agents: list[str], from_site: str) -> list[str]:
        """This site serves ``agents`` from now on (their phones' stored registrations)."""
        ...

    async def take_back(self) -> list[str]:
        """This site's own agents that other sites serve now: claimed back."""
        ...


class SiteDrain:
    def __init__(self, site: str, events: EventBus, calls_in_progress: Callable[[], int],
                 callbacks: Callable[[], Callbacks | None], agents: Agents | None = None) -> None:
        self.site = site
        self._events = events
        self._calls_in_progress = calls_in_progress
        self._callbacks = callbacks
        self._agents = agents
        self.draining = False
        self.since: float | None = None
        self.by: str | None = None
        self.callbacks_handed_over: int | None = None
        self.agents_released: dict[str, float] = {}  # agent -> when, during this drain
        self.callers_moved: list[dict[str, Any]] = []  # during this drain
        events.subscribe(self._announced, DrainAnnounced)
        events.subscribe(self._caller_moved, CallerMoved)

    def start(self, by: str) -> None:
        if self.draining:
            raise DrainConflict(f"site {self.site} is already drained (since "
                                f"{_when(self.since)}, by {self.by}): a drill is running")
        self._begin(time.time(), by)
        log.warning("site %s drained by %s: new calls answered 503 (the front door sends them "
                    "to the other sites); %d call(s) in progress carry on", self.site, by,
                    self._calls_in_progress())

    def _begin(self, since: float, by: str) -> None:
        self.draining, self.since, self.by, self.callbacks_handed_over = True, since, by, None
        self.agents_released, self.callers_moved = {}, []
        callbacks = self._callbacks()
        if callbacks is not None:
            callbacks.pause()
        if self._agents is not None:
            # From this moment no new call is offered to this site's agents: callers waiting
            # here go to the other sites' agents (the drill claims these ones there).
            self._agents.release(by)
        self._events.publish(DrainStarted(self.site, by, at=since))

    def _announced(self, event: DrainAnnounced) -> None:
        """The bus's retained word on this site, read at start: a drain that outlived a
        restart of this server goes on until it is ended."""
        if event.site != self.site or not event.draining or self.draining:
            return
        self._begin(event.since or time.time(), event.by or "?")
        log.warning("site %s stays drained (since %s, by %s; on the bus): new calls answered "
                    "503 until the drill ends (pbx drill --back)", self.site, _when(self.since),
                    self.by)

    def _caller_moved(self, event: CallerMoved) -> None:
        if event.site == self.site and self.draining:
            self.callers_moved.append({"call_id": event.call_id, "site": event.to,
                                       "agent": event.agent, "at": event.at})

    def release_agents(self, to: str) -> tuple[list[str], list[str]]:
        """Offer no new call to this site's agents; (free for ``to`` to claim, still on a
        call: to claim once it ends)."""
        if not self.draining:
            raise DrainConflict(f"site {self.site} is not drained: its agents stay here")
        if self._agents is None:
            return [], []
        released, busy = self._agents.release(to)
        now = time.time()
        new = [agent for agent in released if agent not in self.agents_released]
        for agent in new:
            self.agents_released[agent] = now
        if new:
            log.warning("site %s released agent(s) %s for site %s to serve", self.site,
                        ", ".join(new), to)
            self._events.publish(AgentsReleased(self.site, to, tuple(new), at=now))
        return released, busy

    async def claim_agents(self, agents: list[str], from_site: str) -> list[str]:
        if self._agents is None:
            return []
        if self.draining:
            raise DrainConflict(f"site {self.site} is drained itself: it takes no agents")
        return await self._agents.claim(agents, from_site)

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
        if self._agents is not None:
            self._agents.restore_released()  # released, never claimed: still this site's
        log.warning("site %s takes new calls again (%s)", self.site, by)
        self._events.publish(DrainEnded(self.site, by))

    async def take_agents_back(self) -> list[str]:
        """After a drill: this site's agents that another site serves come home."""
        if self._agents is None:
            return []
        if self.draining:
            raise DrainConflict(f"site {self.site} is drained: end the drain first")
        return await self._agents.take_back()

    def view(self) -> dict[str, Any]:
        callbacks = self._callbacks()
        return {"site": self.site, "draining": self.draining, "since": self.since, "by": self.by,
                "calls_in_progress": self._calls_in_progress(),
                "callback_tries": len(callbacks.dialing) if callbacks is not None else 0,
                "callbacks_handed_over": self.callbacks_handed_over,
                "agents_released": [{"agent": agent, "at": at}
                                    for agent, at in self.agents_released.items()],
                "callers_moved": list(self.callers_moved)}


def _when(moment: float | None) -> str:
    return "?" if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
