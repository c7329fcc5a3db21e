"""Reservations for another site's calls: the owning site's router reserves one of its
free qualified agents for a call waiting elsewhere, or says why not; the reservation is
released (idempotently) when the asker gives up, and expires when the call never comes.
The call never enters this site's line, and its records stay with the site it waits at."""

from __future__ import annotations

import pytest

from events import (
    AgentReserved,
    AgentStateChanged,
    CallAbandoned,
    Event,
    QueueCallAnswered,
    QueueCallEnded,
    ReservationExpired,
)
from router import (
    AgentProfile,
    AgentState,
    Decision,
    DuplicateCall,
    InvalidTransition,
    QueueConfig,
    Reservation,
    Router,
    RoutingRequest,
    UnknownQueue,
)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _router(clock: Clock, events: list[Event], offered: list[Reservation]) -> Router:
    router = Router(clock, publish=events.append, on_reservation=offered.append,
                    reservation_timeout_seconds=5.0)
    router.upsert_queue(QueueConfig("billing", skills={"billing": 1}))
    for extension, skills in (("2001", {"billing": 3}), ("2002", {"support": 3})):
        router.upsert_agent(AgentProfile(extension, f"Agent {extension}", "bogota", skills,
                                          frozenset({"es", "en"})))
        router.login(extension)
    return router


def _request(call_id: str = "madrid-call-1", queue: str = "billing") -> RoutingRequest:
    return RoutingRequest(call_id, queue, priority=2, language="es", enqueued_at=95.0)


def test_a_free_qualified_agent_is_reserved_without_entering_the_line() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    assert reserved.agent == "2001"  # 2002 lacks the queue's skill
    assert router.agent("2001").state is AgentState.RESERVED
    assert offered == []  # not this site's call to ring through the dispatch hook
    assert router.waiting_calls("billing") == []
    assert not any(isinstance(e, AgentReserved) for e in events)
    changes = [(e.agent, e.new) for e in events if isinstance(e, AgentStateChanged)]
    assert changes[-1] == ("2001", AgentState.RESERVED)


def test_refused_with_the_reason_when_no_agent_is_free() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    router.start_break("2001", "lunch")
    refused = router.reserve_for_site(_request(), "madrid")
    assert isinstance(refused, Decision) and refused.chosen is None
    assert "no free agent qualifies" in refused.note
    assert router.active_calls == 0  # nothing kept for a refused request
    # A request for a specific agent who is not free is refused too.
    router.end_break("2001")
    refused = router.reserve_for_site(_request("madrid-call-2"), "madrid", agent="2002")
    assert isinstance(refused, Decision) and refused.chosen is None
    assert router.agent("2001").state is AgentState.AVAILABLE


def test_release_frees_the_agent_once_and_a_second_release_is_a_no_op() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    assert router.release_for_site(reserved.reservation_id) is True
    assert router.agent("2001").state is AgentState.AVAILABLE
    assert router.release_for_site(reserved.reservation_id) is False
    assert router.release_for_site("res-unknown") is False
    assert router.active_calls == 0 and router.active_reservations == 0
    assert not any(isinstance(e, CallAbandoned) for e in events)


def test_a_reservation_whose_call_never_comes_expires_and_frees_the_agent() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    clock.now += 4.9
    router.tick()
    assert router.agent("2001").state is AgentState.RESERVED
    clock.now += 0.2
    router.tick()
    assert router.agent("2001").state is AgentState.AVAILABLE
    assert router.active_calls == 0 and router.active_reservations == 0
    assert not any(isinstance(e, ReservationExpired) for e in events)
    assert router.release_for_site(reserved.reservation_id) is False


def test_a_local_caller_waiting_gets_the_agent_once_it_is_released() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    router.enqueue(RoutingRequest("local-1", "billing"))
    assert offered == []  # the only billing agent is held for madrid's call
    router.release_for_site(reserved.reservation_id)
    assert [r.call_id for r in offered] == ["local-1"]


def test_reconciliation_leaves_a_pending_foreign_reservation_alone() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    assert router.reconcile(set()) == []
    assert router.agent("2001").state is AgentState.RESERVED


def test_bad_requests_are_refused_by_error_and_change_nothing() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    with pytest.raises(UnknownQueue):
        router.reserve_for_site(_request(queue="nope"), "madrid")
    reserved = router.reserve_for_site(_request(), "madrid")
    assert isinstance(reserved, Reservation)
    with pytest.raises(DuplicateCall):
        router.reserve_for_site(_request(), "madrid")
    assert router.active_reservations == 1


def test_a_call_offered_to_another_site_leaves_the_line_and_comes_back_in_its_place() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    router.start_break("2001", "lunch")
    router.enqueue(RoutingRequest("first", "billing"))
    clock.now += 1
    router.enqueue(RoutingRequest("second", "billing"))
    router.offer_elsewhere("first", "bogota", "1006")
    assert [c.call.call_id for c in router.waiting_calls("billing")] == ["second"]
    with pytest.raises(InvalidTransition):
        router.offer_elsewhere("first", "bogota", "1006")
    router.elsewhere_failed("first")
    assert [c.call.call_id for c in router.waiting_calls("billing")] == ["first", "second"]
    router.end_break("2001")  # a local agent frees up: the first call gets it
    assert [r.call_id for r in offered] == ["first"]


def test_a_call_answered_at_another_site_is_counted_here_and_ends_without_a_local_agent() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    router.start_break("2001", "lunch")
    router.enqueue(RoutingRequest("call", "billing"))
    router.offer_elsewhere("call", "bogota", "1006")
    clock.now += 3
    router.elsewhere_answered("call")
    answered = [e for e in events if isinstance(e, QueueCallAnswered)]
    assert [(e.call_id, e.agent) for e in answered] == [("call", "1006")]
    assert router.queue_stats("billing").answered == 1
    router.end_break("2001")
    assert offered == []  # a connected call is no longer offered to anyone
    clock.now += 60
    router.call_ended("call")
    ended = [e for e in events if isinstance(e, QueueCallEnded)]
    assert [(e.call_id, e.agent, e.talk_seconds) for e in ended] == [("call", "1006", 60)]
    assert router.active_calls == 0
    assert router.agent("2001").state is AgentState.AVAILABLE


def test_a_caller_hanging_up_while_offered_elsewhere_is_an_abandon_here() -> None:
    clock, events, offered = Clock(), [], []
    router = _router(clock, events, offered)
    router.start_break("2001", "lunch")
    router.enqueue(RoutingRequest("call", "billing"))
    router.offer_elsewhere("call", "bogota", "1006")
    router.call_ended("call")
    assert [e.call_id for e in events if isinstance(e, CallAbandoned)] == ["call"]
    assert router.active_calls == 0
