"""Events of the SIP layer: messages in and out, what protection refused, registrations."""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class SipRequestReceived(Event):
    method: str
    transport: str


@dataclass(frozen=True, slots=True)
class SipResponseSent(Event):
    method: str
    status: int


@dataclass(frozen=True, slots=True)
class SipMessageRejected(Event):
    """A message that could not be parsed; answered 400 when possible."""

    reason: str
    transport: str
    answered: bool


@dataclass(frozen=True, slots=True)
class SipMessageThrottled(Event):
    """A message the per-source protection did not let through (pbx.edge.protection)."""

    reason: str  # "rate", "invite_rate", "blocked" (dropped) or "forbidden" (answered 403)
    transport: str


@dataclass(frozen=True, slots=True)
class SipAuthenticationFailed(Event):
    """A wrong digest response (wrong password, unknown user, replay)."""

    method: str


@dataclass(frozen=True, slots=True)
class SipSourceBlocked(Event):
    reason: str  # "flood" or "auth-failures"


@dataclass(frozen=True, slots=True)
class SipConnectionRefused(Event):
    """A TCP or TLS connection closed at once: over the total or per-source cap."""

    reason: str  # "total_limit" or "source_limit"
    transport: str


@dataclass(frozen=True, slots=True)
class SipConnectionClosed(Event):
    """A TCP or TLS connection the server closed for its behaviour."""

    reason: str  # "incomplete_message", "idle", "too_large", "malformed"
    transport: str


@dataclass(frozen=True, slots=True)
class RegistrationChanged(Event):
    user: str
    registered: bool
    bindings: int
