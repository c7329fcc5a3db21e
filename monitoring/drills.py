"""Drill metrics: whether this site is drained, its drains, and the agents, callers and
callbacks it handed over."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from events import EventBus
from events.drills import AgentsReleased, CallbacksHandedOver, CallerMoved, DrainEnded, DrainStarted


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry, site: str) -> None:
        self.draining = Gauge("centralita_site_draining",
                              "1 while this site is drained for a drill (new calls refused "
                              "503, the front door sends them elsewhere), else 0",
                              ["site"], registry=registry)
        self.drains = Counter("centralita_site_drains",
                              "Drains of this site started (a drill away from it)",
                              ["site"], registry=registry)
        self.callbacks_handed_over = Counter(
            "centralita_drill_callbacks_handed_over",
            "Pending callback requests this site gave up during a drill for another to adopt",
            ["site"], registry=registry)
        self.agents_released = Counter(
            "centralita_drill_agents_released",
            "This site's agents released during a drill for another site to claim",
            ["site"], registry=registry)
        self.callers_moved = Counter(
            "centralita_drill_callers_moved",
            "Callers waiting at this drained site answered by another site's agent",
            ["site"], registry=registry)
        self.draining.labels(site).set(0)
        self.drains.labels(site)
        self.callbacks_handed_over.labels(site)
        self.agents_released.labels(site)
        self.callers_moved.labels(site)

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(self._started, DrainStarted)
        bus.subscribe(lambda e: self.draining.labels(e.site).set(0), DrainEnded)
        bus.subscribe(lambda e: self.callbacks_handed_over.labels(e.site).inc(e.requests),
                      CallbacksHandedOver)
        bus.subscribe(lambda e: self.agents_released.labels(e.site).inc(len(e.agents)),
                      AgentsReleased)
        bus.subscribe(lambda e: self.callers_moved.labels(e.site).inc(), CallerMoved)

    def _started(self, event: DrainStarted) -> None:
        self.draining.labels(event.site).set(1)
        self.drains.labels(event.site).inc()
