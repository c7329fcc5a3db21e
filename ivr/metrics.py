"""Prometheus metrics of the IVR, fed only from its events.

``IvrMetrics(registry).subscribe(bus)``; ``declare_flow(flow)`` exports a loaded flow's
topics, queues and outcomes at zero, so increase() counts their first call. The deflection rate per topic is
deflected calls over self-service answers of that topic, kept as a gauge so a
dashboard can show it without PromQL arithmetic (the two counters are exported too).
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from events import EventBus
from events.ivr import (
    CallDeflected,
    DigitReceived,
    EnqueueRequested,
    IvrFinished,
    IvrNodeEntered,
    LanguageSelected,
    SelfServiceAnswered,
    SurveyScored,
    TransferRequested,
)
from ivr.flow import Flow
from ivr.nodes import EnqueueNode, SelfServiceNode

# How a call leaves the IVR (IvrFinished.outcome).
OUTCOMES = ("deflected", "enqueued", "transferred", "callback_requested", "hung_up", "abandoned",
            "error")
LANGUAGE_SOURCES = ("digit", "profile", "default")  # LanguageSelected.source


class IvrMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.node_entries = Counter("centralita_ivr_node_entries", "IVR node entries",
                                    ["flow", "node"], registry=r)
        self.digits = Counter("centralita_ivr_digits", "DTMF digits taken as IVR input",
                              ["flow"], registry=r)
        self.languages = Counter("centralita_ivr_language_selections", "Call languages chosen",
                                 ["language", "source"], registry=r)
        self.answers = Counter("centralita_ivr_self_service_answers",
                               "Self-service answers played", ["topic"], registry=r)
        self.deflections = Counter("centralita_ivr_deflections",
                                   "Calls ended after self-service without reaching a queue",
                                   ["topic"], registry=r)
        self.deflection_rate = Gauge("centralita_ivr_deflection_ratio",
                                     "Deflected calls per self-service answer", ["topic"],
                                     registry=r)
        self.enqueued = Counter("centralita_ivr_enqueued", "Calls the IVR sent to a queue",
                                ["queue"], registry=r)
        self.transfers = Counter("centralita_ivr_transfers", "Calls the IVR sent to an extension",
                                 ["extension"], registry=r)
        self.outcomes = Counter("centralita_ivr_outcomes", "How calls left the IVR",
                                ["flow", "outcome"], registry=r)
        self.survey_scores = Histogram("centralita_ivr_survey_score",
                                       "Post-call satisfaction scores (1-5)",
                                       buckets=(1, 2, 3, 4, 5), registry=r)
        self._answered: Tally[str] = Tally()
        self._deflected: Tally[str] = Tally()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(lambda e: self.node_entries.labels(e.flow, e.node).inc(), IvrNodeEntered)
        bus.subscribe(lambda e: self.digits.labels(e.flow).inc(), DigitReceived)
        bus.subscribe(lambda e: self.languages.labels(e.language, e.source).inc(),
                      LanguageSelected)
        bus.subscribe(self._on_answered, SelfServiceAnswered)
        bus.subscribe(self._on_deflected, CallDeflected)
        bus.subscribe(lambda e: self.enqueued.labels(e.queue).inc(), EnqueueRequested)
        bus.subscribe(lambda e: self.transfers.labels(e.extension).inc(), TransferRequested)
        bus.subscribe(lambda e: self.outcomes.labels(e.flow, e.outcome).inc(), IvrFinished)
        bus.subscribe(lambda e: self.survey_scores.observe(e.score), SurveyScored)

    def declare_flow(self, flow: Flow) -> None:
        self.digits.labels(flow.name)
        for language in flow.languages:
            for source in LANGUAGE_SOURCES:
                self.languages.labels(language, source)
        for outcome in OUTCOMES:
            self.outcomes.labels(flow.name, outcome)
        for node in flow.nodes.values():
            if isinstance(node, SelfServiceNode):
                self.answers.labels(node.topic)
                self.deflections.labels(node.topic)
            elif isinstance(node, EnqueueNode):
                self.enqueued.labels(node.queue)

    def _on_answered(self, event: SelfServiceAnswered) -> None:
        self.answers.labels(event.topic).inc()
        self._answered[event.topic] += 1
        self._update_rate(event.topic)

    def _on_deflected(self, event: CallDeflected) -> None:
        self.deflections.labels(event.topic).inc()
        self._deflected[event.topic] += 1
        self._update_rate(event.topic)

    def _update_rate(self, topic: str) -> None:
        answered = self._answered[topic]
        if answered:
            self.deflection_rate.labels(topic).set(self._deflected[topic] / answered)
