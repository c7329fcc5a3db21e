"""Wait-time estimates: Erlang C, handle-time average, arrival rate, queue and caller EWT."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import AgentProfile, QueueConfig, Router, RoutingRequest
from router.estimates import (
    ArrivalRate,
    HandleTimeAverage,
    erlang_c,
    erlang_c_wait,
    position_wait,
)


def test_erlang_c_matches_textbook_values() -> None:
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = utilisation
    # 10 agents, 8 Erlangs: the classic table gives 0.409
    assert erlang_c(10, 8.0) == pytest.approx(0.409, abs=5e-4)
    assert erlang_c(2, 2.0) == 1.0  # overloaded
    assert erlang_c_wait(2, 2.0 / 180, 180) is None


@settings(max_examples=60, deadline=None)
@given(servers=st.integers(1, 60), utilisation=st.floats(0.01, 0.99))
def test_more_agents_never_increase_the_wait(servers: int, utilisation: float) -> None:
    handle = 200.0
    arrivals = utilisation * servers / handle
    wait = erlang_c_wait(servers, arrivals, handle)
    more = erlang_c_wait(servers + 1, arrivals, handle)
    assert wait is not None and more is not None
    assert 0 <= more <= wait
    assert 0 <= erlang_c(servers, arrivals * handle) <= 1


def test_position_wait_and_handle_time_average() -> None:
    assert position_wait(3, 6, 120) == 60
    assert position_wait(1, 0, 120) is None
    average = HandleTimeAverage(initial_seconds=180, smoothing=0.5)
    average.observe(100)  # the first sample replaces the seed
    average.observe(200)
    assert average.seconds == 150


def test_arrival_rate_uses_a_sliding_window() -> None:
    rate = ArrivalRate(window_seconds=100)
    for t in range(0, 100, 10):
        rate.observe(float(t))
    assert rate.per_second(99) == pytest.approx(10 / 99)
    assert rate.per_second(250) == 0


def test_queue_and_caller_ewt_follow_staffing() -> None:
    now = [0.0]
    router = Router(lambda: now[0], default_handle_seconds=120)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    for extension in ("1", "2", "3"):
        router.upsert_agent(AgentProfile(extension, extension, "mad", {"sales": 1}))
        router.login(extension)
    for n in range(3):
        router.enqueue(RoutingRequest(f"busy{n}", "sales"))
    for reservation in router.dispatch():
        router.answered(reservation.reservation_id)
    for n in range(4):
        router.enqueue(RoutingRequest(f"w{n}", "sales"))
    # Everyone just started a call: the first three callers wait one AHT, the fourth two.
    assert [router.ewt(f"w{n}") for n in range(4)] == [120, 120, 120, 240]
    now[0] += 30  # the estimate moves with the agents' calls, before any call has finished
    assert [router.ewt(f"w{n}") for n in range(4)] == [90, 90, 90, 210]
    now[0] -= 30
    stats = router.queue_stats("sales")
    assert (stats.waiting, stats.agents_staffed, stats.agents_available) == (4, 3, 0)
    assert stats.ewt_seconds is not None and stats.ewt_seconds > 0
    router.logout("3")  # deferred: still staffed until its call ends
    now[0] += 120  # a 120 s call: the first observed handle time replaces the 120 s seed
    router.call_ended("busy2")
    assert router.queue_stats("sales").agents_staffed == 2
    # Agents 1 and 2 ran past the average: each is expected free within AHT / 10.
    assert router.ewt("w0") == pytest.approx(12)


def test_an_agent_on_a_personal_call_is_not_counted_free_in_the_estimate() -> None:
    router = Router(lambda: 0.0, default_handle_seconds=120)
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    router.upsert_agent(AgentProfile("1", "1", "mad", {"sales": 1}))
    router.login("1")
    router.personal_call_started("1", "direct-1")
    router.enqueue(RoutingRequest("w0", "sales"))
    assert router.dispatch() == []
    stats = router.queue_stats("sales")
    assert (stats.agents_staffed, stats.agents_available) == (1, 0)
    assert router.ewt("w0") == 120  # one ordinary handle time, not "free now"
    router.personal_call_ended("1", "direct-1")
    assert [r.agent for r in router.dispatch()] == ["1"]
