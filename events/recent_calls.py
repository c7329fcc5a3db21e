"""Per-call details kept in memory for live and recently finished calls, within limits.

The store keeps finished calls for good; memory only has to answer for calls in progress
and the last few minutes. A ``RecentCalls`` holds at most ``capacity`` entries (the oldest
go first) and drops a finished call's entry ``max_age_seconds`` after it finished; an entry
of a call still in progress never ages out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class RecentCalls(Generic[V]):
    """``call_id -> value`` for live and recently finished calls; see the module docstring.

    Entries are in the order they were written or finished, so ageing out looks only at the
    front; a live entry found there is moved behind the others.
    """

    __slots__ = ("capacity", "max_age_seconds", "_clock", "_entries", "_finished_at")

    def __init__(self, capacity: int, max_age_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive")
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._finished_at: dict[str, float] = {}  # only finished calls are here

    def put(self, call_id: str, value: V, *, finished: bool = False) -> None:
        """Write (or replace) the entry; ``finished`` when the call is already over."""
        entries = self._entries
        entries[call_id] = value
        entries.move_to_end(call_id)
        if finished:
            self._finished_at[call_id] = self._clock()
        else:
            self._finished_at.pop(call_id, None)
        while len(entries) > self.capacity:
            oldest, _ = entries.popitem(last=False)
            self._finished_at.pop(oldest, None)

    def finished(self, call_id: str) -> None:
        """The call is over: its entry now ages out ``max_age_seconds`` from now."""
        if call_id in self._entries and call_id not in self._finished_at:
            self._finished_at[call_id] = self._clock()
            self._entries.move_to_end(call_id)

    def prune(self) -> int:
        """Drop finished entries older than ``max_age_seconds``; returns how many went."""
        entries, finished_at = self._entries, self._finished_at
        cutoff = self._clock() - self.max_age_seconds
        dropped = 0
        for _ in range(len(entries)):
            call_id = next(iter(entries))
            at = finished_at.get(call_id)
            if at is None:
                entries.move_to_end(call_id)  # still live: look past it
            elif at <= cutoff:
                del entries[call_id]
                del finished_at[call_id]
                dropped += 1
            else:
                break  # everything behind finished later (or is live)
        return dropped

    def get(self, call_id: str) -> V:
        """The entry; KeyError when there is none (never there, or dropped)."""
        return self._entries[call_id]

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)
