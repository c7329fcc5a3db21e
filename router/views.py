"""Read-only snapshots handed to the API, metrics and the agent screen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.agent_state import AgentState
from router.config import AgentProfile


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
            "queues": list(self.queues),
            "pending": self.pending,
        }


@dataclass(frozen=True)
class QueueStats:
    """Live figures of one queue. ``service_level`` is answered-within-SLA divided by
    answered + abandoned since the last ``Router.reset_statistics()`` (None before any
    call finished waiting)."""

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
        }
