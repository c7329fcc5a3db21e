"""The call book: the queues and the calls the router holds, from enqueue until the
agent hangs up, and the keeping of each queue's waiting line.

A call in the book is WAITING (in its queue's line), HELD (out of the line, kept for
its preferred agent), OFFERED (an agent reserved for it) or CONNECTED. Calls that
entered a line, came back to it or widened their rings since the last dispatch are
noted (``take_changed``), so dispatch looks only at them. Times here are on the
router's monotonic clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from router.agent_book import AgentBook, serves
from router.calls import CallKind, CallStatus, RoutingRequest, WaitingCallRecord
from router.config import AgentProfile, QueueConfig
from router.errors import UnknownCall, UnknownQueue
from router.estimates import ArrivalRate, HandleTimeAverage
from router.service_levels import ServiceLevelCounters
from router.timers import TimerHeap, TimerKind
from router.waiting_line import ClassKey, LineEntry, WaitingLine, class_key, service_rank

# Members compared for every call, read off their enum once: in Python 3.11 the enum
# metaclass's ``__getattr__`` hook makes each ``CallStatus.WAITING`` cost ~0.1-0.5 µs.
WAITING = CallStatus.WAITING
HELD = CallStatus.HELD
LIVE = CallKind.LIVE
CALLBACK = CallKind.CALLBACK
EXPAND = TimerKind.EXPAND
MAX_WAIT = TimerKind.MAX_WAIT
ANNOUNCE = TimerKind.ANNOUNCE


@dataclass(eq=False, slots=True)
class BookedCall:
    call: RoutingRequest  # as given, ``enqueued_at`` in wall-clock time
    enqueued_at: float
    sequence: int
    language: str | None
    line_class: ClassKey
    entered_queue_at: float
    rings_active: int
    status: CallStatus = CallStatus.WAITING
    agent: str | None = None
    reservation_id: str | None = None
    excluded: dict[str, str] = field(default_factory=dict)  # agent -> why it must not get this call
    hold_done: bool = False
    hold_until: float | None = None  # when its preferred-agent hold ended (or ends)
    answered_at: float | None = None
    timer_generation: int = 0
    earlier_offers: list[tuple[str, str]] = field(default_factory=list)
    # The site the call waits at when it is another site's (held here only while one of
    # this site's agents is reserved for it): never in this site's line.
    for_site: str | None = None
    # (site, agent) another site reserved for this call waiting here, while it is offered
    # there or connected to that agent.
    elsewhere: tuple[str, str] | None = None

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def line_entry(self) -> LineEntry:
        return (self.enqueued_at, self.sequence, self.call.call_id)


@dataclass(eq=False, slots=True)
class BookedQueue:
    config: QueueConfig
    handle_time: HandleTimeAverage
    arrivals: ArrivalRate
    line: WaitingLine = field(default_factory=WaitingLine)
    held: dict[str, None] = field(default_factory=dict)
    agents: set[str] = field(default_factory=set)
    service: ServiceLevelCounters = field(default_factory=ServiceLevelCounters)


class CallBook:
    def __init__(self, agents: AgentBook, timers: TimerHeap) -> None:
        self._agents = agents
        self._timers = timers
        self.queues: dict[str, BookedQueue] = {}
        # Which queues have a ring needing each skill, and which have a ring anyone meets:
        # an agent can serve only those (see ``queues_served_by``).
        self._queues_needing: dict[str, set[str]] = {}
        self._open_queues: set[str] = set()
        self._skills_of_queue: dict[str, set[str]] = {}
        self._calls: dict[str, BookedCall] = {}
        self._changed: dict[str, None] = {}
        self._sequence = itertools.count(1)
        # Calls whose timers are owed: (call, its queue, when filed, its timer generation).
        self._timers_owed: dict[str, tuple[BookedCall, BookedQueue, float, int]] = {}

    # ------------------------------------------------------------------ lookups

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __getitem__(self, call_id: str) -> BookedCall:
        return self._calls[call_id]

    def items(self) -> Iterator[tuple[str, BookedCall]]:
        return iter(list(self._calls.items()))

    def get(self, call_id: str) -> BookedCall | None:
        return self._calls.get(call_id)

    def require(self, call_id: str) -> BookedCall:
        waiting = self._calls.get(call_id)
        if waiting is None:
            raise UnknownCall(call_id)
        return waiting

    def queue(self, name: str) -> BookedQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise UnknownQueue(name)
        return queue

    def put_queue(self, queue: BookedQueue) -> None:
        """Add a queue, or re-index one whose configuration was replaced."""
        name = queue.config.name
        self._unindex(name)
        self.queues[name] = queue
        skills = {skill for ring in queue.config.rings for skill in ring}
        self._skills_of_queue[name] = skills
        for skill in skills:
            self._queues_needing.setdefault(skill, set()).add(name)
        if any(not ring for ring in queue.config.rings):
            self._open_queues.add(name)

    def drop_queue(self, name: str) -> None:
        self._unindex(name)
        self.queues.pop(name, None)

    def _unindex(self, name: str) -> None:
        self._open_queues.discard(name)
        for skill in self._skills_of_queue.pop(name, ()):
            needing = self._queues_needing[skill]
            needing.discard(name)
            if not needing:
                del self._queues_needing[skill]

    def queues_served_by(self, profile: AgentProfile) -> set[str]:
        """The queues this agent could take a call of (some ring met), looking only at
        queues that need one of its skills (or nothing at all), not at every queue."""
        candidates = set(self._open_queues)
        for skill in profile.skills:
            candidates.update(self._queues_needing.get(skill, ()))
        return {name for name in candidates if serves(profile, self.queues[name].config)}

    def queue_of(self, waiting: BookedCall) -> BookedQueue:
        return self.queues[waiting.call.queue]

    def of_queue(self, name: str, offered: Iterable[str]) -> Iterator[BookedCall]:
        """The queue's calls in line, held, then ``offered`` (ids of calls reserved for)."""
        queue = self.queues.get(name)
        if queue is None:
            return
        for _, entry in queue.line.entries():
            yield self._calls[entry[2]]
        for call_id in queue.held:
            yield self._calls[call_id]
        for call_id in offered:
            yield self._calls[call_id]

    # ------------------------------------------------------------------ entering and leaving

    def new_call(
        self, call: RoutingRequest, enqueued_at: float, language: str | None, now: float, rings_active: int
    ) -> BookedCall:
        waiting = BookedCall(
            call=call,
            enqueued_at=enqueued_at,
            sequence=next(self._sequence),
            language=language,
            line_class=class_key(call.priority, language, call.skills),
            entered_queue_at=now,
            rings_active=rings_active,
        )
        self._calls[call.call_id] = waiting
        return waiting

    def forget(self, call_id: str) -> None:
        del self._calls[call_id]
        self._changed.pop(call_id, None)

    def mark_changed(self, waiting: BookedCall) -> None:
        self._changed[waiting.call_id] = None

    def take_changed(self) -> list[BookedCall]:
        """The calls noted since the last time, still in the book."""
        calls = [self._calls[c] for c in self._changed if c in self._calls]
        self._changed.clear()
        return calls

    # ------------------------------------------------------------------ line keeping

    def schedule_timers(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        """The call's timers (expansion, max wait, announcements) for its current place in
        line, owed until ``flush_timers``: a call that gets its agent in the same dispatch
        (most, when agents are free) never needs them, and timers left stale in the heap
        cost the sweeps later. Owing them changes nothing: the clock does not move within
        a command, and the router flushes before it runs or reports timers."""
        self._timers_owed[waiting.call_id] = (waiting, queue, now, waiting.timer_generation)

    def flush_timers(self) -> None:
        """Schedule the timers owed by the calls still in a line (see ``schedule_timers``)."""
        owed = self._timers_owed
        if not owed:
            return
        calls = self._calls
        for waiting, queue, now, generation in owed.values():
            status = waiting.status
            if (
                (status is WAITING or status is HELD)
                and waiting.timer_generation == generation
                and calls.get(waiting.call.call_id) is waiting
            ):
                self._schedule_timers_now(waiting, queue, now)
        self._timers_owed = {}

    def _schedule_timers_now(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        config = queue.config
        generation = waiting.timer_generation
        call_id = waiting.call_id
        if waiting.rings_active <= len(config.expansion):
            ring = config.expansion[waiting.rings_active - 1]
            self._timers.schedule(
                waiting.enqueued_at + ring.after_seconds, EXPAND, call_id, generation
            )
        if waiting.call.kind is CALLBACK:
            return  # nobody on the line to announce to, and the request has its own expiry
        if config.max_wait_seconds is not None:
            self._timers.schedule(
                waiting.entered_queue_at + config.max_wait_seconds, MAX_WAIT, call_id, generation
            )
        self._timers.schedule(now + config.announce_interval_seconds, ANNOUNCE, call_id, generation)

    def enter_line(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        """A new call joins its class in ``queue`` at its enqueue time. A callback request is
        no new arrival: the caller it stands for was counted when they first called."""
        if waiting.call.kind is LIVE:
            queue.arrivals.observe(now)
        queue.line.add(waiting.line_class, waiting.line_entry)
        self.schedule_timers(waiting, queue, now)
        self._changed[waiting.call_id] = None

    def file_in_line(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        """Put a call that is out of every line into ``queue`` under its current configuration."""
        config = queue.config
        call = waiting.call
        waiting.language = call.language if call.language is not None else config.language
        waiting.line_class = class_key(call.priority, waiting.language, call.skills)
        waiting.rings_active = config.rings_active_after(now - waiting.enqueued_at)
        waiting.status = CallStatus.WAITING
        waiting.timer_generation += 1
        queue.line.add(waiting.line_class, waiting.line_entry)
        self.schedule_timers(waiting, queue, now)
        self._changed[waiting.call_id] = None

    def take_out_of_line(self, waiting: BookedCall) -> None:
        if waiting.status is HELD:
            self.release_hold(waiting, back_in_line=False)
            return
        self.queue_of(waiting).line.remove(waiting.line_class, waiting.line_entry)

    def return_to_line(self, waiting: BookedCall, now: float) -> None:
        """Back to the ORIGINAL place: same enqueue time and sequence number."""
        waiting.status = CallStatus.WAITING
        waiting.agent = None
        waiting.reservation_id = None
        queue = self.queues.get(waiting.call.queue)
        if queue is None:  # cannot happen: a queue with offered calls cannot be removed
            raise UnknownQueue(waiting.call.queue)
        queue.line.add(waiting.line_class, waiting.line_entry)
        # Timers that fired while the call was offered were dropped: start them again.
        waiting.timer_generation += 1
        self.schedule_timers(waiting, queue, now)
        self._changed[waiting.call_id] = None

    def hold(self, waiting: BookedCall, agent: str, until: float) -> None:
        """Keep the call out of line for ``agent`` until ``until``."""
        self.take_out_of_line(waiting)
        waiting.status = CallStatus.HELD
        waiting.hold_done = True
        waiting.hold_until = until
        waiting.agent = agent
        self._agents[agent].held_calls[waiting.call_id] = None
        self.queue_of(waiting).held[waiting.call_id] = None
        self._timers.schedule(until, TimerKind.HOLD, waiting.call_id, waiting.timer_generation)

    def release_hold(self, waiting: BookedCall, back_in_line: bool = True) -> None:
        agent = self._agents.get(waiting.agent or "")
        if agent is not None:
            agent.held_calls.pop(waiting.call_id, None)
        queue = self.queue_of(waiting)
        queue.held.pop(waiting.call_id, None)
        waiting.agent = None
        waiting.status = CallStatus.WAITING
        if back_in_line:
            queue.line.add(waiting.line_class, waiting.line_entry)
            self._changed[waiting.call_id] = None

    # ------------------------------------------------------------------ order

    def rank(self, waiting: BookedCall, now: float) -> tuple[float, float, int]:
        config = self.queues[waiting.call.queue].config
        return service_rank(
            waiting.call.priority,
            waiting.enqueued_at,
            waiting.sequence,
            now,
            config.sla_seconds,
            config.effective_aging_weight,
        )

    def position_of(self, waiting: BookedCall, now: float) -> int:
        """1-based place in line (1 = next); 0 once an agent is reserved or connected."""
        status = waiting.status
        if status is not WAITING and status is not HELD:
            return 0
        queue = self.queues[waiting.call.queue]
        config = queue.config
        mine = self.rank(waiting, now)
        ahead = queue.line.count_ahead(mine, now, config.sla_seconds, config.effective_aging_weight)
        if queue.held:
            ahead += sum(1 for call_id in queue.held if self.rank(self._calls[call_id], now) < mine)
        return ahead + 1

    def record_of(self, waiting: BookedCall, now: float) -> WaitingCallRecord:
        return WaitingCallRecord(
            call=waiting.call,
            status=waiting.status,
            waited_seconds=(now if waiting.answered_at is None else waiting.answered_at)
            - waiting.enqueued_at,
            position=self.position_of(waiting, now) or None,
            agent=waiting.agent,
            rings_active=waiting.rings_active,
        )
