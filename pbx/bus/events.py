"""Domain events the site bus emits (to move into the events package with the others).

Each carries the site it is about and the wall-clock time (Unix seconds) it happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.bus.codec import AgentPresence


@dataclass(frozen=True, slots=True)
class SiteUp:
    site: str
    reason: str  # "heartbeat", "forced up by ...", "override cleared", "this site"
    at: float


@dataclass(frozen=True, slots=True)
class SiteDown:
    site: str
    reason: str  # "last will: connection lost", "heartbeat missed", "forced down by ..."
    at: float


@dataclass(frozen=True, slots=True)
class BusConnected:
    site: str  # this site
    at: float


@dataclass(frozen=True, slots=True)
class BusDisconnected:
    site: str  # this site
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class RemoteAgentChanged:
    """Another site's agent as seen from here; presence None: the agent was withdrawn."""

    site: str  # the owning site
    agent: str
    presence: AgentPresence | None
    since: float | None
    at: float
