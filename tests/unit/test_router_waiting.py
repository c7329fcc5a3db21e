"""Order of service: priority tiers, SLA aging, arrival; positions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router import (
    PRIORITY_FREE,
    PRIORITY_PAID,
    PRIORITY_VIP,
    AgentProfile,
    QueueConfig,
    Router,
    RoutingRequest,
)
from router.waiting_line import WaitingLine, class_key, service_rank


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def one_agent_router(clock: Clock, **queue: object) -> Router:
    router = Router(clock)
    router.upsert_queue(QueueConfig("q", skills={"s": 1}, wrap_up_seconds=0, **queue))  # type: ignore[arg-type]
    router.upsert_agent(AgentProfile("1", "one", "mad", {"s": 1}))
    return router


def drain_in_service_order(router: Router, clock: Clock) -> list[str]:
    """Log the only agent in and let it serve every call; return the order served."""
    router.login("1")
    served = []
    while reservations := router.dispatch():
        (reservation,) = reservations
        served.append(reservation.call_id)
        router.answered(reservation.reservation_id)
        router.call_ended(reservation.call_id)
    return served


def test_priority_first_then_arrival() -> None:
    clock = Clock()
    router = one_agent_router(clock, aging_weight=0)
    for call_id, priority in [("f1", PRIORITY_FREE), ("p1", PRIORITY_PAID), ("v1", PRIORITY_VIP)]:
        router.enqueue(RoutingRequest(call_id, "q", priority=priority))
        clock.now += 1
    router.enqueue(RoutingRequest("p2", "q", priority=PRIORITY_PAID))
    assert [router.position(c) for c in ("v1", "p1", "p2", "f1")] == [1, 2, 3, 4]
    assert drain_in_service_order(router, clock) == ["v1", "p1", "p2", "f1"]


def test_a_free_caller_past_the_sla_outranks_a_fresh_paid_one() -> None:
    clock = Clock()
    router = one_agent_router(clock, sla_seconds=20, aging_weight=1)
    router.enqueue(RoutingRequest("free", "q", priority=PRIORITY_FREE))
    clock.now += 19
    router.enqueue(RoutingRequest("paid-early", "q", priority=PRIORITY_PAID))
    assert router.position("free") == 2  # 1 + 19/20 < 2
    clock.now += 2
    router.enqueue(RoutingRequest("paid-late", "q", priority=PRIORITY_PAID))
    # free: 1 + 21/20 = 2.05; paid-early: 2 + 2/20 = 2.1; paid-late: 2.0
    assert [router.position(c) for c in ("paid-early", "free", "paid-late")] == [1, 2, 3]
    assert drain_in_service_order(router, clock) == ["paid-early", "free", "paid-late"]


def test_a_callback_keeps_its_original_enqueue_time() -> None:
    clock = Clock()
    router = one_agent_router(clock)
    clock.now = 100
    router.enqueue(RoutingRequest("fresh", "q"))
    assert router.enqueue(RoutingRequest("callback", "q", enqueued_at=40)) == 1
    assert drain_in_service_order(router, clock) == ["callback", "fresh"]


calls_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),  # priority
        st.floats(0, 500, allow_nan=False),  # enqueued_at
        st.sampled_from([None, "en", "es"]),  # language
        st.sampled_from([{}, {"x": 2}]),  # extra skills
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(
    calls=calls_strategy,
    now=st.floats(500, 2000, allow_nan=False),
    sla=st.floats(5, 120),
    weight=st.floats(0, 3),
)
def test_positions_by_class_heads_match_a_full_sort(
    calls: list[tuple[int, float, str | None, dict[str, int]]],
    now: float,
    sla: float,
    weight: float,
) -> None:
    line = WaitingLine()
    ranks = []
    for sequence, (priority, enqueued_at, language, extra) in enumerate(calls):
        line.add(class_key(priority, language, extra), (enqueued_at, sequence, f"c{sequence}"))
        ranks.append(service_rank(priority, enqueued_at, sequence, now, sla, weight))
    ordered = sorted(ranks)
    assert len(set(ranks)) == len(ranks)  # a strict total order: no ties
    for rank in ranks:
        assert line.count_ahead(rank, now, sla, weight) == ordered.index(rank)
    # Every class's head outranks the rest of its class.
    for call_class in line.classes():
        heads = [
            service_rank(call_class.priority, e[0], e[1], now, sla, weight)
            for e in call_class.entries
        ]
        assert heads == sorted(heads)


@settings(max_examples=40, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(1, 3), st.floats(0, 60, allow_nan=False)), min_size=1, max_size=25
    )
)
def test_one_agent_serves_in_the_documented_total_order(arrivals: list[tuple[int, float]]) -> None:
    clock = Clock()
    router = one_agent_router(clock, sla_seconds=20)
    clock.now = 100
    expected = []
    for n, (priority, age) in enumerate(arrivals):
        call_id = f"c{n}"
        router.enqueue(RoutingRequest(call_id, "q", priority=priority, enqueued_at=100 - age))
        expected.append((service_rank(priority, 100 - age, n, 100, 20, 1.0), call_id))
    # No time passes while serving, so the order is the rank order at t=100.
    assert drain_in_service_order(router, clock) == [c for _, c in sorted(expected)]
    assert [r.call.call_id for r in router.waiting_calls("q")] == []
