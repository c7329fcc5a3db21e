"""Prometheus metrics fed from the domain event stream.

Metrics live in their own registry (not the process-global one) so that
several servers can run in one test process, and they are updated only by
subscribing to events: call logic never touches a counter.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest

from events import (
    CallAnswered,
    CallEnded,
    CallLegTransitionRefused,
    CallStarted,
    EventBus,
    SipMessageRejected,
    SipRequestReceived,
    SipResponseSent,
    StaleCallsRepaired,
)


class TelephonyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("centralita_sip_requests_received", "SIP requests received",
                                ["method", "transport"], registry=r)
        self.responses = Counter("centralita_sip_responses_sent", "SIP responses sent",
                                 ["method", "code"], registry=r)
        self.rejected = Counter("centralita_sip_messages_rejected", "Malformed SIP messages",
                                ["transport", "answered"], registry=r)
        self.transactions = Gauge("centralita_sip_transactions", "Live SIP transactions", registry=r)
        self.dialogs = Gauge("centralita_sip_dialogs_active", "Active SIP dialogs", registry=r)
        self.registrations = Gauge("centralita_sip_registered_contacts", "Registered contact bindings",
                                   registry=r)
        self.registered_users = Gauge("centralita_sip_registered_accounts",
                                      "Accounts with at least one registered contact", registry=r)
        self.calls_started = Counter("centralita_calls_started", "Calls started", ["kind"], registry=r)
        self.calls_answered = Counter("centralita_calls_answered", "Calls answered", ["kind"], registry=r)
        self.calls_ended = Counter("centralita_calls_ended", "Calls ended", ["kind", "cause"], registry=r)
        self.calls_active = Gauge("centralita_calls_active", "Calls in progress", ["kind"], registry=r)
        self.call_duration = Histogram("centralita_call_duration_seconds", "Duration of ended calls",
                                       ["kind"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
                                       registry=r)
        self.stale_calls = Counter("centralita_stale_calls_repaired",
                                   "Calls found dead and cleaned up (lost BYE, vanished phone)",
                                   ["found_by"], registry=r)
        self.leg_transitions_refused = Counter(
            "centralita_call_leg_transitions_refused",
            "Events a call leg's state did not allow (a defect; see pbx/calls/call_leg.py)",
            ["state", "event"], registry=r)
        self.loop_lag = Histogram("centralita_event_loop_lag_seconds",
                                  "How late the event loop ran a 100 ms timer (stalls delay SIP timers and RTP)",
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                  registry=r)
        self.rtp_sessions = Gauge("centralita_rtp_sessions", "Open RTP sessions", registry=r)
        self.rtp_ports = Gauge("centralita_rtp_ports_in_use",
                               "RTP ports reserved (a port is given back once its socket closed)",
                               registry=r)
        self.call_tasks = Gauge("centralita_call_tasks_active",
                                "Tasks running calls (answering, dialling, applications)", registry=r)
        self.history_entries = Gauge("centralita_history_entries",
                                     "Calls whose details are held in memory, per holder (see history: in the config)",
                                     ["holder"], registry=r)
        # python_gc_objects_collected_total, python_gc_collections_total, ... and process_*.
        GCCollector(registry=r)
        ProcessCollector(registry=r)
        self.collector = CollectorPauses(r)

        for kind in ("application", "bridge"):
            self.calls_started.labels(kind)
            self.calls_answered.labels(kind)
        for transport in ("UDP", "TCP", "TLS"):  # as the transports name themselves
            for answered in ("true", "false"):
                self.rejected.labels(transport, answered)
        for found_by in ("reconciliation", "media_timeout"):
            self.stale_calls.labels(found_by)

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(lambda e: self.requests.labels(e.method, e.transport).inc(), SipRequestReceived)
        bus.subscribe(lambda e: self.responses.labels(e.method, str(e.status)).inc(), SipResponseSent)
        bus.subscribe(lambda e: self.rejected.labels(e.transport, str(e.answered).lower()).inc(),
                      SipMessageRejected)
        bus.subscribe(self._on_call_started, CallStarted)
        bus.subscribe(lambda e: self.calls_answered.labels(e.kind).inc(), CallAnswered)
        bus.subscribe(self._on_call_ended, CallEnded)
        bus.subscribe(lambda e: self.stale_calls.labels(e.found_by).inc(len(e.call_ids)),
                      StaleCallsRepaired)
        bus.subscribe(lambda e: self.leg_transitions_refused.labels(e.state, e.event).inc(),
                      CallLegTransitionRefused)

    def _on_call_started(self, event: CallStarted) -> None:
        self.calls_started.labels(event.kind).inc()
        self.calls_active.labels(event.kind).inc()

    def _on_call_ended(self, event: CallEnded) -> None:
        self.calls_ended.labels(event.kind, event.cause).inc()
        self.calls_active.labels(event.kind).dec()
        self.call_duration.labels(event.kind).observe(event.duration)

    def sample_history(self, sizes: Mapping[str, int]) -> None:
        for holder, size in sizes.items():
            self.history_entries.labels(holder).set(size)

    def sample_gauges(self, *, transactions: int, dialogs: int, contacts: int, accounts: int,
                      rtp_sessions: int, rtp_ports: int = 0, call_tasks: int = 0) -> None:
        """Levels are read when scraped rather than tracked on every change."""
        self.rtp_ports.set(rtp_ports)
        self.call_tasks.set(call_tasks)
        self.transactions.set(transactions)
        self.dialogs.set(dialogs)
        self.registrations.set(contacts)
        self.registered_users.set(accounts)
        self.rtp_sessions.set(rtp_sessions)

    async def render(self, before: Callable[[], None] | None = None) -> bytes:
        """The exposition text. ``before`` (reading levels off the server's state) runs on
        the event loop; the text is written in a worker thread, because writing every series
        takes tens of milliseconds, which on the loop would be one stall of the SIP timers
        and RTP (in a thread the interpreter hands the loop its turns every few ms). The
        metric objects lock their own values, so the loop may update them meanwhile."""
        if before is not None:
            before()
        return await asyncio.to_thread(generate_latest, self.registry)


class CollectorPauses:
    """How long each garbage-collector pass stopped the process, per generation.

    A pass runs inside whatever code allocated, so a long one is a stall of the event loop
    (SIP timers, RTP). ``install()`` hooks ``gc.callbacks``; ``uninstall()`` unhooks it.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pauses = Histogram("centralita_gc_pause_seconds",
                                "Duration of garbage-collector passes, by generation (2 = full pass)",
                                ["generation"],
                                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5, 1.0),
                                registry=registry)
        frozen = Gauge("centralita_gc_frozen_objects",
                       "Objects frozen at start-up (gc.freeze): never scanned by a pass",
                       registry=registry)
        frozen.set_function(gc.get_freeze_count)
        self._by_generation = [self.pauses.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def install(self) -> None:
        if self._on_pass not in gc.callbacks:
            gc.callbacks.append(self._on_pass)

    def uninstall(self) -> None:
        if self._on_pass in gc.callbacks:
            gc.callbacks.remove(self._on_pass)

    def _on_pass(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)
