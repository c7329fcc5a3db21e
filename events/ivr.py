"""Events of the IVR: one per step a caller takes through a flow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from events.event import Event


@dataclass(frozen=True, slots=True)
class IvrStarted(Event):
    call_id: str
    flow: str
    caller: str


@dataclass(frozen=True, slots=True)
class IvrNodeEntered(Event):
    call_id: str
    flow: str
    node: str
    node_type: str


@dataclass(frozen=True, slots=True)
class DigitReceived(Event):
    """A DTMF digit taken as input by a node (barge-in digits included)."""

    call_id: str
    flow: str
    node: str
    digit: str


@dataclass(frozen=True, slots=True)
class LanguageSelected(Event):
    call_id: str
    flow: str
    language: str
    source: str  # "digit", "profile" or "default"


@dataclass(frozen=True, slots=True)
class CallerIdentified(Event):
    call_id: str
    caller: str
    known: bool
    tier: str | None


@dataclass(frozen=True, slots=True)
class SelfServiceAnswered(Event):
    call_id: str
    flow: str
    topic: str
    language: str


@dataclass(frozen=True, slots=True)
class CallDeflected(Event):
    """The call ended after a self-service answer without reaching a queue or an extension."""

    call_id: str
    flow: str
    topic: str


@dataclass(frozen=True, slots=True)
class SurveyScored(Event):
    call_id: str
    flow: str
    score: int


@dataclass(frozen=True, slots=True)
class EnqueueRequested(Event):
    call_id: str
    flow: str
    queue: str
    priority: int
    skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    language: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRequested(Event):
    call_id: str
    flow: str
    extension: str


@dataclass(frozen=True, slots=True)
class IvrFinished(Event):
    """The IVR let go of the call: ``outcome`` is enqueued, transferred, deflected,
    hung_up (the flow ended it), abandoned (the caller hung up) or error."""

    call_id: str
    flow: str
    outcome: str
    last_node: str | None
