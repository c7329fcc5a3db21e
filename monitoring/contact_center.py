"""Prometheus metrics of the contact center: queues and agents.

``ContactCenterMetrics(registry, router).subscribe(bus)`` counts what happened from the
router's events (republished on the server's bus); ``sample()``, called at scrape time,
sets the levels (calls waiting, longest wait, EWT, service level, agents by state) from
the router's views. Labels are queue, site, state, outcome and failure reason only:
their values come from configuration or fixed sets, never from calls or callers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pbx.events import AnnouncementPlayed, EventBus
from router import (
    AgentReserved,
    AgentState,
    CallAbandoned,
    CallAnswered,
    CallDropped,
    CallEnded,
    CallOverflowed,
    ReservationExpired,
    ReservationFailed,
    Router,
    UnknownQueue,
)

WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
TALK_BUCKETS = (15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)

# Offers whose outcome is still unknown; bounded in case an outcome is never reported.
_OPEN_OFFERS_KEPT = 10_000


class ContactCenterMetrics:
    def __init__(self, registry: CollectorRegistry, router: Router) -> None:
        self._router = router
        r = registry
        self.wait = Histogram(
            "centralita_queue_wait_seconds",
            "Time callers waited in line, by how the wait ended (answered, abandoned, overflowed)",
            ["queue", "outcome"], buckets=WAIT_BUCKETS, registry=r)
        self.talk = Histogram("centralita_queue_talk_seconds", "Talk time of answered queue calls",
                              ["queue"], buckets=TALK_BUCKETS, registry=r)
        self.answered = Counter("centralita_queue_calls_answered", "Queue calls answered by an agent",
                                ["queue"], registry=r)
        self.answered_within_sla = Counter(
            "centralita_queue_calls_answered_within_sla",
            "Queue calls answered within the queue's service-level time", ["queue"], registry=r)
        self.abandoned = Counter("centralita_queue_calls_abandoned",
                                 "Callers who hung up while waiting in line", ["queue"], registry=r)
        self.dropped = Counter(
            "centralita_queue_calls_dropped",
            "Waiting calls the server ended (media timeout, dialog gone, shutdown): not abandons",
            ["queue", "reason"], registry=r)
        self.announcements = Counter(
            "centralita_queue_announcements",
            "Announcements played to waiting callers, by kind (you_are_next, position)",
            ["queue", "kind"], registry=r)
        self.overflowed = Counter(
            "centralita_queue_calls_overflowed",
            "Calls that reached the queue's max wait; target is the overflow queue or 'none'",
            ["queue", "target"], registry=r)
        self.reservation_failures = Counter(
            "centralita_queue_reservation_failures",
            "Offers to agents that did not connect (RONA and others), by reason",
            ["queue", "reason"], registry=r)

        self.waiting = Gauge("centralita_queue_calls_waiting", "Calls in line now", ["queue"],
                             registry=r)
        self.longest_wait = Gauge("centralita_queue_longest_wait_seconds",
                                  "Wait of the oldest call in line now (0 when none)", ["queue"],
                                  registry=r)
        self.ewt = Gauge("centralita_queue_estimated_wait_seconds",
                         "Estimated wait for a caller arriving now (NaN when unknown)", ["queue"],
                         registry=r)
        self.service_level = Gauge(
            "centralita_queue_service_level_ratio",
            "Service level under the queue's service_level_definition since the router's last "
            "statistics reset (NaN before any call counts)", ["queue"], registry=r)
        self.staffed = Gauge("centralita_queue_agents_staffed",
                             "Agents logged in, reachable and qualified for the queue", ["queue"],
                             registry=r)
        self.available = Gauge("centralita_queue_agents_available",
                               "Staffed agents free to take a call now", ["queue"], registry=r)
        self.agents = Gauge("centralita_agents", "Agents by site and state", ["site", "state"],
                            registry=r)
        # Failures name no queue: the queue of each call's open offer, until its outcome.
        self._offer_queue: OrderedDict[str, str] = OrderedDict()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(self._on_reserved, AgentReserved)
        bus.subscribe(self._on_failed, ReservationFailed)
        bus.subscribe(self._on_expired, ReservationExpired)
        bus.subscribe(self._on_answered, CallAnswered)
        bus.subscribe(self._on_abandoned, CallAbandoned)
        bus.subscribe(self._on_dropped, CallDropped)
        bus.subscribe(self._on_announced, AnnouncementPlayed)
        bus.subscribe(self._on_overflowed, CallOverflowed)
        bus.subscribe(self._on_ended, CallEnded)

    # ------------------------------------------------------------------ events

    def _on_reserved(self, event: AgentReserved) -> None:
        # A call has at most one open offer at a time.
        self._offer_queue[event.call_id] = event.queue
        while len(self._offer_queue) > _OPEN_OFFERS_KEPT:
            self._offer_queue.popitem(last=False)

    def _offer_failed(self, call_id: str, reason: str) -> None:
        queue = self._offer_queue.pop(call_id, None)
        if queue is not None:
            self.reservation_failures.labels(queue, reason).inc()

    def _on_failed(self, event: ReservationFailed) -> None:
        self._offer_failed(event.call_id, event.reason)

    def _on_expired(self, event: ReservationExpired) -> None:
        reason = "ring_timeout" if event.was_ringing else "reservation_timeout"
        self._offer_failed(event.call_id, reason)

    def _on_answered(self, event: CallAnswered) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.answered.labels(event.queue).inc()
        within_sla = self.answered_within_sla.labels(event.queue)  # exported as 0 until one is
        if event.within_sla:
            within_sla.inc()
        self.wait.labels(event.queue, "answered").observe(event.waited_seconds)

    def _on_abandoned(self, event: CallAbandoned) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.abandoned.labels(event.queue).inc()
        self.wait.labels(event.queue, "abandoned").observe(event.waited_seconds)

    def _on_dropped(self, event: CallDropped) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.dropped.labels(event.queue, event.reason).inc()

    def _on_announced(self, event: AnnouncementPlayed) -> None:
        self.announcements.labels(event.queue, event.kind).inc()

    def _on_overflowed(self, event: CallOverflowed) -> None:
        self.overflowed.labels(event.queue, event.target or "none").inc()
        self.wait.labels(event.queue, "overflowed").observe(event.waited_seconds)

    def _on_ended(self, event: CallEnded) -> None:
        self.talk.labels(event.queue).observe(event.talk_seconds)

    # ------------------------------------------------------------------ levels

    def sample(self) -> None:
        """Set the level gauges from the router's views; call right before rendering."""
        gauges = (self.waiting, self.longest_wait, self.ewt, self.service_level, self.staffed,
                  self.available, self.agents)
        for gauge in gauges:
            gauge.clear()  # queues and sites removed since the last scrape disappear
        for config in self._router.queues():
            try:
                stats = self._router.queue_stats(config.name)
            except UnknownQueue:
                continue
            name = config.name
            self.waiting.labels(name).set(stats.waiting)
            self.longest_wait.labels(name).set(stats.longest_wait)
            self.ewt.labels(name).set(math.nan if stats.ewt_seconds is None else stats.ewt_seconds)
            self.service_level.labels(name).set(
                math.nan if stats.service_level is None else stats.service_level)
            self.staffed.labels(name).set(stats.agents_staffed)
            self.available.labels(name).set(stats.agents_available)
        snapshots = self._router.agents()
        counts: dict[tuple[str, str], int] = {}
        for site in {snapshot.profile.site for snapshot in snapshots}:
            for known in AgentState:  # every state of every site, so a zero is a zero, not a gap
                counts[(site, known.value)] = 0
        for snapshot in snapshots:
            counts[(snapshot.profile.site, snapshot.state.value)] += 1
        for (site, state), count in counts.items():
            self.agents.labels(site, state).set(count)
