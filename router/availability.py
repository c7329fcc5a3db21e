"""Index of the agents who can be offered a call right now.

An agent is in the index while it is AVAILABLE, reachable and at a healthy site.
For every skill, every language and for "everyone", the index keeps one binary
heap per proficiency level (1-10) and per order kind, holding
``(primary, secondary, extension, version)`` entries:

- IDLE:     (idle_since, 0)              longest idle first (also SKILL_WEIGHTED
                                           within one proficiency level)
- LOAD:     (decayed load key, idle_since) least recent load first
- ROTATION: (last offer sequence, idle_since) round robin

A skill's heaps in one order kind are built the first time a walk needs them (from the
skill's free holders, once: 0.05-0.14 ms for the ~110 free holders of a skill at 10,000
agents and 200 skills) and kept from then on: most calls walk a
queue's pool (below) and only read the skill's counts, so an agent becoming free pushes
entries only into the skill heaps some walk has used. Languages (few, each held by many:
building one took ~3 ms at 5,500 free holders) keep all their heaps. "Everyone" is walked
only for a call asking for nothing at all beyond a queue without pools (selection prefers
any attribute every free agent holds), so its heaps too are built on first use: an agent
becoming free no longer pushes three entries nobody reads.

Pushes wait: an agent joining the index owes its entries to the heaps it belongs in
until a walk of one of them (which pushes what it needs first) or the end of the
dispatch. With calls waiting, a freed agent is reserved again within the same dispatch,
and then only the heap its call's walk read ever held it: no ten pushes, no ten stale
entries for the rebuilds to look at later.

Removal is lazy: leaving the index bumps the agent's version, and an entry whose
version is not current is dropped when it reaches the top of a heap (heaps that
grow to twice their live size are compacted). A query walks the heaps of ONE
attribute, the most selective the caller picks, merging the levels that meet the
minimum, and asks a predicate about each agent in order until one passes; the
entries it popped are pushed back. Its cost is proportional to the agents ahead
of the chosen one in that order, not to the number of agents.

Per-queue pools. For each ring of each queue the index also keeps one heap of the free
agents meeting that ring, in the order of the queue's strategy (skill-weighted: the
primary skill's level first, then idle time). A call needing nothing beyond its ring
walks that pool and skips only agents refused for language or an earlier refusal,
instead of every free holder of one of the ring's skills who lacks another (the
two-skill walk). The order is the attribute walk's, ties included (same keys, then
extension), so the agent chosen is the same; what differs is that an explanation no
longer lists, as passed over, agents who do not meet the ring.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from router.config import MAX_PROFICIENCY

Entry = tuple[float, float, str, int]
_LEVELS = MAX_PROFICIENCY + 1  # index 0 unused, levels are 1..10
_COMPACT_SLACK = 32
# Stale entries are dropped lazily. Past 2x the live count a heap is queued for a rebuild,
# done a slice at a time: a few entries per entry pushed (`pay_compaction`, after each
# dispatch) and a slice per tick (`compact`). Only past 8x is a heap compacted on the spot.
_COMPACT_SOON = 2
_COMPACT_NOW = 8
# Entries a rebuild looks at for each entry pushed while rebuilds are pending (paid after
# each dispatch): more than a rebuild looks at per stale entry, so rebuilds keep up.
_COMPACT_PER_PUSH = 3


class OrderKind(enum.Enum):
    IDLE = 0
    LOAD = 1
    ROTATION = 2


class AttributeKind(enum.Enum):
    SKILL = "skill"
    LANGUAGE = "language"
    EVERYONE = "everyone"


# Members compared for every count and walk, read off their enum once: in Python 3.11 the
# enum metaclass's ``__getattr__`` hook makes each ``AttributeKind.SKILL`` cost ~0.1-0.5 µs.
SKILL = AttributeKind.SKILL
LANGUAGE = AttributeKind.LANGUAGE


class _AttributeHeaps:
    """One attribute's free holders: their count per level, and per order kind the level
    heaps, built the first time that order is walked (None until then; see the module
    docstring), then kept up to date."""

    __slots__ = ("heaps", "live", "levels", "built")

    def __init__(self, built: bool = False) -> None:
        self.heaps: list[list[list[Entry]] | None] = [
            [[] for _ in range(_LEVELS)] if built else None for _ in OrderKind
        ]
        self.live = [0] * _LEVELS
        self.levels: dict[str, int] = {}  # free holder -> its level
        self.built = built  # some order's heaps exist

    def count_at_least(self, level: int) -> int:
        return sum(self.live[level:])


class _Placement(NamedTuple):
    """Where an indexed agent's entries live, so removal can fix the live counts, and its
    order keys, so a pool defined later can take it in."""

    version: int
    skills: tuple[tuple[str, int], ...]
    languages: tuple[str, ...]
    keys: tuple[float, float, float]  # idle since, load key, last offer sequence


@dataclass(frozen=True)
class PoolSpec:
    """One ring of a queue as a pool: the skills it needs, the order its queue's strategy
    walks in and, for skill-weighted queues, the skill whose level comes first."""

    requirement: Mapping[str, int]
    order: OrderKind
    level_skill: str | None = None


@dataclass(eq=False, slots=True)
class _Pool:
    spec: PoolSpec
    queue: str
    ring: int
    heap: list[Entry] = field(default_factory=list)
    members: set[str] = field(default_factory=set)
    # Which of an agent's order entries (``order_entries``) this pool's heap holds, when
    # its order is one of the attribute heaps' (not skill-weighted).
    order_index: int = 0

    def __post_init__(self) -> None:
        self.order_index = self.spec.order.value


class _Shape(NamedTuple):
    """What an agent's profile and queues make of its entries (``AvailableAgents._shape_of``):
    valid while the same ``skills``, ``languages`` and ``queues`` objects come back and no
    queue's pools were redefined (a queue's agents change only with its pools)."""

    skills: Mapping[str, int]
    languages: Iterable[str]
    queues: Iterable[str]
    pools_version: int
    skill_items: tuple[tuple[str, int], ...]
    language_items: tuple[str, ...]
    pools: tuple[tuple[_Pool, float | None], ...]  # pools met, each with its level key


def order_entries(extension: str, placement: _Placement) -> tuple[Entry, Entry, Entry]:
    """An indexed agent's heap entries in each order kind (indexed by ``OrderKind.value``)."""
    idle_since, load_key, rotation = placement.keys
    version = placement.version
    return (
        (idle_since, 0.0, extension, version),
        (load_key, idle_since, extension, version),
        (rotation, idle_since, extension, version),
    )


@dataclass
class _Rebuild:
    """A heap being rebuilt without its stale entries, a slice at a time: its entries
    when the rebuild began are filtered into ``kept``, then swapped in."""

    heap: list[Entry]
    to_look_at: list[Entry]  # its entries when the rebuild began, then those pushed since
    position: int = 0
    kept: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
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
        self._everyone = _AttributeHeaps()  # heaps built on first use, as a skill's
        self._versions: dict[str, int] = {}
        self._placements: dict[str, _Placement] = {}
        self._skipped_kept = skipped_kept
        self._to_compact: dict[int, list[Entry]] = {}
        self._rebuild: _Rebuild | None = None
        self._owed = 0  # rebuild work owed for entries pushed (see ``pay_compaction``)
        # Entries of finished rebuilds, freed a slice at a time: freeing a big heap's stale
        # entries all at once held the loop for about half a millisecond.
        self._to_free: list[list[Entry]] = []
        # Per queue, one pool per ring: the free agents meeting it, in the queue's order.
        self._pools: dict[str, tuple[_Pool, ...]] = {}
        self._agent_pools: dict[str, list[_Pool]] = {}
        # Agents indexed since the last flush: the heap entries they still owe, each as
        # (heap, entry, live count for the compaction check).
        self._fresh: dict[str, list[tuple[list[Entry], Entry, int]]] = {}
        # Per agent, its attributes and the pools it meets, for the profile and queues it
        # had; worked out again when those change or any queue's pools are redefined.
        self._shapes: dict[str, _Shape] = {}
        self._pools_version = 0

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
        queues: Iterable[str] = (),
    ) -> None:
        """Index a free agent; ``queues``: the queues it serves, whose pools it joins
        for the rings it meets."""
        if extension in self._placements:
            self.remove(extension)
        version = self._versions.get(extension, 0) + 1
        self._versions[extension] = version
        shape = self._shapes.get(extension)
        if (
            shape is None
            or shape.pools_version != self._pools_version
            or shape.skills is not skills
            or shape.languages is not languages
            or shape.queues is not queues
        ):
            shape = self._shape_of(skills, languages, queues)
            self._shapes[extension] = shape
        placement = _Placement._make(
            (version, shape.skill_items, shape.language_items, (idle_since, load_key, rotation))
        )
        entries = order_entries(extension, placement)
        self._placements[extension] = placement
        # The heap entries wait in ``_fresh`` until a walk of that heap or the end of the
        # dispatch (``flush_fresh``): an agent freed and reserved again in one dispatch
        # (a call was waiting for it) never pushes them, nor leaves them stale behind.
        pending: list[tuple[list[Entry], Entry, int]] = []
        skill_index = self._skills
        for skill, level in placement.skills:
            heaps = skill_index.get(skill)
            if heaps is None:
                heaps = skill_index[skill] = _AttributeHeaps()
            live = heaps.live
            live[level] += 1
            heaps.levels[extension] = level
            if heaps.built:
                for heaps_by_level, entry in zip(heaps.heaps, entries, strict=True):
                    if heaps_by_level is not None:
                        pending.append((heaps_by_level[level], entry, live[level]))
        language_index = self._languages
        for language in placement.languages:
            heaps = language_index.get(language)
            if heaps is None:
                heaps = language_index[language] = _AttributeHeaps(built=True)
            self._pend(heaps, 1, entries, extension, pending)
        self._pend(self._everyone, 1, entries, extension, pending)
        if shape.pools:
            for pool, level_key in shape.pools:
                members = pool.members
                members.add(extension)
                pool_entry = (
                    entries[pool.order_index]
                    if level_key is None
                    else (level_key, idle_since, extension, version)
                )
                pending.append((pool.heap, pool_entry, len(members)))
            self._agent_pools[extension] = [pool for pool, _ in shape.pools]
        self._fresh[extension] = pending

    def _shape_of(
        self, skills: Mapping[str, int], languages: Iterable[str], queues: Iterable[str]
    ) -> _Shape:
        """What an agent's profile and queues make of its entries, worked out once."""
        met: list[tuple[_Pool, float | None]] = []
        for queue in queues:
            for pool in self._pools.get(queue, ()):
                spec = pool.spec
                if all(skills.get(skill, 0) >= minimum for skill, minimum in spec.requirement.items()):
                    level = (
                        None
                        if spec.level_skill is None
                        else -float(skills.get(spec.level_skill, 0))
                    )
                    met.append((pool, level))
        return _Shape(
            skills,
            languages,
            queues,
            self._pools_version,
            tuple(skills.items()),
            tuple(languages),
            tuple(met),
        )

    @staticmethod
    def _pend(
        attribute: _AttributeHeaps,
        level: int,
        entries: tuple[Entry, ...],
        extension: str,
        pending: list[tuple[list[Entry], Entry, int]],
    ) -> None:
        live = attribute.live
        live[level] += 1
        attribute.levels[extension] = level
        if attribute.built:
            for heaps_by_level, entry in zip(attribute.heaps, entries, strict=True):
                if heaps_by_level is not None:
                    pending.append((heaps_by_level[level], entry, live[level]))

    def flush_fresh(self) -> None:
        """Push the heap entries of the agents freed since the last flush (see ``add``)."""
        fresh = self._fresh
        if fresh:
            push = self._push_entry
            for pending in fresh.values():
                for heap, entry, live in pending:
                    push(heap, entry, live)
            fresh.clear()

    def _flush_fresh_into(self, heaps: Sequence[list[Entry]]) -> None:
        """Before a walk: push the fresh agents' entries that belong in ``heaps``."""
        push = self._push_entry
        wanted = {id(heap) for heap in heaps}
        for pending in self._fresh.values():
            for index in range(len(pending) - 1, -1, -1):
                heap, entry, live = pending[index]
                if id(heap) in wanted:
                    push(heap, entry, live)
                    del pending[index]

    def _join(
        self,
        pool: _Pool,
        extension: str,
        skills: Mapping[str, int],
        placement: _Placement,
        entries: tuple[Entry, Entry, Entry],
    ) -> Entry | None:
        """Make a free agent a member of ``pool`` if it meets the pool's ring, and return
        its entry for the pool's heap (None: not a member); ``entries``: its
        ``order_entries``, the same tuples the attribute heaps hold."""
        spec = pool.spec
        for skill, minimum in spec.requirement.items():
            if skills.get(skill, 0) < minimum:
                return None
        if spec.level_skill is not None:
            level = float(skills.get(spec.level_skill, 0))
            entry = (-level, placement.keys[0], extension, placement.version)
        else:
            entry = entries[pool.order_index]
        pool.members.add(extension)
        return entry

    def remove(self, extension: str) -> None:
        placement = self._placements.pop(extension, None)
        if placement is None:
            return
        self._versions[extension] = placement.version + 1
        self._fresh.pop(extension, None)  # entries never pushed: nothing left stale
        # ``_forget`` inlined: this runs for every attribute of every agent taking a call.
        skill_index = self._skills
        for skill, level in placement.skills:
            heaps = skill_index[skill]
            heaps.live[level] -= 1
            del heaps.levels[extension]
        language_index = self._languages
        for language in placement.languages:
            heaps = language_index[language]
            heaps.live[1] -= 1
            del heaps.levels[extension]
        self._forget(self._everyone, 1, extension)
        for pool in self._agent_pools.pop(extension, ()):
            pool.members.discard(extension)

    # ------------------------------------------------------------------ per-queue pools

    def set_pools(self, queue: str, specs: Iterable[PoolSpec], members: Iterable[str]) -> None:
        """(Re)define ``queue``'s pools, one per ring, filled from its free ``members``."""
        self.drop_pools(queue)
        self._pools_version += 1
        pools = self._pools[queue] = tuple(
            _Pool(spec, queue, ring) for ring, spec in enumerate(specs)
        )
        for extension in members:
            placement = self._placements.get(extension)
            if placement is None:
                continue
            skills = dict(placement.skills)
            entries = order_entries(extension, placement)
            for pool in pools:
                entry = self._join(pool, extension, skills, placement, entries)
                if entry is not None:
                    self._push_entry(pool.heap, entry, len(pool.members))
                    self._agent_pools.setdefault(extension, []).append(pool)

    def drop_pools(self, queue: str) -> None:
        self._pools_version += 1  # the pools agents meet, worked out in ``_shape_of``
        for pool in self._pools.pop(queue, ()):
            for extension in pool.members:
                joined = self._agent_pools.get(extension)
                if joined is not None:
                    joined.remove(pool)
                    if not joined:
                        del self._agent_pools[extension]

    def pool_count(self, queue: str, ring: int) -> int | None:
        """Free agents meeting ``queue``'s ring ``ring`` (None: the queue has no pools)."""
        pools = self._pools.get(queue)
        if pools is None or ring >= len(pools):
            return None
        return len(pools[ring].members)

    def first_rings(self, extension: str) -> dict[str, int]:
        """For each queue whose pools this free agent is in, the first ring it meets."""
        first: dict[str, int] = {}
        for pool in self._agent_pools.get(extension, ()):
            if pool.ring < first.get(pool.queue, pool.ring + 1):
                first[pool.queue] = pool.ring
        return first

    def walk_pool(
        self,
        queue: str,
        ring: int,
        reject_reason: Callable[[str], str | None] | None,
        runners_up: int = 0,
    ) -> WalkResult:
        """Visit the free agents meeting ``queue``'s ring ``ring`` in the queue's order; the
        first one ``reject_reason`` passes is chosen (as ``walk``, on one heap; None: every
        agent passes)."""
        result = WalkResult()
        heap = self._pools[queue][ring].heap
        if self._fresh:
            self._flush_fresh_into((heap,))
        versions = self._versions
        popped: list[Entry] = []
        try:
            while heap:
                entry = heapq.heappop(heap)
                if versions.get(entry[2]) != entry[3]:
                    continue  # stale (``_clean_top`` inlined): dropped for good
                popped.append(entry)
                if self._visit(entry, reject_reason, result, runners_up):
                    break
            return result
        finally:
            for entry in popped:
                heapq.heappush(heap, entry)

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
        level_heaps = self._level_heaps(heaps_of_attribute, order)
        if self._fresh:
            self._flush_fresh_into(level_heaps)
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
        reject_reason: Callable[[str], str | None] | None,
        result: WalkResult,
        runners_up: int,
    ) -> bool:
        """Judge one agent; True when the walk has seen enough."""
        extension = entry[2]
        reason = None if reject_reason is None else reject_reason(extension)
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
        if kind is SKILL:
            return self._skills.get(name)
        if kind is LANGUAGE:
            return self._languages.get(name)
        return self._everyone

    @staticmethod
    def _forget(attribute: _AttributeHeaps, level: int, extension: str) -> None:
        attribute.live[level] -= 1
        del attribute.levels[extension]

    def _level_heaps(self, attribute: _AttributeHeaps, order: OrderKind) -> list[list[Entry]]:
        """The attribute's heaps in ``order``, built from its free holders on first use."""
        level_heaps = attribute.heaps[order.value]
        if level_heaps is None:
            level_heaps = [[] for _ in range(_LEVELS)]
            placements = self._placements
            for extension, level in attribute.levels.items():
                placement = placements[extension]
                idle_since, load_key, rotation = placement.keys
                if order is OrderKind.IDLE:
                    entry = (idle_since, 0.0, extension, placement.version)
                elif order is OrderKind.LOAD:
                    entry = (load_key, idle_since, extension, placement.version)
                else:
                    entry = (rotation, idle_since, extension, placement.version)
                level_heaps[level].append(entry)
            for heap in level_heaps:
                heapq.heapify(heap)
            attribute.heaps[order.value] = level_heaps
            attribute.built = True
        return level_heaps

    def _push_entry(self, heap: list[Entry], entry: Entry, live: int) -> None:
        heapq.heappush(heap, entry)
        rebuild = self._rebuild
        if rebuild is not None:
            if rebuild.heap is heap:
                rebuild.to_look_at.append(entry)
            self._owed += _COMPACT_PER_PUSH
        elif self._to_compact:
            self._owed += _COMPACT_PER_PUSH
        size = len(heap)
        if size > _COMPACT_SOON * live + _COMPACT_SLACK:
            if size > _COMPACT_NOW * live + _COMPACT_SLACK:
                self._compact_heap(heap)
            else:
                self._to_compact[id(heap)] = heap

    def pay_compaction(self) -> int:
        """Push the fresh agents' entries, then do the rebuild work owed for the entries
        pushed since the last payment."""
        self.flush_fresh()
        owed, self._owed = self._owed, 0
        return self.compact(owed) if owed else 0

    def compact(self, budget: int) -> int:
        """Rebuild the heaps that gathered too many stale entries, looking at no more than
        about ``budget`` entries (a heap's rebuild goes on at the next call); returns how
        many entries were looked at."""
        self.flush_fresh()
        self._free_some(budget)
        looked = 0
        while looked < budget:
            rebuild = self._rebuild
            if rebuild is None:
                if not self._to_compact:
                    break
                heap = self._to_compact.pop(next(iter(self._to_compact)))
                rebuild = self._rebuild = _Rebuild(heap, list(heap))
            end = min(rebuild.position + budget - looked, len(rebuild.to_look_at))
            versions, kept = self._versions, rebuild.kept
            for item in rebuild.to_look_at[rebuild.position : end]:
                if versions.get(item[2]) == item[3]:
                    heapq.heappush(kept, item)
            looked += end - rebuild.position
            rebuild.position = end
            if end == len(rebuild.to_look_at):
                # Entries only ever leave a heap stale, so nothing live was missed.
                rebuild.heap[:] = kept
                self._to_free.append(rebuild.to_look_at)  # still holds every stale entry
                self._rebuild = None
        return looked

    def _free_some(self, budget: int) -> None:
        to_free = self._to_free
        while to_free and budget > 0:
            entries = to_free[-1]
            count = min(len(entries), budget)
            del entries[len(entries) - count :]
            budget -= count
            if not entries:
                to_free.pop()

    def _compact_heap(self, heap: list[Entry]) -> None:
        if self._rebuild is not None and self._rebuild.heap is heap:
            self._rebuild = None
        versions = self._versions
        heap[:] = [item for item in heap if versions.get(item[2]) == item[3]]
        heapq.heapify(heap)
