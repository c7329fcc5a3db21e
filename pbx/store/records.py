"""Plain records the store hands out beside the router's own dataclasses.

Agents and queues travel as ``router.AgentProfile`` / ``router.QueueConfig``; what the
router does not model (sites' time zones, customers, call history) lives here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from router import AgentProfile


class CustomerTier(enum.StrEnum):
    VIP = "vip"
    PAID = "paid"
    FREE = "free"

    @property
    def priority(self) -> int:
        """The router's call priority for this tier (higher is served first)."""
        return _TIER_PRIORITY[self]


_TIER_PRIORITY = {CustomerTier.VIP: 3, CustomerTier.PAID: 2, CustomerTier.FREE: 1}


def as_utc(moment: datetime) -> datetime:
    """Normalise to an aware UTC datetime; naive values are taken to be UTC already.

    SQLite keeps no offset, so times read back from it are naive UTC.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class SiteRecord:
    name: str
    timezone: str = "UTC"
    healthy: bool = True
    # {"weekly": {"mon-fri": "08:00-20:00"}, "holidays": ["2026-12-25"]} in the site's time
    # zone (pbx.configuration.models.SiteHours); None: always open.
    business_hours: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SkillRecord:
    name: str
    description: str = ""


@dataclass(frozen=True)
class AgentRecord:
    """An agent as stored: its routing profile plus whether it is enabled at all.

    Inactive agents stay in the database (history refers to them) but are not
    given to the router.
    """

    profile: AgentProfile
    active: bool = True

    @property
    def extension(self) -> str:
        return self.profile.extension


@dataclass(frozen=True)
class CustomerRecord:
    number: str
    name: str = ""
    tier: CustomerTier = CustomerTier.FREE
    language: str | None = None
    preferred_agent: str | None = None
    last_agent: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", CustomerTier(self.tier))


@dataclass(frozen=True)
class CallRecord:
    """One call-detail record; ``id`` is assigned by the store when appended."""

    call_id: str
    caller: str
    callee: str
    started: datetime
    answered: datetime | None = None
    ended: datetime | None = None
    queue: str | None = None
    agent: str | None = None
    disposition: str = ""
    ivr_path: tuple[str, ...] = ()
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    site: str | None = None
    id: int | None = None
    origin_call_id: str | None = None  # a callback call's: the call the customer asked from
    callback_request_id: str | None = None  # a callback call's: its request

    def __post_init__(self) -> None:
        object.__setattr__(self, "ivr_path", tuple(self.ivr_path))
        for name in ("started", "answered", "ended"):
            moment = getattr(self, name)
            if moment is not None:
                object.__setattr__(self, name, as_utc(moment))


@dataclass(frozen=True)
class QueueLogEntry:
    """One line of the queue log (ENTERQUEUE, CONNECT, ABANDON, ... style events)."""

    time: datetime
    call_id: str
    event: str
    queue: str | None = None
    agent: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", as_utc(self.time))
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))


@dataclass(frozen=True)
class RegistrationRecord:
    """A registration binding as stored; ``expires_at`` is wall-clock time."""

    user: str
    contact: str
    contact_uri: str
    expires_at: datetime
    call_id: str
    cseq: int
    source_host: str
    source_port: int
    transport: str
    user_agent: str | None = None
    path: tuple[str, ...] = ()  # the REGISTER's Path values: the Route set toward the phone

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_at", as_utc(self.expires_at))
        object.__setattr__(self, "path", tuple(self.path))


@dataclass(frozen=True)
class LiveCallRecord:
    """A call in progress as stored, so a crash leaves a trace of it: noted when it
    starts, noted again when it enters a queue and when an agent answers."""

    call_id: str
    caller: str
    callee: str
    started: datetime
    kind: str | None = None
    site: str | None = None
    queue: str | None = None
    agent: str | None = None
    answered: datetime | None = None
    priority: int | None = None  # in the queue, while waiting
    enqueued_at: datetime | None = None  # when it first entered a queue (kept across transfers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "started", as_utc(self.started))
        for name in ("answered", "enqueued_at"):
            moment = getattr(self, name)
            if moment is not None:
                object.__setattr__(self, name, as_utc(moment))


@dataclass(frozen=True)
class InterruptedWait:
    """A caller's place in a queue when their call was interrupted (its site died)."""

    call_id: str
    number: str
    queue: str
    priority: int
    enqueued_at: datetime
    site: str | None
    interrupted_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "enqueued_at", as_utc(self.enqueued_at))
        object.__setattr__(self, "interrupted_at", as_utc(self.interrupted_at))


@dataclass(frozen=True, slots=True)
class LastAgent:
    """Who last served a caller: stored on the caller's customer record, if there is one."""

    number: str
    agent: str


@dataclass(frozen=True)
class CallDetails:
    """What the API shows of a finished call beside its record: the router's decisions,
    the IVR path and the agent's screen-pop context (each None when the call had none)."""

    call_id: str
    ended: datetime
    routing: list[dict[str, Any]] | None = None
    ivr: dict[str, Any] | None = None
    context: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ended", as_utc(self.ended))


@dataclass(frozen=True)
class SeedReport:
    """What ``Store.seed`` changed: names of inserted and updated records per kind."""

    inserted: Mapping[str, tuple[str, ...]]
    updated: Mapping[str, tuple[str, ...]]

    @property
    def changed(self) -> bool:
        return any(self.inserted.values()) or any(self.updated.values())
