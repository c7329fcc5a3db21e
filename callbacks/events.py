"""What happens to callback requests, as events: the desk publishes one for every change.

Plain frozen dataclasses (stdlib only), so metrics, call records and the site bus
consume them like every other domain event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CallbackRequested:
    request_id: str
    queue: str
    number: str
    requested_at: datetime  # its place in line
    origin_call_id: str | None


@dataclass(frozen=True, slots=True)
class CallbackTryStarted:
    """A site claimed the request and starts calling the customer."""

    request_id: str
    queue: str
    site: str
    attempt: int  # 1 for the first try that reaches for the customer
    waited_seconds: float  # since the original enqueue time


@dataclass(frozen=True, slots=True)
class CallbackTryEnded:
    request_id: str
    queue: str
    outcome: str  # callbacks.Outcome value
    detail: str
    state: str  # the request's state after it: pending (retried later), completed, failed, expired
    waited_seconds: float  # from the original enqueue time to the end of the try
    call_id: str | None  # the callback call, linking it to its call record


@dataclass(frozen=True, slots=True)
class CallbackEnded:
    """A request left the line without a try: cancelled or expired."""

    request_id: str
    queue: str
    state: str  # cancelled or expired
    reason: str


@dataclass(frozen=True, slots=True)
class CallbacksAdopted:
    """This site took over requests whose owner's lease ran out."""

    site: str
    count: int


@dataclass(frozen=True, slots=True)
class CallbacksPending:
    """How many requests wait, per queue, as the store counted them (all sites)."""

    by_queue: dict[str, int]
