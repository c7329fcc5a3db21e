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
from array import array

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
    """Handling and staffed seconds of one agent over the last ``window`` seconds.

    Kept in ``BUCKETS`` time buckets of ``window / BUCKETS`` seconds (a ring of two float
    arrays), so an agent's memory stays the same however many calls it takes; one interval
    per state change, kept for the whole window, cost about 400 bytes per call. The oldest
    bucket, partly outside the window, counts pro rata.
    """

    BUCKETS = 20

    __slots__ = ("_window", "_width", "_handling", "_staffed", "_bucket_ids")

    def __init__(self, window: float) -> None:
        self._window = window
        self._width = window / self.BUCKETS
        # Allocated on the first record: most agents of a large center never take a call.
        self._handling: array[float] | None = None
        self._staffed: array[float] = array("d")
        self._bucket_ids: array[int] = array("q")

    def record(self, start: float, end: float, handling: bool) -> None:
        start = max(start, end - self._window - self._width)  # older time never counts
        if end <= start:
            return
        if self._handling is None:
            self._handling = array("d", bytes(8 * self.BUCKETS))
            self._staffed = array("d", bytes(8 * self.BUCKETS))
            self._bucket_ids = array("q", [-1] * self.BUCKETS)
        width = self._width
        moment = start
        while moment < end:
            bucket_id = math.floor(moment / width)
            until = min(end, (bucket_id + 1) * width)
            slot = bucket_id % self.BUCKETS
            if self._bucket_ids[slot] != bucket_id:  # a new bucket replaces one out of the window
                self._bucket_ids[slot] = bucket_id
                self._handling[slot] = 0.0
                self._staffed[slot] = 0.0
            self._staffed[slot] += until - moment
            if handling:
                self._handling[slot] += until - moment
            moment = until

    def ratio(
        self, now: float, current_since: float, current_handling: bool | None
    ) -> float | None:
        """Occupancy over the window ending ``now``; ``current_*`` describe the open interval
        (``current_handling`` None when the agent is neither handling nor available)."""
        horizon = now - self._window
        width = self._width
        handling_time = 0.0
        staffed_time = 0.0
        if self._handling is not None:
            for slot, bucket_id in enumerate(self._bucket_ids):
                bucket_start = bucket_id * width
                if bucket_id < 0 or bucket_start + width <= horizon or bucket_start >= now:
                    continue
                share = 1.0 if bucket_start >= horizon else (bucket_start + width - horizon) / width
                staffed_time += self._staffed[slot] * share
                handling_time += self._handling[slot] * share
        if current_handling is not None:
            start = max(current_since, horizon)
            if now > start:
                staffed_time += now - start
                if current_handling:
                    handling_time += now - start
        if staffed_time <= 0:
            return None
        return handling_time / staffed_time
