"""Per-queue service-level counters: what ``QueueStats`` reports for the current period
(reset with ``Router.reset_statistics``, e.g. at midnight). Prometheus metrics are fed
from the router's events, not from these counters."""

from __future__ import annotations

from dataclasses import dataclass

from router.config import ServiceLevelDefinition
from router.views import service_level


@dataclass(eq=False)
class ServiceLevelCounters:
    answered: int = 0
    answered_within_sla: int = 0
    abandoned: int = 0
    abandoned_within_sla: int = 0
    dropped: int = 0

    def count_answered(self, within_sla: bool) -> None:
        self.answered += 1
        self.answered_within_sla += within_sla

    def count_abandoned(self, within_sla: bool) -> None:
        self.abandoned += 1
        self.abandoned_within_sla += within_sla

    def count_dropped(self) -> None:
        self.dropped += 1

    def reset(self) -> None:
        self.answered = self.answered_within_sla = self.abandoned = 0
        self.abandoned_within_sla = self.dropped = 0

    def service_level(self, definition: ServiceLevelDefinition) -> float | None:
        return service_level(
            definition,
            self.answered,
            self.answered_within_sla,
            self.abandoned,
            self.abandoned_within_sla,
        )
