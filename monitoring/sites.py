"""Prometheus metrics of the site bus: whether this site reaches the broker, which sites
are up in its view, and the other sites' agents it sees (fed from events.sites)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from events import EventBus
from events.sites import (
    BusConnected,
    BusDisconnected,
    ForeignReservation,
    RemoteAgentChanged,
    SiteDown,
    SiteUp,
)


class SiteMetrics:
    def __init__(self, registry: CollectorRegistry, site: str, sites: Iterable[str]) -> None:
        r = registry
        self.connected = Gauge("centralita_bus_connected",
                               "1 while this site is connected to the bus's broker, else 0",
                               ["site"], registry=r)
        self.disconnections = Counter("centralita_bus_disconnections",
                                      "Times this site lost the broker", ["site"], registry=r)
        self.site_up = Gauge("centralita_site_up",
                             "1 when the site is up in this site's view (heartbeat, last will, "
                             "operator override), else 0", ["site"], registry=r)
        self.remote_agents = Gauge("centralita_remote_agents",
                                   "Other sites' agents seen on the bus, by their site and presence",
                                   ["site", "presence"], registry=r)
        self.foreign_reservations = Counter(
            "centralita_foreign_reservations",
            "Other sites' requests for this site's agents: reserved or refused (by this "
            "site's router), and released (the asking site gave the agent back)",
            ["asking_site", "queue", "outcome"], registry=r)
        self.site = site
        self.connected.labels(site).set(0)
        self.disconnections.labels(site)
        for name in sites:
            self.site_up.labels(name).set(1 if name == site else 0)
        self._remote: dict[str, tuple[str, str]] = {}  # agent -> (site, presence)

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(lambda e: self.connected.labels(e.site).set(1), BusConnected)
        bus.subscribe(self._disconnected, BusDisconnected)
        bus.subscribe(lambda e: self.site_up.labels(e.site).set(1), SiteUp)
        bus.subscribe(lambda e: self.site_up.labels(e.site).set(0), SiteDown)
        bus.subscribe(self._remote_agent, RemoteAgentChanged)
        bus.subscribe(lambda e: self.foreign_reservations.labels(e.site, e.queue, e.outcome).inc(),
                      ForeignReservation)

    def _disconnected(self, event: BusDisconnected) -> None:
        self.connected.labels(event.site).set(0)
        self.disconnections.labels(event.site).inc()

    def _remote_agent(self, event: RemoteAgentChanged) -> None:
        if event.presence is None:
            self._remote.pop(event.agent, None)
        else:
            self._remote[event.agent] = (event.site, event.presence.value)
        self.remote_agents.clear()
        counts: dict[tuple[str, str], int] = {}
        for key in self._remote.values():
            counts[key] = counts.get(key, 0) + 1
        for (site, presence), count in counts.items():
            self.remote_agents.labels(site, presence).set(count)
