"""The router as one door: commands dispatch at once through a hook, events are pushed
to a sink as they happen, timers run on a monotonic clock apart from the wall clock of
records, reservation ids are unique, and timers due at exactly ``now`` run once."""

from __future__ import annotations

import threading

from events import (
    AgentReserved,
    CallExpanded,
    CallOverflowed,
    CallQueued,
    Event,
    ReservationExpired,
)
from router import (
    AgentProfile,
    AgentState,
    QueueConfig,
    Reservation,
    Router,
    RoutingRequest,
    SkillExpansion,
)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink(list[Event]):
    """Where a router pushes its events; ``take()`` returns those pushed since the last take."""

    def take(self) -> list[Event]:
        taken = list(self)
        self.clear()
        return taken


def _agent(extension: str, skills: dict[str, int]) -> AgentProfile:
    return AgentProfile(extension, f"Agent {extension}", "madrid", skills, frozenset({"es"}))


def _tick_within(router: Router, seconds: float = 5.0) -> None:
    """Run ``tick()`` and fail (rather than hang the suite) if it does not return."""
    done = threading.Event()

    def run() -> None:
        router.tick()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "tick() did not return"


def test_an_expansion_due_at_exactly_now_runs_once_and_widens_the_rings() -> None:
    enqueued, after = 0.4, 0.1
    assert (enqueued + after) - enqueued < after  # the rounding that used to loop forever
    clock = Clock(enqueued)
    events = Sink()
    router = Router(clock, publish=events.append)
    router.upsert_queue(
        QueueConfig("q", skills={"rare": 1}, expansion=(SkillExpansion(after, {"common": 1}),))
    )
    router.upsert_agent(_agent("1", {"common": 1}))
    router.login("1")
    router.enqueue(RoutingRequest("c1", "q"))
    assert router.dispatch() == []
    assert router.next_due() == enqueued + after
    clock.now = enqueued + after
    _tick_within(router)
    events = events.take()
    assert [e.rings_active for e in events if isinstance(e, CallExpanded)] == [2]
    assert router.agent("1").state is AgentState.RESERVED


def test_an_overflow_due_at_exactly_now_is_not_skipped() -> None:
    entered, max_wait = 2.3, 30.0
    assert (entered + max_wait) - entered < max_wait  # the rounding that used to skip it
    clock = Clock(entered)
    events = Sink()
    router = Router(clock, publish=events.append)
    router.upsert_queue(QueueConfig("first", skills={"x": 1}, max_wait_seconds=max_wait,
                                    overflow="second"))
    router.upsert_queue(QueueConfig("second", skills={"x": 1}))
    router.enqueue(RoutingRequest("c1", "first"))
    clock.now = entered + max_wait
    _tick_within(router)
    overflowed = [e for e in events.take() if isinstance(e, CallOverflowed)]
    assert [(e.target, e.moved) for e in overflowed] == [("second", True)]
    assert router.call("c1").call.queue == "second"


def test_next_due_is_the_earliest_timer_so_the_caller_can_sleep_until_then() -> None:
    clock = Clock(100.0)
    events = Sink()
    router = Router(clock, publish=events.append)
    assert router.next_due() is None
    router.upsert_queue(QueueConfig("q", skills={"x": 1}, announce_interval_seconds=20,
                                    max_wait_seconds=45, overflow=None))
    router.enqueue(RoutingRequest("c1", "q"))
    events.take()
    assert router.next_due() == 120.0  # the first announcement, before the max wait at 145
    clock.now = 119.9
    router.tick()
    assert events.take() == []  # nothing was due yet
    clock.now = 120.0
    router.tick()
    assert router.next_due() == 140.0  # the next announcement


def test_reservation_ids_are_unique_across_routers_and_restarts() -> None:
    ids = []
    for _ in range(2):  # two routers built alike: two sites, or one site restarted
        clock = Clock()
        router = Router(clock)
        router.upsert_queue(QueueConfig("q", skills={"x": 1}))
        router.upsert_agent(_agent("1", {"x": 1}))
        router.login("1")
        router.enqueue(RoutingRequest("c1", "q"))
        [reservation] = router.dispatch()
        ids.append(reservation.reservation_id)
    assert ids[0] != ids[1]
    assert all(i.startswith("res-") and len(i) == len("res-") + 32 for i in ids)


def test_timers_follow_the_monotonic_clock_and_records_the_wall_clock() -> None:
    monotonic, wall = Clock(50.0), Clock(1_800_000_000.0)
    events = Sink()
    router = Router(
        monotonic, wall_clock=wall, reservation_timeout_seconds=5.0, publish=events.append
    )
    router.upsert_queue(QueueConfig("q", skills={"x": 1}))
    router.upsert_agent(_agent("1", {"x": 1}))
    router.login("1")
    router.enqueue(RoutingRequest("c1", "q"))
    [reservation] = router.dispatch()
    assert reservation.expires_at == 1_800_000_005.0
    assert router.call("c1").call.enqueued_at == 1_800_000_000.0
    assert reservation.decision.at == 1_800_000_000.0
    reserved = [e for e in events.take() if isinstance(e, AgentReserved)]
    assert [(e.at, e.expires_at) for e in reserved] == [(1_800_000_000.0, 1_800_000_005.0)]
    wall.now -= 3600  # the wall clock is set back an hour: no timer moves
    monotonic.now += 4.9
    router.tick()
    assert router.agent("1").state is AgentState.RESERVED
    assert not [e for e in events.take() if isinstance(e, ReservationExpired)]
    monotonic.now += 0.1
    router.tick()
    expired = [e for e in events.take() if isinstance(e, ReservationExpired)]
    assert [e.at for e in expired] == [wall.now]  # expired on time, stamped in wall time
    assert router.agent("1").state_since == wall.now


def test_a_transferred_call_keeps_its_wall_clock_enqueue_time() -> None:
    monotonic, wall = Clock(10.0), Clock(1_800_000_000.0)
    router = Router(monotonic, wall_clock=wall)
    router.upsert_queue(QueueConfig("q", skills={"x": 1}))
    router.enqueue(RoutingRequest("c1", "q", enqueued_at=wall.now - 40))  # waited 40 s elsewhere
    assert router.call("c1").waited_seconds == 40.0
    assert router.call("c1").call.enqueued_at == wall.now - 40


def test_every_command_dispatches_at_once_through_the_hook_and_pushes_its_events() -> None:
    clock = Clock()
    offered: list[Reservation] = []
    pushed: list[Event] = []
    router = Router(clock, publish=pushed.append, on_reservation=offered.append)
    router.upsert_queue(QueueConfig("q", skills={"x": 1}))
    router.upsert_agent(_agent("1", {"x": 1}))
    router.enqueue(RoutingRequest("c1", "q"))
    assert offered == []
    assert [type(e) for e in pushed] == [CallQueued]
    router.login("1")  # no tick, no dispatch() call: the login itself matched the call
    assert [(r.call_id, r.agent) for r in offered] == [("c1", "1")]
    assert isinstance(pushed[-1], AgentReserved)  # pushed by the login itself


def test_a_command_run_by_the_hook_is_dispatched_by_the_same_loop() -> None:
    clock = Clock()
    offered: list[str] = []

    def offer(reservation: Reservation) -> None:
        offered.append(reservation.agent)
        if reservation.agent == "1":  # its phone refuses at once: the next agent gets it
            router.reservation_failed(reservation.reservation_id, "busy")

    router = Router(clock, on_reservation=offer)
    router.upsert_queue(QueueConfig("q", skills={"x": 1}))
    for extension in ("1", "2"):
        router.upsert_agent(_agent(extension, {"x": 1}))
    router.login("1")
    clock.now = 1.0
    router.login("2")
    router.enqueue(RoutingRequest("c1", "q"))
    assert offered == ["1", "2"]
    assert router.agent("2").state is AgentState.RESERVED


def test_an_agent_joins_exactly_the_queues_it_serves_as_queues_change() -> None:
    router = Router(Clock())
    router.upsert_queue(QueueConfig("sales", skills={"sales": 3}))
    router.upsert_queue(QueueConfig("anyone", skills={}))
    router.upsert_queue(
        QueueConfig("tech", skills={"tech": 5}, expansion=(SkillExpansion(30, {"sales": 1}),))
    )
    router.upsert_agent(_agent("1", {"sales": 2}))
    assert router.agent("1").queues == ("anyone", "tech")  # sales needs 3; tech's ring 2 fits
    router.upsert_queue(QueueConfig("tech", skills={"tech": 5}))  # its sales ring is gone
    router.upsert_queue(QueueConfig("sales", skills={"sales": 2}))
    router.upsert_agent(_agent("2", {"sales": 2}))
    assert router.agent("2").queues == ("anyone", "sales")
    router.remove_queue("anyone")
    router.upsert_agent(_agent("3", {"sales": 9, "tech": 5}))
    assert router.agent("3").queues == ("sales", "tech")
