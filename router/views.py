"""Read-only snapshots handed to the API, metrics and the agent screen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.agent_state import AgentState
from router.config import AgentProfile, ServiceLevelDefinition


def service_level(
    definition: ServiceLevelDefinition,
    answered: int,
    answered_within: int,
    abandoned: int,
    abandoned_within: int,
) -> float | None:
    """The service level under ``definition`` (see ``ServiceLevelDefinition``); None when
    no call counts yet."""
    met, counted = answered_within, answered + abandoned
    if definition is ServiceLevelDefinition.SHORT_ABANDONS_EXCLUDED:
        counted -= abandoned_within
    elif definition is ServiceLevelDefinition.SHORT_ABANDONS_MET:
        met += abandoned_within
    elif definition is ServiceLevelDefinition.ABANDONS_EXCLUDED:
        counted = answered
    return met / counted if counted else None


@dataclass(frozen=True)
class AgentSnapshot:
    profile: AgentProfile
    state: AgentState
    state_since: float
    reason: str | None
    occupancy: float | None
    last_caller: str | None
    reserved_call: str | None
    reachable: bool
    site_healthy: bool
    queues: tuple[str, ...]
    pending: str | None  # 'logout' or 'break:<reason>' deferred until the call ends
    personal_calls: int = 0  # calls not from a queue the agent is on: busy for routing
    site_open: bool = True  # within its site's business hours (follow-the-sun)

    @property
    def extension(self) -> str:
        return self.profile.extension

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.profile.to_dict(),
            "state": self.state.value,
            "state_since": self.state_since,
            "reason": self.reason,
            "occupancy": self.occupancy,
            "last_caller": self.last_caller,
            "reserved_call": self.reserved_call,
            "reachable": self.reachable,
            "site_healthy": self.site_healthy,
            "site_open": self.site_open,
            "queues": list(self.queues),
            "pending": self.pending,
            "personal_calls": self.personal_calls,
        }


@dataclass(frozen=True)
class QueueStats:
    """Live figures of one queue since the last ``Router.reset_statistics()``.

    ``service_level`` follows the queue's ``service_level_definition`` (None before any
    call counts); 'within' means waited at most the queue's ``sla_seconds``. ``dropped``
    are calls the server ended while they waited (media timeout, shutdown): never
    counted as abandons nor in the service level. ``agents_available``/``agents_staffed``
    and ``ewt_seconds`` count only agents who can take a call now waiting (language and
    skills); with nobody waiting, agents speaking the queue's language."""

    name: str
    waiting: int
    longest_wait: float
    ewt_seconds: float | None
    agents_available: int
    agents_staffed: int
    service_level: float | None
    answered: int
    abandoned: int
    answered_within_sla: int
    average_handle_seconds: float
    arrivals_per_hour: float
    service_level_definition: str = ServiceLevelDefinition.SHORT_ABANDONS_EXCLUDED.value
    abandoned_within_sla: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "waiting": self.waiting,
            "longest_wait": self.longest_wait,
            "ewt_seconds": self.ewt_seconds,
            "agents_available": self.agents_available,
            "agents_staffed": self.agents_staffed,
            "service_level": self.service_level,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "answered_within_sla": self.answered_within_sla,
            "average_handle_seconds": self.average_handle_seconds,
            "arrivals_per_hour": self.arrivals_per_hour,
            "service_level_definition": self.service_level_definition,
            "abandoned_within_sla": self.abandoned_within_sla,
            "dropped": self.dropped,
        }
