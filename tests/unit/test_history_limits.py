"""What stays in memory per call is bounded by count and by age, and stays small."""

from __future__ import annotations

import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events import AgentOffered, CallEnded, EventBus
from events.recent_calls import RecentCalls
from ivr.call_log import IvrCallLog, IvrCallRecord, UnknownIvrCall
from pbx.calls.screen_pop import ScreenPop
from pbx.configuration.server import ConfigError, build_config
from router import AgentProfile, QueueConfig, Router, RoutingRequest, UnknownCall
from router.occupancy import OccupancyWindow
from settings.located_yaml import load_yaml


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- RecentCalls

def test_recent_calls_keep_at_most_capacity_oldest_dropped_first() -> None:
    recent: RecentCalls[int] = RecentCalls(3, 60, Clock())
    for number in range(5):
        recent.put(f"c{number}", number)
    assert len(recent) == 3
    assert "c1" not in recent and recent.get("c4") == 4


def test_finished_entries_age_out_and_live_ones_never_do() -> None:
    clock = Clock()
    recent: RecentCalls[str] = RecentCalls(100, 60, clock)
    recent.put("live", "a")
    recent.put("ended", "b")
    recent.put("written", "c", finished=True)
    clock.now += 30
    recent.finished("ended")
    assert recent.prune() == 0
    clock.now += 31  # "written" is 61 s old, "ended" 31 s
    assert recent.prune() == 1
    assert "written" not in recent and "ended" in recent
    clock.now += 30
    assert recent.prune() == 1
    clock.now += 10_000
    assert recent.prune() == 0
    assert list(("live" in recent, "ended" in recent)) == [True, False]


def test_an_entry_written_again_is_live_again() -> None:
    clock = Clock()
    recent: RecentCalls[int] = RecentCalls(10, 5, clock)
    recent.put("c", 1, finished=True)
    recent.put("c", 2)
    clock.now += 100
    assert recent.prune() == 0 and recent.get("c") == 2


def test_recent_calls_reject_meaningless_limits() -> None:
    with pytest.raises(ValueError):
        RecentCalls(0, 10)
    with pytest.raises(ValueError):
        RecentCalls(10, 0)


# ---------------------------------------------------------------------- holders

def _record(call_id: str) -> IvrCallRecord:
    return IvrCallRecord(call_id, "+34600", "demo", datetime(2026, 1, 1, tzinfo=UTC), "en")


def test_ivr_call_log_keeps_a_record_until_the_call_ended_plus_the_age() -> None:
    clock = Clock()
    log = IvrCallLog(10, 60, clock)
    record = _record("c1")
    log.add(record)
    record.entered("menu", "menu", datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC))
    record.digit("menu", "1", datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC))
    clock.now += 1000
    assert log.prune() == 0  # the call is still up (waiting in a queue, say)
    assert log.get("c1")["path"] == [{"node": "menu", "type": "menu", "at": 2.0}]
    assert log.get("c1")["digits"] == [{"node": "menu", "digit": "1", "at": 3.0}]
    log.call_ended("c1")
    clock.now += 61
    assert log.prune() == 1
    with pytest.raises(UnknownIvrCall):
        log.get("c1")


def test_screen_pop_contexts_age_out_after_the_call_ended() -> None:
    bus = EventBus()
    pop = ScreenPop(bus, capacity=10, max_age_seconds=0.01)
    bus.publish(AgentOffered("c1", "1001", "billing", "+34600", {"language": "en"}))
    assert pop.context("c1")["agent"] == "1001"
    pop.prune()
    assert len(pop) == 1  # live
    bus.publish(CallEnded("c1", "application", "caller_hangup", None, 10.0))
    deadline = 200
    while pop.prune() == 0 and deadline:
        deadline -= 1
        time.sleep(0.005)
    with pytest.raises(KeyError):
        pop.context("c1")


def _router(clock: Clock, **limits: float) -> Router:
    router = Router(clock, **limits)  # type: ignore[arg-type]
    router.upsert_queue(QueueConfig("q", skills={"s": 1}, wrap_up_seconds=0))
    router.upsert_agent(AgentProfile("a1", "Agent", "mad", {"s": 5}, frozenset({"en"})))
    router.login("a1")
    return router


def _serve(router: Router, call_id: str) -> None:
    router.enqueue(RoutingRequest(call_id, "q"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    router.call_ended(call_id)


def test_router_keeps_the_last_decisions_per_call_in_a_tuple() -> None:
    clock = Clock()
    router = _router(clock, decisions_per_call=2)
    for extension in ("a2", "a3"):
        router.upsert_agent(AgentProfile(extension, "Agent", "mad", {"s": 5}, frozenset({"en"})))
        router.login(extension)
    router.enqueue(RoutingRequest("c1", "q"))
    for _ in range(3):  # three agents decline in turn: three decisions
        (reservation,) = router.dispatch()
        router.reservation_failed(reservation.reservation_id, "declined")
    decisions = router.explain("c1")
    assert len(decisions) == 2
    assert isinstance(router._decisions.of("c1"), tuple)
    assert not hasattr(decisions[0], "__dict__")  # slotted


def test_router_forgets_decisions_of_calls_gone_for_the_max_age() -> None:
    clock = Clock()
    router = _router(clock, decisions_max_age_seconds=60)
    _serve(router, "done")
    router.enqueue(RoutingRequest("waiting", "q"))  # nobody free: the router decides, the call waits
    router.dispatch()
    assert router.decisions_kept == 2
    router.forget_old_decisions()  # first sight of "done" out of the router
    clock.now += 61
    assert router.forget_old_decisions() == 1
    assert router.explain("waiting")  # still in line: kept however old
    with pytest.raises(UnknownCall):
        router.explain("done")


def test_router_keeps_decisions_of_at_most_the_configured_calls() -> None:
    clock = Clock()
    router = _router(clock, decision_calls_kept=3)
    for number in range(6):
        clock.now += 1
        _serve(router, f"c{number}")
    assert router.decisions_kept == 3


def test_router_timers_of_answered_calls_do_not_pile_up() -> None:
    clock = Clock()
    router = Router(clock)
    router.upsert_queue(QueueConfig("q", skills={"s": 1}, wrap_up_seconds=0, max_wait_seconds=3600))
    router.upsert_agent(AgentProfile("a1", "Agent", "mad", {"s": 5}, frozenset({"en"})))
    router.login("a1")
    for number in range(500):
        clock.now += 1
        _serve(router, f"c{number}")
        router.tick()
    assert len(router._timers) < 100


def test_occupancy_memory_does_not_grow_with_calls() -> None:
    window = OccupancyWindow(3600)
    now = 0.0
    window.record(now, now + 1, False)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            window.record(now, now + 20, True)
            window.record(now + 20, now + 30, False)
            now += 30
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1000
    assert window.ratio(now, now, False) == pytest.approx(20 / 30, rel=0.01)


def test_occupancy_ratio_counts_only_the_window() -> None:
    window = OccupancyWindow(3600)
    window.record(0, 3600, True)  # an hour on calls
    assert window.ratio(3600, 3600, None) == pytest.approx(1.0)
    assert window.ratio(5400, 3600, False) == pytest.approx(0.5, abs=0.03)  # half an hour idle since
    window.record(3600, 7200, False)  # then a whole hour idle
    assert window.ratio(7200, 7200, False) == pytest.approx(0.0, abs=0.01)
    assert OccupancyWindow(3600).ratio(10, 10, None) is None


# ---------------------------------------------------------------------- configuration

def _config(text: str):
    return build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=None)


def test_history_limits_are_read_and_default() -> None:
    assert _config("{}").history.routing_calls == 2000
    history = _config("history: {max_age_seconds: 30, ivr_calls: 50, routing_decisions_per_call: 3}").history
    assert (history.max_age_seconds, history.ivr_calls, history.routing_decisions_per_call) == (30, 50, 3)


def test_history_limits_are_validated_with_their_location() -> None:
    with pytest.raises(ConfigError) as caught:
        _config("history:\n  max_age_seconds: 0\n  screen_pops: many\n  bogus: 1\n")
    text = "\n".join(caught.value.problems)
    assert "history.max_age_seconds" in text and "history.screen_pops" in text and "bogus" in text
    assert "centralita.yaml:2" in text


def test_slotted_records_have_no_instance_dict() -> None:
    assert not hasattr(_record("c"), "__dict__")
    assert sys.getsizeof(_record("c")) < 200
