"""The bus's JSON payloads (schema version 1): dataclasses and a strict codec.

Every payload is a JSON object with ``"schema": 1``. Decoding checks every field's
type and raises :class:`BadMessage` (with the reason) on anything else, so a
malformed or foreign message can be logged and dropped before it touches state.
Unknown extra fields are ignored: a newer sender may add fields without a new
schema version; a change that old readers would misread takes a new version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from events.sites import AgentPresence  # a payload value; defined with the events that carry it

SCHEMA_VERSION = 1

_E = TypeVar("_E", bound=Enum)


class BadMessage(ValueError):
    """A payload that is not valid JSON, not this schema version, or has a bad field."""


class SiteState(Enum):
    ONLINE = "online"
    OFFLINE = "offline"


class Forced(Enum):
    """An operator's override of a site's health."""

    UP = "up"
    DOWN = "down"


class ReservationOutcome(Enum):
    RESERVED = "reserved"
    REFUSED = "refused"  # the owning site said no
    TIMEOUT = "timeout"  # no answer in time (decided by the asking site)
    UNREACHABLE = "unreachable"  # not sent: no broker connection (decided by the asking site)


@dataclass(frozen=True, slots=True)
class AgentState:
    site: str
    agent: str
    presence: AgentPresence
    since: float  # wall-clock seconds (Unix time) when the presence began


@dataclass(frozen=True, slots=True)
class AgentOwnerClaim:
    """``site`` owns ``agent`` from ``version`` on: the agent's phone registered there (its
    own site was down) or it came home. The highest version of all sites' claims wins
    (a tie: the lower site name); every agent starts owned by its configured site at 0."""

    site: str
    agent: str
    version: int
    by: str  # why: "registered at bogota", "registered at home"
    at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class SiteDrainState:
    """``site`` is drained for a drill (new calls go to the other sites) since ``since``;
    retained, so a restarted site stays drained and the other sites know it."""

    site: str
    since: float  # wall-clock seconds
    by: str  # who drained it: "drill to bogota", an operator


@dataclass(frozen=True, slots=True)
class SiteStatus:
    site: str
    state: SiteState
    at: float  # wall-clock seconds
    heartbeat_interval: float
    reason: str = ""
    sip_address: str | None = None  # HOST:PORT (UDP) where the site takes its sister sites' calls


@dataclass(frozen=True, slots=True)
class Heartbeat:
    site: str
    sequence: int
    at: float
    interval: float


@dataclass(frozen=True, slots=True)
class SiteOverride:
    site: str  # the site forced
    forced: Forced
    by: str  # who forced it (the site whose operator did, and the operator if known)
    at: float


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What the agent's screen-pop shows, the same whichever site the call came in at."""

    ivr_path: tuple[str, ...] = ()
    language: str | None = None
    priority: int = 0
    enqueued_at: float = 0.0  # wall-clock seconds when the caller first queued


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    reservation_id: str
    from_site: str
    to_site: str
    call_id: str
    queue: str
    timeout: float  # seconds the asking site waits for the answer
    caller: CallerContext = field(default_factory=CallerContext)
    agent: str | None = None  # a specific agent, or None: the owning site chooses
    skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReservationResponse:
    reservation_id: str
    from_site: str  # the site that decided
    to_site: str  # the site that asked
    outcome: ReservationOutcome  # RESERVED or REFUSED on the wire
    agent: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReservationCancel:
    reservation_id: str
    from_site: str
    to_site: str
    reason: str


# -- encoding -----------------------------------------------------------------


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps({"schema": SCHEMA_VERSION, **body}, separators=(",", ":")).encode()


def encode_agent_state(state: AgentState) -> bytes:
    return _dump({"site": state.site, "agent": state.agent,
                  "presence": state.presence.value, "since": state.since})


def encode_owner_claim(claim: AgentOwnerClaim) -> bytes:
    return _dump({"site": claim.site, "agent": claim.agent, "version": claim.version,
                  "by": claim.by, "at": claim.at})


def encode_drain(state: SiteDrainState) -> bytes:
    return _dump({"site": state.site, "since": state.since, "by": state.by})


def encode_site_status(status: SiteStatus) -> bytes:
    body: dict[str, object] = {"site": status.site, "state": status.state.value, "at": status.at,
                               "heartbeat_interval": status.heartbeat_interval,
                               "reason": status.reason}
    if status.sip_address is not None:
        body["sip_address"] = status.sip_address
    return _dump(body)


def encode_heartbeat(beat: Heartbeat) -> bytes:
    return _dump({"site": beat.site, "sequence": beat.sequence, "at": beat.at,
                  "interval": beat.interval})


def encode_override(override: SiteOverride) -> bytes:
    return _dump({"site": override.site, "forced": override.forced.value, "by": override.by,
                  "at": override.at})


def encode_request(request: ReservationRequest) -> bytes:
    caller = request.caller
    return _dump({
        "reservation_id": request.reservation_id, "from_site": request.from_site,
        "to_site": request.to_site, "call_id": request.call_id, "queue": request.queue,
        "timeout": request.timeout, "agent": request.agent, "skills": list(request.skills),
        "caller": {"ivr_path": list(caller.ivr_path), "language": caller.language,
                   "priority": caller.priority, "enqueued_at": caller.enqueued_at},
    })


def encode_response(response: ReservationResponse) -> bytes:
    if response.outcome not in (ReservationOutcome.RESERVED, ReservationOutcome.REFUSED):
        raise ValueError(f"{response.outcome.value} is decided by the asking site, not sent")
    return _dump({"reservation_id": response.reservation_id, "from_site": response.from_site,
                  "to_site": response.to_site, "outcome": response.outcome.value,
                  "agent": response.agent, "reason": response.reason})


def encode_cancel(cancel: ReservationCancel) -> bytes:
    return _dump({"reservation_id": cancel.reservation_id, "from_site": cancel.from_site,
                  "to_site": cancel.to_site, "reason": cancel.reason})


# -- decoding -----------------------------------------------------------------


class _Fields:
    """Typed access to a decoded object; every miss is a BadMessage naming the field."""

    def __init__(self, body: dict[str, Any], where: str = "") -> None:
        self._body = body
        self._where = where

    def _get(self, name: str, kinds: tuple[type, ...], optional: bool) -> Any:
        if name not in self._body:
            if optional:
                return None
            raise BadMessage(f"missing field {self._where}{name}")
        value = self._body[name]
        if value is None and optional:
            return None
        # bool is an int in Python; a JSON true is never a number here.
        if isinstance(value, bool) and bool not in kinds:
            raise BadMessage(f"field {self._where}{name} has the wrong type")
        if not isinstance(value, kinds):
            raise BadMessage(f"field {self._where}{name} has the wrong type")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, (str,), optional=False)
        if not value:
            raise BadMessage(f"field {self._where}{name} is empty")
        return value

    def optional_text(self, name: str, default: str | None = None) -> str | None:
        value = self._get(name, (str,), optional=True)
        return default if value is None else str(value)

    def number(self, name: str, default: float | None = None) -> float:
        value = self._get(name, (int, float), optional=default is not None)
        return float(value) if value is not None else float(default or 0.0)

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._get(name, (int,), optional=default is not None)
        return int(value) if value is not None else int(default or 0)

    def texts(self, name: str) -> tuple[str, ...]:
        value = self._get(name, (list,), optional=True) or []
        if not all(isinstance(item, str) for item in value):
            raise BadMessage(f"field {self._where}{name} must be a list of strings")
        return tuple(value)

    def object(self, name: str) -> _Fields:
        value = self._get(name, (dict,), optional=True) or {}
        return _Fields(value, f"{self._where}{name}.")

    def choice(self, name: str, enum: type[_E]) -> _E:
        raw = self.text(name)
        try:
            return enum(raw)
        except ValueError:
            raise BadMessage(f"field {self._where}{name} has an unknown value {raw!r}") from None


def _load(payload: bytes) -> _Fields:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadMessage(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadMessage("not a JSON object")
    version = body.get("schema")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BadMessage(f"unknown schema version {version!r}")
    return _Fields(body)


def decode_agent_state(payload: bytes) -> AgentState:
    body = _load(payload)
    return AgentState(site=body.text("site"), agent=body.text("agent"),
                      presence=body.choice("presence", AgentPresence), since=body.number("since"))


def decode_owner_claim(payload: bytes) -> AgentOwnerClaim:
    body = _load(payload)
    version = body.integer("version")
    if version < 1:
        raise BadMessage(f"owner claim version {version} is not positive")
    return AgentOwnerClaim(site=body.text("site"), agent=body.text("agent"), version=version,
                           by=body.text("by"), at=body.number("at"))


def decode_drain(payload: bytes) -> SiteDrainState:
    body = _load(payload)
    return SiteDrainState(site=body.text("site"), since=body.number("since"), by=body.text("by"))


def decode_site_status(payload: bytes) -> SiteStatus:
    body = _load(payload)
    interval = body.number("heartbeat_interval")
    if interval <= 0:
        raise BadMessage("field heartbeat_interval must be positive")
    return SiteStatus(site=body.text("site"), state=body.choice("state", SiteState),
                      at=body.number("at"), heartbeat_interval=interval,
                      reason=body.optional_text("reason", "") or "",
                      sip_address=body.optional_text("sip_address", None))


def decode_heartbeat(payload: bytes) -> Heartbeat:
    body = _load(payload)
    interval = body.number("interval")
    if interval <= 0:
        raise BadMessage("field interval must be positive")
    return Heartbeat(site=body.text("site"), sequence=body.integer("sequence"),
                     at=body.number("at"), interval=interval)


def decode_override(payload: bytes) -> SiteOverride:
    body = _load(payload)
    return SiteOverride(site=body.text("site"), forced=body.choice("forced", Forced),
                        by=body.text("by"), at=body.number("at"))


def decode_request(payload: bytes) -> ReservationRequest:
    body = _load(payload)
    caller = body.object("caller")
    timeout = body.number("timeout")
    if timeout <= 0:
        raise BadMessage("field timeout must be positive")
    return ReservationRequest(
        reservation_id=body.text("reservation_id"), from_site=body.text("from_site"),
        to_site=body.text("to_site"), call_id=body.text("call_id"), queue=body.text("queue"),
        timeout=timeout, agent=body.optional_text("agent"), skills=body.texts("skills"),
        caller=CallerContext(ivr_path=caller.texts("ivr_path"),
                             language=caller.optional_text("language"),
                             priority=caller.integer("priority", 0),
                             enqueued_at=caller.number("enqueued_at", 0.0)),
    )


def decode_response(payload: bytes) -> ReservationResponse:
    body = _load(payload)
    outcome = body.choice("outcome", ReservationOutcome)
    if outcome not in (ReservationOutcome.RESERVED, ReservationOutcome.REFUSED):
        raise BadMessage(f"field outcome {outcome.value!r} is not sent on the bus")
    agent = body.optional_text("agent")
    if outcome is ReservationOutcome.RESERVED and not agent:
        raise BadMessage("a reserved response names no agent")
    return ReservationResponse(
        reservation_id=body.text("reservation_id"), from_site=body.text("from_site"),
        to_site=body.text("to_site"), outcome=outcome, agent=agent,
        reason=body.optional_text("reason", "") or "")


def decode_cancel(payload: bytes) -> ReservationCancel:
    body = _load(payload)
    return ReservationCancel(reservation_id=body.text("reservation_id"),
                             from_site=body.text("from_site"), to_site=body.text("to_site"),
                             reason=body.optional_text("reason", "") or "")
