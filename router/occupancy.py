"""How busy an agent has been recently.

Two measures, for two uses:

- ``OccupancyWindow.ratio``: the classic occupancy over a sliding window,
  handling time / (handling + available time) in the last ``window`` seconds.
  It is what supervisors see. It cannot order an index: while agents sit idle
  their ratios fall at different speeds, so their order changes with time.
- ``decayed_load_key``: handling seconds with exponential decay (time constant
  ``tau`` = the window). While an agent is idle its load decays by the same
  factor as every other idle agent's, so ``ln(load) + t / tau`` is a constant
  per agent that orders idle agents exactly as their current decayed loads do.
  That is the LEAST_OCCUPANCY key of the availability index.
"""

from __future__ import annotations

import math
from collections import deque

NO_LOAD = -math.inf  # key of an agent that has never handled a call


def add_to_load_key(load_key: float, busy_seconds: float, now: float, tau: float) -> float:
    """Fold ``busy_seconds`` finished at ``now`` into a key kept as ln(load) + t / tau."""
    if busy_seconds <= 0:
        return load_key
    new_term = math.log(busy_seconds) + now / tau
    if load_key == NO_LOAD:
        return new_term
    high, low = (load_key, new_term) if load_key >= new_term else (new_term, load_key)
    return high + math.log1p(math.exp(low - high))


class OccupancyWindow:
    """Handling and available intervals of one agent, kept for ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._intervals: deque[tuple[float, float, bool]] = deque()  # (start, end, handling)

    def record(self, start: float, end: float, handling: bool) -> None:
        if end > start:
            self._intervals.append((start, end, handling))
        horizon = end - self._window
        while self._intervals and self._intervals[0][1] <= horizon:
            self._intervals.popleft()

    def ratio(
        self, now: float, current_since: float, current_handling: bool | None
    ) -> float | None:
        """Occupancy over the window ending ``now``; ``current_*`` describe the open interval
        (``current_handling`` None when the agent is neither handling nor available)."""
        horizon = now - self._window
        handling_time = 0.0
        staffed_time = 0.0
        intervals = list(self._intervals)
        if current_handling is not None:
            intervals.append((current_since, now, current_handling))
        for start, end, handling in intervals:
            start = max(start, horizon)
            if end <= start:
                continue
            staffed_time += end - start
            if handling:
                handling_time += end - start
        if staffed_time <= 0:
            return None
        return handling_time / staffed_time
