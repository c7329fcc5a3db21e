"""The router's upkeep in slices: sweeping stale timers and rebuilding the free-agent
index's heaps a bounded number of entries at a time, with the structures in use between
slices."""

from __future__ import annotations

from router import AgentProfile, QueueConfig, Router, RoutingRequest, SkillExpansion
from router.agent_book import AgentBook
from router.availability import AttributeKind, AvailableAgents, OrderKind
from router.timers import TimerHeap, TimerKind


def due_keys(timers: TimerHeap, now: float) -> list[str]:
    return [key for _, key, _ in timers.pop_due(now)]


def test_timer_sweep_drops_stale_timers_a_slice_at_a_time() -> None:
    timers = TimerHeap()
    for n in range(100):
        timers.schedule(10.0 + n, TimerKind.EXPAND, f"c{n}")
    timers.start_sweep(lambda kind, key, generation: int(key[1:]) % 2 == 0)
    steps = 1
    while not timers.sweep_step(7):
        steps += 1
    assert steps == 15
    assert len(timers) == 50
    assert due_keys(timers, 1000.0) == [f"c{n}" for n in range(0, 100, 2)]


def test_timers_run_or_scheduled_during_a_sweep_are_neither_repeated_nor_lost() -> None:
    timers = TimerHeap()
    for n in range(20):
        timers.schedule(float(n), TimerKind.ANNOUNCE, f"c{n}")
    timers.start_sweep(lambda kind, key, generation: True)
    timers.sweep_step(15)  # c0..c14 copied into the new heap
    assert due_keys(timers, 4.0) == ["c0", "c1", "c2", "c3", "c4"]
    timers.schedule(2.5, TimerKind.HOLD, "past")  # due before timers that already ran
    timers.schedule(30.0, TimerKind.HOLD, "later")
    assert timers.sweep_step(15)
    assert due_keys(timers, 100.0) == ["past"] + [f"c{n}" for n in range(5, 20)] + ["later"]


def test_index_heaps_rebuilt_in_slices_keep_every_free_agent_in_order() -> None:
    index = AvailableAgents()
    for n in range(200):
        index.add(f"a{n:03d}", {"s": 1}, ["en"], float(n), 0.0, n)
    index.flush_fresh()
    for _ in range(3):  # half the agents busy and back three times: stale entries behind
        for n in range(0, 200, 2):
            index.remove(f"a{n:03d}")
            index.add(f"a{n:03d}", {"s": 1}, ["en"], float(n), 0.0, n)
            index.flush_fresh()  # as each dispatch ends: pushed, then stale when removed
    looked = index.compact(100)
    assert looked == 100
    index.add("late", {"s": 1}, ["en"], -1.0, 0.0, 0)  # pushed while a rebuild is under way
    while index.compact(100):
        pass
    assert all(len(heap) == 201 for heap in index._languages["en"].heaps[OrderKind.IDLE.value][1:2])
    expected = ["late"] + [f"a{n:03d}" for n in range(200)]
    seen: list[str] = []

    def take_all(extension: str) -> str | None:
        seen.append(extension)
        return "counted"

    index.walk(AttributeKind.SKILL, "s", 1, OrderKind.IDLE, take_all)
    assert seen == expected
    assert index.count(AttributeKind.EVERYONE, "", 1) == len(expected)


def test_index_rebuilds_are_paid_by_the_pushes_that_need_them() -> None:
    index = AvailableAgents()
    for n in range(200):
        index.add(f"a{n:03d}", {"s": 1}, ["en"], float(n), 0.0, n)
    sizes = []
    for round_ in range(20):  # steady churn, and no tick: only what each change pays
        for n in range(200):
            index.remove(f"a{n:03d}")
            index.add(f"a{n:03d}", {"s": 1}, ["en"], float(n + round_), 0.0, n)
            index.pay_compaction()
        sizes.append(max(len(heap) for heap in index._languages["en"].heaps[OrderKind.IDLE.value]))
    # Without the payments the heap would hold 20 stale entries per agent by now.
    assert max(sizes[5:]) <= 4 * 200
    assert index.count(AttributeKind.EVERYONE, "", 1) == 200


def test_freed_agents_are_taken_in_order_across_the_copies_that_keep_taking_cheap() -> None:
    book = AgentBook(3600.0, 8)
    for n in range(1000):
        book.mark_freed(f"a{n:04d}")
    taken = [book.take_freed() for _ in range(600)]
    book.mark_freed("late")
    book.mark_freed("a0700")  # already waiting: keeps its place
    book.mark_freed("first", first=True)
    while (extension := book.take_freed()) is not None:
        taken.append(extension)
    assert taken == (
        [f"a{n:04d}" for n in range(600)] + ["first"] + [f"a{n:04d}" for n in range(600, 1000)]
        + ["late"]
    )


def test_a_call_owes_its_timers_until_the_dispatch_ends_or_a_tick_asks() -> None:
    now = [100.0]
    events: list[object] = []
    router = Router(lambda: now[0], publish=events.append, reservation_timeout_seconds=5)
    router.upsert_queue(
        QueueConfig(
            "q",
            skills={"rare": 1},
            expansion=(SkillExpansion(10, {"common": 1}),),
            max_wait_seconds=60,
            wrap_up_seconds=0,
        )
    )
    router.upsert_agent(AgentProfile("a", "A", "mad", {"common": 1}, frozenset({"en"})))
    router.login("a")
    router.dispatch()
    # Not dispatched yet: a tick or a question about the next timer gets its timers all the same.
    router.enqueue(RoutingRequest("c1", "q"))
    assert router.next_due() == 110.0
    now[0] = 110.0
    (reservation,) = router.tick()  # expanded to 'common', and "a" takes it
    assert reservation.agent == "a"
    assert any(type(event).__name__ == "CallExpanded" for event in events)
    # A call that gets its agent in its own dispatch never schedules them: only the
    # reservation's timer is left (plus the ones c1 scheduled while it waited).
    router.answered(reservation.reservation_id)
    router.call_ended("c1")
    router.upsert_queue(QueueConfig("open", skills={"common": 1}, max_wait_seconds=60))
    timers_before = len(router._timers)
    router.enqueue(RoutingRequest("c2", "open"))
    (reservation,) = router.dispatch()
    assert len(router._timers) == timers_before + 1
    assert router.next_due() is not None
