"""SIP-level metrics read back from the exposition text after events on a real bus."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import TelephonyMetrics
from pbx.events import EventBus, SipResponseSent


def samples(metrics: TelephonyMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples}


def test_auth_failures_count_refused_credentials_not_refused_transfers() -> None:
    metrics, bus = TelephonyMetrics(), EventBus()
    metrics.subscribe(bus)
    failures = "centralita_sip_auth_failures_total"
    before = samples(metrics)
    assert before[(failures, frozenset({("method", "REGISTER")}))] == 0  # exported from zero
    assert before[(failures, frozenset({("method", "INVITE")}))] == 0
    for method, status in (("REGISTER", 401), ("REGISTER", 403), ("INVITE", 407),
                           ("INVITE", 403), ("REFER", 403), ("REGISTER", 200)):
        bus.publish(SipResponseSent(method, status))
    after = samples(metrics)
    assert after[(failures, frozenset({("method", "REGISTER")}))] == 1  # challenges are not failures
    assert after[(failures, frozenset({("method", "INVITE")}))] == 1
    assert (failures, frozenset({("method", "REFER")})) not in after
    assert after[("centralita_sip_responses_sent_total",
                  frozenset({("method", "REFER"), ("code", "403")}))] == 1
