"""Prometheus metrics of the contact center: queues and agents.

``ContactCenterMetrics(registry, router).subscribe(bus)`` counts what happened from the
router's events (``events.routing``, pushed onto the server's bus); ``sample()``, called at
scrape time, sets the levels (calls waiting, longest wait, EWT, service level, agents by
state) from the router's views, read through ``ContactCenterView``. Labels are queue,
site, state, outcome and failure reason only: their values come from configuration or
fixed sets, never from calls or callers.

Every contact-center KPI is PromQL over these counters and histograms (see
monitoring/README.md): service level under each of the four definitions
(``router.ServiceLevelDefinition``) from answered, answered within the queue's threshold,
abandoned and abandoned within it, and each queue's own definition as a gauge; ASA from the
wait histogram; occupancy from the agent-state seconds; AHT from the handle histogram.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from events import (
    AgentReserved,
    AgentStateChanged,
    AnnouncementPlayed,
    CallAbandoned,
    CallDropped,
    CallOverflowed,
    CallQueued,
    EventBus,
    QueueCallAnswered,
    QueueCallEnded,
    ReservationExpired,
    ReservationFailed,
    SiteHealthChanged,
)
from router.agent_state import AgentState
from router.config import QueueConfig, ServiceLevelDefinition
from router.errors import UnknownQueue
from router.views import AgentSnapshot, QueueStats


class ContactCenterView(Protocol):
    """What the metrics read at scrape time: the router's views (``router.Router`` is one).
    Monitoring reads through this and never holds the router itself."""

    def queues(self) -> list[QueueConfig]: ...

    def queue_stats(self, name: str) -> QueueStats: ...

    def agents(self) -> list[AgentSnapshot]: ...

    def site_opening(self) -> Mapping[str, bool]: ...


WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
TALK_BUCKETS = (15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
HANDLE_BUCKETS = (30, 60, 120, 180, 300, 450, 600, 900, 1800, 3600)

# Offers whose outcome is still unknown; bounded in case an outcome is never reported.
_OPEN_OFFERS_KEPT = 10_000


class ContactCenterMetrics:
    def __init__(self, registry: CollectorRegistry, router: ContactCenterView, *,
                 sla_thresholds: Iterable[float] = (),
                 clock: Callable[[], float] = time.time) -> None:
        """``sla_thresholds`` (the configured queues' service-level times) become wait
        buckets too, so "waited at most the threshold" is a bucket and not an estimate."""
        self._router = router
        self._clock = clock
        r = registry
        self.wait = Histogram(
            "centralita_queue_wait_seconds",
            "Time callers waited in line, by how the wait ended (answered, abandoned, overflowed)",
            ["queue", "outcome"], buckets=sorted({*WAIT_BUCKETS, *sla_thresholds}), registry=r)
        self.talk = Histogram("centralita_queue_talk_seconds", "Talk time of answered queue calls",
                              ["queue"], buckets=TALK_BUCKETS, registry=r)
        self.offered = Counter("centralita_queue_calls_offered",
                               "Calls that entered the queue (from the IVR, a transfer or an "
                               "overflow)", ["queue"], registry=r)
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
        self.abandoned_within_sla = Counter(
            "centralita_queue_calls_abandoned_within_sla",
            "Callers who hung up within the queue's service-level time (short abandons)",
            ["queue"], registry=r)
        self.handle = Histogram(
            "centralita_queue_handle_seconds",
            "Handle time of answered queue calls: talk (hold included) plus the agent's wrap-up",
            ["queue"], buckets=HANDLE_BUCKETS, registry=r)
        self.agent_state_seconds = Counter(
            "centralita_agent_state_seconds",
            "Agent-seconds spent in each state, by site (occupancy: reserved, ringing, on_call "
            "and wrap_up over those and available)", ["site", "state"], registry=r)
        self.site_healthy = Gauge("centralita_site_healthy",
                                  "1 when the site is healthy (its agents may be chosen), else 0",
                                  ["site"], registry=r)
        self.site_open = Gauge("centralita_site_open",
                               "1 while the site is within its business hours (its agents may be "
                               "offered calls), else 0", ["site"], registry=r)
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
        self.sla_threshold = Gauge(
            "centralita_queue_service_level_threshold_seconds",
            "The queue's service-level time: answered within it counts as met", ["queue"],
            registry=r)
        self.sla_definition = Gauge(
            "centralita_queue_service_level_definition",
            "1 for the queue's service_level_definition (which calls its service level counts), "
            "0 for the others", ["queue", "definition"], registry=r)
        self.sla_target = Gauge("centralita_queue_service_level_target_ratio",
                                "The queue's service-level target (0.8 for 80 %)", ["queue"],
                                registry=r)
        self.staffed = Gauge("centralita_queue_agents_staffed",
                             "Agents logged in, reachable and qualified for the queue", ["queue"],
                             registry=r)
        self.available = Gauge("centralita_queue_agents_available",
                               "Staffed agents free to take a call now", ["queue"], registry=r)
        self.agents = Gauge("centralita_agents", "Agents by site and state", ["site", "state"],
                            registry=r)
        # Failures name no queue: the queue of each call's open offer, until its outcome.
        self._offer_queue: OrderedDict[str, str] = OrderedDict()
        # agent -> (site, state, since): the part of the current state not yet counted.
        self._state_since: dict[str, tuple[str, str, float]] = {}
        # agent -> (queue, talk seconds, ended at) between a call's end and its wrap-up's end.
        self._wrapping: dict[str, tuple[str, float, float]] = {}
        self._site_health: dict[str, bool] = {}

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(lambda e: self.offered.labels(e.queue).inc(), CallQueued)
        bus.subscribe(self._on_reserved, AgentReserved)
        bus.subscribe(self._on_failed, ReservationFailed)
        bus.subscribe(self._on_expired, ReservationExpired)
        bus.subscribe(self._on_answered, QueueCallAnswered)
        bus.subscribe(self._on_abandoned, CallAbandoned)
        bus.subscribe(self._on_dropped, CallDropped)
        bus.subscribe(self._on_announced, AnnouncementPlayed)
        bus.subscribe(self._on_overflowed, CallOverflowed)
        bus.subscribe(self._on_ended, QueueCallEnded)
        bus.subscribe(self._on_agent_state, AgentStateChanged)
        bus.subscribe(self._on_site_health, SiteHealthChanged)

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

    def _on_answered(self, event: QueueCallAnswered) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.answered.labels(event.queue).inc()
        within_sla = self.answered_within_sla.labels(event.queue)  # exported as 0 until one is
        if event.within_sla:
            within_sla.inc()
        self.wait.labels(event.queue, "answered").observe(event.waited_seconds)

    def _on_abandoned(self, event: CallAbandoned) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.abandoned.labels(event.queue).inc()
        short = self.abandoned_within_sla.labels(event.queue)  # exported as 0 until one is
        if event.within_sla:
            short.inc()
        self.wait.labels(event.queue, "abandoned").observe(event.waited_seconds)

    def _on_dropped(self, event: CallDropped) -> None:
        self._offer_queue.pop(event.call_id, None)
        self.dropped.labels(event.queue, event.reason).inc()

    def _on_announced(self, event: AnnouncementPlayed) -> None:
        self.announcements.labels(event.queue, event.kind).inc()

    def _on_overflowed(self, event: CallOverflowed) -> None:
        self.overflowed.labels(event.queue, event.target or "none").inc()
        self.wait.labels(event.queue, "overflowed").observe(event.waited_seconds)

    def _on_ended(self, event: QueueCallEnded) -> None:
        self.talk.labels(event.queue).observe(event.talk_seconds)
        # Handle time is known when the wrap-up ends (the next state change).
        self._wrapping[event.agent] = (event.queue, event.talk_seconds, event.at)

    def _on_agent_state(self, event: AgentStateChanged) -> None:
        if event.old == AgentState.WRAP_UP:
            wrapped = self._wrapping.pop(event.agent, None)
            if wrapped is not None:
                queue, talk, ended_at = wrapped
                self.handle.labels(queue).observe(talk + max(0.0, event.at - ended_at))
        previous = self._state_since.get(event.agent)
        if previous is None:
            site, since = event.site, event.at
        else:
            site, state, since = previous
            self.agent_state_seconds.labels(site, state).inc(max(0.0, event.at - since))
        self._state_since[event.agent] = (site, str(event.new), max(since, event.at))

    def _on_site_health(self, event: SiteHealthChanged) -> None:
        self._site_health[event.site] = event.healthy

    # ------------------------------------------------------------------ levels

    def sample(self) -> None:
        """Set the level gauges from the router's views; call right before rendering."""
        gauges = (self.waiting, self.longest_wait, self.ewt, self.service_level, self.staffed,
                  self.available, self.agents, self.site_healthy, self.site_open, self.sla_threshold,
                  self.sla_target, self.sla_definition)
        for gauge in gauges:
            gauge.clear()  # queues and sites removed since the last scrape disappear
        for config in self._router.queues():
            try:
                stats = self._router.queue_stats(config.name)
            except UnknownQueue:
                continue
            name = config.name
            self._export_zeros(name)
            self.sla_threshold.labels(name).set(config.sla_seconds)
            self.sla_target.labels(name).set(config.sla_percent / 100)
            for definition in ServiceLevelDefinition:
                self.sla_definition.labels(name, definition.value).set(
                    1 if definition is config.service_level_definition else 0)
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
            self.agent_state_seconds.labels(site, state)  # exported as 0 until spent
        self._count_state_time(snapshots)
        sites = {snapshot.profile.site: snapshot.site_healthy for snapshot in snapshots}
        for site, healthy in self._site_health.items():  # sites whose agents all left
            sites.setdefault(site, healthy)
        for site, healthy in sites.items():
            self.site_healthy.labels(site).set(1 if healthy else 0)
        opening = {snapshot.profile.site: snapshot.site_open for snapshot in snapshots}
        opening.update(self._router.site_opening())
        for site, is_open in opening.items():
            self.site_open.labels(site).set(1 if is_open else 0)

    def _export_zeros(self, queue: str) -> None:
        """A queue's counters exist from its first scrape on, so increase() sees its first call."""
        for counter in (self.offered, self.answered, self.answered_within_sla, self.abandoned,
                        self.abandoned_within_sla):
            counter.labels(queue)
        self.talk.labels(queue)
        self.handle.labels(queue)
        for outcome in ("answered", "abandoned"):
            self.wait.labels(queue, outcome)
        for ring_no_answer in ("ring_timeout", "no_answer"):
            self.reservation_failures.labels(queue, ring_no_answer)
        for kind in ("you_are_next", "position"):  # AnnouncementPlayed.kind
            self.announcements.labels(queue, kind)

    def _count_state_time(self, snapshots: list[AgentSnapshot]) -> None:
        """Credit each agent's current state up to now, so a long call shows as it goes."""
        now = self._clock()
        present = set()
        for snapshot in snapshots:
            extension = snapshot.profile.extension
            present.add(extension)
            site, state = snapshot.profile.site, snapshot.state.value
            previous = self._state_since.get(extension)
            since = snapshot.state_since if previous is None else previous[2]
            if previous is not None and previous[:2] != (site, state):
                # A change whose event is not published yet: it will credit the old state.
                continue
            self.agent_state_seconds.labels(site, state).inc(max(0.0, now - since))
            self._state_since[extension] = (site, state, max(since, now))
        for gone in self._state_since.keys() - present:  # agents removed from the config
            del self._state_since[gone]
            self._wrapping.pop(gone, None)
