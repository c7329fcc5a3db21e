"""Events of the site bus: sites' liveness, this site's broker connection, and other
sites' agents as seen from here. Each names the site it is about."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from events.event import Event


class AgentPresence(Enum):
    """An agent's live state as its own site's router sees it (a bus payload value)."""

    OFFLINE = "offline"  # not registered
    AVAILABLE = "available"
    RESERVED = "reserved"  # offered a call, not yet answered
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    BREAK = "break"


@dataclass(frozen=True, slots=True)
class SiteUp(Event):
    site: str
    reason: str  # "heartbeat", "forced up by ...", "override cleared", "this site"


@dataclass(frozen=True, slots=True)
class SiteDown(Event):
    site: str
    reason: str  # "last will: connection lost", "heartbeat missed", "forced down by ..."


@dataclass(frozen=True, slots=True)
class BusConnected(Event):
    site: str  # this site


@dataclass(frozen=True, slots=True)
class BusDisconnected(Event):
    site: str  # this site
    reason: str


@dataclass(frozen=True, slots=True)
class RemoteAgentChanged(Event):
    """Another site's agent as seen from here; presence None: the agent was withdrawn."""

    site: str  # the owning site
    agent: str
    presence: AgentPresence | None
    since: float | None


@dataclass(frozen=True, slots=True)
class ForeignReservation(Event):
    """This site's answer to another site asking for one of its agents, or that site
    giving the agent back."""

    site: str  # the asking site
    queue: str
    outcome: str  # "reserved", "refused", "released"
    agent: str | None = None
    reason: str = ""
