"""Events of callback requests: the callback desk publishes one for every change it makes.

The desk runs on an injected clock and stamps each event with it (``at``). Times are
Unix seconds like every other event's; ``outcome`` and ``state`` are the values of the
``callbacks`` package's enums, kept as plain text so this package imports nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class CallbackRequested(Event):
    request_id: str
    queue: str
    number: str
    requested_at: float  # its place in line: the caller's original enqueue time
    origin_call_id: str | None
    site: str  # the site that took the request (its first owner)


@dataclass(frozen=True, slots=True)
class CallbackTryStarted(Event):
    """A site claimed the request and starts calling the customer."""

    request_id: str
    queue: str
    site: str
    attempt: int  # 1 for the first try that reaches for the customer
    waited_seconds: float  # since the original enqueue time


@dataclass(frozen=True, slots=True)
class CallbackTryEnded(Event):
    request_id: str
    queue: str
    site: str
    outcome: str  # callbacks.Outcome value: answered, no_answer, busy, ...
    answered: bool  # the customer answered: the callback connected
    detail: str
    state: str  # the request's state after it: pending (retried later), completed, failed, expired
    ended: bool  # the request left the line with this try (no retry follows)
    waited_seconds: float  # from the original enqueue time to the end of the try
    call_id: str | None  # the callback call, linking it to its call record
    number: str = ""  # the customer's number that was called
    origin_call_id: str | None = None  # the call the request came from (the request's)


@dataclass(frozen=True, slots=True)
class CallbackEnded(Event):
    """A request left the line without a try: cancelled or expired."""

    request_id: str
    queue: str
    site: str  # the site that ended it
    state: str  # cancelled or expired
    reason: str


@dataclass(frozen=True, slots=True)
class CallbacksAdopted(Event):
    """This site took over requests whose owner's lease ran out."""

    site: str
    count: int


@dataclass(frozen=True, slots=True)
class CallbackOffered(Event):
    """A caller heard a callback offer: ``how`` is ``announced`` (a queue's hold or position
    announcement ended with "press 9"), ``asked`` (a waiting caller pressed the offer key and
    the offer began) or ``ivr`` (a flow reached an ``offer_callback`` node)."""

    call_id: str
    queue: str
    how: str


@dataclass(frozen=True, slots=True)
class CallbackOfferAnswered(Event):
    """How an offer the caller went into ended: ``booked``, ``already_pending``,
    ``declined`` or ``not_booked`` (the desk could not take it)."""

    call_id: str
    queue: str
    outcome: str


@dataclass(frozen=True, slots=True)
class CallbacksPending(Event):
    """How many requests wait, per queue, as the store counted them (every site's)."""

    by_queue: dict[str, int]
