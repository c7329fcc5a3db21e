"""Decisions are kept as the values the router had when it decided and made records only
when read: what a late read shows must be what was true at the decision, whatever changed
since (the queue's configuration, the agents' idle times, the call's later offers)."""

from __future__ import annotations

import pytest

from router import (
    AgentProfile,
    CandidateScore,
    QueueConfig,
    Rejection,
    Router,
    RoutingRequest,
    Strategy,
)
from router.explanations import CallOrder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router(clock: Clock) -> Router:
    return Router(clock)


def add_agent(router: Router, extension: str, skills: dict[str, int]) -> None:
    router.upsert_agent(AgentProfile(extension, extension, "mad", skills, frozenset({"en"})))
    router.login(extension)


def test_a_decision_read_late_shows_the_moment_it_was_made(router: Router, clock: Clock) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, sla_seconds=20))
    add_agent(router, "a", {"sales": 5})
    clock.now += 3
    add_agent(router, "b", {"sales": 5})
    clock.now += 2
    add_agent(router, "c", {"sales": 5})
    clock.now += 10
    assert router.dispatch() == []  # nothing waits: the agents are simply free
    router.enqueue(RoutingRequest("c1", "sales", priority=2, enqueued_at=clock.now - 4))
    (reservation,) = router.dispatch()
    decided_at = clock.now

    # Everything the decision read changes before anyone reads it.
    router.upsert_queue(
        QueueConfig(
            "sales", skills={"sales": 1}, sla_seconds=60, strategy=Strategy.ROUND_ROBIN
        )
    )
    clock.now += 30
    router.reservation_failed(reservation.reservation_id, "busy")
    router.dispatch()

    first, second = router.explain("c1")
    assert first is reservation.decision
    assert first.at == decided_at
    assert first.policy == "longest_idle"
    assert first.chosen == "a"
    assert first.eligible == (
        CandidateScore("a", (15.0,)),
        CandidateScore("b", (12.0,)),
        CandidateScore("c", (10.0,)),
    )
    assert first.order == CallOrder("aging", 2, 4.0, 2 + 4.0 / 20)
    assert first.earlier_offers == ()
    assert first.trigger == "call" and first.note == "ring 0"
    # The next decision, after the change, has the new values and the earlier offer.
    assert second.policy == "round_robin"
    assert second.earlier_offers == (("a", "busy"),)
    assert second.order == CallOrder("aging", 2, 34.0, 2 + 34.0 / 60)


def test_a_decision_that_found_nobody_keeps_its_reasons(router: Router, clock: Clock) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 3}))
    add_agent(router, "weak", {"sales": 1})
    add_agent(router, "busy", {"sales": 5})
    router.start_break("busy", "lunch")
    router.enqueue(RoutingRequest("c1", "sales"))
    assert router.dispatch() == []
    router.end_break("busy")  # now free: the reason given then must not change
    router.dispatch()

    first = router.explain("c1")[0]
    assert first.chosen is None and first.ring is None
    assert set(first.rejected) == {
        Rejection("weak", "skill sales 1 < 3"),
        Rejection("busy", "break (lunch)"),
    }
    assert first.note == "no free agent qualifies in 1 ring(s); 0 free agent(s) examined"
    assert router.explain("c1")[0] is first  # built once
    assert first.to_dict()["rejected"]


def test_reservations_are_immutable_and_carry_their_decision(router: Router) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    add_agent(router, "a", {"sales": 5})
    router.enqueue(RoutingRequest("c1", "sales"))
    (reservation,) = router.dispatch()
    with pytest.raises(AttributeError):
        reservation.agent = "b"  # type: ignore[misc]
    assert reservation.to_dict()["decision"] == reservation.decision.to_dict()
    assert reservation.to_dict()["agent"] == "a"
