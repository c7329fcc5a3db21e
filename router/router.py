"""The router facade: agents, queues, waiting calls and the decisions that match them.

Pure and synchronous; time comes from the injected ``clock``. Nothing here does
I/O: the PBX turns each returned ``Reservation`` into an INVITE to the agent's
phone and reports back with ``ringing``/``answered``/``reservation_failed``;
``tick()`` must be called periodically (e.g. every 250 ms) to run the timers.
What happens is pushed, as it happens, as events (``events.routing``) to the
``publish`` sink the router was built with.

Call flow::

    enqueue ─► WAITING ──dispatch──► OFFERED ──ringing──► (ringing) ──answered──► CONNECTED
                 ▲  │ preferred agent busy                │ failed / expired          │ call_ended
                 │  └─► HELD ─(agent frees / hold ends)   └──► back to WAITING,        ▼
                 │                                              original place     agent WRAP_UP
                 └──────────── overflow into another queue (max wait)

When are matches made? ``dispatch()`` (also run by ``tick()``) keeps one
invariant: afterwards no indexed (free) agent qualifies for any call in line.
So only changes need looking at: agents that became free since the last
dispatch, then calls that entered the line, came back to it or widened their
skill rings, in service order. A freed agent finds the call to serve first among
the heads of the classes of the queues it serves (see ``router.waiting_line``)
and that call then picks its agent by its queue's strategy through the
availability index (see ``router.availability``) — so even when several agents
free up at once the queue's strategy decides which of them gets the call.

Agent preference. A call's ``preferred_agent`` (or, when the queue sets
``preferred_agent_wait_seconds``, the agent who last served this caller: the
call's ``last_agent`` from the customer record, else the router's memory) is
offered the call first when free. If that agent is logged in but busy and the
queue allows a wait, the call is HELD for it until the earlier of
``entered queue + preferred_agent_wait_seconds`` and ``enqueued +
preferred_agent_max_hold_seconds`` (default: the SLA), then goes back to the line
where any free qualified agent takes it. Every decision says so in its
``preference`` field.

Ring-no-answer. An agent whose phone rang out goes on break 'rona'; with
``rona_return_seconds`` set it becomes available again after that long. The
call's next decision lists the agents who did not take it (``earlier_offers``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from events.event import Event, EventSink
from events.routing import (
    AgentReserved,
    AgentRinging,
    AgentStateChanged,
    AnnouncementDue,
    CallAbandoned,
    CallDropped,
    CallExpanded,
    CallOverflowed,
    CallQueued,
    QueueCallAnswered,
    QueueCallEnded,
    ReservationExpired,
    ReservationFailed,
    SiteHealthChanged,
)
from router.agent_state import (
    HANDLING_STATES,
    STAFFED_STATES,
    AgentActivity,
    AgentState,
    next_state,
)
from router.availability import AttributeKind, AvailableAgents, OrderKind
from router.calls import Call, CallStatus, WaitingCallRecord
from router.config import AgentProfile, QueueConfig, Strategy
from router.errors import (
    AgentBusy,
    DuplicateCall,
    InvalidArgument,
    InvalidTransition,
    QueueInUse,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
    UnknownReservation,
)
from router.estimates import (
    ArrivalRate,
    HandleTimeAverage,
    erlang_c_wait,
    release_wait,
    remaining_handle,
)
from router.explanations import (
    CallOrder,
    CandidateScore,
    CompetingCall,
    Decision,
    Preference,
    Rejection,
)
from router.occupancy import NO_LOAD, OccupancyWindow, add_to_load_key
from router.views import AgentSnapshot, QueueStats, service_level
from router.waiting_line import ClassKey, LineEntry, WaitingLine, class_key, service_rank

FAILURE_REASONS = frozenset({"no_answer", "busy", "declined", "error"})
RONA_REASON = "rona"  # break reason of an agent who let a call ring out
_PREFERENCE_LABEL = {"customer": "preferred agent", "last_agent": "last agent"}

_ORDER_OF_STRATEGY = {
    Strategy.LONGEST_IDLE: OrderKind.IDLE,
    Strategy.LEAST_OCCUPANCY: OrderKind.LOAD,
    Strategy.ROUND_ROBIN: OrderKind.ROTATION,
    Strategy.SKILL_WEIGHTED: OrderKind.IDLE,
}


@dataclass(frozen=True)
class Reservation:
    """An agent held for one call; the PBX should now ring ``agent``'s phone."""

    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float
    decision: Decision

    def to_dict(self) -> dict[str, object]:
        return {
            "reservation_id": self.reservation_id,
            "call_id": self.call_id,
            "agent": self.agent,
            "queue": self.queue,
            "expires_at": self.expires_at,
            "decision": self.decision.to_dict(),
        }


@dataclass(eq=False)
class _Agent:
    profile: AgentProfile
    state_since: float
    idle_since: float
    occupancy: OccupancyWindow
    state: AgentState = AgentState.OFFLINE
    reason: str | None = None
    reachable: bool = True
    load_key: float = NO_LOAD
    rotation: int = 0
    handling_since: float | None = None
    last_caller: str | None = None
    reservation_id: str | None = None
    call_id: str | None = None
    call_queue: str | None = None
    talk_seconds: float = 0.0
    wrap_until: float | None = None
    pending: tuple[AgentActivity, str | None] | None = None
    queues: set[str] = field(default_factory=set)
    held_calls: dict[str, None] = field(default_factory=dict)
    rona_since: float | None = None
    # Calls the agent is on that did not come from a queue (a direct call, calling the IVR):
    # busy for routing while any is up, whatever the routing state says.
    personal_calls: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Call:
    call: Call
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

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def line_entry(self) -> LineEntry:
        return (self.enqueued_at, self.sequence, self.call.call_id)


@dataclass(eq=False)
class _Reservation:
    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float
    decision: Decision
    ringing: bool = False

    def public(self) -> Reservation:
        return Reservation(
            self.reservation_id,
            self.call_id,
            self.agent,
            self.queue,
            self.expires_at,
            self.decision,
        )


@dataclass(eq=False)
class _Queue:
    config: QueueConfig
    handle_time: HandleTimeAverage
    arrivals: ArrivalRate
    line: WaitingLine = field(default_factory=WaitingLine)
    held: dict[str, None] = field(default_factory=dict)
    agents: set[str] = field(default_factory=set)
    answered: int = 0
    answered_within_sla: int = 0
    abandoned: int = 0
    abandoned_within_sla: int = 0
    dropped: int = 0


class _Timer(Enum):
    RESERVATION = "reservation"
    WRAP_UP = "wrap_up"
    EXPAND = "expand"
    MAX_WAIT = "max_wait"
    HOLD = "hold"
    ANNOUNCE = "announce"
    RONA_RETURN = "rona_return"


# Timers keyed by call id, run only for the call's current generation.
_CALL_TIMERS = frozenset({_Timer.EXPAND, _Timer.MAX_WAIT, _Timer.HOLD, _Timer.ANNOUNCE})


def _first_unmet(skills: Mapping[str, int], requirement: Mapping[str, int]) -> str | None:
    for skill, minimum in requirement.items():
        level = skills.get(skill, 0)
        if level < minimum:
            return f"skill {skill} {level} < {minimum}" if level else f"skill {skill} missing"
    return None


def _meets(skills: Mapping[str, int], requirement: Mapping[str, int]) -> bool:
    return all(skills.get(skill, 0) >= minimum for skill, minimum in requirement.items())


def _nobody_listens(event: Event) -> None:
    """The sink of a router built without one: its events go nowhere."""


def _merged(ring: Mapping[str, int], extra: Mapping[str, int]) -> dict[str, int]:
    requirement = dict(ring)
    for skill, minimum in extra.items():
        requirement[skill] = max(requirement.get(skill, 0), minimum)
    return requirement


class Router:
    """Skill- and load-aware automatic call distribution; see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        reservation_timeout_seconds: float = 5.0,
        occupancy_window_seconds: float = 3600.0,
        arrival_window_seconds: float = 900.0,
        default_handle_seconds: float = 180.0,
        handle_time_smoothing: float = 0.2,
        decisions_per_call: int = 10,
        decision_calls_kept: int = 10_000,
        decisions_max_age_seconds: float = 300.0,
        explain_sample: int = 8,
        explain_runners_up: int = 2,
        callers_remembered: int = 10_000,
        rona_return_seconds: float | None = None,
        publish: EventSink | None = None,
    ) -> None:
        self._clock = clock
        # Every event is pushed here as it happens (None: nobody listens).
        self._publish: EventSink = publish if publish is not None else _nobody_listens
        self._reservation_timeout = reservation_timeout_seconds
        self._occupancy_window = occupancy_window_seconds
        self._arrival_window = arrival_window_seconds
        self._default_handle = default_handle_seconds
        self._handle_smoothing = handle_time_smoothing
        self._decisions_per_call = decisions_per_call
        self._decision_calls_kept = decision_calls_kept
        self._decisions_max_age = decisions_max_age_seconds
        self._explain_sample = explain_sample
        self._runners_up = explain_runners_up
        self._callers_remembered = callers_remembered
        if rona_return_seconds is not None and rona_return_seconds <= 0:
            raise InvalidArgument(f"rona_return_seconds must be > 0, got {rona_return_seconds}")
        self._rona_return = rona_return_seconds

        self._agents: dict[str, _Agent] = {}
        self._skill_members: dict[str, dict[str, None]] = {}
        self._language_members: dict[str, dict[str, None]] = {}
        self._site_members: dict[str, dict[str, None]] = {}
        self._unhealthy_sites: set[str] = set()
        self._available = AvailableAgents(skipped_kept=explain_sample)
        self._queues: dict[str, _Queue] = {}
        self._calls: dict[str, _Call] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._timers: list[tuple[float, int, _Timer, str, int]] = []
        self._pending_agents: dict[str, None] = {}
        self._pending_calls: dict[str, None] = {}
        # Per call, its last decisions (a tuple: a bounded deque reserves room for 64).
        self._decisions: OrderedDict[str, tuple[Decision, ...]] = OrderedDict()
        self._decisions_released: dict[str, float] = {}  # call -> when seen out of the router
        self._last_agent_of_caller: OrderedDict[str, str] = OrderedDict()
        self._free_in_cache: dict[tuple[str, ClassKey, int], tuple[float, list[float]]] = {}
        self._sequence = itertools.count(1)
        self._offer_counter = 0

    # ------------------------------------------------------------------ configuration

    def upsert_agent(self, profile: AgentProfile) -> None:
        """Add an agent (OFFLINE) or replace its profile, keeping its live state."""
        now = self._clock()
        agent = self._agents.get(profile.extension)
        if agent is None:
            agent = _Agent(
                profile=profile,
                state_since=now,
                idle_since=now,
                occupancy=OccupancyWindow(self._occupancy_window),
            )
            self._agents[profile.extension] = agent
        else:
            self._forget_memberships(agent)
            self._available.remove(profile.extension)
            agent.profile = profile
        extension = profile.extension
        for skill in profile.skills:
            self._skill_members.setdefault(skill, {})[extension] = None
        for language in profile.languages:
            self._language_members.setdefault(language, {})[extension] = None
        self._site_members.setdefault(profile.site, {})[extension] = None
        for name in agent.queues:
            self._queues[name].agents.discard(extension)
        agent.queues = {
            name for name, queue in self._queues.items() if self._serves(profile, queue.config)
        }
        for name in agent.queues:
            self._queues[name].agents.add(extension)
        for call_id in list(agent.held_calls):
            held = self._calls[call_id]
            if self._qualification(agent, held)[1] is not None:
                self._release_hold(held)
        self._refresh_index(agent)

    def remove_agent(self, extension: str) -> None:
        agent = self._agent(extension)
        if agent.state in HANDLING_STATES:
            raise AgentBusy(f"agent {extension} is {agent.state.value}; end its call first")
        for call_id in list(agent.held_calls):
            self._release_hold(self._calls[call_id])
        self._available.remove(extension)
        self._forget_memberships(agent)
        for name in agent.queues:
            self._queues[name].agents.discard(extension)
        self._pending_agents.pop(extension, None)
        del self._agents[extension]

    def upsert_queue(self, config: QueueConfig) -> None:
        """Add or replace a queue; calls already waiting keep their place and are re-timed."""
        queue = self._queues.get(config.name)
        if queue is None:
            queue = _Queue(
                config=config,
                handle_time=HandleTimeAverage(self._default_handle, self._handle_smoothing),
                arrivals=ArrivalRate(self._arrival_window),
            )
            self._queues[config.name] = queue
        else:
            queue.config = config
        for extension in queue.agents:
            self._agents[extension].queues.discard(config.name)
        queue.agents = self._agents_serving(config)
        for extension in queue.agents:
            self._agents[extension].queues.add(config.name)
            if extension in self._available:
                self._pending_agents[extension] = None
        now = self._clock()
        for waiting in list(self._calls_of_queue(config.name)):
            if waiting.status in (CallStatus.WAITING, CallStatus.HELD):
                self._take_out_of_line(waiting)
                self._file_in_line(waiting, queue, now)

    def remove_queue(self, name: str) -> None:
        queue = self._queue(name)
        in_use = [
            c.call_id for c in self._calls_of_queue(name) if c.status is not CallStatus.CONNECTED
        ]
        if in_use:
            raise QueueInUse(f"queue {name} still has {len(in_use)} call(s), e.g. {in_use[0]}")
        for extension in queue.agents:
            self._agents[extension].queues.discard(name)
        del self._queues[name]

    def set_site_health(self, site: str, healthy: bool) -> None:
        """Agents at an unhealthy site are never chosen; calls they hold are not touched."""
        was_healthy = site not in self._unhealthy_sites
        if was_healthy == healthy:
            return
        if healthy:
            self._unhealthy_sites.discard(site)
        else:
            self._unhealthy_sites.add(site)
        self._publish(SiteHealthChanged(site, healthy, at=self._clock()))
        for extension in self._site_members.get(site, {}):
            self._refresh_index(self._agents[extension])

    # ------------------------------------------------------------------ agent state

    def login(self, extension: str) -> None:
        agent = self._agent(extension)
        if not agent.reachable:
            raise InvalidTransition(f"agent {extension} cannot log in: its phone is not registered")
        self._transition(agent, AgentActivity.LOGIN)

    def logout(self, extension: str) -> None:
        """Log out; on a call the logout happens when the call's wrap-up ends."""
        agent = self._agent(extension)
        if agent.state in (AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL):
            agent.pending = (AgentActivity.LOGOUT, None)
            return
        if agent.state is AgentState.WRAP_UP:
            agent.pending = (AgentActivity.LOGOUT, None)
            self._finish_wrap_up(agent)
            return
        self._transition(agent, AgentActivity.LOGOUT)
        self._after_leaving_service(agent)

    def start_break(self, extension: str, reason: str) -> None:
        """Go not-ready with ``reason``; on a call the break starts when its wrap-up ends."""
        agent = self._agent(extension)
        if agent.state in (AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL):
            agent.pending = (AgentActivity.BREAK_START, reason)
            return
        if agent.state is AgentState.WRAP_UP:
            agent.pending = (AgentActivity.BREAK_START, reason)
            self._finish_wrap_up(agent)
            return
        self._transition(agent, AgentActivity.BREAK_START, reason)

    def end_break(self, extension: str) -> None:
        agent = self._agent(extension)
        if agent.pending is not None and agent.pending[0] is AgentActivity.BREAK_START:
            agent.pending = None  # the agent changed its mind before the call ended
            return
        self._transition(agent, AgentActivity.BREAK_END)

    def end_wrap_up(self, extension: str) -> None:
        """The agent is ready before its wrap-up time is over."""
        agent = self._agent(extension)
        if agent.state is not AgentState.WRAP_UP:
            raise InvalidTransition(f"agent {extension} is {agent.state.value}, not in wrap-up")
        self._finish_wrap_up(agent)

    def agent_reachable(self, extension: str, reachable: bool) -> None:
        """Registration news from the registrar. An unreachable agent goes OFFLINE: at once
        when idle, failing its reservation if it had one, or after its current call."""
        agent = self._agent(extension)
        agent.reachable = reachable
        if reachable:
            self._refresh_index(agent)
            return
        if agent.reservation_id is not None:
            self._fail_reservation(self._reservations[agent.reservation_id], "error")
        if agent.state is AgentState.ON_CALL:
            agent.pending = (AgentActivity.LOGOUT, None)
        elif agent.state is AgentState.WRAP_UP:
            self._finish_wrap_up(agent)
        elif agent.state is not AgentState.OFFLINE:
            self._transition(agent, AgentActivity.UNREACHABLE)
        self._after_leaving_service(agent)

    def personal_call_started(self, extension: str, call_id: str) -> None:
        """The agent is engaged on a call that did not come from a queue (either direction):
        never offered a queue call until ``personal_call_ended`` for every such call."""
        agent = self._agent(extension)
        agent.personal_calls.add(call_id)
        self._refresh_index(agent)

    def personal_call_ended(self, extension: str, call_id: str) -> None:
        agent = self._agent(extension)
        agent.personal_calls.discard(call_id)
        self._refresh_index(agent)

    # ------------------------------------------------------------------ call flow

    def enqueue(self, call: Call) -> int:
        """Put a call in line; returns its 1-based position. Run ``dispatch()`` to route it."""
        queue = self._queue(call.queue)
        if call.call_id in self._calls:
            raise DuplicateCall(f"call {call.call_id} is already known to the router")
        now = self._clock()
        enqueued_at = now if call.enqueued_at is None else call.enqueued_at
        call = replace(call, enqueued_at=enqueued_at)
        language = call.language if call.language is not None else queue.config.language
        waiting = _Call(
            call=call,
            enqueued_at=enqueued_at,
            sequence=next(self._sequence),
            language=language,
            line_class=class_key(call.priority, language, call.skills),
            entered_queue_at=now,
            rings_active=queue.config.rings_active_after(now - enqueued_at),
        )
        if call.caller in self._agents:
            waiting.excluded[call.caller] = "the caller of this call"
        self._calls[call.call_id] = waiting
        queue.arrivals.observe(now)
        queue.line.add(waiting.line_class, waiting.line_entry)
        self._schedule_call_timers(waiting, queue, now)
        self._pending_calls[call.call_id] = None
        position = self._position_of(waiting, now)
        self._publish(
            CallQueued(
                call.call_id,
                call.queue,
                call.priority,
                position,
                enqueued_at,
                at=now,
            )
        )
        return position

    def abandon(self, call_id: str) -> WaitingCallRecord | None:
        """The caller hung up. Returns what the router knew, or None for an unknown call."""
        return self._leave_line(call_id, None)

    def drop(self, call_id: str, reason: str) -> WaitingCallRecord | None:
        """The server ended the call (``reason``: e.g. 'media_timeout'). A call in line or
        being offered is counted as dropped, not abandoned; a connected one simply ends."""
        return self._leave_line(call_id, reason)

    def _leave_line(self, call_id: str, dropped_for: str | None) -> WaitingCallRecord | None:
        waiting = self._calls.get(call_id)
        if waiting is None:
            return None
        now = self._clock()
        record = self._record_of(waiting, now)
        if waiting.status is CallStatus.CONNECTED:
            self.call_ended(call_id)
            return record
        queue = self._queues.get(waiting.call.queue)
        if waiting.status is CallStatus.OFFERED:
            reservation = self._reservations.pop(waiting.reservation_id or "")
            agent = self._agents[reservation.agent]
            self._transition(agent, AgentActivity.RELEASE)
            self._clear_agent_call(agent)
            self._apply_pending(agent)
        else:
            self._take_out_of_line(waiting)
        del self._calls[call_id]
        self._pending_calls.pop(call_id, None)
        waited = now - waiting.enqueued_at
        if dropped_for is not None:
            if queue is not None:
                queue.dropped += 1
            self._publish(CallDropped(call_id, waiting.call.queue, waited, dropped_for, at=now))
            return record
        within_sla = queue is not None and waited <= queue.config.sla_seconds
        if queue is not None:
            queue.abandoned += 1
            queue.abandoned_within_sla += within_sla
        self._publish(CallAbandoned(call_id, waiting.call.queue, waited, within_sla, at=now))
        return record

    def dispatch(self) -> list[Reservation]:
        """Match the agents and calls that changed since the last dispatch."""
        reservations: list[Reservation] = []
        while self._pending_agents:
            extension = next(iter(self._pending_agents))
            del self._pending_agents[extension]
            agent = self._agents.get(extension)
            if agent is None or extension not in self._available:
                continue
            best, competing = self._best_call_for(agent)
            if best is None:
                continue
            reservation = self._route(best, "agent", competing, freed_agent=agent)
            if reservation is not None:
                reservations.append(reservation)
            if extension in self._available and (
                reservation is not None or best.status is CallStatus.HELD
            ):
                # Someone else took the call, or it is kept for its preferred agent: look again.
                self._pending_agents = {extension: None, **self._pending_agents}
        now = self._clock()
        calls = [self._calls[c] for c in self._pending_calls if c in self._calls]
        self._pending_calls.clear()
        calls.sort(key=lambda waiting: self._rank(waiting, now))
        for waiting in calls:
            if waiting.status is CallStatus.WAITING:
                reservation = self._route(waiting, "call", ())
                if reservation is not None:
                    reservations.append(reservation)
        return reservations

    def ringing(self, reservation_id: str) -> None:
        """The agent's phone rings: the ring timeout now runs instead of the reservation timeout."""
        reservation = self._reservation(reservation_id)
        if reservation.ringing:
            return
        now = self._clock()
        agent = self._agents[reservation.agent]
        self._transition(agent, AgentActivity.RING)
        reservation.ringing = True
        queue = self._queues.get(reservation.queue)
        ring_timeout = queue.config.ring_timeout_seconds if queue else self._reservation_timeout
        reservation.expires_at = now + ring_timeout
        self._schedule(reservation.expires_at, _Timer.RESERVATION, reservation_id)
        self._publish(
            AgentRinging(
                reservation_id,
                reservation.call_id,
                agent.profile.extension,
                reservation.expires_at,
                at=now,
            )
        )

    def answered(self, reservation_id: str) -> None:
        reservation = self._reservation(reservation_id)
        now = self._clock()
        agent = self._agents[reservation.agent]
        waiting = self._calls[reservation.call_id]
        self._transition(agent, AgentActivity.ANSWER)
        del self._reservations[reservation_id]
        agent.reservation_id = None
        agent.last_caller = waiting.call.caller or None
        waiting.status = CallStatus.CONNECTED
        waiting.reservation_id = None
        waiting.answered_at = now
        waited = now - waiting.enqueued_at
        queue = self._queues.get(reservation.queue)
        within_sla = queue is not None and waited <= queue.config.sla_seconds
        if queue is not None:
            queue.answered += 1
            queue.answered_within_sla += within_sla
        if waiting.call.caller:
            memory = self._last_agent_of_caller
            memory[waiting.call.caller] = agent.profile.extension
            memory.move_to_end(waiting.call.caller)
            while len(memory) > self._callers_remembered:
                memory.popitem(last=False)
        self._publish(
            QueueCallAnswered(
                waiting.call_id,
                reservation.queue,
                agent.profile.extension,
                waited,
                within_sla,
                at=now,
            )
        )

    def reservation_failed(self, reservation_id: str, reason: str) -> None:
        """The offer did not connect. The call goes back to its original place in line; on
        'no_answer' the agent is made not-ready (break 'rona'); on 'busy', 'declined' or
        'error' the agent stays ready but is never offered this call again."""
        if reason not in FAILURE_REASONS:
            raise InvalidArgument(
                f"reservation failure reason must be one of {sorted(FAILURE_REASONS)}, got {reason!r}"
            )
        self._fail_reservation(self._reservation(reservation_id), reason)

    def call_ended(self, call_id: str) -> None:
        """The connected call hung up: the agent enters wrap-up. For a call still in line
        or being offered this is an abandon."""
        waiting = self._calls.get(call_id)
        if waiting is None:
            raise UnknownCall(call_id)
        if waiting.status is not CallStatus.CONNECTED:
            self.abandon(call_id)
            return
        now = self._clock()
        agent = self._agents[waiting.agent or ""]
        del self._calls[call_id]
        agent.talk_seconds = 0.0 if waiting.answered_at is None else now - waiting.answered_at
        self._transition(agent, AgentActivity.HANG_UP)
        self._publish(
            QueueCallEnded(
                call_id,
                waiting.call.queue,
                agent.profile.extension,
                agent.talk_seconds,
                at=now,
            )
        )
        queue = self._queues.get(waiting.call.queue)
        wrap_up = queue.config.wrap_up_seconds if queue is not None else 0.0
        if wrap_up <= 0 or agent.pending is not None or not agent.reachable:
            self._finish_wrap_up(agent)
        else:
            agent.wrap_until = now + wrap_up
            self._schedule(agent.wrap_until, _Timer.WRAP_UP, agent.profile.extension)

    def tick(self) -> list[Reservation]:
        """Run due timers (reservation and ring timeouts, wrap-ups, expansion, overflow,
        preferred-agent holds, announcements) in time order, then dispatch."""
        now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, key, generation = heapq.heappop(timers)
            self._run_timer(kind, key, generation, now)
        # At most four timers per call (expand, max wait, hold, announce), one per reservation
        # and two per agent (wrap-up, RONA return): past that many (and a margin), most are stale.
        if len(timers) > 4 * len(self._calls) + len(self._reservations) + 2 * len(self._agents) + 64:
            self._drop_stale_timers()
        self._available.compact()
        return self.dispatch()

    def _drop_stale_timers(self) -> None:
        """Forget timers of calls and reservations that are gone: a max-wait timer would
        otherwise keep every answered call's id in the heap until its due time."""
        def live(timer: tuple[float, int, _Timer, str, int]) -> bool:
            _, _, kind, key, generation = timer
            if kind is _Timer.RESERVATION:
                return key in self._reservations
            if kind not in _CALL_TIMERS:
                return True  # an agent's (wrap-up, RONA return): few, and run when due
            waiting = self._calls.get(key)
            return waiting is not None and waiting.timer_generation == generation

        self._timers = [timer for timer in self._timers if live(timer)]
        heapq.heapify(self._timers)

    def reconcile(self, live_call_ids: Collection[str]) -> list[str]:
        """Forget calls the PBX no longer has (lost BYE or CANCEL): waiting or offered ones are
        abandoned, connected ones ended. Returns the call ids that were cleaned up."""
        stale = [call_id for call_id in self._calls if call_id not in live_call_ids]
        for call_id in stale:
            if call_id in self._calls:
                self.call_ended(call_id)
        return stale

    def reset_statistics(self) -> None:
        """Start a new service-level period (e.g. at midnight)."""
        for queue in self._queues.values():
            queue.answered = queue.answered_within_sla = queue.abandoned = 0
            queue.abandoned_within_sla = queue.dropped = 0

    @property
    def active_calls(self) -> int:
        """Calls the router holds: waiting, offered or connected to an agent."""
        return len(self._calls)

    @property
    def active_reservations(self) -> int:
        return len(self._reservations)

    # ------------------------------------------------------------------ views

    def agent(self, extension: str) -> AgentSnapshot:
        return self._snapshot(self._agent(extension), self._clock())

    def agents(self) -> list[AgentSnapshot]:
        now = self._clock()
        return [self._snapshot(agent, now) for agent in self._agents.values()]

    def queue(self, name: str) -> QueueConfig:
        return self._queue(name).config

    def queues(self) -> list[QueueConfig]:
        return [queue.config for queue in self._queues.values()]

    def queue_stats(self, name: str) -> QueueStats:
        queue = self._queue(name)
        now = self._clock()
        staffed, available, free_in = self._staffing(queue, now)
        oldest = [self._calls[c].enqueued_at for c in queue.held]
        line_oldest = queue.line.oldest_enqueued_at()
        if line_oldest is not None:
            oldest.append(line_oldest)
        return QueueStats(
            name=name,
            waiting=len(queue.line) + len(queue.held),
            longest_wait=now - min(oldest) if oldest else 0.0,
            ewt_seconds=self._queue_ewt(queue, staffed, free_in, now),
            agents_available=available,
            agents_staffed=staffed,
            service_level=service_level(
                queue.config.service_level_definition,
                queue.answered,
                queue.answered_within_sla,
                queue.abandoned,
                queue.abandoned_within_sla,
            ),
            service_level_definition=queue.config.service_level_definition.value,
            answered=queue.answered,
            abandoned=queue.abandoned,
            answered_within_sla=queue.answered_within_sla,
            abandoned_within_sla=queue.abandoned_within_sla,
            dropped=queue.dropped,
            average_handle_seconds=queue.handle_time.seconds,
            arrivals_per_hour=queue.arrivals.per_second(now) * 3600.0,
        )

    def call(self, call_id: str) -> WaitingCallRecord:
        return self._record_of(self._call(call_id), self._clock())

    def waiting_calls(self, queue: str) -> list[WaitingCallRecord]:
        """The calls in line (and held) of ``queue``, in service order."""
        self._queue(queue)
        now = self._clock()
        calls = [
            c
            for c in self._calls_of_queue(queue)
            if c.status in (CallStatus.WAITING, CallStatus.HELD)
        ]
        calls.sort(key=lambda waiting: self._rank(waiting, now))
        return [
            WaitingCallRecord(c.call, c.status, now - c.enqueued_at, index, None, c.rings_active)
            for index, c in enumerate(calls, start=1)
        ]

    def position(self, call_id: str) -> int:
        """1-based place in line (1 = next); 0 once an agent is reserved or connected."""
        return self._position_of(self._call(call_id), self._clock())

    def ewt(self, call_id: str) -> float | None:
        """Expected seconds until this caller is offered to an agent (None: nobody staffed)."""
        waiting = self._call(call_id)
        now = self._clock()
        position = self._position_of(waiting, now)
        if position == 0:
            return 0.0
        return self._call_ewt(waiting, self._queue(waiting.call.queue), position, now)

    def explain(self, call_id: str) -> list[Decision]:
        """The last routing decisions for a call, oldest first (kept for a while after the
        call leaves the router; see :meth:`forget_old_decisions`)."""
        decisions = self._decisions.get(call_id)
        if decisions is None:
            if call_id not in self._calls:
                raise UnknownCall(call_id)
            return []
        return list(decisions)

    # ------------------------------------------------------------------ routing

    def _route(
        self,
        waiting: _Call,
        trigger: str,
        competing: tuple[CompetingCall, ...],
        freed_agent: _Agent | None = None,
    ) -> Reservation | None:
        """Find the agent for ``waiting`` and reserve it; record the decision either way."""
        now = self._clock()
        queue = self._queues[waiting.call.queue]
        config = queue.config
        preference: Preference | None = None
        preferred = self._preferred_agent_of(waiting, config)
        if preferred is not None:
            reservation, preference = self._try_preferred(
                waiting, queue, preferred[0], preferred[1], trigger, competing, now
            )
            if reservation is not None or waiting.status is CallStatus.HELD:
                return reservation
        call_order = self._order_of(waiting, config, now)
        earlier = tuple(waiting.earlier_offers)

        strategy = config.strategy
        order = _ORDER_OF_STRATEGY[strategy]
        extra = waiting.call.skills
        language = waiting.language
        rejected: list[Rejection] = []
        skipped_total = 0
        first_driver: tuple[AttributeKind, str, int] | None = None
        for ring_index, ring in enumerate(config.rings[: waiting.rings_active]):
            requirement = _merged(ring, extra)
            driver, count = self._driver(requirement, language, strategy)
            if first_driver is None:
                first_driver = driver
            if count == 0:
                continue
            reject = self._rejecter(waiting, requirement, language)
            result = self._available.walk(
                driver[0],
                driver[1],
                driver[2],
                order,
                reject,
                runners_up=self._runners_up,
                best_level_first=strategy is Strategy.SKILL_WEIGHTED
                and driver[0] is AttributeKind.SKILL,
            )
            skipped_total += result.skipped_total
            rejected.extend(Rejection(ext, why) for ext, why in result.skipped)
            if result.chosen is None:
                continue
            chosen = self._agents[result.chosen]
            eligible = [CandidateScore(result.chosen, self._score(chosen, strategy, driver, now))]
            eligible.extend(
                CandidateScore(ext, self._score(self._agents[ext], strategy, driver, now))
                for ext, _ in result.runners_up
            )
            note = self._note(trigger, freed_agent, skipped_total, ring_index)
            decision = Decision(
                at=now,
                call_id=waiting.call_id,
                queue=config.name,
                trigger=trigger,
                policy=strategy.value,
                chosen=result.chosen,
                ring=ring_index,
                eligible=tuple(eligible),
                rejected=tuple(rejected[: 2 * self._explain_sample]),
                competing_calls=competing,
                note=note,
                order=call_order,
                preference=preference,
                earlier_offers=earlier,
            )
            return self._reserve(chosen, waiting, decision, now)

        sample = self._rejection_sample(waiting, first_driver, {r.extension for r in rejected})
        rejected.extend(sample)
        self._remember(
            Decision(
                at=now,
                call_id=waiting.call_id,
                queue=config.name,
                trigger=trigger,
                policy=strategy.value,
                chosen=None,
                ring=None,
                rejected=tuple(rejected[: 2 * self._explain_sample]),
                competing_calls=competing,
                note=f"no free agent qualifies in {waiting.rings_active} ring(s); "
                f"{skipped_total} free agent(s) examined",
                order=call_order,
                preference=preference,
                earlier_offers=earlier,
            )
        )
        return None

    def _try_preferred(
        self,
        waiting: _Call,
        queue: _Queue,
        preferred: str,
        source: str,
        trigger: str,
        competing: tuple[CompetingCall, ...],
        now: float,
    ) -> tuple[Reservation | None, Preference]:
        """Offer the call to its preferred agent when free, or hold it for that agent while
        the queue's bounds allow. Returns the reservation (if any) and what happened."""
        agent = self._agents[preferred]
        config = queue.config
        ring, problem = self._qualification(agent, waiting)
        if problem is not None:
            return None, Preference(preferred, source, "not_qualified", reason=problem)
        order = self._order_of(waiting, config, now)
        if preferred in self._available:
            preference = Preference(preferred, source, "offered")
            decision = Decision(
                at=now,
                call_id=waiting.call_id,
                queue=config.name,
                trigger=trigger,
                policy="preferred_agent",
                chosen=preferred,
                ring=ring,
                eligible=(CandidateScore(preferred, (now - agent.idle_since,)),),
                competing_calls=competing,
                note=f"{_PREFERENCE_LABEL[source]} {preferred} is free",
                order=order,
                preference=preference,
                earlier_offers=tuple(waiting.earlier_offers),
            )
            return self._reserve(agent, waiting, decision, now), preference
        wait_until = waiting.entered_queue_at + config.preferred_agent_wait_seconds
        limit_until = waiting.enqueued_at + config.preferred_hold_limit
        hold_until, bound = (
            (wait_until, "preferred_agent_wait_seconds")
            if wait_until <= limit_until
            else (limit_until, "preferred_agent_max_hold_seconds")
        )
        unavailable = self._unavailability(agent) or "busy"
        if (
            waiting.hold_done
            or waiting.status is not CallStatus.WAITING
            or now >= hold_until
            or agent.state not in HANDLING_STATES
            or not agent.reachable
            or agent.profile.site in self._unhealthy_sites
        ):
            return None, Preference(
                preferred,
                source,
                "not_free",
                reason=unavailable,
                hold_until=waiting.hold_until if waiting.hold_done else None,
                hold_bound=bound if config.preferred_agent_wait_seconds > 0 else None,
            )
        self._take_out_of_line(waiting)
        waiting.status = CallStatus.HELD
        waiting.hold_done = True
        waiting.hold_until = hold_until
        waiting.agent = preferred
        agent.held_calls[waiting.call_id] = None
        queue.held[waiting.call_id] = None
        self._schedule(hold_until, _Timer.HOLD, waiting.call_id, waiting.timer_generation)
        preference = Preference(
            preferred, source, "held", reason=unavailable, hold_until=hold_until, hold_bound=bound
        )
        self._remember(
            Decision(
                at=now,
                call_id=waiting.call_id,
                queue=config.name,
                trigger=trigger,
                policy="preferred_agent",
                chosen=None,
                ring=None,
                rejected=(Rejection(preferred, unavailable),),
                competing_calls=competing,
                note=f"held for {_PREFERENCE_LABEL[source]} {preferred} until {hold_until:.3f} "
                f"({bound})",
                order=order,
                preference=preference,
                earlier_offers=tuple(waiting.earlier_offers),
            )
        )
        return None, preference

    def _order_of(self, waiting: _Call, config: QueueConfig, now: float) -> CallOrder:
        rank = self._rank(waiting, now)
        return CallOrder(
            config.priority_order.value, waiting.call.priority, now - waiting.enqueued_at, -rank[0]
        )

    def _best_call_for(self, agent: _Agent) -> tuple[_Call | None, tuple[CompetingCall, ...]]:
        """The call this freed agent should serve first, across every queue it serves."""
        now = self._clock()
        extension = agent.profile.extension
        languages = agent.profile.languages
        best: _Call | None = None
        best_rank: tuple[float, float, int] | None = None
        competing: list[CompetingCall] = []
        candidates: list[_Call] = [self._calls[c] for c in agent.held_calls]
        for name in agent.queues:
            queue = self._queues[name]
            if not len(queue.line):
                continue
            for call_class in queue.line.classes():
                language = call_class.language
                if language is not None and language not in languages:
                    continue
                # Younger calls of a class qualify only if the head does (fewer rings, same
                # needs); going past the head is needed only for calls this agent refused.
                for entry in call_class.entries:
                    waiting = self._calls[entry[2]]
                    if extension in waiting.excluded:
                        continue
                    if self._qualification(agent, waiting)[1] is None:
                        candidates.append(waiting)
                    break
        for waiting in candidates:
            if (
                waiting.status is CallStatus.HELD
                and self._qualification(agent, waiting)[1] is not None
            ):
                continue
            rank = self._rank(waiting, now)
            if len(competing) < self._explain_sample:
                competing.append(
                    CompetingCall(
                        waiting.call_id, waiting.call.queue, waiting.call.priority, -rank[0]
                    )
                )
            if best_rank is None or rank < best_rank:
                best, best_rank = waiting, rank
        return best, tuple(competing)

    def _reserve(
        self, agent: _Agent, waiting: _Call, decision: Decision, now: float
    ) -> Reservation:
        assert agent.reservation_id is None and agent.state is AgentState.AVAILABLE
        if waiting.status is CallStatus.HELD:
            self._release_hold(waiting, back_in_line=False)
        else:
            self._take_out_of_line(waiting)
        extension = agent.profile.extension
        self._offer_counter += 1
        agent.rotation = self._offer_counter
        self._transition(agent, AgentActivity.RESERVE)
        reservation_id = f"r{self._offer_counter}"
        reservation = _Reservation(
            reservation_id,
            waiting.call_id,
            extension,
            waiting.call.queue,
            now + self._reservation_timeout,
            decision,
        )
        self._reservations[reservation_id] = reservation
        agent.reservation_id = reservation_id
        agent.call_id = waiting.call_id
        agent.call_queue = waiting.call.queue
        waiting.status = CallStatus.OFFERED
        waiting.agent = extension
        waiting.reservation_id = reservation_id
        self._schedule(reservation.expires_at, _Timer.RESERVATION, reservation_id)
        self._remember(decision)
        self._publish(
            AgentReserved(
                reservation_id,
                waiting.call_id,
                extension,
                waiting.call.queue,
                reservation.expires_at,
                at=now,
            )
        )
        return reservation.public()

    def _fail_reservation(self, reservation: _Reservation, reason: str) -> None:
        now = self._clock()
        del self._reservations[reservation.reservation_id]
        agent = self._agents[reservation.agent]
        waiting = self._calls[reservation.call_id]
        if reason == "no_answer":
            self._transition(agent, AgentActivity.NO_ANSWER, RONA_REASON)
            self._schedule_rona_return(agent, now)
        else:
            waiting.excluded[agent.profile.extension] = f"{reason} this call before"
            self._transition(agent, AgentActivity.RELEASE)
        waiting.earlier_offers.append(
            (agent.profile.extension, "rang_out" if reason == "no_answer" else reason)
        )
        self._clear_agent_call(agent)
        self._return_to_line(waiting)
        self._publish(
            ReservationFailed(
                reservation.reservation_id,
                waiting.call_id,
                agent.profile.extension,
                reason,
                at=now,
            )
        )
        self._apply_pending(agent)

    def _expire_reservation(self, reservation: _Reservation, now: float) -> None:
        del self._reservations[reservation.reservation_id]
        agent = self._agents[reservation.agent]
        waiting = self._calls[reservation.call_id]
        if reservation.ringing:
            self._transition(agent, AgentActivity.NO_ANSWER, RONA_REASON)
            self._schedule_rona_return(agent, now)
        else:
            self._transition(agent, AgentActivity.RELEASE)
        waiting.earlier_offers.append(
            (agent.profile.extension, "rang_out" if reservation.ringing else "not_confirmed")
        )
        self._clear_agent_call(agent)
        self._return_to_line(waiting)
        self._publish(
            ReservationExpired(
                reservation.reservation_id,
                waiting.call_id,
                agent.profile.extension,
                reservation.ringing,
                at=now,
            )
        )
        self._apply_pending(agent)

    # ------------------------------------------------------------------ timers

    def _schedule(self, due: float, kind: _Timer, key: str, generation: int = 0) -> None:
        heapq.heappush(self._timers, (due, next(self._sequence), kind, key, generation))

    def _schedule_call_timers(self, waiting: _Call, queue: _Queue, now: float) -> None:
        config = queue.config
        generation = waiting.timer_generation
        call_id = waiting.call_id
        if waiting.rings_active <= len(config.expansion):
            ring = config.expansion[waiting.rings_active - 1]
            self._schedule(
                waiting.enqueued_at + ring.after_seconds, _Timer.EXPAND, call_id, generation
            )
        if config.max_wait_seconds is not None:
            self._schedule(
                waiting.entered_queue_at + config.max_wait_seconds,
                _Timer.MAX_WAIT,
                call_id,
                generation,
            )
        self._schedule(now + config.announce_interval_seconds, _Timer.ANNOUNCE, call_id, generation)

    def _schedule_rona_return(self, agent: _Agent, now: float) -> None:
        if self._rona_return is not None and agent.state is AgentState.BREAK:
            # Only this very break ends: a later break has another start time.
            agent.rona_since = agent.state_since
            self._schedule(now + self._rona_return, _Timer.RONA_RETURN, agent.profile.extension)

    def _run_timer(self, kind: _Timer, key: str, generation: int, now: float) -> None:
        if kind is _Timer.RESERVATION:
            reservation = self._reservations.get(key)
            if reservation is not None and reservation.expires_at <= now:
                self._expire_reservation(reservation, now)
            return
        if kind is _Timer.RONA_RETURN:
            agent = self._agents.get(key)
            if (
                agent is not None
                and agent.state is AgentState.BREAK
                and agent.reason == RONA_REASON
                and agent.rona_since is not None
                and agent.rona_since == agent.state_since
                and self._rona_return is not None
            ):
                agent.rona_since = None
                self._transition(agent, AgentActivity.BREAK_END)
            return
        if kind is _Timer.WRAP_UP:
            agent = self._agents.get(key)
            if (
                agent is not None
                and agent.state is AgentState.WRAP_UP
                and agent.wrap_until is not None
                and agent.wrap_until <= now
            ):
                self._finish_wrap_up(agent)
            return
        waiting = self._calls.get(key)
        if (
            waiting is None
            or waiting.timer_generation != generation
            or waiting.status not in (CallStatus.WAITING, CallStatus.HELD)
        ):
            return
        queue = self._queues[waiting.call.queue]
        if kind is _Timer.EXPAND:
            self._expand(waiting, queue, now)
        elif kind is _Timer.MAX_WAIT:
            self._overflow(waiting, queue, now)
        elif kind is _Timer.HOLD:
            if waiting.status is CallStatus.HELD:
                self._release_hold(waiting)
        elif kind is _Timer.ANNOUNCE:
            position = self._position_of(waiting, now)
            self._publish(
                AnnouncementDue(
                    waiting.call_id,
                    queue.config.name,
                    position,
                    self._call_ewt(waiting, queue, position, now),
                    at=now,
                )
            )
            self._schedule(
                now + queue.config.announce_interval_seconds, _Timer.ANNOUNCE, key, generation
            )

    def _expand(self, waiting: _Call, queue: _Queue, now: float) -> None:
        rings = queue.config.rings_active_after(now - waiting.enqueued_at)
        if rings > waiting.rings_active:
            waiting.rings_active = rings
            self._publish(CallExpanded(waiting.call_id, queue.config.name, rings, at=now))
            if waiting.status is CallStatus.WAITING:
                self._pending_calls[waiting.call_id] = None
        if waiting.rings_active <= len(queue.config.expansion):
            ring = queue.config.expansion[waiting.rings_active - 1]
            self._schedule(
                waiting.enqueued_at + ring.after_seconds,
                _Timer.EXPAND,
                waiting.call_id,
                waiting.timer_generation,
            )

    def _overflow(self, waiting: _Call, queue: _Queue, now: float) -> None:
        config = queue.config
        if (
            config.max_wait_seconds is None
            or now - waiting.entered_queue_at < config.max_wait_seconds
        ):
            return
        self._take_out_of_line(waiting)
        target = config.overflow
        waited = now - waiting.enqueued_at
        moved = target is not None and target in self._queues
        if moved and target is not None:
            target_queue = self._queues[target]
            waiting.call = replace(waiting.call, queue=target)
            waiting.entered_queue_at = now
            target_queue.arrivals.observe(now)
            self._file_in_line(waiting, target_queue, now)
        else:
            del self._calls[waiting.call_id]
            self._pending_calls.pop(waiting.call_id, None)
        self._publish(CallOverflowed(waiting.call_id, config.name, target, moved, waited, at=now))

    # ------------------------------------------------------------------ line keeping

    def _file_in_line(self, waiting: _Call, queue: _Queue, now: float) -> None:
        """Put a call that is out of every line into ``queue`` under its current configuration."""
        config = queue.config
        call = waiting.call
        waiting.language = call.language if call.language is not None else config.language
        waiting.line_class = class_key(call.priority, waiting.language, call.skills)
        waiting.rings_active = config.rings_active_after(now - waiting.enqueued_at)
        waiting.status = CallStatus.WAITING
        waiting.timer_generation += 1
        queue.line.add(waiting.line_class, waiting.line_entry)
        self._schedule_call_timers(waiting, queue, now)
        self._pending_calls[waiting.call_id] = None

    def _take_out_of_line(self, waiting: _Call) -> None:
        queue = self._queues[waiting.call.queue]
        if waiting.status is CallStatus.HELD:
            self._release_hold(waiting, back_in_line=False)
            return
        queue.line.remove(waiting.line_class, waiting.line_entry)

    def _return_to_line(self, waiting: _Call) -> None:
        """Back to the ORIGINAL place: same enqueue time and sequence number."""
        waiting.status = CallStatus.WAITING
        waiting.agent = None
        waiting.reservation_id = None
        queue = self._queues.get(waiting.call.queue)
        if queue is None:  # cannot happen: a queue with offered calls cannot be removed
            raise UnknownQueue(waiting.call.queue)
        queue.line.add(waiting.line_class, waiting.line_entry)
        # Timers that fired while the call was offered were dropped: start them again.
        waiting.timer_generation += 1
        self._schedule_call_timers(waiting, queue, self._clock())
        self._pending_calls[waiting.call_id] = None

    def _release_hold(self, waiting: _Call, back_in_line: bool = True) -> None:
        agent = self._agents.get(waiting.agent or "")
        if agent is not None:
            agent.held_calls.pop(waiting.call_id, None)
        self._queues[waiting.call.queue].held.pop(waiting.call_id, None)
        waiting.agent = None
        waiting.status = CallStatus.WAITING
        if back_in_line:
            self._queues[waiting.call.queue].line.add(waiting.line_class, waiting.line_entry)
            self._pending_calls[waiting.call_id] = None

    # ------------------------------------------------------------------ agent bookkeeping

    def _transition(
        self, agent: _Agent, activity: AgentActivity, reason: str | None = None
    ) -> None:
        old = agent.state
        new = next_state(old, activity)
        if new is None:
            raise InvalidTransition(
                f"agent {agent.profile.extension} cannot {activity.value} while {old.value}"
            )
        now = self._clock()
        if old in HANDLING_STATES or old is AgentState.AVAILABLE:
            agent.occupancy.record(agent.state_since, now, old in HANDLING_STATES)
        agent.state = new
        agent.state_since = now
        agent.reason = reason if new is AgentState.BREAK else None
        if new is AgentState.AVAILABLE and activity is not AgentActivity.RELEASE:
            # A released reservation was not the agent's doing: it keeps its place in line.
            agent.idle_since = now
        if old not in HANDLING_STATES and new in HANDLING_STATES:
            agent.handling_since = now
        elif (
            old in HANDLING_STATES
            and new not in HANDLING_STATES
            and agent.handling_since is not None
        ):
            # Fold the call's handling time into the LEAST_OCCUPANCY key before re-indexing.
            agent.load_key = add_to_load_key(
                agent.load_key, now - agent.handling_since, now, self._occupancy_window
            )
            agent.handling_since = None
        self._publish(
            AgentStateChanged(
                agent.profile.extension,
                agent.profile.site,
                old,
                new,
                agent.reason,
                at=now,
            )
        )
        self._refresh_index(agent)

    def _finish_wrap_up(self, agent: _Agent) -> None:
        now = self._clock()
        queue = self._queues.get(agent.call_queue or "")
        if queue is not None:
            queue.handle_time.observe(agent.talk_seconds + (now - agent.state_since))
        agent.wrap_until = None
        agent.call_id = None
        agent.call_queue = None
        pending, agent.pending = agent.pending, None
        if not agent.reachable:
            self._transition(agent, AgentActivity.UNREACHABLE)
        elif pending is not None:
            self._transition(agent, pending[0], pending[1])
        else:
            self._transition(agent, AgentActivity.WRAP_UP_DONE)
        if agent.state is AgentState.OFFLINE:
            self._after_leaving_service(agent)

    def _apply_pending(self, agent: _Agent) -> None:
        """A deferred logout or break requested during a failed offer takes effect now."""
        pending = agent.pending
        if pending is None:
            return
        agent.pending = None
        if next_state(agent.state, pending[0]) is not None:
            self._transition(agent, pending[0], pending[1])
            if agent.state is AgentState.OFFLINE:
                self._after_leaving_service(agent)

    def _clear_agent_call(self, agent: _Agent) -> None:
        agent.reservation_id = None
        agent.call_id = None
        agent.call_queue = None

    def _after_leaving_service(self, agent: _Agent) -> None:
        """A logged-out agent no longer holds calls waiting for it."""
        for call_id in list(agent.held_calls):
            self._release_hold(self._calls[call_id])

    def _refresh_index(self, agent: _Agent) -> None:
        extension = agent.profile.extension
        selectable = (
            agent.state is AgentState.AVAILABLE
            and agent.reachable
            and not agent.personal_calls
            and agent.profile.site not in self._unhealthy_sites
        )
        if selectable and extension not in self._available:
            profile = agent.profile
            self._available.add(
                extension,
                profile.skills,
                profile.languages,
                agent.idle_since,
                agent.load_key,
                agent.rotation,
            )
            self._pending_agents[extension] = None
        elif not selectable and extension in self._available:
            self._available.remove(extension)

    def _forget_memberships(self, agent: _Agent) -> None:
        profile = agent.profile
        for skill in profile.skills:
            self._skill_members.get(skill, {}).pop(profile.extension, None)
        for language in profile.languages:
            self._language_members.get(language, {}).pop(profile.extension, None)
        self._site_members.get(profile.site, {}).pop(profile.extension, None)

    # ------------------------------------------------------------------ qualification

    @staticmethod
    def _serves(profile: AgentProfile, config: QueueConfig) -> bool:
        """Could this agent ever take a call of this queue (any ring)? Language is a per-call
        matter (a call may ask for another language than the queue's), checked per call."""
        return any(_meets(profile.skills, ring) for ring in config.rings)

    def _agents_serving(self, config: QueueConfig) -> set[str]:
        serving: set[str] = set()
        for ring in config.rings:
            if not ring:
                return set(self._agents)
            # Only agents having the ring's rarest skill can meet the whole ring.
            rarest = min(ring, key=lambda skill: len(self._skill_members.get(skill, {})))
            for extension in self._skill_members.get(rarest, {}):
                if _meets(self._agents[extension].profile.skills, ring):
                    serving.add(extension)
        return serving

    def _qualification(self, agent: _Agent, waiting: _Call) -> tuple[int | None, str | None]:
        """(ring the agent qualifies in, None) or (None, why not) for this call, ignoring state."""
        excluded = waiting.excluded.get(agent.profile.extension)
        if excluded is not None:
            return None, excluded
        profile = agent.profile
        if waiting.language is not None and waiting.language not in profile.languages:
            return None, f"language {waiting.language}"
        problem = _first_unmet(profile.skills, waiting.call.skills)
        if problem is not None:
            return None, problem
        queue = self._queues[waiting.call.queue]
        first_problem: str | None = None
        for index, ring in enumerate(queue.config.rings[: waiting.rings_active]):
            problem = _first_unmet(profile.skills, ring)
            if problem is None:
                return index, None
            if first_problem is None:
                first_problem = problem
        if waiting.rings_active > 1:
            first_problem = f"{first_problem} (and no expansion ring matches)"
        return None, first_problem

    def _rejecter(
        self, waiting: _Call, requirement: Mapping[str, int], language: str | None
    ) -> Callable[[str], str | None]:
        agents = self._agents
        excluded = waiting.excluded
        items = tuple(requirement.items())

        def reject_reason(extension: str) -> str | None:
            if extension in excluded:
                return excluded[extension]
            profile = agents[extension].profile
            if language is not None and language not in profile.languages:
                return f"language {language}"
            skills = profile.skills
            for skill, minimum in items:
                level = skills.get(skill, 0)
                if level < minimum:
                    return (
                        f"skill {skill} {level} < {minimum}" if level else f"skill {skill} missing"
                    )
            return None

        return reject_reason

    def _driver(
        self, requirement: Mapping[str, int], language: str | None, strategy: Strategy
    ) -> tuple[tuple[AttributeKind, str, int], int]:
        """The index attribute to walk: the most selective one, or for SKILL_WEIGHTED the
        primary skill (highest minimum, then name) whose proficiency orders the walk."""
        available = self._available
        if strategy is Strategy.SKILL_WEIGHTED and requirement:
            # An attribute nobody free has means nobody qualifies: no walk at all.
            for skill, minimum in requirement.items():
                if available.count(AttributeKind.SKILL, skill, minimum) == 0:
                    return (AttributeKind.SKILL, skill, minimum), 0
            if language is not None and available.count(AttributeKind.LANGUAGE, language, 1) == 0:
                return (AttributeKind.LANGUAGE, language, 1), 0
            primary = min(requirement, key=lambda skill: (-requirement[skill], skill))
            minimum = requirement[primary]
            return (AttributeKind.SKILL, primary, minimum), available.count(
                AttributeKind.SKILL, primary, minimum
            )
        best: tuple[AttributeKind, str, int] = (AttributeKind.EVERYONE, "", 1)
        best_count = available.count(AttributeKind.EVERYONE, "", 1)
        for skill, minimum in requirement.items():
            count = available.count(AttributeKind.SKILL, skill, minimum)
            if count < best_count:
                best, best_count = (AttributeKind.SKILL, skill, minimum), count
        if language is not None:
            count = available.count(AttributeKind.LANGUAGE, language, 1)
            if count < best_count:
                best, best_count = (AttributeKind.LANGUAGE, language, 1), count
        return best, best_count

    def _preferred_agent_of(self, waiting: _Call, config: QueueConfig) -> tuple[str, str] | None:
        """(agent, source) the call should be offered first, source 'customer' or 'last_agent'."""
        call = waiting.call
        preferred, source = call.preferred_agent, "customer"
        if preferred is None and config.preferred_agent_wait_seconds > 0:
            source = "last_agent"
            preferred = call.last_agent
            if preferred is None and call.caller:
                preferred = self._last_agent_of_caller.get(call.caller)
        if preferred is None or preferred not in self._agents or preferred in waiting.excluded:
            return None
        if any(agent == preferred for agent, _ in waiting.earlier_offers):
            return None  # it let this very call ring out: no second first-offer
        return preferred, source

    # ------------------------------------------------------------------ explanation helpers

    def _score(
        self,
        agent: _Agent,
        strategy: Strategy,
        driver: tuple[AttributeKind, str, int],
        now: float,
    ) -> tuple[float, ...]:
        """Human-readable policy score; see ``Decision`` for each policy's fields."""
        idle = now - agent.idle_since
        if strategy is Strategy.LEAST_OCCUPANCY:
            return (self._decayed_load(agent, now), idle)
        if strategy is Strategy.ROUND_ROBIN:
            return (float(agent.rotation), idle)
        if strategy is Strategy.SKILL_WEIGHTED:
            return (float(agent.profile.skills.get(driver[1], 0)), idle)
        return (idle,)

    def _decayed_load(self, agent: _Agent, now: float) -> float:
        if agent.load_key == NO_LOAD:
            return 0.0
        return math.exp(agent.load_key - now / self._occupancy_window)

    def _note(self, trigger: str, freed_agent: _Agent | None, skipped: int, ring: int) -> str:
        parts = []
        if freed_agent is not None:
            parts.append(
                f"agent {freed_agent.profile.extension} became free; this call ranks first"
            )
        parts.append(f"ring {ring}" + (" (expanded)" if ring else ""))
        if skipped:
            parts.append(f"{skipped} free agent(s) passed over")
        return "; ".join(parts)

    def _rejection_sample(
        self,
        waiting: _Call,
        driver: tuple[AttributeKind, str, int] | None,
        already: set[str],
    ) -> list[Rejection]:
        """Up to ``explain_sample`` agents holding the driving attribute, with why they could
        not take the call. Bounded: looks at no more than four times the sample size."""
        if driver is None:
            return []
        kind, name, _ = driver
        if kind is AttributeKind.SKILL:
            members: Iterator[str] = iter(self._skill_members.get(name, {}))
        elif kind is AttributeKind.LANGUAGE:
            members = iter(self._language_members.get(name, {}))
        else:
            members = iter(self._agents)
        sample: list[Rejection] = []
        for extension in itertools.islice(members, 4 * self._explain_sample):
            if extension in already:
                continue
            agent = self._agents[extension]
            reason = self._unavailability(agent) or self._qualification(agent, waiting)[1]
            if reason is not None:
                sample.append(Rejection(extension, reason))
                if len(sample) >= self._explain_sample:
                    break
        return sample

    def _unavailability(self, agent: _Agent) -> str | None:
        if not agent.reachable:
            return "unreachable"
        if agent.profile.site in self._unhealthy_sites:
            return "site unhealthy"
        if agent.personal_calls:
            return "on a personal call"
        state = agent.state
        if state is AgentState.AVAILABLE:
            return None
        if state is AgentState.OFFLINE:
            return "offline"
        if state is AgentState.BREAK:
            return f"break ({agent.reason})"
        return f"busy ({state.value})"

    @property
    def decisions_kept(self) -> int:
        """How many calls' decisions are in memory."""
        return len(self._decisions)

    def forget_old_decisions(self) -> int:
        """Drop the decisions of calls that left the router ``decisions_max_age_seconds`` ago
        or more (counted from when this first saw them gone); returns how many calls went."""
        now = self._clock()
        cutoff = now - self._decisions_max_age
        decisions, released = self._decisions, self._decisions_released
        dropped = 0
        for _ in range(len(decisions)):
            call_id = next(iter(decisions))
            if call_id in self._calls:
                decisions.move_to_end(call_id)  # still in the router: look past it
                continue
            at = released.get(call_id)
            if at is None:
                released[call_id] = now
                decisions.move_to_end(call_id)
            elif at <= cutoff:
                del decisions[call_id]
                del released[call_id]
                dropped += 1
            else:
                break  # everything behind left later, or is not stamped yet
        return dropped

    def _remember(self, decision: Decision) -> None:
        call_id = decision.call_id
        decisions = self._decisions
        kept = decisions.pop(call_id, ())
        self._decisions_released.pop(call_id, None)
        if len(kept) >= self._decisions_per_call:
            kept = kept[len(kept) - self._decisions_per_call + 1:]
        decisions[call_id] = (*kept, decision)
        while len(decisions) > self._decision_calls_kept:
            oldest, _ = decisions.popitem(last=False)
            self._decisions_released.pop(oldest, None)

    # ------------------------------------------------------------------ view helpers

    def _rank(self, waiting: _Call, now: float) -> tuple[float, float, int]:
        config = self._queues[waiting.call.queue].config
        return service_rank(
            waiting.call.priority,
            waiting.enqueued_at,
            waiting.sequence,
            now,
            config.sla_seconds,
            config.effective_aging_weight,
        )

    def _position_of(self, waiting: _Call, now: float) -> int:
        if waiting.status not in (CallStatus.WAITING, CallStatus.HELD):
            return 0
        queue = self._queues[waiting.call.queue]
        config = queue.config
        mine = self._rank(waiting, now)
        ahead = queue.line.count_ahead(mine, now, config.sla_seconds, config.effective_aging_weight)
        ahead += sum(1 for call_id in queue.held if self._rank(self._calls[call_id], now) < mine)
        return ahead + 1

    def _calls_of_queue(self, name: str) -> Iterator[_Call]:
        queue = self._queues.get(name)
        if queue is None:
            return
        for _, entry in queue.line.entries():
            yield self._calls[entry[2]]
        for call_id in queue.held:
            yield self._calls[call_id]
        for reservation in list(self._reservations.values()):
            if reservation.queue == name:
                yield self._calls[reservation.call_id]

    def _free_in(self, agent: _Agent, handle_seconds: float, now: float) -> float | None:
        """Seconds until a staffed agent is expected free; None when it is not staffed."""
        if not agent.reachable or agent.profile.site in self._unhealthy_sites:
            return None
        state = agent.state
        if state is AgentState.AVAILABLE:
            # On a personal call: its length is unknown, so count one ordinary handle time.
            return remaining_handle(0.0, handle_seconds) if agent.personal_calls else 0.0
        if state is AgentState.WRAP_UP:
            return max((agent.wrap_until if agent.wrap_until is not None else now) - now, 0.0)
        if state in HANDLING_STATES:
            since = agent.handling_since if agent.handling_since is not None else now
            return remaining_handle(now - since, handle_seconds)
        return None

    def _staffing(
        self, queue: _Queue, now: float, probes: list[_Call] | None = None
    ) -> tuple[int, int, list[float]]:
        """(staffed, available, when each staffed one is free) over the queue's agents who
        can take one of ``probes`` (default: the calls at the head of the line and held
        ones; with none waiting, anyone speaking the queue's language)."""
        if probes is None:
            probes = [self._calls[entry[2]] for c in queue.line.classes() for entry in c.entries[:1]]
            probes.extend(self._calls[call_id] for call_id in queue.held)
        language = queue.config.language
        handle = queue.handle_time.seconds
        free_in: list[float] = []
        available = 0
        for extension in queue.agents:
            agent = self._agents[extension]
            if agent.state not in STAFFED_STATES:
                continue
            if probes:
                if all(self._qualification(agent, probe)[1] is not None for probe in probes):
                    continue
            elif language is not None and language not in agent.profile.languages:
                continue
            when = self._free_in(agent, handle, now)
            if when is None:
                continue
            free_in.append(when)
            available += agent.state is AgentState.AVAILABLE and not agent.personal_calls
        return len(free_in), available, free_in

    def _queue_ewt(self, queue: _Queue, staffed: int, free_in: list[float], now: float) -> float | None:
        """With callers in line: the wait of one joining its end, from the agents' calls in
        progress (moves with the line); with nobody waiting: Erlang C's mean wait."""
        handle = queue.handle_time.seconds
        waiting = len(queue.line) + len(queue.held)
        if waiting == 0:
            wait = erlang_c_wait(staffed, queue.arrivals.per_second(now), handle)
            if wait is not None:
                return wait
        return release_wait(waiting + 1, free_in, handle)

    def _call_ewt(self, waiting: _Call, queue: _Queue, position: int, now: float) -> float | None:
        # Calls of one class and ring count see the same agents: at one instant (a tick's
        # announcements) the agents are scanned once per class, not once per call.
        key = (queue.config.name, waiting.line_class, waiting.rings_active)
        cached = None if waiting.excluded else self._free_in_cache.get(key)
        if cached is not None and cached[0] == now:
            free_in = cached[1]
        else:
            _, _, free_in = self._staffing(queue, now, [waiting])
            if not waiting.excluded:
                if self._free_in_cache and next(iter(self._free_in_cache.values()))[0] != now:
                    self._free_in_cache.clear()
                self._free_in_cache[key] = (now, free_in)
        return release_wait(position, free_in, queue.handle_time.seconds)

    def _record_of(self, waiting: _Call, now: float) -> WaitingCallRecord:
        return WaitingCallRecord(
            call=waiting.call,
            status=waiting.status,
            waited_seconds=(now if waiting.answered_at is None else waiting.answered_at)
            - waiting.enqueued_at,
            position=self._position_of(waiting, now) or None,
            agent=waiting.agent,
            rings_active=waiting.rings_active,
        )

    def _snapshot(self, agent: _Agent, now: float) -> AgentSnapshot:
        state = agent.state
        current: bool | None = None
        if state in HANDLING_STATES:
            current = True
        elif state is AgentState.AVAILABLE:
            current = False
        pending = None
        if agent.pending is not None:
            activity, reason = agent.pending
            pending = "logout" if activity is AgentActivity.LOGOUT else f"break:{reason}"
        return AgentSnapshot(
            profile=agent.profile,
            state=state,
            state_since=agent.state_since,
            reason=agent.reason,
            occupancy=agent.occupancy.ratio(now, agent.state_since, current),
            last_caller=agent.last_caller,
            reserved_call=agent.call_id
            if state in (AgentState.RESERVED, AgentState.RINGING)
            else None,
            reachable=agent.reachable,
            personal_calls=len(agent.personal_calls),
            site_healthy=agent.profile.site not in self._unhealthy_sites,
            queues=tuple(sorted(agent.queues)),
            pending=pending,
        )

    # ------------------------------------------------------------------ lookups

    def _agent(self, extension: str) -> _Agent:
        agent = self._agents.get(extension)
        if agent is None:
            raise UnknownAgent(extension)
        return agent

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise UnknownQueue(name)
        return queue

    def _call(self, call_id: str) -> _Call:
        waiting = self._calls.get(call_id)
        if waiting is None:
            raise UnknownCall(call_id)
        return waiting

    def _reservation(self, reservation_id: str) -> _Reservation:
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            raise UnknownReservation(reservation_id)
        return reservation
