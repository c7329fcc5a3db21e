"""A callback request and everything that moves it: a state machine with an explicit table.

Rules of this file:
- Every change of a request is a pure function here that takes the request and
  ``now`` and returns the next request; nothing reads a clock, nothing does I/O.
- A change of state goes through ``TRANSITIONS``; a step the table does not list
  is refused with ``IllegalTransition``.
- Every change, state or lease, returns the request with ``version`` + 1: the
  store writes it only over the version it was computed from (compare-and-set),
  so of two sites acting on the same request, one wins and the other is told.
- ``requested_at`` (the caller's original enqueue time) and ``priority`` are set
  once and never changed: a callback keeps its place in line and never jumps it.
- The request is owned by one site at a time, which holds a lease on it until
  ``lease_expires_at`` and renews it while alive (the store renews or releases all
  of a site's leases at once, bumping each version). Only the owner claims and
  reports on it; any site may take over (adopt, or claim) a request whose lease
  has run out, and any site may cancel or expire one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from callbacks.errors import IllegalTransition, LeaseHeld, NotDue
from callbacks.numbers import normalize_number
from callbacks.policy import CallbackPolicy

# The tier values the IVR sets (router.calls: free 1, paid 2, vip 3).
DEFAULT_PRIORITY = 1


class CallbackState(StrEnum):
    PENDING = "pending"  # waiting for its turn, or for its next try
    DIALING = "dialing"  # claimed by its owning site: an agent and the customer are being called
    COMPLETED = "completed"  # the customer answered and was connected
    FAILED = "failed"  # no try left, or the number cannot be dialled
    EXPIRED = "expired"  # not completed before its expiry
    CANCELLED = "cancelled"  # the customer reached an agent otherwise, or an operator cancelled


ACTIVE_STATES = frozenset({CallbackState.PENDING, CallbackState.DIALING})
FINAL_STATES = frozenset(CallbackState) - ACTIVE_STATES


class Trigger(StrEnum):
    CLAIM = "claim for dialing"
    CONNECT = "customer connected"
    RETRY = "try failed, retry later"
    GIVE_UP = "try failed, none left"
    REQUEUE = "back in line, same place"
    CANCEL = "cancel"
    EXPIRE = "expire"


S, T = CallbackState, Trigger
TRANSITIONS: dict[tuple[CallbackState, Trigger], CallbackState] = {
    (S.PENDING, T.CLAIM): S.DIALING,
    (S.PENDING, T.CANCEL): S.CANCELLED,
    (S.PENDING, T.EXPIRE): S.EXPIRED,
    (S.DIALING, T.CONNECT): S.COMPLETED,
    (S.DIALING, T.RETRY): S.PENDING,
    (S.DIALING, T.GIVE_UP): S.FAILED,
    # The agent rejected the preview, or the owning site stopped during the try:
    # the customer was not reached through their own doing, so no try is counted.
    (S.DIALING, T.REQUEUE): S.PENDING,
    # The customer reached an agent on their own while their callback was being set up.
    (S.DIALING, T.CANCEL): S.CANCELLED,
    # A failed try whose retry would fall after the expiry.
    (S.DIALING, T.EXPIRE): S.EXPIRED,
}


def next_state(state: CallbackState, trigger: Trigger) -> CallbackState:
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(f"a {state.value} callback cannot take {trigger.value!r}") from None


class Outcome(StrEnum):
    """What one try (or the request's end) came to; kept in the request's history."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    INVALID_NUMBER = "invalid_number"  # the trunk says the number does not exist (404, 484, 604)
    TRUNK_FAILURE = "trunk_failure"  # the trunk is down or answered 5xx: the customer was not dialled
    AGENT_REJECTED = "agent_rejected"  # the agent declined or let the preview ring out
    INTERRUPTED = "interrupted"  # the owning site stopped during the try; noted by the site adopting it
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Tries that reached the customer's phone, counted against the policy's max_attempts.
CUSTOMER_TRIES = frozenset({Outcome.ANSWERED, Outcome.NO_ANSWER, Outcome.BUSY, Outcome.INVALID_NUMBER})
# Failures retried with backoff.
RETRIED = frozenset({Outcome.NO_ANSWER, Outcome.BUSY, Outcome.TRUNK_FAILURE})
# Outcomes a dialing site reports with ``apply_outcome``; the others come from their own steps.
REPORTED = CUSTOMER_TRIES | RETRIED | {Outcome.AGENT_REJECTED}


@dataclass(frozen=True)
class OutcomeRecord:
    at: datetime
    outcome: Outcome
    site: str
    detail: str = ""


@dataclass(frozen=True)
class CallbackRequest:
    id: str
    number: str
    queue: str
    requested_at: datetime  # the original enqueue time: the request's place in line
    earliest_at: datetime  # not dialled before this (a scheduled callback, or a retry's backoff)
    expires_at: datetime
    site: str  # the owning site, which holds the lease
    lease_expires_at: datetime
    priority: int = DEFAULT_PRIORITY
    state: CallbackState = CallbackState.PENDING
    attempts: int = 0  # tries that reached the customer's phone
    history: tuple[OutcomeRecord, ...] = ()
    origin_call_id: str | None = None
    version: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def lease_live(self, now: datetime) -> bool:
        return now < self.lease_expires_at

    def retries(self) -> int:
        """Failed tries retried so far: the exponent of the next backoff."""
        return sum(1 for record in self.history if record.outcome in RETRIED)


def new_request(
    number: str,
    queue: str,
    *,
    site: str,
    now: datetime,
    lease: timedelta,
    policy: CallbackPolicy,
    priority: int = DEFAULT_PRIORITY,
    requested_at: datetime | None = None,
    earliest_at: datetime | None = None,
    origin_call_id: str | None = None,
) -> CallbackRequest:
    """A pending request, owned by ``site``. ``requested_at`` is when the caller joined the
    queue (default ``now``); ``earliest_at`` delays the first try (default ``now``).

    Raises ``InvalidNumber`` for a number that cannot be dialled.
    """
    if not queue:
        raise ValueError("a callback needs a queue")
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    if requested_at is not None and requested_at > now:
        raise ValueError(f"the caller cannot have joined the queue in the future ({requested_at.isoformat()})")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an int, got {priority!r}")
    earliest = now if earliest_at is None else max(earliest_at, now)
    return CallbackRequest(
        id=uuid.uuid4().hex,
        number=normalize_number(number),
        queue=queue,
        requested_at=now if requested_at is None else requested_at,
        earliest_at=earliest,
        expires_at=earliest + policy.expiry,
        site=site,
        lease_expires_at=now + lease,
        priority=priority,
        origin_call_id=origin_call_id,
    )


def _step(request: CallbackRequest, trigger: Trigger, **changes: Any) -> CallbackRequest:
    return replace(request, state=next_state(request.state, trigger), version=request.version + 1,
                   **changes)


def _require_owner(request: CallbackRequest, site: str) -> None:
    if request.site != site:
        raise LeaseHeld(f"callback {request.id} is owned by site {request.site!r}, not {site!r}")


def claim(request: CallbackRequest, site: str, now: datetime, lease: timedelta) -> CallbackRequest:
    """Take a due request for dialing: ``site`` becomes its owner, with a fresh lease.

    Allowed to the owner, or to any site once the owner's lease has run out.
    """
    next_state(request.state, Trigger.CLAIM)
    if request.site != site and request.lease_live(now):
        raise LeaseHeld(f"callback {request.id}: site {request.site!r} holds its lease "
                        f"until {request.lease_expires_at.isoformat()}")
    if not is_due(request, now):
        raise NotDue(f"callback {request.id} is due from {request.earliest_at.isoformat()} "
                     f"until {request.expires_at.isoformat()}, not at {now.isoformat()}")
    return _step(request, Trigger.CLAIM, site=site, lease_expires_at=now + lease)


def apply_outcome(request: CallbackRequest, outcome: Outcome, now: datetime, *, site: str,
                  policy: CallbackPolicy, detail: str = "") -> CallbackRequest:
    """The request after its try ended with ``outcome``, as its owning ``site`` reports it."""
    if outcome not in REPORTED:
        raise ValueError(f"{outcome.value} is not the outcome of a try")
    _require_owner(request, site)
    if request.state is not CallbackState.DIALING:
        raise IllegalTransition(f"callback {request.id} is {request.state.value}, not dialing: "
                                f"no try to report {outcome.value} for")
    attempts = request.attempts + (1 if outcome in CUSTOMER_TRIES else 0)
    history = (*request.history, OutcomeRecord(now, outcome, request.site, detail))
    if outcome is Outcome.ANSWERED:
        return _step(request, Trigger.CONNECT, attempts=attempts, history=history)
    if outcome is Outcome.INVALID_NUMBER:
        return _step(request, Trigger.GIVE_UP, attempts=attempts, history=history)
    if outcome is Outcome.AGENT_REJECTED:
        return _step(request, Trigger.REQUEUE, history=history)
    if outcome is not Outcome.TRUNK_FAILURE and attempts >= policy.max_attempts:
        return _step(request, Trigger.GIVE_UP, attempts=attempts, history=history)
    retry_at = now + policy.delay_before_retry(request.retries() + 1)
    if retry_at >= request.expires_at:
        return _step(request, Trigger.EXPIRE, attempts=attempts, history=history)
    return _step(request, Trigger.RETRY, attempts=attempts, history=history, earliest_at=retry_at)


def cancel(request: CallbackRequest, now: datetime, reason: str, site: str) -> CallbackRequest:
    """Cancelled (by ``site``): the customer reached an agent otherwise, or an operator asked."""
    history = (*request.history, OutcomeRecord(now, Outcome.CANCELLED, site, reason))
    return _step(request, Trigger.CANCEL, history=history)


def expire(request: CallbackRequest, now: datetime, site: str) -> CallbackRequest:
    """Past its expiry and not being dialed: over. (A try under way ends first, by its outcome.)"""
    if request.state is not CallbackState.PENDING:
        raise IllegalTransition(f"callback {request.id} is {request.state.value}: only a pending "
                                "request expires")
    if now < request.expires_at:
        raise NotDue(f"callback {request.id} expires at {request.expires_at.isoformat()}, "
                     f"not before")
    history = (*request.history, OutcomeRecord(now, Outcome.EXPIRED, site))
    return _step(request, Trigger.EXPIRE, history=history)


def adopt(request: CallbackRequest, site: str, now: datetime, lease: timedelta) -> CallbackRequest:
    """``site`` takes over a request whose owner's lease ran out (the owner is presumed dead).

    A request the dead site was dialing goes back in line at its place: its try
    died with the site, which never reported it.
    """
    if not request.active:
        raise IllegalTransition(f"callback {request.id} is {request.state.value}: nothing to adopt")
    if request.lease_live(now):
        raise LeaseHeld(f"callback {request.id}: site {request.site!r} holds its lease "
                        f"until {request.lease_expires_at.isoformat()}")
    if request.state is CallbackState.DIALING:
        history = (*request.history,
                   OutcomeRecord(now, Outcome.INTERRUPTED, site, f"site {request.site} stopped"))
        return _step(request, Trigger.REQUEUE, site=site, lease_expires_at=now + lease,
                     history=history)
    return replace(request, site=site, lease_expires_at=now + lease, version=request.version + 1)


def recover(request: CallbackRequest, site: str, now: datetime, lease: timedelta) -> CallbackRequest:
    """``site`` restarted: a request its previous run was dialing goes back in line at its
    place, since that try died with the process and was never reported."""
    _require_owner(request, site)
    history = (*request.history,
               OutcomeRecord(now, Outcome.INTERRUPTED, site, f"site {site} restarted"))
    return _step(request, Trigger.REQUEUE, lease_expires_at=now + lease, history=history)


def is_due(request: CallbackRequest, now: datetime) -> bool:
    """Pending, past its earliest time and not yet expired."""
    return (request.state is CallbackState.PENDING
            and request.earliest_at <= now < request.expires_at)
