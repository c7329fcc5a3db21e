"""Events of the router: a queued call's way to an agent, agents' states, sites' health.

The router pushes them to the sink it was built with, in the order they happened,
stamped with the router's clock (``at``).
"""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class CallQueued(Event):
    """A call entered a waiting line; ``kind`` 'callback' is a callback request taking its
    original place (``enqueued_at``), no caller on the line."""

    call_id: str
    queue: str
    priority: int
    position: int
    enqueued_at: float
    kind: str = "live"


@dataclass(frozen=True, slots=True)
class AgentReserved(Event):
    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class AgentRinging(Event):
    reservation_id: str
    call_id: str
    agent: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class ReservationExpired(Event):
    """A reservation was not confirmed (or not answered) in time; the call is back in line."""

    reservation_id: str
    call_id: str
    agent: str
    was_ringing: bool


@dataclass(frozen=True, slots=True)
class ReservationFailed(Event):
    reservation_id: str
    call_id: str
    agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class QueueCallAnswered(Event):
    """An agent answered a queued call (the line's answer is ``events.calls.CallAnswered``)."""

    call_id: str
    queue: str
    agent: str
    waited_seconds: float
    within_sla: bool


@dataclass(frozen=True, slots=True)
class CallAbandoned(Event):
    call_id: str
    queue: str
    waited_seconds: float
    within_sla: bool = False  # abandoned after waiting at most the queue's sla_seconds


@dataclass(frozen=True, slots=True)
class CallDropped(Event):
    """The server ended a call still in line or being offered (media timeout, shutdown):
    not the caller's abandon, and counted apart."""

    call_id: str
    queue: str
    waited_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class CallWithdrawn(Event):
    """A callback request left the line without being served (cancelled, expired, taken by
    another site, its queue closed): neither abandoned nor dropped, and counted as neither."""

    call_id: str
    queue: str
    waited_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class QueueCallEnded(Event):
    """An answered queued call ended; the agent goes to wrap-up (the line's end is
    ``events.calls.CallEnded``)."""

    call_id: str
    queue: str
    agent: str
    talk_seconds: float


@dataclass(frozen=True, slots=True)
class CallOverflowed(Event):
    """The call waited ``max_wait_seconds``. When ``target`` is a known queue the router
    already moved the call there (``moved``); otherwise the caller must be taken out of
    the router by the PBX (dial the target extension, or voicemail/callback when None)."""

    call_id: str
    queue: str
    target: str | None
    moved: bool
    waited_seconds: float


@dataclass(frozen=True, slots=True)
class CallExpanded(Event):
    """The call's wait reached the next skill-expansion ring."""

    call_id: str
    queue: str
    rings_active: int


@dataclass(frozen=True, slots=True)
class AnnouncementDue(Event):
    """Time to tell the caller where it stands; position 1 means "you are next"."""

    call_id: str
    queue: str
    position: int
    ewt_seconds: float | None


@dataclass(frozen=True, slots=True)
class AgentStateChanged(Event):
    """``old`` and ``new`` are agent states (``router.AgentState``, a str enum: the router
    passes its members, so ``event.new is AgentState.ON_CALL`` holds)."""

    agent: str
    site: str  # the agent's site
    old: str
    new: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class SiteHealthChanged(Event):
    site: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class SiteOpeningChanged(Event):
    """A site's business hours began or ended: outside them its agents get no calls."""

    site: str
    open: bool
