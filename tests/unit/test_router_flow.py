"""Call flow through the router: reservations, failures, wrap-up, overflow, errors, events."""

from __future__ import annotations

import pytest

from events import (
    AnnouncementDue,
    CallAbandoned,
    CallOverflowed,
    Event,
    QueueCallAnswered,
    ReservationExpired,
)
from router import (
    AgentBusy,
    AgentProfile,
    AgentState,
    CallStatus,
    DuplicateCall,
    InvalidArgument,
    InvalidConfig,
    InvalidTransition,
    QueueConfig,
    QueueInUse,
    Router,
    RoutingRequest,
    SkillExpansion,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
    UnknownReservation,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Published(list[Event]):
    """What a router pushed to its sink, in order."""

    def take(self) -> list[Event]:
        """The events pushed since the last take."""
        taken = self[:]
        self.clear()
        return taken


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def router(clock: Clock, published: Published) -> Router:
    router = Router(clock, reservation_timeout_seconds=4, publish=published.append)
    router.upsert_queue(
        QueueConfig("sales", skills={"sales": 1}, wrap_up_seconds=10, ring_timeout_seconds=15)
    )
    for extension in ("1", "2"):
        router.upsert_agent(
            AgentProfile(extension, extension, "mad", {"sales": 5}, frozenset({"en"}))
        )
        router.login(extension)
        clock.now += 1
    return router


def test_reservation_is_exclusive_and_answer_puts_agent_on_call(router: Router) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    router.enqueue(RoutingRequest("c2", "sales"))
    router.enqueue(RoutingRequest("c3", "sales"))
    reservations = router.dispatch()
    assert sorted(r.agent for r in reservations) == ["1", "2"]
    assert router.position("c3") == 1
    assert router.agent("1").state is AgentState.RESERVED
    assert router.agent("1").reserved_call == reservations[0].call_id
    router.ringing(reservations[0].reservation_id)
    assert router.agent("1").state is AgentState.RINGING
    router.answered(reservations[0].reservation_id)
    assert router.agent("1").state is AgentState.ON_CALL
    with pytest.raises(UnknownReservation):
        router.answered(reservations[0].reservation_id)


def test_unconfirmed_reservation_expires_and_call_keeps_its_place(
    router: Router, clock: Clock, published: Published
) -> None:
    router.upsert_agent(AgentProfile("2", "2", "mad", {"other": 1}, frozenset()))
    router.enqueue(RoutingRequest("old", "sales"))
    (reservation,) = router.dispatch()
    clock.now += 1
    router.enqueue(RoutingRequest("new", "sales"))
    clock.now += 3
    (again,) = router.tick()  # expired, released, offered again: "old" first
    assert again.call_id == "old" and again.agent == "1"
    expired = [e for e in published.take() if isinstance(e, ReservationExpired)]
    assert [(e.reservation_id, e.was_ringing) for e in expired] == [
        (reservation.reservation_id, False)
    ]


def test_ring_no_answer_puts_agent_on_rona_break(router: Router, clock: Clock) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    (first,) = router.dispatch()
    router.ringing(first.reservation_id)
    clock.now += 14.9
    assert router.tick() == []
    clock.now += 0.1
    (second,) = router.tick()
    assert router.agent(first.agent).state is AgentState.BREAK
    assert router.agent(first.agent).reason == "rona"
    assert second.call_id == "c1" and second.agent != first.agent


@pytest.mark.parametrize("reason", ["busy", "declined", "error"])
def test_refusing_agent_is_not_offered_the_same_call_again(router: Router, reason: str) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    (first,) = router.dispatch()
    router.reservation_failed(first.reservation_id, reason)
    assert router.agent(first.agent).state is AgentState.AVAILABLE
    (second,) = router.dispatch()
    assert second.agent != first.agent
    router.reservation_failed(second.reservation_id, reason)
    assert router.dispatch() == []  # nobody left who has not refused
    rejected = {r.extension: r.reason for r in router.explain("c1")[-1].rejected}
    assert rejected[first.agent] == f"{reason} this call before"


def test_no_answer_failure_makes_agent_not_ready(router: Router) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    (first,) = router.dispatch()
    router.reservation_failed(first.reservation_id, "no_answer")
    assert router.agent(first.agent).state is AgentState.BREAK
    assert [r.agent for r in router.dispatch()] != [first.agent]
    with pytest.raises(InvalidArgument, match="no_answer"):
        router.reservation_failed("r-unknown", "bogus")


def test_wrap_up_then_available_and_handle_time_observed(router: Router, clock: Clock) -> None:
    router.enqueue(RoutingRequest("c1", "sales", caller="+3491"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    clock.now += 100
    router.call_ended("c1")
    assert router.agent(reservation.agent).state is AgentState.WRAP_UP
    clock.now += 9
    router.tick()
    assert router.agent(reservation.agent).state is AgentState.WRAP_UP
    clock.now += 1
    router.tick()
    snapshot = router.agent(reservation.agent)
    assert snapshot.state is AgentState.AVAILABLE
    assert snapshot.last_caller == "+3491"
    assert router.queue_stats("sales").average_handle_seconds == pytest.approx(110)


def test_end_wrap_up_early_and_logout_deferred_during_a_call(router: Router, clock: Clock) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    router.logout(reservation.agent)
    assert router.agent(reservation.agent).state is AgentState.ON_CALL
    assert router.agent(reservation.agent).pending == "logout"
    router.call_ended("c1")
    assert router.agent(reservation.agent).state is AgentState.OFFLINE
    router.enqueue(RoutingRequest("c2", "sales"))
    (other,) = router.dispatch()
    router.answered(other.reservation_id)
    router.call_ended("c2")
    router.end_wrap_up(other.agent)
    assert router.agent(other.agent).state is AgentState.AVAILABLE


def test_abandon_while_waiting_and_while_offered(
    router: Router, clock: Clock, published: Published
) -> None:
    router.enqueue(RoutingRequest("c1", "sales"))
    router.enqueue(RoutingRequest("c2", "sales"))
    router.enqueue(RoutingRequest("c3", "sales"))
    reservations = router.dispatch()
    clock.now += 7
    record = router.abandon("c3")
    assert record is not None and record.status is CallStatus.WAITING and record.position == 1
    offered = router.abandon(reservations[0].call_id)
    assert offered is not None and offered.status is CallStatus.OFFERED
    assert router.agent(reservations[0].agent).state is AgentState.AVAILABLE
    assert router.abandon("c3") is None
    abandoned = [e for e in published.take() if isinstance(e, CallAbandoned)]
    assert [e.call_id for e in abandoned] == ["c3", reservations[0].call_id]
    assert router.queue_stats("sales").abandoned == 2


def test_max_wait_overflows_to_a_queue_keeping_the_original_time(
    router: Router, clock: Clock, published: Published
) -> None:
    router.upsert_queue(
        QueueConfig("vip", skills={"vip": 1}, max_wait_seconds=30, overflow="sales")
    )
    router.upsert_queue(
        QueueConfig("night", skills={"vip": 1}, max_wait_seconds=30, overflow="4000")
    )
    router.logout("1")
    router.logout("2")
    router.enqueue(RoutingRequest("c1", "vip"))
    router.enqueue(RoutingRequest("c2", "night"))
    clock.now += 30
    router.tick()
    overflowed = {e.call_id: e for e in published.take() if isinstance(e, CallOverflowed)}
    assert (overflowed["c1"].target, overflowed["c1"].moved) == ("sales", True)
    assert (overflowed["c2"].target, overflowed["c2"].moved) == ("4000", False)
    assert router.call("c1").call.queue == "sales"
    assert router.call("c1").waited_seconds == 30
    with pytest.raises(UnknownCall):
        router.call("c2")


def test_announcements_are_due_every_interval(
    router: Router, clock: Clock, published: Published
) -> None:
    router.upsert_queue(QueueConfig("empty", skills={"nobody": 1}, announce_interval_seconds=30))
    router.enqueue(RoutingRequest("c1", "empty"))
    router.enqueue(RoutingRequest("c2", "empty"))
    published.take()
    clock.now += 30
    router.tick()
    announcements = [e for e in published.take() if isinstance(e, AnnouncementDue)]
    assert [(a.call_id, a.position) for a in announcements] == [("c1", 1), ("c2", 2)]
    assert all(a.ewt_seconds is None for a in announcements)  # nobody staffed


def test_call_answered_event_reports_service_level(
    router: Router, clock: Clock, published: Published
) -> None:
    router.logout("2")
    router.enqueue(RoutingRequest("quick", "sales"))
    router.enqueue(RoutingRequest("slow", "sales"))
    (first,) = router.dispatch()
    router.answered(first.reservation_id)
    clock.now += 25
    router.call_ended("quick")
    router.end_wrap_up(first.agent)
    (second,) = router.dispatch()
    router.answered(second.reservation_id)
    answered = [e for e in published.take() if isinstance(e, QueueCallAnswered)]
    assert [(e.call_id, e.within_sla) for e in answered] == [("quick", True), ("slow", False)]
    assert router.queue_stats("sales").service_level == 0.5


def test_reconcile_clears_calls_the_pbx_lost(router: Router) -> None:
    router.enqueue(RoutingRequest("live", "sales"))
    router.enqueue(RoutingRequest("lost", "sales"))
    reservations = {r.call_id: r for r in router.dispatch()}
    router.answered(reservations["lost"].reservation_id)
    assert router.reconcile({"live"}) == ["lost"]
    assert router.agent(reservations["lost"].agent).state is AgentState.WRAP_UP


def test_bad_requests_get_clear_errors(router: Router) -> None:
    with pytest.raises(UnknownAgent, match="'9'"):
        router.login("9")
    with pytest.raises(UnknownQueue, match="'nope'"):
        router.enqueue(RoutingRequest("c1", "nope"))
    with pytest.raises(InvalidTransition, match="agent 1 cannot login while available"):
        router.login("1")
    with pytest.raises(InvalidTransition, match="end_break|break_end"):
        router.end_break("1")
    router.enqueue(RoutingRequest("c1", "sales"))
    with pytest.raises(DuplicateCall):
        router.enqueue(RoutingRequest("c1", "sales"))
    with pytest.raises(QueueInUse):
        router.remove_queue("sales")
    (reservation,) = router.dispatch()
    with pytest.raises(AgentBusy):
        router.remove_agent(reservation.agent)
    with pytest.raises(UnknownCall):
        router.position("nope")


@pytest.mark.parametrize(
    "build",
    [
        lambda: AgentProfile("1", "x", "mad", {"sales": 11}),
        lambda: AgentProfile("1", "x", "mad", {"sales": 0}),
        lambda: AgentProfile("1", "x", "mad", capacity=2),
        lambda: QueueConfig("q", sla_seconds=0),
        lambda: QueueConfig("q", overflow="q"),
        lambda: QueueConfig("q", sla_percent=120),
        lambda: SkillExpansion(-1, {"a": 1}),
        lambda: RoutingRequest("", "q"),
    ],
)
def test_invalid_configuration_is_refused(build: object) -> None:
    with pytest.raises(InvalidConfig):
        build()  # type: ignore[operator]


def test_views_serialize_to_json_ready_dicts(router: Router, published: Published) -> None:
    import json

    router.enqueue(RoutingRequest("c1", "sales"))
    router.dispatch()
    json.dumps([a.to_dict() for a in router.agents()])
    json.dumps(router.queue_stats("sales").to_dict())
    json.dumps([d.to_dict() for d in router.explain("c1")])
    json.dumps([e.to_dict() for e in published.take()])
    json.dumps(router.queue("sales").to_dict())
