"""Prometheus metrics of queued callbacks, fed only by the callback events.

``CallbackMetrics(registry).subscribe(bus)``. Labels are the queue, the outcome and the
final state: values from configuration or fixed sets, never numbers or ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from events import EventBus
from events.callbacks import (
    CallbackEnded,
    CallbackOfferAnswered,
    CallbackOffered,
    CallbackRequested,
    CallbacksAdopted,
    CallbacksPending,
    CallbackTryEnded,
    CallbackTryStarted,
)

# From minutes to a day: a callback is expected within the hour, a scheduled one later.
WAIT_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class CallbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requested = Counter("centralita_callbacks_requested",
                                 "Callback requests accepted (the IVR, the API)", ["queue"], registry=r)
        self.pending = Gauge("centralita_callbacks_pending",
                             "Callback requests waiting for their turn or their next try, "
                             "every site's, as last counted in the store", ["queue"], registry=r)
        self.attempts = Counter("centralita_callback_attempts",
                                "Tries to call a customer back (one per claim)", ["queue"], registry=r)
        self.connected = Counter("centralita_callbacks_connected",
                                 "Tries that reached the customer, who answered", ["queue"], registry=r)
        self.failed = Counter("centralita_callback_attempts_failed",
                              "Tries that did not connect, by cause (no_answer, busy, invalid_number, "
                              "trunk_failure, agent_rejected, interrupted)", ["queue", "cause"],
                              registry=r)
        self.ended = Counter("centralita_callbacks_ended",
                             "Requests that ended, by final state (completed, failed, expired, "
                             "cancelled)", ["queue", "state"], registry=r)
        self.adopted = Counter("centralita_callbacks_adopted",
                               "Requests this site took over from a site whose lease ran out",
                               registry=r)
        self.wait = Histogram("centralita_callback_wait_seconds",
                              "From the original enqueue time to the customer answering the "
                              "callback", ["queue"], buckets=WAIT_BUCKETS, registry=r)
        self.offers = Counter("centralita_callback_offers",
                              "Callback offers callers heard, by how (announced, asked, ivr)",
                              ["queue", "how"], registry=r)
        self.offer_outcomes = Counter("centralita_callback_offer_outcomes",
                                      "Callback offers callers went into, by how they ended "
                                      "(booked, already_pending, declined, not_booked)",
                                      ["queue", "outcome"], registry=r)
        self._pending_queues: set[str] = set()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(self._requested, CallbackRequested)
        bus.subscribe(self._try_started, CallbackTryStarted)
        bus.subscribe(self._try_ended, CallbackTryEnded)
        bus.subscribe(self._ended, CallbackEnded)
        bus.subscribe(self._adopted, CallbacksAdopted)
        bus.subscribe(self._pending, CallbacksPending)
        bus.subscribe(lambda e: self.offers.labels(e.queue, e.how).inc(), CallbackOffered)
        bus.subscribe(lambda e: self.offer_outcomes.labels(e.queue, e.outcome).inc(),
                      CallbackOfferAnswered)

    def _requested(self, event: CallbackRequested) -> None:
        self.requested.labels(event.queue).inc()

    def _try_started(self, event: CallbackTryStarted) -> None:
        self.attempts.labels(event.queue).inc()

    def _try_ended(self, event: CallbackTryEnded) -> None:
        if event.answered:
            self.connected.labels(event.queue).inc()
            self.wait.labels(event.queue).observe(event.waited_seconds)
        else:
            self.failed.labels(event.queue, event.outcome).inc()
        if event.ended:
            self.ended.labels(event.queue, event.state).inc()

    def _ended(self, event: CallbackEnded) -> None:
        self.ended.labels(event.queue, event.state).inc()

    def _adopted(self, event: CallbacksAdopted) -> None:
        self.adopted.inc(event.count)

    def _pending(self, event: CallbacksPending) -> None:
        for queue in self._pending_queues - set(event.by_queue):
            self.pending.labels(queue).set(0)
        for queue, count in event.by_queue.items():
            self.pending.labels(queue).set(count)
        self._pending_queues |= set(event.by_queue)
