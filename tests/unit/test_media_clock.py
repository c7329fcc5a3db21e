"""The media clock's schedule, driven by a fake loop whose time the test sets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from pbx.media.clock import MediaClock, shared_media_clock


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just what MediaClock uses: time() and call_at()."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    @property
    def pending(self) -> FakeTimer | None:
        live = [t for t in self.timers if not t.cancelled]
        return live[-1] if live else None

    def fire(self, late_by: float = 0.0) -> None:
        """Run the pending timer at its time (plus ``late_by``)."""
        timer = self.pending
        assert timer is not None
        timer.cancelled = True
        self.now = timer.when + late_by
        timer.callback()


class CountingStream:
    def __init__(self, clock: MediaClock, stop_after: int | None = None) -> None:
        self.clock = clock
        self.ticks: list[float] = []
        self.stop_after = stop_after

    def tick(self) -> None:
        self.ticks.append(self.clock.now)
        if self.stop_after is not None and len(self.ticks) >= self.stop_after:
            self.clock.unregister(self)


def make_clock(**kwargs: Any) -> tuple[MediaClock, FakeLoop]:
    loop = FakeLoop()
    return MediaClock(cast(asyncio.AbstractEventLoop, loop), **kwargs), loop


def test_ticks_on_an_absolute_grid_despite_lateness() -> None:
    clock, loop = make_clock()
    stream = CountingStream(clock)
    clock.register(stream)
    start = loop.now
    for late in (0.0, 0.004, 0.011, 0.0, 0.019, 0.002):
        loop.fire(late_by=late)
    # One tick each, at grid times; the next timer is on the grid, not 20 ms after the late one.
    assert stream.ticks == pytest.approx([start + 0.02 * n for n in range(1, 7)])
    assert loop.pending is not None and loop.pending.when == pytest.approx(start + 0.02 * 7)


def test_early_firing_counts_as_the_scheduled_tick() -> None:
    clock, loop = make_clock()
    stream = CountingStream(clock)
    clock.register(stream)
    loop.fire(late_by=-0.0004)
    loop.fire(late_by=-0.0004)
    assert len(stream.ticks) == 2
    assert loop.pending is not None and loop.pending.when == pytest.approx(100.06)


def test_catch_up_is_bounded_and_the_rest_dropped() -> None:
    clock, loop = make_clock(max_catch_up=2)
    stream = CountingStream(clock)
    clock.register(stream)
    loop.fire()
    loop.fire(late_by=0.045)  # ticks 2, 3 and 4 due: all sent
    assert len(stream.ticks) == 4 and clock.ticks_dropped == 0
    loop.fire(late_by=0.200)  # 11 ticks due: 3 sent back to back, 8 dropped
    assert len(stream.ticks) == 7
    assert clock.ticks_dropped == 8
    assert stream.ticks[-3:] == pytest.approx([100.0 + 0.02 * n for n in (13, 14, 15)])


def test_streams_unregister_themselves_and_the_timer_stops() -> None:
    clock, loop = make_clock()
    short = CountingStream(clock, stop_after=2)
    long = CountingStream(clock, stop_after=4)
    clock.register(short)
    clock.register(long)
    for _ in range(4):
        loop.fire()
    assert (len(short.ticks), len(long.ticks)) == (2, 4)
    assert loop.pending is None and not clock.running and len(clock) == 0


def test_a_failing_stream_is_dropped_and_others_keep_ticking() -> None:
    clock, loop = make_clock()

    class Broken:
        def tick(self) -> None:
            raise RuntimeError("boom")

    broken = Broken()
    healthy = CountingStream(clock)
    clock.register(broken)
    clock.register(healthy)
    loop.fire()
    loop.fire()
    assert broken not in clock
    assert len(healthy.ticks) == 2


def test_restart_after_idle_starts_a_new_grid() -> None:
    clock, loop = make_clock()
    stream = CountingStream(clock, stop_after=1)
    clock.register(stream)
    loop.fire()
    assert not clock.running
    loop.now = 200.0
    stream.stop_after = 2
    clock.register(stream)
    assert loop.pending is not None and loop.pending.when == pytest.approx(200.02)


def test_stop_cancels_everything() -> None:
    clock, loop = make_clock()
    clock.register(CountingStream(clock))
    timer = loop.pending
    clock.stop()
    assert timer is not None and timer.cancelled and len(clock) == 0


async def test_shared_clock_is_one_per_loop() -> None:
    assert shared_media_clock() is shared_media_clock()
