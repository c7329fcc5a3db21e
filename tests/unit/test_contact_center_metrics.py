"""Contact-center metrics: a real router's events on a real bus, read back from the exposition text."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from events import EventBus
from monitoring.contact_center import ContactCenterMetrics
from router import AgentProfile, QueueConfig, Router, RoutingRequest, ServiceLevelDefinition

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Center:
    def __init__(self) -> None:
        self.clock = Clock()
        self.bus = EventBus()
        self.registry = CollectorRegistry()
        self.router = Router(self.clock, reservation_timeout_seconds=4, publish=self.bus.publish)
        self.metrics = ContactCenterMetrics(self.registry, self.router, sla_thresholds=(25,),
                                            clock=self.clock)
        self.metrics.subscribe(self.bus)
        self.router.upsert_queue(QueueConfig("sales", {"sales": 1}, sla_seconds=20,
                                             wrap_up_seconds=0, ring_timeout_seconds=15))
        self.router.upsert_queue(QueueConfig("support", {"support": 1}, max_wait_seconds=60,
                                             overflow="sales"))
        for extension, site in (("1001", "madrid"), ("1002", "madrid"), ("2001", "lima")):
            self.router.upsert_agent(AgentProfile(extension, extension, site, {"sales": 5},
                                                  frozenset({"en"})))
            self.router.login(extension)
            self.clock.now += 1

    def route(self, operation: Callable[[], Any]) -> Any:
        """One router step; its events reach the metrics through the bus as they happen."""
        return operation()

    def scrape(self) -> Samples:
        self.metrics.sample()
        text = generate_latest(self.registry).decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def center() -> Center:
    return Center()


def test_answered_abandoned_and_rona_are_counted_per_queue(center: Center) -> None:
    router, clock = center.router, center.clock
    center.route(lambda: router.enqueue(RoutingRequest("a", "sales")))
    [first] = center.route(router.dispatch)
    center.route(lambda: router.ringing(first.reservation_id))
    clock.now += 15
    center.route(lambda: router.reservation_failed(first.reservation_id, "no_answer"))
    [second] = center.route(router.dispatch)
    clock.now += 10
    center.route(lambda: router.answered(second.reservation_id))  # waited 25 s: outside SLA
    clock.now += 200
    center.route(lambda: router.call_ended("a"))

    center.route(lambda: router.enqueue(RoutingRequest("b", "sales")))
    center.route(router.dispatch)
    clock.now += 4.5
    center.route(router.tick)  # the reservation was never confirmed
    clock.now += 3
    center.route(lambda: router.abandon("b"))

    samples = center.scrape()
    assert value(samples, "centralita_queue_calls_answered_total", queue="sales") == 1
    assert value(samples, "centralita_queue_calls_answered_within_sla_total", queue="sales") == 0
    assert value(samples, "centralita_queue_calls_abandoned_total", queue="sales") == 1
    assert value(samples, "centralita_queue_reservation_failures_total",
                 queue="sales", reason="no_answer") == 1
    assert value(samples, "centralita_queue_reservation_failures_total",
                 queue="sales", reason="reservation_timeout") == 1
    # Waits: answered after 25 s (bucket 30), abandoned after 7.5 s (bucket 10).
    wait = "centralita_queue_wait_seconds"
    assert value(samples, f"{wait}_count", queue="sales", outcome="answered") == 1
    assert value(samples, f"{wait}_sum", queue="sales", outcome="answered") == pytest.approx(25)
    assert value(samples, f"{wait}_bucket", queue="sales", outcome="answered", le="20.0") == 0
    assert value(samples, f"{wait}_bucket", queue="sales", outcome="answered", le="30.0") == 1
    assert value(samples, f"{wait}_sum", queue="sales", outcome="abandoned") == pytest.approx(7.5)
    assert value(samples, f"{wait}_bucket", queue="sales", outcome="abandoned", le="10.0") == 1
    talk = "centralita_queue_talk_seconds"
    assert value(samples, f"{talk}_sum", queue="sales") == pytest.approx(200)
    assert value(samples, f"{talk}_bucket", queue="sales", le="180.0") == 0
    assert value(samples, f"{talk}_bucket", queue="sales", le="300.0") == 1
    # Service level: 0 answered within SLA out of 1 answered + 1 abandoned.
    assert value(samples, "centralita_queue_service_level_ratio", queue="sales") == 0


def test_overflow_and_ring_timeout(center: Center) -> None:
    router, clock = center.router, center.clock
    center.route(lambda: router.enqueue(RoutingRequest("o", "support")))  # nobody has support
    clock.now += 60
    [offer] = center.route(router.tick)  # overflowed into sales and offered there
    center.route(lambda: router.ringing(offer.reservation_id))
    clock.now += 15
    center.route(router.tick)  # rang out
    samples = center.scrape()
    assert value(samples, "centralita_queue_calls_overflowed_total",
                 queue="support", target="sales") == 1
    assert value(samples, "centralita_queue_wait_seconds_sum",
                 queue="support", outcome="overflowed") == pytest.approx(60)
    assert value(samples, "centralita_queue_reservation_failures_total",
                 queue="sales", reason="ring_timeout") == 1


def test_levels_are_sampled_from_the_router_at_scrape_time(center: Center) -> None:
    router, clock = center.router, center.clock
    for call_id in ("w1", "w2", "w3", "w4"):
        center.route(partial(router.enqueue, RoutingRequest(call_id, "sales")))
        clock.now += 10
    reservations = center.route(router.dispatch)  # three agents, four calls
    assert len(reservations) == 3
    [ana] = [r for r in reservations if r.agent == "1001"]
    center.route(lambda: router.ringing(ana.reservation_id))

    samples = center.scrape()
    assert value(samples, "centralita_queue_calls_waiting", queue="sales") == 1
    assert value(samples, "centralita_queue_longest_wait_seconds", queue="sales") == 10  # w4
    assert value(samples, "centralita_queue_agents_staffed", queue="sales") == 3
    assert value(samples, "centralita_queue_agents_available", queue="sales") == 0
    assert value(samples, "centralita_queue_agents_staffed", queue="support") == 0
    assert value(samples, "centralita_queue_calls_waiting", queue="support") == 0
    assert value(samples, "centralita_queue_estimated_wait_seconds", queue="sales") > 0
    assert math.isnan(value(samples, "centralita_queue_estimated_wait_seconds", queue="support"))
    assert math.isnan(value(samples, "centralita_queue_service_level_ratio", queue="sales"))
    assert value(samples, "centralita_agents", site="madrid", state="ringing") == 1
    assert value(samples, "centralita_agents", site="madrid", state="reserved") == 1
    assert value(samples, "centralita_agents", site="lima", state="reserved") == 1
    assert value(samples, "centralita_agents", site="lima", state="available") == 0
    assert value(samples, "centralita_agents", site="madrid", state="offline") == 0

    # Levels follow the router on the next scrape; a removed queue's series disappear.
    clock.now += 1
    center.route(lambda: router.abandon("w4"))
    center.route(lambda: router.upsert_queue(QueueConfig("empty", {"x": 1})))
    center.route(lambda: router.remove_queue("support"))
    samples = center.scrape()
    assert value(samples, "centralita_queue_calls_waiting", queue="sales") == 0
    assert value(samples, "centralita_queue_longest_wait_seconds", queue="sales") == 0
    assert ("centralita_queue_calls_waiting", frozenset({("queue", "support")})) not in samples
    assert value(samples, "centralita_queue_calls_waiting", queue="empty") == 0


def test_no_label_carries_a_call_id(center: Center) -> None:
    router = center.router
    center.route(lambda: router.enqueue(RoutingRequest("secret-call-id", "sales", caller="600111222")))
    [offer] = center.route(router.dispatch)
    center.route(lambda: router.answered(offer.reservation_id))
    center.route(lambda: router.call_ended("secret-call-id"))
    text = generate_latest(center.registry).decode()
    assert "centralita_queue_calls_answered_total" in text
    assert "secret-call-id" not in text and "600111222" not in text


def test_kpi_counters_short_abandons_handle_time_and_thresholds(center: Center) -> None:
    """The counters behind every service-level definition, AHT and the wait bucket at the
    queue's threshold."""
    router, clock = center.router, center.clock
    router.upsert_queue(QueueConfig("sales", {"sales": 1}, sla_seconds=20, sla_percent=90,
                                    wrap_up_seconds=30, ring_timeout_seconds=15,
                                    service_level_definition=ServiceLevelDefinition.ABANDONS_MISSED))
    for extension in ("1001", "1002", "2001"):
        center.route(partial(router.start_break, extension, "lunch"))
    before = center.scrape()
    assert value(before, "centralita_queue_calls_offered_total", queue="sales") == 0
    assert value(before, "centralita_queue_calls_abandoned_within_sla_total", queue="sales") == 0

    center.route(lambda: router.enqueue(RoutingRequest("short", "sales")))
    clock.now += 3
    center.route(lambda: router.abandon("short"))  # a short abandon: within the 20 s
    center.route(lambda: router.enqueue(RoutingRequest("long", "sales")))
    clock.now += 40
    center.route(lambda: router.abandon("long"))
    center.route(lambda: router.enqueue(RoutingRequest("kept", "sales")))
    clock.now += 12
    center.route(partial(router.end_break, "1001"))
    [offer] = center.route(router.dispatch)
    center.route(lambda: router.answered(offer.reservation_id))  # waited 12 s: within SLA
    clock.now += 100
    center.route(lambda: router.call_ended("kept"))
    clock.now += 30
    center.route(router.tick)  # wrap-up over: handle time 100 + 30

    samples = center.scrape()
    assert value(samples, "centralita_queue_calls_offered_total", queue="sales") == 3
    assert value(samples, "centralita_queue_calls_abandoned_total", queue="sales") == 2
    assert value(samples, "centralita_queue_calls_abandoned_within_sla_total", queue="sales") == 1
    assert value(samples, "centralita_queue_calls_answered_within_sla_total", queue="sales") == 1
    assert value(samples, "centralita_queue_handle_seconds_sum", queue="sales") == \
        pytest.approx(130)
    assert value(samples, "centralita_queue_handle_seconds_count", queue="sales") == 1
    assert value(samples, "centralita_queue_service_level_threshold_seconds", queue="sales") == 20
    assert value(samples, "centralita_queue_service_level_target_ratio", queue="sales") == 0.9
    definition = "centralita_queue_service_level_definition"
    assert value(samples, definition, queue="sales", definition="abandons_missed") == 1
    assert value(samples, definition, queue="sales", definition="short_abandons_excluded") == 0
    # The configured threshold (25 here) is a bucket of the wait histogram.
    assert value(samples, "centralita_queue_wait_seconds_bucket", queue="sales",
                 outcome="abandoned", le="25.0") == 1
    assert value(samples, "centralita_site_healthy", site="madrid") == 1
    center.route(lambda: router.set_site_health("lima", False))
    assert value(center.scrape(), "centralita_site_healthy", site="lima") == 0


def test_a_site_outside_its_business_hours_reads_closed(center: Center) -> None:
    from zoneinfo import ZoneInfo

    from ivr.hours import BusinessHours

    samples = center.scrape()
    assert value(samples, "centralita_site_open", site="madrid") == 1
    assert value(samples, "centralita_site_open", site="lima") == 1
    closed_all_week = BusinessHours(ZoneInfo("America/Lima"), {})
    center.route(lambda: center.router.set_site_hours("lima", closed_all_week))
    samples = center.scrape()
    assert value(samples, "centralita_site_open", site="lima") == 0
    assert value(samples, "centralita_site_open", site="madrid") == 1
    assert value(samples, "centralita_queue_agents_available", queue="sales") == 2


def test_agent_state_seconds_give_occupancy(center: Center) -> None:
    """Agent-seconds per state: counted at each change and, for the state an agent is
    in, up to each scrape."""
    router, clock = center.router, center.clock
    seconds = "centralita_agent_state_seconds_total"
    first = center.scrape()
    center.route(lambda: router.enqueue(RoutingRequest("c", "sales")))
    [offer] = center.route(router.dispatch)
    assert offer.agent == "1001"  # logged in first: the longest idle
    clock.now += 10
    center.route(lambda: router.answered(offer.reservation_id))
    clock.now += 50
    samples = center.scrape()

    def spent(site: str, state: str) -> float:
        return value(samples, seconds, site=site, state=state) - \
            value(first, seconds, site=site, state=state)

    assert spent("madrid", "reserved") == pytest.approx(10)
    assert spent("madrid", "on_call") == pytest.approx(50)
    assert spent("madrid", "available") == pytest.approx(60)  # 1002, idle all along
    assert spent("lima", "available") == pytest.approx(60)
    assert spent("lima", "on_call") == 0
