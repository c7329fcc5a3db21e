"""Index of the agents who can be offered a call right now.

An agent is in the index while it is AVAILABLE, reachable and at a healthy site.
For every skill, every language and for "everyone", the index keeps one binary
heap per proficiency level (1-10) and per order kind, holding
``(primary, secondary, extension, version)`` entries:

- IDLE:     (idle_since, 0)              longest idle first (also SKILL_WEIGHTED
                                           within one proficiency level)
- LOAD:     (decayed load key, idle_since) least recent load first
- ROTATION: (last offer sequence, idle_since) round robin

Removal is lazy: leaving the index bumps the agent's version, and an entry whose
version is not current is dropped when it reaches the top of a heap (heaps that
grow to twice their live size are compacted). A query walks the heaps of ONE
attribute, the most selective the caller picks, merging the levels that meet the
minimum, and asks a predicate about each agent in order until one passes; the
entries it popped are pushed back. Its cost is proportional to the agents ahead
of the chosen one in that order, not to the number of agents.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from router.config import MAX_PROFICIENCY

Entry = tuple[float, float, str, int]
_LEVELS = MAX_PROFICIENCY + 1  # index 0 unused, levels are 1..10
_COMPACT_SLACK = 32
# Stale entries are dropped lazily. Past 2x the live count a heap is queued for compaction,
# done a slice per `compact()` (the router's tick, off the decision path); only past 8x is
# it compacted on the spot, so a decision rarely pays for an O(n) rebuild.
_COMPACT_SOON = 2
_COMPACT_NOW = 8


class OrderKind(enum.Enum):
    IDLE = 0
    LOAD = 1
    ROTATION = 2


class AttributeKind(enum.Enum):
    SKILL = "skill"
    LANGUAGE = "language"
    EVERYONE = "everyone"


class _AttributeHeaps:
    __slots__ = ("heaps", "live")

    def __init__(self) -> None:
        self.heaps: tuple[list[list[Entry]], ...] = tuple(
            [[] for _ in range(_LEVELS)] for _ in OrderKind
        )
        self.live = [0] * _LEVELS

    def count_at_least(self, level: int) -> int:
        return sum(self.live[level:])


@dataclass(frozen=True)
class _Placement:
    """Where an indexed agent's entries live, so removal can fix the live counts."""

    version: int
    skills: tuple[tuple[str, int], ...]
    languages: tuple[str, ...]


@dataclass
class _Rebuild:
    """A heap being rebuilt without its stale entries, a slice at a time: its entries
    when the rebuild began are filtered into ``kept``, then swapped in."""

    heap: list[Entry]
    copy: list[Entry]
    position: int = 0
    kept: list[Entry] = field(default_factory=list)
    pushed: list[Entry] = field(default_factory=list)  # pushed onto ``heap`` since


@dataclass
class WalkResult:
    chosen: str | None = None
    chosen_key: tuple[float, float] | None = None
    runners_up: list[tuple[str, tuple[float, float]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_total: int = 0


class AvailableAgents:
    def __init__(self, skipped_kept: int = 16) -> None:
        self._skills: dict[str, _AttributeHeaps] = {}
        self._languages: dict[str, _AttributeHeaps] = {}
        self._everyone = _AttributeHeaps()
        self._versions: dict[str, int] = {}
        self._placements: dict[str, _Placement] = {}
        self._skipped_kept = skipped_kept
        self._to_compact: dict[int, list[Entry]] = {}
        self._rebuild: _Rebuild | None = None

    def __contains__(self, extension: object) -> bool:
        return extension in self._placements

    def __len__(self) -> int:
        return len(self._placements)

    def add(
        self,
        extension: str,
        skills: Mapping[str, int],
        languages: Iterable[str],
        idle_since: float,
        load_key: float,
        rotation: float,
    ) -> None:
        if extension in self._placements:
            self.remove(extension)
        version = self._versions.get(extension, 0) + 1
        self._versions[extension] = version
        entries = (
            (idle_since, 0.0, extension, version),
            (load_key, idle_since, extension, version),
            (rotation, idle_since, extension, version),
        )
        placement = _Placement(version, tuple(skills.items()), tuple(languages))
        self._placements[extension] = placement
        for skill, level in placement.skills:
            heaps = self._skills.get(skill)
            if heaps is None:
                heaps = self._skills[skill] = _AttributeHeaps()
            self._push(heaps, level, entries)
        for language in placement.languages:
            heaps = self._languages.get(language)
            if heaps is None:
                heaps = self._languages[language] = _AttributeHeaps()
            self._push(heaps, 1, entries)
        self._push(self._everyone, 1, entries)

    def remove(self, extension: str) -> None:
        placement = self._placements.pop(extension, None)
        if placement is None:
            return
        self._versions[extension] = placement.version + 1
        for skill, level in placement.skills:
            self._skills[skill].live[level] -= 1
        for language in placement.languages:
            self._languages[language].live[1] -= 1
        self._everyone.live[1] -= 1

    def count(self, kind: AttributeKind, name: str, min_level: int = 1) -> int:
        """How many indexed agents have attribute ``name`` at ``min_level`` or above."""
        heaps = self._heaps_of(kind, name)
        return 0 if heaps is None else heaps.count_at_least(min_level)

    def walk(
        self,
        kind: AttributeKind,
        name: str,
        min_level: int,
        order: OrderKind,
        reject_reason: Callable[[str], str | None],
        runners_up: int = 0,
        best_level_first: bool = False,
    ) -> WalkResult:
        """Visit indexed agents having ``name`` at ``min_level``+ in ``order``; the first one
        for which ``reject_reason`` returns None is chosen. With ``best_level_first`` the
        levels are visited from 10 down (skill-weighted), each level in ``order``."""
        result = WalkResult()
        heaps_of_attribute = self._heaps_of(kind, name)
        if heaps_of_attribute is None:
            return result
        level_heaps = heaps_of_attribute.heaps[order.value]
        live = heaps_of_attribute.live
        popped: list[tuple[int, Entry]] = []
        try:
            if best_level_first:
                for level in range(MAX_PROFICIENCY, min_level - 1, -1):
                    if live[level] <= 0:
                        continue
                    heap = level_heaps[level]
                    while True:
                        entry = self._clean_top(heap)
                        if entry is None:
                            break
                        heapq.heappop(heap)
                        popped.append((level, entry))
                        if self._visit(entry, reject_reason, result, runners_up):
                            return result
            else:
                frontier: list[tuple[Entry, int]] = []
                for level in range(min_level, _LEVELS):
                    if live[level] > 0:
                        top = self._clean_top(level_heaps[level])
                        if top is not None:
                            frontier.append((top, level))
                heapq.heapify(frontier)
                while frontier:
                    entry, level = heapq.heappop(frontier)
                    heap = level_heaps[level]
                    heapq.heappop(heap)
                    popped.append((level, entry))
                    if self._visit(entry, reject_reason, result, runners_up):
                        return result
                    top = self._clean_top(heap)
                    if top is not None:
                        heapq.heappush(frontier, (top, level))
            return result
        finally:
            for level, entry in popped:
                heapq.heappush(level_heaps[level], entry)

    def _visit(
        self,
        entry: Entry,
        reject_reason: Callable[[str], str | None],
        result: WalkResult,
        runners_up: int,
    ) -> bool:
        """Judge one agent; True when the walk has seen enough."""
        extension = entry[2]
        reason = reject_reason(extension)
        if reason is not None:
            result.skipped_total += 1
            if len(result.skipped) < self._skipped_kept:
                result.skipped.append((extension, reason))
            return False
        if result.chosen is None:
            result.chosen = extension
            result.chosen_key = (entry[0], entry[1])
        else:
            result.runners_up.append((extension, (entry[0], entry[1])))
        return len(result.runners_up) >= runners_up

    def _clean_top(self, heap: list[Entry]) -> Entry | None:
        versions = self._versions
        while heap:
            top = heap[0]
            if versions.get(top[2]) == top[3]:
                return top
            heapq.heappop(heap)
        return None

    def _heaps_of(self, kind: AttributeKind, name: str) -> _AttributeHeaps | None:
        if kind is AttributeKind.SKILL:
            return self._skills.get(name)
        if kind is AttributeKind.LANGUAGE:
            return self._languages.get(name)
        return self._everyone

    def _push(self, attribute: _AttributeHeaps, level: int, entries: tuple[Entry, ...]) -> None:
        attribute.live[level] += 1
        live = attribute.live[level]
        for heaps_by_level, entry in zip(attribute.heaps, entries, strict=True):
            heap = heaps_by_level[level]
            heapq.heappush(heap, entry)
            if self._rebuild is not None and self._rebuild.heap is heap:
                self._rebuild.pushed.append(entry)
            size = len(heap)
            if size > _COMPACT_SOON * live + _COMPACT_SLACK:
                if size > _COMPACT_NOW * live + _COMPACT_SLACK:
                    self._compact_heap(heap)
                else:
                    self._to_compact[id(heap)] = heap

    def compact(self, budget: int) -> int:
        """Rebuild the heaps that gathered too many stale entries, looking at no more than
        about ``budget`` entries (a heap's rebuild goes on at the next call); returns how
        many entries were looked at."""
        looked = 0
        while looked < budget:
            rebuild = self._rebuild
            if rebuild is None:
                if not self._to_compact:
                    break
                heap = self._to_compact.pop(next(iter(self._to_compact)))
                rebuild = self._rebuild = _Rebuild(heap, list(heap))
            end = min(rebuild.position + budget - looked, len(rebuild.copy))
            versions, kept = self._versions, rebuild.kept
            for item in rebuild.copy[rebuild.position : end]:
                if versions.get(item[2]) == item[3]:
                    heapq.heappush(kept, item)
            looked += end - rebuild.position
            rebuild.position = end
            if end == len(rebuild.copy):
                # Entries pushed meanwhile join; entries only ever leave a heap stale, so
                # the copy missed nothing live.
                for item in rebuild.pushed:
                    heapq.heappush(kept, item)
                rebuild.heap[:] = kept
                self._rebuild = None
        return looked

    def _compact_heap(self, heap: list[Entry]) -> None:
        if self._rebuild is not None and self._rebuild.heap is heap:
            self._rebuild = None
        versions = self._versions
        heap[:] = [item for item in heap if versions.get(item[2]) == item[3]]
        heapq.heapify(heap)
