"""Routing keeps its promises: preference and its bounds, strict tiers, ring-no-answer
return, eligible-only estimates, service-level definitions, server-side drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from events import CallAbandoned, CallDropped, Event
from pbx.configuration.server import ConfigError, build_config
from router import (
    AgentProfile,
    AgentState,
    InvalidArgument,
    InvalidConfig,
    QueueConfig,
    Router,
    RoutingRequest,
)
from router.calls import PRIORITY_FREE, PRIORITY_PAID, PRIORITY_VIP
from router.estimates import release_wait
from settings.located_yaml import load_yaml


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def add_agent(router: Router, extension: str, languages: tuple[str, ...] = ("en",),
              skills: dict[str, int] | None = None) -> None:
    router.upsert_agent(AgentProfile(extension, extension, "mad", skills or {"sales": 5},
                                     frozenset(languages)))
    router.login(extension)


def connect(router: Router, call_id: str, **call: object) -> str:
    router.enqueue(RoutingRequest(call_id, "sales", **call))  # type: ignore[arg-type]
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    return reservation.agent


def test_preferred_agent_is_offered_first_and_the_explanation_says_so(clock: Clock) -> None:
    router = Router(clock)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    add_agent(router, "1005")
    clock.now += 60  # 1005 has been idle longest: longest_idle alone would pick it
    add_agent(router, "1001")
    router.enqueue(RoutingRequest("c1", "sales", preferred_agent="1001"))
    (reservation,) = router.dispatch()
    assert reservation.agent == "1001"
    preference = reservation.decision.to_dict()["preference"]
    assert preference["agent"] == "1001"
    assert (preference["source"], preference["outcome"]) == ("customer", "offered")


def test_last_agent_from_the_customer_record_is_preferred(clock: Clock) -> None:
    router = Router(clock)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, preferred_agent_wait_seconds=10))
    add_agent(router, "a")
    clock.now += 60
    add_agent(router, "b")
    router.enqueue(RoutingRequest("c1", "sales", caller="+34910000001", last_agent="b"))
    (reservation,) = router.dispatch()
    assert reservation.agent == "b"
    assert reservation.decision.preference is not None
    assert reservation.decision.preference.source == "last_agent"


def test_hold_for_a_busy_preferred_agent_is_bounded_by_the_sla(clock: Clock) -> None:
    router = Router(clock)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, sla_seconds=20,
                                    preferred_agent_wait_seconds=30))
    add_agent(router, "mine")
    connect(router, "busy-maker", preferred_agent="mine")
    add_agent(router, "other")
    router.enqueue(RoutingRequest("vip", "sales", priority=PRIORITY_VIP, preferred_agent="mine"))
    assert router.dispatch() == []
    held = router.explain("vip")[-1].preference
    assert held is not None and held.outcome == "held"
    assert (held.hold_until, held.hold_bound) == (1020.0, "preferred_agent_max_hold_seconds")
    clock.now = 1019.9
    assert router.tick() == []
    clock.now = 1020.0
    (reservation,) = router.tick()
    assert reservation.agent == "other"
    after = reservation.decision.preference
    assert after is not None and after.outcome == "not_free" and after.hold_until == 1020.0


def test_operator_bound_lets_a_free_agent_take_a_vip_early(clock: Clock) -> None:
    router = Router(clock)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, preferred_agent_wait_seconds=30,
                                    preferred_agent_max_hold_seconds=5))
    add_agent(router, "mine")
    connect(router, "busy-maker", preferred_agent="mine")
    add_agent(router, "other")
    router.enqueue(RoutingRequest("vip", "sales", priority=PRIORITY_VIP, preferred_agent="mine"))
    assert router.dispatch() == []
    clock.now += 5
    (reservation,) = router.tick()
    assert reservation.agent == "other"


def test_negative_hold_bound_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="preferred_agent_max_hold_seconds"):
        QueueConfig("sales", preferred_agent_max_hold_seconds=-1)


@pytest.mark.parametrize(("order", "served"), [
    ("strict", ["vip", "paid", "free"]),
    ("aging", ["free", "vip", "paid"]),
])
def test_strict_tiers_ignore_waits_aging_does_not(clock: Clock, order: str, served: list[str]) -> None:
    router = Router(clock)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, sla_seconds=20,
                                    priority_order=order))  # type: ignore[arg-type]
    router.upsert_agent(AgentProfile("a", "a", "mad", {"sales": 5}, frozenset({"en"})))
    router.enqueue(RoutingRequest("free", "sales", priority=PRIORITY_FREE))
    clock.now += 47
    router.enqueue(RoutingRequest("paid", "sales", priority=PRIORITY_PAID))
    clock.now += 1
    router.enqueue(RoutingRequest("vip", "sales", priority=PRIORITY_VIP))
    router.login("a")
    order_seen = []
    for _ in range(3):
        (reservation,) = router.dispatch()
        order_seen.append(reservation.call_id)
        assert reservation.decision.order is not None
        assert reservation.decision.order.priority_order == order
        router.answered(reservation.reservation_id)
        router.call_ended(reservation.call_id)
        router.end_wrap_up("a")
    assert order_seen == served


def test_rona_agent_returns_after_the_configured_time_and_the_next_decision_says_why(
    clock: Clock,
) -> None:
    router = Router(clock, rona_return_seconds=30)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, ring_timeout_seconds=10))
    add_agent(router, "first")
    clock.now += 1
    add_agent(router, "second")
    router.enqueue(RoutingRequest("c1", "sales"))
    (offer,) = router.dispatch()
    assert offer.agent == "first"
    router.ringing(offer.reservation_id)
    clock.now += 10
    (again,) = router.tick()
    assert again.agent == "second"
    assert again.decision.earlier_offers == (("first", "rang_out"),)
    assert router.agent("first").state is AgentState.BREAK
    clock.now += 29
    router.tick()
    assert router.agent("first").state is AgentState.BREAK
    clock.now += 1
    router.tick()
    assert router.agent("first").state is AgentState.AVAILABLE


def test_rona_return_leaves_a_later_break_alone(clock: Clock) -> None:
    router = Router(clock, rona_return_seconds=30)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    add_agent(router, "a")
    router.enqueue(RoutingRequest("c1", "sales"))
    (offer,) = router.dispatch()
    router.reservation_failed(offer.reservation_id, "no_answer")
    clock.now += 5
    router.end_break("a")
    router.abandon("c1")
    router.start_break("a", "lunch")
    clock.now += 30
    router.tick()
    assert router.agent("a").reason == "lunch"


def test_rona_return_must_be_positive(clock: Clock) -> None:
    with pytest.raises(InvalidArgument):
        Router(clock, rona_return_seconds=0)


def test_estimates_count_only_agents_who_can_take_the_call(clock: Clock) -> None:
    router = Router(clock, default_handle_seconds=120)
    router.upsert_queue(QueueConfig("billing", skills={"billing": 1}))
    for extension in ("es1", "es2", "es3"):
        add_agent(router, extension, ("es",), {"billing": 5})
    add_agent(router, "en1", ("en",), {"billing": 5})
    connect_billing = RoutingRequest("busy", "billing", language="en")
    router.enqueue(connect_billing)
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    router.enqueue(RoutingRequest("english", "billing", language="en"))
    assert router.dispatch() == []
    stats = router.queue_stats("billing")
    assert (stats.agents_available, stats.agents_staffed) == (0, 1)
    assert stats.ewt_seconds == 240  # joining behind 'english': two of en1's calls
    assert router.ewt("english") == 120
    clock.now += 50
    assert router.ewt("english") == 70  # moves before any call has finished
    router.enqueue(RoutingRequest("spanish", "billing", language="es"))
    assert len(router.dispatch()) == 1


def test_release_wait_serves_the_pth_release() -> None:
    assert release_wait(2, [30.0, 120.0], 180) == 120
    assert release_wait(3, [30.0, 120.0], 180) == 210
    assert release_wait(1, [], 180) is None


@pytest.mark.parametrize(("definition", "level"), [
    ("abandons_missed", 1 / 3),
    ("short_abandons_excluded", 1 / 2),
    ("short_abandons_met", 2 / 3),
    ("abandons_excluded", 1.0),
])
def test_service_level_definitions(clock: Clock, definition: str, level: float) -> None:
    published: list[Event] = []
    router = Router(clock, publish=published.append)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, sla_seconds=20,
                                    service_level_definition=definition))  # type: ignore[arg-type]
    router.enqueue(RoutingRequest("short", "sales"))
    router.enqueue(RoutingRequest("long", "sales"))
    clock.now += 9.9
    router.abandon("short")
    clock.now += 20
    router.abandon("long")
    abandons = [e for e in published if isinstance(e, CallAbandoned)]
    assert [(e.call_id, e.within_sla) for e in abandons] == [("short", True), ("long", False)]
    add_agent(router, "a")
    connect(router, "fast")
    stats = router.queue_stats("sales")
    assert (stats.answered_within_sla, stats.abandoned, stats.abandoned_within_sla) == (1, 2, 1)
    assert stats.service_level == pytest.approx(level)
    assert stats.to_dict()["service_level_definition"] == definition


def test_server_drop_is_not_an_abandon(clock: Clock) -> None:
    events: list[Event] = []
    router = Router(clock, publish=events.append)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    router.enqueue(RoutingRequest("silent", "sales"))
    clock.now += 61
    assert router.drop("silent", "media_timeout") is not None
    assert not any(isinstance(e, CallAbandoned) for e in events)
    (dropped,) = [e for e in events if isinstance(e, CallDropped)]
    assert (dropped.reason, dropped.waited_seconds) == ("media_timeout", 61)
    stats = router.queue_stats("sales")
    assert (stats.abandoned, stats.dropped, stats.service_level) == (0, 1, None)


def config_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=None)
    return caught.value.problems


def test_routing_options_in_the_config_file_are_read_and_checked() -> None:
    config = build_config(load_yaml(
        "media: {rtp_timeout_applies_to: all}\nrouting: {rona_return_seconds: 45}\n"
        "queues:\n  - {name: q, priority_order: strict, preferred_agent_max_hold_seconds: 5,\n"
        "     service_level_definition: abandons_missed}\n", "centralita.yaml"), var_dir=Path("var"), base_dir=None)
    assert config.media.rtp_timeout_applies_to == "all"
    assert config.routing.rona_return_seconds == 45
    (queue,) = config.contact_center.queues
    assert (queue.priority_order, queue.preferred_hold_limit, queue.service_level_definition) == \
        ("strict", 5, "abandons_missed")
    found = config_problems(
        "media: {rtp_timeout_applies_to: queue}\nrouting: {rona_return_seconds: 0}\n"
        "queues:\n  - {name: q, priority_order: fifo}\n")
    assert any(p.startswith("centralita.yaml:1: media.rtp_timeout_applies_to: must be one of")
               for p in found), found
    assert any(p.startswith("centralita.yaml:2: routing.rona_return_seconds: must be between")
               for p in found), found
    assert any("queues[0].priority_order" in p for p in found), found
