"""Events of failover and planned disaster-recovery drills: a site drained for a drill (as
it sees it, and as the bus tells every site), its agents and callers moved, and agents whose
ownership moved to another site (as every site sees it)."""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class DrainStarted(Event):
    """This site stopped taking new calls (the front door sends them to the other sites)."""

    site: str
    by: str  # who asked: "drill to bogota", an operator's name


@dataclass(frozen=True, slots=True)
class CallbacksHandedOver(Event):
    """A drained site gave up its pending callback requests for another site to adopt."""

    site: str
    requests: int


@dataclass(frozen=True, slots=True)
class DrainEnded(Event):
    """This site takes new calls again."""

    site: str
    by: str


@dataclass(frozen=True, slots=True)
class DrainAnnounced(Event):
    """A site's drain as the bus says it (retained): every site hears every site's, its own
    too (a restarted drained site stays drained until the drill ends)."""

    site: str
    draining: bool
    since: float | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class AgentsReleased(Event):
    """A drained site stopped offering calls to these of its agents, for ``to`` to claim."""

    site: str
    to: str
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallerMoved(Event):
    """A caller waiting at a drained site was answered by another site's agent."""

    call_id: str
    site: str  # the drained site, where the caller waited
    to: str  # the site whose agent answered
    agent: str


@dataclass(frozen=True, slots=True)
class AgentOwnerChanged(Event):
    """``agent`` is served by ``site`` now (one writer per agent): its phone registered there
    while its own site was down, or registered at home again."""

    agent: str
    site: str
    previous: str | None
    version: int
    by: str
