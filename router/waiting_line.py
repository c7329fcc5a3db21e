"""The waiting calls of one queue, and the order in which calls are served.

Order of service (a strict, deterministic total order at any instant ``now``)
-----------------------------------------------------------------------------
Each waiting call has an effective score

    score(now) = priority + aging_weight * (now - enqueued_at) / sla_seconds

(``priority``: customer tier set by the IVR, vip 3 > paid 2 > free 1;
``aging_weight`` and ``sla_seconds`` come from the call's queue). Calls are
served by score, highest first; equal scores go to the earlier ``enqueued_at``,
then to the call the router saw first (a sequence number), so no two calls ever
tie. With the default weight 1, each SLA period of waiting is worth one tier: a
free caller who has waited a little over one SLA outranks a paid caller who just
arrived, so nobody starves, while among fresh calls the tier decides. A callback
or transfer keeps its ORIGINAL ``enqueued_at`` and therefore its place.

A queue with ``priority_order: strict`` uses a weight of 0: the tier alone
decides, then arrival, whatever the waits.

Worked example (sla_seconds 20, aging_weight 1): a free caller (1) who has
waited 47 s scores 1 + 47/20 = 3.35; a VIP (3) who arrived 3 s ago scores
3 + 3/20 = 3.15, so under 'aging' the free caller goes first. Under 'strict'
the scores are 1 and 3 and the VIP goes first.

Indexing a time-dependent order
-------------------------------
Scores change with time, so they cannot be static heap keys. But among calls of
one queue with the same priority, language and extra skills (a *class*) the
oldest call always has the highest score and has waited long enough for at least
as many skill-expansion rings as any younger one. Each class is therefore kept
as a list sorted by ``(enqueued_at, sequence)`` and only class heads ever need
comparing: the best call for an agent is the best head, over the classes of the
queues that agent serves, that the agent qualifies for.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

ClassKey = tuple[int, str | None, tuple[tuple[str, int], ...]]
# (enqueued_at, sequence, call_id): the sorted list element of a class.
LineEntry = tuple[float, int, str]


def aging_score(priority: int, waited: float, sla_seconds: float, aging_weight: float) -> float:
    return priority + aging_weight * waited / sla_seconds


def service_rank(
    priority: int,
    enqueued_at: float,
    sequence: int,
    now: float,
    sla_seconds: float,
    aging_weight: float,
) -> tuple[float, float, int]:
    """Sort key of a waiting call at ``now``: the smallest key is served first."""
    score = aging_score(priority, now - enqueued_at, sla_seconds, aging_weight)
    return (-score, enqueued_at, sequence)


def class_key(priority: int, language: str | None, extra_skills: Mapping[str, int]) -> ClassKey:
    return (priority, language, tuple(sorted(extra_skills.items())))


@dataclass(slots=True)
class CallClass:
    key: ClassKey
    entries: list[LineEntry]

    @property
    def priority(self) -> int:
        return self.key[0]

    @property
    def language(self) -> str | None:
        return self.key[1]


class WaitingLine:
    """Calls waiting in one queue, grouped in classes (see the module docstring)."""

    def __init__(self) -> None:
        self._classes: dict[ClassKey, CallClass] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, key: ClassKey, entry: LineEntry) -> None:
        call_class = self._classes.get(key)
        if call_class is None:
            call_class = self._classes[key] = CallClass(key, [])
        bisect.insort(call_class.entries, entry)
        self._size += 1

    def remove(self, key: ClassKey, entry: LineEntry) -> None:
        call_class = self._classes[key]
        entries = call_class.entries
        index = bisect.bisect_left(entries, entry)
        if index >= len(entries) or entries[index] != entry:
            raise KeyError(entry[2])
        del entries[index]
        self._size -= 1
        if not entries:
            del self._classes[key]

    def classes(self) -> Iterator[CallClass]:
        return iter(self._classes.values())

    def entries(self) -> Iterator[tuple[ClassKey, LineEntry]]:
        for call_class in self._classes.values():
            for entry in call_class.entries:
                yield call_class.key, entry

    def count_ahead(
        self, rank: tuple[float, float, int], now: float, sla_seconds: float, aging_weight: float
    ) -> int:
        """How many calls in line rank before ``rank``: a binary search per class, since
        ranks grow along each class's list."""
        ahead = 0
        for call_class in self._classes.values():
            entries = call_class.entries
            priority = call_class.key[0]
            # ``service_rank`` spelled out (the same arithmetic, so the same floats). Most
            # classes hold a few calls all ahead or all behind: their youngest and oldest
            # calls say so without a search.
            youngest = entries[-1]
            youngest_rank = (
                -(priority + aging_weight * (now - youngest[0]) / sla_seconds),
                youngest[0],
                youngest[1],
            )
            if youngest_rank < rank:
                ahead += len(entries)
                continue
            oldest = entries[0]
            oldest_rank = (
                -(priority + aging_weight * (now - oldest[0]) / sla_seconds),
                oldest[0],
                oldest[1],
            )
            if not oldest_rank < rank:
                continue
            ahead += bisect.bisect_left(
                entries,
                rank,
                key=lambda entry, priority=priority: (  # type: ignore[misc]
                    -(priority + aging_weight * (now - entry[0]) / sla_seconds),
                    entry[0],
                    entry[1],
                ),
            )
        return ahead

    def oldest_enqueued_at(self) -> float | None:
        heads = [call_class.entries[0][0] for call_class in self._classes.values()]
        return min(heads) if heads else None
