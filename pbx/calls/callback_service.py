"""The callback service of one site: keeps its leases, adopts a dead site's requests, and
dials the requests whose turn has come, first in line first, through a ``CallbackDialer``.

One asyncio task runs rounds every ``poll_seconds``, and claims the next due request as
soon as a try ends in between; the clock of the requests is injected (tests move it),
the rounds' pace is real time. Each round:
reload the numbers with an active request (so an answered caller with none costs no
store query, see ``callbacks.desk``), renew this site's leases when a third of the lease has passed, adopt lapsed leases,
expire overdue requests, count what is pending (an event, for the metrics), then
claim as many due requests as there are free dialing slots and try each in its own task.
With a ``CallbackLine`` (the server's: the router's waiting line) the due requests are
handed to the line instead, and each is claimed and tried when the line says its turn
came (``take_turn``: an agent is reserved for it).
A try's outcome is recorded on the request by the desk (retry with backoff, done, failed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from callbacks import CallbackConflict, CallbackDesk, CallbackRequest, Outcome
from events import EventSink
from events.callbacks import CallbacksPending

log = logging.getLogger("pbx.callbacks")

PENDING_COUNT_EVERY = 5  # rounds between counts of the pending requests


@dataclass(frozen=True)
class TryResult:
    """How one try to reach the customer ended."""

    outcome: Outcome
    detail: str = ""
    call_id: str | None = None  # the callback call's Call-ID, when one was placed


class CallbackDialer(Protocol):
    def can_dial(self, queue: str) -> bool:
        """Whether this site can place the callbacks of ``queue`` (it has a trunk for it)."""
        ...

    async def dial(self, request: CallbackRequest) -> TryResult:
        """Call the customer of ``request`` (and connect them); return how the try ended."""
        ...


class CallbackLine(Protocol):
    """The waiting line due requests join until their turn comes (the router's, through
    ``pbx.calls.callback_connection``): with one, the service claims a request when the line
    says its turn came (``take_turn``), not as soon as it is due."""

    def keep(self, due: list[CallbackRequest]) -> None:
        """``due``: every due request of this site in an open queue, first in line first.
        Those not in line join it at their place; those in line and not in ``due`` leave it."""
        ...

    def not_claimed(self, request_id: str) -> None:
        """Its turn came but the request could not be claimed (cancelled, expired, adopted)."""
        ...

    def try_over(self, request_id: str) -> None:
        """The try of a request ended and its outcome is recorded: its next turn may start."""
        ...


class CallbackService:
    def __init__(self, desk: CallbackDesk, dialer: CallbackDialer, *, queues: Callable[[], list[str]],
                 poll_seconds: float = 1.0, concurrent_tries: int = 4,
                 is_open: Callable[[str, datetime], bool] | None = None,
                 publish: EventSink | None = None, line: CallbackLine | None = None) -> None:
        """``queues`` lists the queues whose requests may be dialled; ``is_open(queue, now)``
        says whether a queue takes callbacks at ``now`` (business hours; default: always).
        With a ``line``, due requests wait in it and are tried when their turn comes, however
        many at once (the agents free are the limit); without one, up to ``concurrent_tries``
        due requests are tried at once, first in line first."""
        self.desk = desk
        self._dialer = dialer
        self._queues = queues
        self._poll = poll_seconds
        self._slots = concurrent_tries
        self._is_open = is_open or (lambda queue, now: True)
        self._publish = publish or (lambda event: None)
        self._line = line
        self._tries: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._renewed_at: datetime | None = None
        self._rounds = 0
        self._warned_undialable: set[str] = set()
        self._slot_freed = asyncio.Event()  # also set to wake the rounds when stopping
        self._stopping = False
        # A drill drains this site: no new try (paused), then its requests are given up.
        self._paused = False
        self._handed_over = False

    @property
    def dialing(self) -> list[str]:
        """The ids of the requests this site is trying now."""
        return list(self._tries)

    def call_off(self, request_id: str) -> bool:
        """Stop the try of a request that ended meanwhile (cancelled through the API, or the
        customer reached an agent); True when one was under way here."""
        task = self._tries.get(request_id)
        if task is None:
            return False
        task.cancel()
        return True

    def pause(self) -> None:
        """Start no new try (the site is drained); the tries under way finish here."""
        self._paused = True

    async def hand_over(self) -> int:
        """Paused with no try under way: give this site's requests up so another site adopts
        them at once, and keep none until ``resume``; how many were given up."""
        if not self._paused or self._tries:
            raise RuntimeError("pause first and let the tries under way end")
        self._handed_over = True
        return await self.desk.release_leases()

    def resume(self) -> None:
        self._paused = self._handed_over = False
        self._renewed_at = None

    async def start(self) -> None:
        """Put back in line the tries a previous run of this site left, then start the rounds."""
        await self.desk.load_active_numbers()
        for request in await self.desk.recover_interrupted():
            log.warning("callback %s for %s in %s was being dialled when this site stopped: "
                        "back in line at its place", request.id, request.number, request.queue)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the rounds and the tries under way; give the leases up so another site (or
        this one, restarted) takes the requests at once."""
        # The rounds are asked to end, not cancelled: a cancellation can be lost in
        # asyncio.wait_for (Python 3.11) or land in the middle of a store transaction.
        self._stopping = True
        self._slot_freed.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        tries = list(self._tries.values())
        for task in tries:
            task.cancel()
        await asyncio.gather(*tries, return_exceptions=True)
        try:
            await self.desk.release_leases()
        except Exception:
            log.exception("cannot release the callback leases of site %s", self.desk.site)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self.run_round()
            except Exception:
                log.exception("callback round failed")
            # Between rounds, a try that ends frees its slot for the next due request at once.
            next_round = loop.time() + self._poll
            while not self._stopping and (left := next_round - loop.time()) > 0:
                self._slot_freed.clear()
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), left)
                except TimeoutError:
                    break
                if self._stopping:
                    break
                try:
                    await self._start_due(self.desk.now())
                except Exception:
                    log.exception("callback claim failed")

    async def run_round(self) -> list[CallbackRequest]:
        """One round (see the module's docstring); returns the requests it started trying."""
        now = self.desk.now()
        if self._handed_over:
            return []
        await self.desk.load_active_numbers()
        if self._renewed_at is None or now - self._renewed_at >= self.desk.lease / 3:
            await self.desk.renew_leases()
            self._renewed_at = now
        for request in [] if self._paused else await self.desk.adopt_lapsed():
            log.info("callback %s for %s in %s adopted from a site whose lease ran out",
                     request.id, request.number, request.queue)
        await self.desk.expire_overdue()
        if self._rounds % PENDING_COUNT_EVERY == 0:
            self._publish(CallbacksPending(await self.desk.pending_by_queue(), at=now.timestamp()))
        self._rounds += 1
        return await self._start_due(now)

    async def _start_due(self, now: datetime) -> list[CallbackRequest]:
        if self._paused:
            if self._line is not None:
                self._line.keep([])
            return []
        queues = self._queues()
        open_queues = [queue for queue in queues if self._dialable(queue) and self._is_open(queue, now)]
        if self._line is not None:
            self._line.keep(await self.desk.due_for_line(open_queues))
            return []
        free = self._slots - len(self._tries)
        if free <= 0:
            return []
        if len(open_queues) == len(queues):
            claimed = await self.desk.claim_due(limit=free)
        else:
            claimed = []
            for queue in open_queues:
                claimed += await self.desk.claim_due(limit=free - len(claimed), queue=queue)
                if len(claimed) >= free:
                    break
        for request in claimed:
            task = asyncio.get_running_loop().create_task(self._try(request))
            self._tries[request.id] = task
            task.add_done_callback(self._forget_try(request.id))
        return claimed

    def take_turn(self, request_id: str) -> bool:
        """The line says the request's turn came (an agent is reserved for it): claim it and
        try it; when it cannot be claimed any more, the line is told (``not_claimed``).
        False while its previous try is still ending (``try_over`` comes next) or stopping."""
        if self._stopping or request_id in self._tries:
            return False
        task = asyncio.get_running_loop().create_task(self._claim_and_try(request_id))
        self._tries[request_id] = task
        task.add_done_callback(self._forget_try(request_id))
        return True

    async def _claim_and_try(self, request_id: str) -> None:
        try:
            request = None if self._paused else await self.desk.claim(request_id)
        except Exception:
            log.exception("callback %s: cannot claim it", request_id)
            request = None
        if request is None:
            if self._line is not None:
                self._line.not_claimed(request_id)
            return
        await self._try(request)

    def _forget_try(self, request_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self._tries.pop(request_id, None)
            self._slot_freed.set()
            if self._line is not None and not self._stopping:
                self._line.try_over(request_id)
        return forget

    def _dialable(self, queue: str) -> bool:
        if self._dialer.can_dial(queue):
            self._warned_undialable.discard(queue)
            return True
        if queue not in self._warned_undialable:
            self._warned_undialable.add(queue)
            log.warning("callbacks of queue %s cannot be dialled: no trunk for it (configure "
                        "trunks: and callbacks.queues.%s.trunk); they wait", queue, queue)
        return False

    async def _try(self, request: CallbackRequest) -> None:
        log.info("callback %s: calling %s back for queue %s (try %d)", request.id, request.number,
                 request.queue, request.attempts + 1)
        try:
            result = await self._dialer.dial(request)
        except asyncio.CancelledError:
            log.info("callback %s: try called off", request.id)
            raise
        except Exception as error:
            log.exception("callback %s: the dialer failed", request.id)
            result = TryResult(Outcome.TRUNK_FAILURE, f"dialer error: {error}")
        try:
            updated = await self.desk.report(request, result.outcome, result.detail,
                                             call_id=result.call_id)
        except CallbackConflict as error:
            log.warning("callback %s: %s", request.id, error)
            return
        log.info("callback %s: %s%s; now %s", request.id, result.outcome.value,
                 f" ({result.detail})" if result.detail else "", updated.state.value)
