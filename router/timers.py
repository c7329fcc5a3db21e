"""The router's timers: one heap of (due, sequence, kind, key, generation), on the
router's monotonic clock.

A timer is never cancelled: its owner checks, when it runs, whether it still applies
(a call's timers carry the call's generation, bumped whenever the call is filed in a
line anew; a reservation's timer finds the reservation gone). Stale timers are swept
when they outnumber the live ones, a slice at a time, so no single step holds the
event loop for long: the sweep filters a copy of the heap into a new one while the
heap stays in use, then swaps it in. Its slices are paid as timers are scheduled
(``pay_sweep``: a few looked at per timer scheduled) and by the tick (``sweep_step``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
TimerIsLive = Callable[[TimerKind, str, int], bool]


# Timers a sweep looks at for each timer scheduled while it runs: more than a sweep has
# to look at per stale timer, so sweeps finish however fast timers come.
SWEEP_PER_TIMER = 3


@dataclass
class _Sweep:
    # The heap when the sweep began, then each timer scheduled since: what it looks at.
    to_look_at: list[Timer]
    is_live: TimerIsLive
    position: int = 0
    kept: list[Timer] = field(default_factory=list)  # a heap of the live ones seen so far
    ran: set[int] = field(default_factory=set)  # sequences of timers run since it began
    ran_until: float = float("-inf")  # the latest due time among them


class TimerHeap:
    """Due times in the order they fall; ties run in the order they were scheduled."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._sequence = itertools.count()
        self._sweep: _Sweep | None = None
        self._owed = 0  # timers the running sweep should look at, for timers scheduled

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, due: float, kind: TimerKind, key: str, generation: int = 0) -> None:
        timer = (due, next(self._sequence), kind, key, generation)
        heapq.heappush(self._heap, timer)
        if self._sweep is not None:
            self._sweep.to_look_at.append(timer)
            self._owed += SWEEP_PER_TIMER

    def next_due(self) -> float | None:
        """When the earliest timer falls (it may turn out stale: waking for it is harmless)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[TimerKind, str, int]]:
        """Timers due at ``now``, earliest first, including those scheduled while iterating."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, sequence, kind, key, generation = heapq.heappop(heap)
            sweep = self._sweep
            if sweep is not None:
                sweep.ran.add(sequence)
                sweep.ran_until = max(sweep.ran_until, due)
            yield kind, key, generation

    @property
    def sweeping(self) -> bool:
        return self._sweep is not None

    def start_sweep(self, is_live: TimerIsLive) -> None:
        """Begin dropping the timers ``is_live`` says can do nothing (see ``sweep_step``)."""
        if self._sweep is None:
            self._sweep = _Sweep(list(self._heap), is_live)
            self._owed = 0

    def pay_sweep(self) -> None:
        """Do the sweep work owed for the timers scheduled since the last payment (never
        while ``pop_due`` is being iterated: the sweep may swap the heap)."""
        if self._owed:
            owed, self._owed = self._owed, 0
            self.sweep_step(owed)

    def sweep_step(self, budget: int) -> bool:
        """Look at up to ``budget`` timers of the sweep; True once it is done."""
        sweep = self._sweep
        if sweep is None:
            return True
        end = min(sweep.position + budget, len(sweep.to_look_at))
        kept, is_live = sweep.kept, sweep.is_live
        for timer in sweep.to_look_at[sweep.position : end]:
            if is_live(timer[2], timer[3], timer[4]):
                heapq.heappush(kept, timer)
        sweep.position = end
        if end < len(sweep.to_look_at):
            return False
        # Timers that ran meanwhile may be back; they are due no later than the last of
        # those, so only the top of the new heap needs looking at.
        still_due: list[Timer] = []
        while kept and kept[0][0] <= sweep.ran_until:
            timer = heapq.heappop(kept)
            if timer[1] not in sweep.ran:
                still_due.append(timer)
        for timer in still_due:
            heapq.heappush(kept, timer)
        self._heap = kept
        self._sweep = None
        self._owed = 0
        return True
