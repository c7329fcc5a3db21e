"""The callback desk of one site: the one door through which callback requests change.

It joins the pure steps of ``callbacks.requests`` to a ``CallbackStore``: read a
request, compute its next version, write it over the version read. A write that
loses (another site or task changed the request first) is reported, never
retried blindly. The clock is injected.

Every call answered by an agent asks whether its caller has requests to cancel; most
callers have none. Once ``load_active_numbers`` has run, the desk keeps the numbers
with an active request (loaded from the store, plus those requested here since) and
asks the store only for those. The callback service reloads it every round, so a
request another site stored is seen here from the next round on (``poll_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta

from callbacks.errors import CallbackConflict, CallbackError
from callbacks.numbers import InvalidNumber, normalize_number
from callbacks.policy import CallbackPolicy
from callbacks.requests import (
    DEFAULT_PRIORITY,
    CallbackRequest,
    CallbackState,
    Outcome,
    adopt,
    apply_outcome,
    cancel,
    claim,
    expire,
    new_request,
    recover,
)
from callbacks.scheduling import due_in_line_order, duplicate_of
from callbacks.store import CallbackStore
from events import EventSink
from events.callbacks import (
    CallbackEnded,
    CallbackRequested,
    CallbacksAdopted,
    CallbackTryEnded,
    CallbackTryStarted,
)

DEFAULT_LEASE = timedelta(seconds=30)


class CallbackDesk:
    def __init__(self, store: CallbackStore, *, site: str, clock: Callable[[], datetime],
                 lease: timedelta = DEFAULT_LEASE,
                 policies: Mapping[str, CallbackPolicy] | None = None,
                 default_policy: CallbackPolicy | None = None,
                 publish: EventSink | None = None) -> None:
        """``publish`` receives an event (``events.callbacks``) for every change made here,
        stamped with the desk's clock."""
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        self.store = store
        self.site = site
        self.lease = lease
        self._clock = clock
        self._policies = dict(policies or {})
        self._default_policy = default_policy or CallbackPolicy()
        self._publish = publish or (lambda event: None)
        # Numbers with an active request (a superset until the next load); None: not loaded.
        self._active_numbers: set[str] | None = None
        self._requested_while_loading: set[str] | None = None

    def now(self) -> datetime:
        """The desk's clock: the time its requests are judged against."""
        return self._clock()

    def policy(self, queue: str) -> CallbackPolicy:
        return self._policies.get(queue, self._default_policy)

    async def request(self, number: str, queue: str, *, priority: int = DEFAULT_PRIORITY,
                      requested_at: datetime | None = None, earliest_at: datetime | None = None,
                      origin_call_id: str | None = None) -> tuple[CallbackRequest, bool]:
        """A pending request for ``number`` in ``queue``, and True when it is new; when one is
        pending already, that one and False (one per number and queue).

        ``requested_at`` is the caller's original enqueue time (default now). Raises
        ``InvalidNumber`` with a reason for a number that cannot be dialled.
        """
        now = self._clock()
        request = new_request(number, queue, site=self.site, now=now, lease=self.lease,
                              policy=self.policy(queue), priority=priority,
                              requested_at=requested_at, earliest_at=earliest_at,
                              origin_call_id=origin_call_id)
        # The existing one can end between the failed insert and this read: try again then.
        for _ in range(3):
            if await self.store.insert_callback(request) is not None:
                self._note_active(request.number)
                self._publish(CallbackRequested(request.id, queue, request.number,
                                                request.requested_at.timestamp(), origin_call_id,
                                                self.site, at=now.timestamp()))
                return request, True
            existing = duplicate_of(await self.store.active_callbacks(request.number, queue),
                                    request.number, queue)
            if existing is not None:
                self._note_active(existing.number)
                return existing, False
        raise CallbackConflict(f"callback for {request.number} in {queue}: the pending request "
                               "kept changing while a new one was stored")

    async def load_active_numbers(self) -> None:
        """(Re)load the numbers with an active request, in any queue, from the store."""
        self._requested_while_loading = set()
        try:
            numbers = await self.store.active_numbers()
            # A request stored here during the read may have been committed after it.
            self._active_numbers = numbers | self._requested_while_loading
        finally:
            self._requested_while_loading = None

    def may_have_active_requests(self, caller: str) -> bool:
        """False only when ``caller`` (any spelling of the number) has no active request: the
        loaded numbers say so, or it is no dialable number."""
        try:
            number = normalize_number(caller)
        except InvalidNumber:
            return False
        return self._active_numbers is None or number in self._active_numbers

    def _note_active(self, number: str) -> None:
        if self._active_numbers is not None:
            self._active_numbers.add(number)
        if self._requested_while_loading is not None:
            self._requested_while_loading.add(number)

    async def claim_due(self, *, limit: int = 1, queue: str | None = None) -> list[CallbackRequest]:
        """Claim up to ``limit`` due requests for dialing, first in line first. A request
        another site claims first is skipped: each request is claimed by one site only."""
        now = self._clock()
        claimed: list[CallbackRequest] = []
        candidates = await self.store.due_callbacks(now, site=self.site, queue=queue,
                                                    limit=max(limit * 4, 16))
        for candidate in due_in_line_order(candidates, now):
            if len(claimed) >= limit:
                break
            taken = await self._claim(candidate, now)
            if taken is not None:
                claimed.append(taken)
        return claimed

    async def due_for_line(self, queues: Collection[str] | None = None, *,
                           limit: int = 1000) -> list[CallbackRequest]:
        """The due pending requests this site owns (of ``queues``), first in line first: the
        ones it keeps in its waiting lines until their turn comes (then ``claim``)."""
        now = self._clock()
        due = await self.store.due_callbacks(now, site=self.site, limit=limit)
        return [request for request in due_in_line_order(due, now)
                if request.site == self.site and (queues is None or request.queue in queues)]

    async def claim(self, request_id: str) -> CallbackRequest | None:
        """Claim one request for dialing; None when it is not (or no longer) claimable by us."""
        stored = await self.store.callback(request_id)
        return None if stored is None else await self._claim(stored, self._clock())

    async def _claim(self, request: CallbackRequest, now: datetime) -> CallbackRequest | None:
        # One re-read: our own lease renewal may have bumped the version since it was read.
        for _ in range(2):
            try:
                updated = claim(request, self.site, now, self.lease)
            except CallbackError:
                return None
            if await self.store.replace_callback(request, updated):
                self._publish(CallbackTryStarted(updated.id, updated.queue, self.site,
                                                 updated.attempts + 1,
                                                 _seconds(now - updated.requested_at),
                                                 at=now.timestamp()))
                return updated
            fresh = await self.store.callback(request.id)
            if fresh is None:
                return None
            request = fresh
        return None

    async def report(self, request: CallbackRequest, outcome: Outcome, detail: str = "", *,
                     call_id: str | None = None) -> CallbackRequest:
        """Record how the try of a request we claimed ended; returns the request after it.

        Raises ``CallbackConflict`` when the request changed since it was claimed (it was
        cancelled, or our lease ran out and another site adopted it).
        """
        now = self._clock()
        updated = apply_outcome(request, outcome, now, site=self.site,
                                policy=self.policy(request.queue), detail=detail)
        # Our own lease renewals bump the version during a try: those changes are no conflict.
        while not await self.store.replace_callback(request, updated):
            fresh = await self.store.callback(request.id)
            if fresh is None or not _only_renewed(request, fresh):
                raise CallbackConflict(f"callback {request.id} changed since version "
                                       f"{request.version}; its {outcome.value} was not recorded")
            request = fresh
            updated = apply_outcome(request, outcome, now, site=self.site,
                                    policy=self.policy(request.queue), detail=detail)
        self._publish(CallbackTryEnded(updated.id, updated.queue, self.site, outcome.value,
                                       outcome is Outcome.ANSWERED, detail, updated.state.value,
                                       not updated.active, _seconds(now - updated.requested_at),
                                       call_id, updated.number, updated.origin_call_id,
                                       at=now.timestamp()))
        return updated

    async def cancel(self, request_id: str, reason: str) -> CallbackRequest | None:
        """Cancel an active request; None when there is none by that id or it has ended."""
        for _ in range(3):
            stored = await self.store.callback(request_id)
            if stored is None or not stored.active:
                return None
            now = self._clock()
            updated = cancel(stored, now, reason, self.site)
            if await self.store.replace_callback(stored, updated):
                self._publish(CallbackEnded(updated.id, updated.queue, self.site,
                                            updated.state.value, reason, at=now.timestamp()))
                return updated
        raise CallbackConflict(f"callback {request_id} kept changing; not cancelled")

    async def cancel_for_customer(self, caller: str, queue: str | None = None,
                                  reason: str = "the customer reached an agent") -> list[CallbackRequest]:
        """The customer called in and reached an agent: cancel their active requests (in
        ``queue``, or in every queue). A caller id that is no dialable number has none."""
        if not self.may_have_active_requests(caller):
            return []
        number = normalize_number(caller)
        cancelled = []
        for request in await self.store.active_callbacks(number, queue):
            done = await self.cancel(request.id, reason)
            if done is not None:
                cancelled.append(done)
        return cancelled

    async def renew_leases(self) -> int:
        """Keep our requests: call well within every lease period."""
        return await self.store.renew_leases(self.site, self._clock() + self.lease)

    async def release_leases(self) -> int:
        """Give our requests up (shutting down) so another site adopts them at once."""
        return await self.store.release_leases(self.site, self._clock())

    async def recover_interrupted(self) -> list[CallbackRequest]:
        """Put back in line the requests a previous run of this site was dialing: those tries
        died with it. Call at start-up, before claiming anything."""
        now = self._clock()
        recovered = []
        while batch := await self.store.callbacks(state=CallbackState.DIALING, site=self.site,
                                                  limit=100):
            for request in batch:
                updated = recover(request, self.site, now, self.lease)
                if not await self.store.replace_callback(request, updated):
                    raise CallbackConflict(f"callback {request.id} changed during recovery: "
                                           f"is another process running as site {self.site!r}?")
                recovered.append(updated)
        return recovered

    async def adopt_lapsed(self, *, limit: int = 100) -> list[CallbackRequest]:
        """Take over the requests of sites whose leases ran out; a try they were making goes
        back in line at its place. Each request is adopted by one site only."""
        now = self._clock()
        adopted = []
        for request in await self.store.lapsed_callbacks(self.site, now, limit=limit):
            try:
                updated = adopt(request, self.site, now, self.lease)
            except CallbackError:
                continue
            if await self.store.replace_callback(request, updated):
                adopted.append(updated)
        if adopted:
            self._publish(CallbacksAdopted(self.site, len(adopted), at=now.timestamp()))
        return adopted

    async def expire_overdue(self, *, limit: int = 100) -> list[CallbackRequest]:
        """End the pending requests past their expiry."""
        now = self._clock()
        expired = []
        for request in await self.store.overdue_callbacks(now, limit=limit):
            try:
                updated = expire(request, now, self.site)
            except CallbackError:
                continue
            if await self.store.replace_callback(request, updated):
                self._publish(CallbackEnded(updated.id, updated.queue, self.site,
                                            updated.state.value, "not completed before its expiry",
                                            at=now.timestamp()))
                expired.append(updated)
        return expired

    async def pending_by_queue(self) -> dict[str, int]:
        """How many requests are pending in each queue (every site's)."""
        return await self.store.count_callbacks(CallbackState.PENDING)


def _only_renewed(before: CallbackRequest, after: CallbackRequest) -> bool:
    """``after`` is ``before`` with a renewed lease, and nothing else changed."""
    return (after.version > before.version and after.state is before.state
            and after.site == before.site and after.attempts == before.attempts
            and after.history == before.history)


def _seconds(span: timedelta) -> float:
    return max(0.0, span.total_seconds())
