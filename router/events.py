"""Domain events the router emits; consumers (metrics, bus, CDR) read them from
``Router.drain_events()`` in the order they happened."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from router.agent_state import AgentState


@dataclass(frozen=True)
class Event:
    at: float

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": type(self).__name__}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            data[item.name] = value.value if isinstance(value, AgentState) else value
        return data


@dataclass(frozen=True)
class CallQueued(Event):
    call_id: str
    queue: str
    priority: int
    position: int
    enqueued_at: float


@dataclass(frozen=True)
class AgentReserved(Event):
    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float


@dataclass(frozen=True)
class AgentRinging(Event):
    reservation_id: str
    call_id: str
    agent: str
    expires_at: float


@dataclass(frozen=True)
class ReservationExpired(Event):
    """A reservation was not confirmed (or not answered) in time; the call is back in line."""

    reservation_id: str
    call_id: str
    agent: str
    was_ringing: bool


@dataclass(frozen=True)
class ReservationFailed(Event):
    reservation_id: str
    call_id: str
    agent: str
    reason: str


@dataclass(frozen=True)
class CallAnswered(Event):
    call_id: str
    queue: str
    agent: str
    waited_seconds: float
    within_sla: bool


@dataclass(frozen=True)
class CallAbandoned(Event):
    call_id: str
    queue: str
    waited_seconds: float
    within_sla: bool = False  # abandoned after waiting at most the queue's sla_seconds


@dataclass(frozen=True)
class CallDropped(Event):
    """The server ended a call still in line or being offered (media timeout, shutdown):
    not the caller's abandon, and counted apart."""

    call_id: str
    queue: str
    waited_seconds: float
    reason: str


@dataclass(frozen=True)
class CallEnded(Event):
    call_id: str
    queue: str
    agent: str
    talk_seconds: float


@dataclass(frozen=True)
class CallOverflowed(Event):
    """The call waited ``max_wait_seconds``. When ``target`` is a known queue the router
    already moved the call there (``moved``); otherwise the caller must be taken out of
    the router by the PBX (dial the target extension, or voicemail/callback when None)."""

    call_id: str
    queue: str
    target: str | None
    moved: bool
    waited_seconds: float


@dataclass(frozen=True)
class CallExpanded(Event):
    """The call's wait reached the next skill-expansion ring."""

    call_id: str
    queue: str
    rings_active: int


@dataclass(frozen=True)
class AnnouncementDue(Event):
    """Time to tell the caller where it stands; position 1 means "you are next"."""

    call_id: str
    queue: str
    position: int
    ewt_seconds: float | None


@dataclass(frozen=True)
class AgentStateChanged(Event):
    agent: str
    old: AgentState
    new: AgentState
    reason: str | None


@dataclass(frozen=True)
class SiteHealthChanged(Event):
    site: str
    healthy: bool
