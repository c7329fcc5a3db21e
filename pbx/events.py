"""Domain events of the telephony core and the in-process bus that carries them.

Everything that happens is a small frozen dataclass published on one bus;
metrics, call records, the MQTT bridge and screen-pops are subscribers. Call
logic publishes and never updates a metric by hand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pbx.events")

Subscriber = Callable[[Any], None]


class EventBus:
    """Synchronous fan-out by event type; a failing subscriber never breaks the publisher."""

    def __init__(self) -> None:
        self._by_type: dict[type, list[Subscriber]] = defaultdict(list)
        self._all: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber, *event_types: type) -> None:
        if not event_types:
            self._all.append(subscriber)
        for event_type in event_types:
            self._by_type[event_type].append(subscriber)

    def publish(self, event: object) -> None:
        for subscriber in self._by_type.get(type(event), ()):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s", type(event).__name__)
        for subscriber in self._all:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s", type(event).__name__)


@dataclass(frozen=True, slots=True)
class SipRequestReceived:
    method: str
    transport: str


@dataclass(frozen=True, slots=True)
class SipResponseSent:
    method: str
    status: int


@dataclass(frozen=True, slots=True)
class SipMessageRejected:
    """A message that could not be parsed; answered 400 when possible."""

    reason: str
    transport: str
    answered: bool


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    user: str
    registered: bool
    bindings: int


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    caller: str
    callee: str
    kind: str  # "application" or "bridge"


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    kind: str
    cause: str
    status: int | None
    duration: float


@dataclass(frozen=True, slots=True)
class StaleCallsRepaired:
    """Calls the router still held though no live call carried them (a lost BYE, a crash
    in a handler), found by reconciliation or the media timeout and cleaned up."""

    call_ids: tuple[str, ...]
    found_by: str  # "reconciliation", "media_timeout" or "dialog_gone"


@dataclass(frozen=True, slots=True)
class AnnouncementPlayed:
    """A waiting caller was told where they stand: ``kind`` 'you_are_next' or 'position',
    with the estimated wait announced in whole minutes (None: no estimate was said)."""

    call_id: str
    queue: str
    kind: str
    position: int
    ewt_seconds: float | None
    announced_minutes: int | None


@dataclass(frozen=True, slots=True)
class CallTransferred:
    """An agent handed the caller on (blind transfer) to a queue or an account."""

    call_id: str
    agent: str
    target: str


@dataclass(frozen=True, slots=True)
class AgentOffered:
    """An agent's phone rings with a caller: what a screen-pop or CRM needs to know."""

    call_id: str
    agent: str
    queue: str
    caller: str
    context: dict[str, object]


@dataclass(frozen=True, slots=True)
class SipMessageThrottled:
    """A message the per-source protection did not let through (pbx.protection)."""

    reason: str  # "rate", "invite_rate", "blocked" (dropped) or "forbidden" (answered 403)
    transport: str


@dataclass(frozen=True, slots=True)
class SipAuthenticationFailed:
    """A wrong digest response (wrong password, unknown user, replay)."""

    method: str


@dataclass(frozen=True, slots=True)
class SipSourceBlocked:
    reason: str  # "flood" or "auth-failures"


@dataclass(frozen=True, slots=True)
class SipConnectionRefused:
    """A TCP or TLS connection closed at once: over the total or per-source cap."""

    reason: str  # "total_limit" or "source_limit"
    transport: str


@dataclass(frozen=True, slots=True)
class SipConnectionClosed:
    """A TCP or TLS connection the server closed for its behaviour."""

    reason: str  # "incomplete_message", "idle", "too_large", "malformed"
    transport: str
