"""Callback requests in the router's waiting line: they wait among live callers at their
original enqueue time and priority, count in positions and waits, hear no announcements,
never overflow, and leave the line (withdrawn) without counting as abandons or drops."""

from __future__ import annotations

import pytest

from events.routing import AnnouncementDue, CallOverflowed, CallQueued, CallWithdrawn
from router import (
    PRIORITY_PAID,
    AgentProfile,
    AgentState,
    CallKind,
    InvalidArgument,
    InvalidConfig,
    QueueConfig,
    Router,
    RoutingRequest,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def router_with_one_agent(clock: Clock, events: list | None = None, **queue: object) -> Router:
    router = Router(clock, publish=(events.append if events is not None else None))
    router.upsert_queue(QueueConfig("q", skills={"s": 1}, wrap_up_seconds=0, **queue))  # type: ignore[arg-type]
    router.upsert_agent(AgentProfile("1", "one", "mad", {"s": 1}))
    return router


def callback(request_id: str, enqueued_at: float, **fields: object) -> RoutingRequest:
    return RoutingRequest(request_id, "q", enqueued_at=enqueued_at, kind=CallKind.CALLBACK, **fields)  # type: ignore[arg-type]


def serve_all(router: Router) -> list[str]:
    router.login("1")
    served = []
    while reservations := router.dispatch():
        (reservation,) = reservations
        served.append(reservation.call_id)
        router.answered(reservation.reservation_id)
        router.call_ended(reservation.call_id)
    return served


def test_a_callback_needs_its_original_enqueue_time() -> None:
    with pytest.raises(InvalidConfig, match="original enqueue time"):
        RoutingRequest("cb", "q", kind=CallKind.CALLBACK)


def test_a_callback_waits_at_its_original_place_among_live_callers() -> None:
    clock = Clock()
    router = router_with_one_agent(clock, aging_weight=0)
    router.enqueue(RoutingRequest("early", "q"))  # at 1000
    clock.now = 1010
    router.enqueue(RoutingRequest("late", "q"))
    clock.now = 1020
    # The customer first queued at 1005: between the two callers, whatever the time it is put back.
    assert router.enqueue(callback("cb", 1005)) == 2
    assert [router.position(c) for c in ("early", "cb", "late")] == [1, 2, 3]
    assert [record.call.call_id for record in router.waiting_calls("q")] == ["early", "cb", "late"]
    assert router.waiting_calls("q")[1].call.kind is CallKind.CALLBACK
    assert router.queue_stats("q").waiting == 3
    assert serve_all(router) == ["early", "cb", "late"]


def test_a_callback_is_not_bumped_ahead_of_a_higher_tier() -> None:
    clock = Clock()
    router = router_with_one_agent(clock, aging_weight=0)
    router.enqueue(RoutingRequest("paid", "q", priority=PRIORITY_PAID))
    clock.now = 1100
    assert router.enqueue(callback("cb", 900)) == 2  # older, but a lower tier: no bump
    assert serve_all(router) == ["paid", "cb"]


def test_positions_and_waits_of_live_callers_count_the_callbacks_ahead() -> None:
    clock = Clock()
    router = router_with_one_agent(clock)
    router.login("1")
    router.enqueue(RoutingRequest("on-call", "q"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)  # the agent is busy: a wait can be estimated
    router.enqueue(RoutingRequest("caller", "q"))
    ewt_alone = router.ewt("caller")
    router.enqueue(callback("cb1", 990))
    router.enqueue(callback("cb2", 995))
    assert router.position("caller") == 3
    ewt_behind = router.ewt("caller")
    assert ewt_alone is not None and ewt_behind is not None and ewt_behind > ewt_alone


def test_a_callback_hears_no_announcement_and_never_overflows() -> None:
    clock = Clock()
    events: list = []
    router = router_with_one_agent(clock, events, announce_interval_seconds=10,
                                   max_wait_seconds=30)
    router.enqueue(callback("cb", 1000))
    router.enqueue(RoutingRequest("caller", "q"))
    clock.now += 100
    router.tick()
    announced = {e.call_id for e in events if isinstance(e, AnnouncementDue)}
    overflowed = {e.call_id for e in events if isinstance(e, CallOverflowed)}
    assert announced == {"caller"}
    assert "cb" not in overflowed and "caller" in overflowed
    assert router.position("cb") == 1
    queued = [e for e in events if isinstance(e, CallQueued)]
    assert [(e.call_id, e.kind) for e in queued] == [("cb", "callback"), ("caller", "live")]


def test_a_withdrawn_callback_leaves_the_line_uncounted_and_frees_its_agent() -> None:
    clock = Clock()
    events: list = []
    router = router_with_one_agent(clock, events)
    router.enqueue(callback("cb", 990))
    router.enqueue(RoutingRequest("caller", "q"))
    router.login("1")
    (reservation,) = router.dispatch()
    assert reservation.call_id == "cb"
    record = router.withdraw("cb", "cancelled")
    assert record is not None and record.call.kind is CallKind.CALLBACK
    assert [e.reason for e in events if isinstance(e, CallWithdrawn)] == ["cancelled"]
    stats = router.queue_stats("q")
    assert (stats.abandoned, stats.dropped) == (0, 0)
    # The agent was only reserved: it takes the next caller at once.
    (reservation,) = router.dispatch()
    assert reservation.call_id == "caller"
    assert router.withdraw("cb", "again") is None


def test_only_callbacks_are_withdrawn() -> None:
    router = router_with_one_agent(Clock())
    router.enqueue(RoutingRequest("caller", "q"))
    with pytest.raises(InvalidArgument):
        router.withdraw("caller", "no")


def test_a_callback_whose_agent_does_not_answer_goes_back_to_its_place() -> None:
    clock = Clock()
    router = router_with_one_agent(clock, aging_weight=0)
    router.upsert_agent(AgentProfile("2", "two", "mad", {"s": 1}))
    router.enqueue(callback("cb", 990))
    router.enqueue(RoutingRequest("caller", "q"))
    router.login("1")
    (reservation,) = router.dispatch()
    assert reservation.call_id == "cb"
    router.reservation_failed(reservation.reservation_id, "no_answer")
    assert router.agent("1").state is not AgentState.AVAILABLE  # like a ring-no-answer
    assert router.position("cb") == 1 and router.position("caller") == 2
    router.login("2")
    (reservation,) = router.dispatch()
    assert (reservation.call_id, reservation.agent) == ("cb", "2")
