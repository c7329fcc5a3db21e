"""The one media clock: every 20 ms it lets each active stream send its packet.

Ticks are scheduled on an absolute grid, ``start + n * interval`` in
``loop.time()``, so lateness of one tick never accumulates into drift. When the
loop was late by more than an interval the clock runs the missed ticks back to
back, but at most ``max_catch_up`` of them; anything older is dropped rather than
sent as a burst a phone's jitter buffer would have to discard.

Streams register while they have something to send and unregister when idle,
so an idle call leg costs nothing per tick. A single ``loop.call_at`` timer drives
everything: there is no task, and no sleeping coroutine per stream.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

__all__ = ["MediaClock", "TickingStream", "shared_media_clock"]

log = logging.getLogger(__name__)

PACKET_INTERVAL = 0.020


class TickingStream(Protocol):
    def tick(self) -> None:
        """Send at most one packet. Called once per clock tick while registered."""


class MediaClock:
    """Drives registered streams from one ``loop.call_at`` timer on a drift-free grid."""

    __slots__ = (
        "interval",
        "max_catch_up",
        "_loop",
        "_streams",
        "_timer",
        "_start",
        "_ticks_done",
        "ticks_dropped",
        "now",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        interval: float = PACKET_INTERVAL,
        max_catch_up: int = 2,
    ) -> None:
        self.interval = interval
        self.max_catch_up = max_catch_up
        self._loop = loop
        self._streams: dict[TickingStream, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._ticks_done = 0
        self.ticks_dropped = 0
        """Ticks skipped because the loop was late beyond the catch-up allowance."""
        self.now = 0.0
        """Nominal ``loop.time()`` of the tick being run (its grid time, even when late)."""

    @property
    def running(self) -> bool:
        return self._timer is not None

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    def register(self, stream: TickingStream) -> None:
        """Start calling ``stream.tick()`` every interval, from the next tick on."""
        self._streams[stream] = None
        if self._timer is None:
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._start = loop.time()
            self._ticks_done = 0
            # First tick one interval from now: a stream that starts sending at
            # once would otherwise send two packets within a few microseconds.
            self._timer = loop.call_at(self._start + self.interval, self._on_timer)

    def unregister(self, stream: TickingStream) -> None:
        """Stop ticking ``stream``; safe to call from inside its own ``tick``."""
        self._streams.pop(stream, None)

    def stop(self) -> None:
        """Cancel the timer and forget every stream."""
        self._streams.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        interval = self.interval
        # The loop may fire a timer up to its clock resolution early: round with a
        # little tolerance, and always count at least the tick that was scheduled.
        elapsed = int((loop.time() - self._start) / interval + 0.05)
        due = max(self._ticks_done + 1, elapsed)
        missed = due - self._ticks_done
        if missed > 1 + self.max_catch_up:
            self.ticks_dropped += missed - 1 - self.max_catch_up
            missed = 1 + self.max_catch_up
        self._ticks_done = due
        for tick in range(due - missed + 1, due + 1):
            self.now = self._start + tick * interval
            self._tick_streams()
        if not self._streams:
            self._timer = None
            return
        self._timer = loop.call_at(self._start + (due + 1) * interval, self._on_timer)

    def _tick_streams(self) -> None:
        # A snapshot: streams register and unregister from inside tick().
        for stream in tuple(self._streams):
            try:
                stream.tick()
            except Exception:
                log.exception("media stream %r failed on tick; unregistering it", stream)
                self._streams.pop(stream, None)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = (
    weakref.WeakKeyDictionary()
)


def shared_media_clock() -> MediaClock:
    """The media clock of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = MediaClock(loop)
        _clocks[loop] = clock
    return clock
