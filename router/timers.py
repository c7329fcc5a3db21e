"""The router's timers: one heap of (due, sequence, kind, key, generation), on the
router's monotonic clock.

A timer is never cancelled: its owner checks, when it runs, whether it still applies
(a call's timers carry the call's generation, bumped whenever the call is filed in a
line anew; a reservation's timer finds the reservation gone). Stale timers are swept
in bulk when they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from enum import Enum


class TimerKind(Enum):
    RESERVATION = "reservation"
    WRAP_UP = "wrap_up"
    EXPAND = "expand"
    MAX_WAIT = "max_wait"
    HOLD = "hold"
    ANNOUNCE = "announce"
    RONA_RETURN = "rona_return"


# Timers keyed by call id, run only for the call's current generation.
CALL_TIMERS = frozenset({TimerKind.EXPAND, TimerKind.MAX_WAIT, TimerKind.HOLD, TimerKind.ANNOUNCE})

Timer = tuple[float, int, TimerKind, str, int]


class TimerHeap:
    """Due times in the order they fall; ties run in the order they were scheduled."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, due: float, kind: TimerKind, key: str, generation: int = 0) -> None:
        heapq.heappush(self._heap, (due, next(self._sequence), kind, key, generation))

    def next_due(self) -> float | None:
        """When the earliest timer falls (it may turn out stale: waking for it is harmless)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[TimerKind, str, int]]:
        """Timers due at ``now``, earliest first, including those scheduled while iterating."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, key, generation = heapq.heappop(heap)
            yield kind, key, generation

    def keep_only(self, live: Callable[[TimerKind, str, int], bool]) -> None:
        self._heap = [timer for timer in self._heap if live(timer[2], timer[3], timer[4])]
        heapq.heapify(self._heap)
