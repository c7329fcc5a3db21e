"""Events of call legs as the PBX carries them: a call's line from start to end, and what
happened to a queued caller on the line (offered to an agent, told their place, handed on).

``CallAnswered``/``CallEnded`` are about the line (SIP); the router's view of a queued
call answered by an agent and ended is ``QueueCallAnswered``/``QueueCallEnded``
(``events.routing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class CallStarted(Event):
    call_id: str
    caller: str
    callee: str
    kind: str  # "application" or "bridge"


@dataclass(frozen=True, slots=True)
class CallAnswered(Event):
    call_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    call_id: str
    kind: str
    cause: str
    status: int | None
    duration: float


@dataclass(frozen=True, slots=True)
class StaleCallsRepaired(Event):
    """Calls the router still held though no live call carried them (a lost BYE, a crash
    in a handler), found by reconciliation or the media timeout and cleaned up."""

    call_ids: tuple[str, ...]
    found_by: str  # "reconciliation", "media_timeout" or "dialog_gone"


@dataclass(frozen=True, slots=True)
class CallLegTransitionRefused(Event):
    """A call leg was asked to take an event its state does not allow (``pbx.calls.call_leg``):
    a defect, counted so it shows; the leg keeps its state for reconciliation to judge."""

    call_id: str
    state: str
    event: str


@dataclass(frozen=True, slots=True)
class AnnouncementPlayed(Event):
    """A waiting caller was told where they stand: ``kind`` 'you_are_next' or 'position',
    with the estimated wait announced in whole minutes (None: no estimate was said)."""

    call_id: str
    queue: str
    kind: str
    position: int
    ewt_seconds: float | None
    announced_minutes: int | None


@dataclass(frozen=True, slots=True)
class CallTransferred(Event):
    """An agent handed the caller on (blind transfer) to a queue or an account."""

    call_id: str
    agent: str
    target: str


@dataclass(frozen=True, slots=True)
class AgentOffered(Event):
    """An agent's phone rings with a caller: what a screen-pop or CRM needs to know."""

    call_id: str
    agent: str
    queue: str
    caller: str
    context: dict[str, object]
