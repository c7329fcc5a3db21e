"""Calls handed to the router, and the record of a call the router is holding."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.config import frozen_proficiencies
from router.errors import InvalidConfig

# Customer tiers as the IVR sets them; any int works, higher is served first.
PRIORITY_FREE = 1
PRIORITY_PAID = 2
PRIORITY_VIP = 3


class CallKind(enum.StrEnum):
    """What waits in line: a caller on the line, or a callback request waiting for its turn
    (no one on the line: it hears no announcements and never overflows; its request has
    its own expiry)."""

    LIVE = "live"
    CALLBACK = "callback"


# Member lookups on an enum class are slow in Python 3.11 (its metaclass's ``__getattr__``
# hook sends every class attribute through a slow path): hot code compares with these.
CALLBACK = CallKind.CALLBACK
NO_SKILLS: Mapping[str, int] = MappingProxyType({})  # a call needing nothing beyond its queue


@dataclass(frozen=True)
class RoutingRequest:
    """A call asking for an agent.

    ``enqueued_at`` is the wall-clock time (Unix seconds) the caller started waiting; a callback
    or a transfer passes the ORIGINAL time so the caller keeps its place (None means
    now). ``skills`` are requirements of this call on top of the queue's, e.g. a
    product the caller chose in the IVR. ``last_agent`` is the agent who last served
    this caller as the customer record says (it outlives the router's own memory).
    ``kind`` CALLBACK is a callback request keeping its place in line: it needs its
    original ``enqueued_at``.
    """

    call_id: str
    queue: str
    priority: int = PRIORITY_FREE
    language: str | None = None
    caller: str = ""
    preferred_agent: str | None = None
    last_agent: str | None = None
    enqueued_at: float | None = None
    skills: Mapping[str, int] = field(default_factory=lambda: NO_SKILLS)
    kind: CallKind = CallKind.LIVE

    def __post_init__(self) -> None:
        if not self.call_id:
            raise InvalidConfig("call_id must not be empty")
        if type(self.kind) is not CallKind:
            object.__setattr__(self, "kind", CallKind(self.kind))
        if self.kind is CALLBACK and self.enqueued_at is None:
            raise InvalidConfig(f"callback {self.call_id}: its original enqueue time is required")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidConfig(f"call {self.call_id}: priority must be an int")
        if self.skills is not NO_SKILLS:
            object.__setattr__(
                self, "skills", frozen_proficiencies(f"call {self.call_id}", self.skills)
            )

    def waiting_since(self, enqueued_at: float) -> RoutingRequest:
        """This request with ``enqueued_at`` set. A copy that skips the checks the request
        already passed (``dataclasses.replace`` runs them again, a few µs per call)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, enqueued_at=enqueued_at)
        return copy

    def to_dict(self) -> dict[str, object]:
        return {
            "call_id": self.call_id,
            "queue": self.queue,
            "priority": self.priority,
            "language": self.language,
            "caller": self.caller,
            "preferred_agent": self.preferred_agent,
            "last_agent": self.last_agent,
            "enqueued_at": self.enqueued_at,
            "skills": dict(self.skills),
            "kind": self.kind.value,
        }


class CallStatus(enum.StrEnum):
    WAITING = "waiting"  # in line, any qualified agent may take it
    HELD = "held"  # in line, kept for its preferred agent for a while
    OFFERED = "offered"  # an agent is reserved for it
    CONNECTED = "connected"  # answered; the router only remembers it until it ends


@dataclass(frozen=True)
class WaitingCallRecord:
    """What the router knew about a call when it was asked (or when it left)."""

    call: RoutingRequest
    status: CallStatus
    waited_seconds: float
    position: int | None
    agent: str | None
    rings_active: int

    def to_dict(self) -> dict[str, object]:
        return {
            "call": self.call.to_dict(),
            "status": self.status.value,
            "waited_seconds": self.waited_seconds,
            "position": self.position,
            "agent": self.agent,
            "rings_active": self.rings_active,
        }
