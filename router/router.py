"""The router: the one door through which routing state changes.

(Long because it holds every command and every view the rest of the server uses, and
the agent-state and reservation steps those commands share; the parts they compose
are in the modules listed below.)

``Router`` composes the parts, each in its own module, and is the small command
interface in front of them: every change (configuration, agent state, call flow,
timers) is a method here, and nothing else changes the parts.

- ``router.agent_book``: agents, their indexes and the index of free agents
- ``router.call_book``: queues, the calls held and each queue's waiting line
- ``router.selection``: which agent a call gets, which call a freed agent serves
- ``router.reservations``: agents held for a call while their phone rings
- ``router.timers``: ring and reservation timeouts, wrap-up, expansion, overflow, holds
- ``router.decision_log``: the last decisions of each call, for ``explain``
- ``router.forecast``: staffing and expected waits
- ``router.service_levels``: per-queue service-level counters

Pure and synchronous; nothing here does I/O. Time comes from two injected clocks:
``clock`` (monotonic: every timer runs on it) and ``wall_clock`` (Unix seconds: the
times in events, decisions, snapshots and reservations, which are records). Without
``wall_clock`` both are ``clock``.

Push, at once. Events (``events.routing``) go to the ``publish`` sink as they happen
(without one, nowhere). With an ``on_reservation`` hook, every command ends by
dispatching (matching waiting calls to free agents) and hands each reservation to the
hook at once; without it the caller runs ``dispatch()`` itself. The PBX turns each
reservation into an INVITE to the agent's phone and reports back with
``ringing``/``answered``/``reservation_failed``. ``tick()`` runs the due timers;
``next_due()`` says when it is next needed.

Call flow::

    enqueue ─► WAITING ──dispatch──► OFFERED ──ringing──► (ringing) ──answered──► CONNECTED
                 ▲  │ preferred agent busy                │ failed / expired          │ call_ended
                 │  └─► HELD ─(agent frees / hold ends)   └──► back to WAITING,        ▼
                 │                                              original place     agent WRAP_UP
                 └──────────── overflow into another queue (max wait)

When are matches made? ``dispatch()`` keeps one invariant: afterwards no indexed
(free) agent qualifies for any call in line. So only changes need looking at: agents
that became free since the last dispatch, then calls that entered the line, came back
to it or widened their skill rings, in service order. A freed agent finds the call to
serve first among the heads of the classes of the queues it serves and that call then
picks its agent by its queue's strategy (``router.selection``) — so even when several
agents free up at once the queue's strategy decides which of them gets the call.

Agent preference. A call's ``preferred_agent`` (or, when the queue sets
``preferred_agent_wait_seconds``, the agent who last served this caller: the
call's ``last_agent`` from the customer record, else the router's memory) is
offered the call first when free. If that agent is logged in but busy and the
queue allows a wait, the call is HELD for it until the earlier of
``entered queue + preferred_agent_wait_seconds`` and ``enqueued +
preferred_agent_max_hold_seconds`` (default: the SLA), then goes back to the line
where any free qualified agent takes it. Every decision says so in its
``preference`` field.

Another site's call. ``reserve_for_site`` reserves one of this router's free agents for a
call waiting at another site (chosen as for a local call, never put in this line);
``release_for_site`` lets it go when that site gives up, and the reservation timer when
the call never comes. Only the agent's state changes are published for it: the call's
records are kept where it waits.

Sites' business hours (follow-the-sun). ``set_site_hours`` gives a site its opening hours
(anything with ``is_open(aware datetime)``, read in the site's own time zone): outside
them its agents are offered no call, here or for another site, as if the site were
unhealthy. The router looks at the wall clock at every minute's turn (hours are whole
minutes), publishing ``SiteOpeningChanged`` when a site opens or closes.

Overflow to other sites. A queue's ``sites_after_seconds`` is how long a caller waits for
this site's agents before its ``sites`` are asked (``other_sites_after``).

Ring-no-answer. An agent whose phone rang out goes on break 'rona'; with
``rona_return_seconds`` set it becomes available again after that long. The
call's next decision lists the agents who did not take it (``earlier_offers``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, Protocol, TypeVar

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
    CallWithdrawn,
    QueueCallAnswered,
    QueueCallEnded,
    ReservationExpired,
    ReservationFailed,
    SiteHealthChanged,
    SiteOpeningChanged,
)
from router.agent_book import AgentBook, BookedAgent
from router.agent_state import (
    HANDLING_STATES,
    STAFFED_STATES,
    AgentActivity,
    AgentState,
    next_state,
)
from router.call_book import BookedCall, BookedQueue, CallBook
from router.calls import CallKind, CallStatus, RoutingRequest, WaitingCallRecord
from router.config import AgentProfile, QueueConfig
from router.decision_log import DecisionLog
from router.errors import (
    AgentBusy,
    DuplicateCall,
    InvalidArgument,
    InvalidTransition,
    QueueInUse,
    UnknownCall,
)
from router.estimates import ArrivalRate, HandleTimeAverage
from router.explanations import CompetingCall, Decision, LazyDecision
from router.forecast import WaitForecast
from router.occupancy import add_to_load_key
from router.reservations import HeldAgent, Reservation, ReservationBook, new_reservation_id
from router.selection import Selector, pool_specs
from router.timers import CALL_TIMERS, TimerHeap, TimerKind
from router.views import AgentSnapshot, QueueStats

FAILURE_REASONS = frozenset({"no_answer", "busy", "declined", "error"})
RONA_REASON = "rona"  # break reason of an agent who let a call ring out
# Entries looked at per tick by each sweep of stale index entries and timers (about
# 0.1-0.3 ms on a loaded core), besides what each dispatch pays for what it added.
UPKEEP_STEP = 300

ReservationHook = Callable[[Reservation], None]
HOURS_GRANULARITY = 60.0  # opening hours change only at a minute's turn (HH:MM)


class OpeningHours(Protocol):
    """A site's business hours (e.g. ``ivr.hours.BusinessHours``), in its own time zone."""

    def is_open(self, moment: datetime) -> bool: ...

# Members compared on every decision, read off their enum once: in Python 3.11 the enum
# metaclass's ``__getattr__`` hook makes each ``AgentState.AVAILABLE`` cost ~0.1-0.5 µs.
AVAILABLE = AgentState.AVAILABLE
BREAK = AgentState.BREAK
OFFLINE = AgentState.OFFLINE
RESERVE = AgentActivity.RESERVE
RELEASE = AgentActivity.RELEASE
HANG_UP = AgentActivity.HANG_UP
WRAP_UP_DONE = AgentActivity.WRAP_UP_DONE
WAITING = CallStatus.WAITING
CONNECTED = CallStatus.CONNECTED
HELD = CallStatus.HELD
OFFERED = CallStatus.OFFERED
RESERVATION_TIMER = TimerKind.RESERVATION

_P = ParamSpec("_P")
_R = TypeVar("_R")


def command(method: Callable[Concatenate[Router, _P], _R]) -> Callable[Concatenate[Router, _P], _R]:
    """A change to routing state: with a dispatch hook, dispatch once it is done."""

    @functools.wraps(method)
    def run(router: Router, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        router._depth += 1
        try:
            return method(router, *args, **kwargs)
        finally:
            router._depth -= 1
            if router._depth == 0 and router._on_reservation is not None:
                router._dispatch_to_hook()

    return run


class Router:
    """Skill- and load-aware automatic call distribution; see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        wall_clock: Callable[[], float] | None = None,
        publish: EventSink | None = None,
        on_reservation: ReservationHook | None = None,
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
    ) -> None:
        if rona_return_seconds is not None and rona_return_seconds <= 0:
            raise InvalidArgument(f"rona_return_seconds must be > 0, got {rona_return_seconds}")
        self._clock = clock
        self._wall_clock = wall_clock if wall_clock is not None else clock
        self._sink = publish
        self._on_reservation = on_reservation
        self._depth = 0  # commands running (a command may run another)
        self._dispatching = False
        self._reservation_timeout = reservation_timeout_seconds
        self._occupancy_window = occupancy_window_seconds
        self._arrival_window = arrival_window_seconds
        self._default_handle = default_handle_seconds
        self._handle_smoothing = handle_time_smoothing
        self._rona_return = rona_return_seconds

        self._timers = TimerHeap()
        self._agents = AgentBook(occupancy_window_seconds, explain_sample)
        self._calls = CallBook(self._agents, self._timers)
        self._reservations = ReservationBook()
        self._decisions = DecisionLog(
            decisions_per_call, decision_calls_kept, decisions_max_age_seconds
        )
        self._selection = Selector(
            self._agents,
            self._calls,
            occupancy_window_seconds=occupancy_window_seconds,
            explain_sample=explain_sample,
            runners_up=explain_runners_up,
            callers_remembered=callers_remembered,
            to_wall=self._to_wall,
        )
        self._forecast = WaitForecast(self._agents, self._calls)
        self._offer_counter = 0
        self._site_hours: dict[str, OpeningHours] = {}
        self._hours_due: float | None = None  # router-clock time of the next look at them

    # ------------------------------------------------------------------ clocks and output

    def _to_wall(self, moment: float) -> float:
        """A router-clock time as wall-clock time, for records."""
        if self._wall_clock is self._clock:
            return moment
        return self._wall_clock() - (self._clock() - moment)

    def _from_wall(self, moment: float) -> float:
        if self._wall_clock is self._clock:
            return moment
        return self._clock() - (self._wall_clock() - moment)

    def _publish(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    def _dispatch_to_hook(self) -> None:
        """Dispatch and offer each reservation through the hook; a command the hook runs
        (e.g. failing an offer at once) is dispatched by this loop, not recursively."""
        if self._dispatching or self._on_reservation is None:
            return
        self._dispatching = True
        try:
            while reservations := self._match():
                for reservation in reservations:
                    self._on_reservation(reservation)
        finally:
            self._dispatching = False

    # ------------------------------------------------------------------ configuration

    @command
    def upsert_agent(self, profile: AgentProfile) -> None:
        """Add an agent (OFFLINE) or replace its profile, keeping its live state."""
        agent = self._agents.put(profile, self._clock())
        extension = profile.extension
        queues = self._calls.queues
        for name in agent.queues:
            queues[name].agents.discard(extension)
        agent.queues = self._calls.queues_served_by(profile)
        for name in agent.queues:
            queues[name].agents.add(extension)
        for call_id in list(agent.held_calls):
            held = self._calls[call_id]
            if self._selection.qualification(agent, held)[1] is not None:
                self._calls.release_hold(held)
        self._agents.refresh(agent)

    @command
    def remove_agent(self, extension: str) -> None:
        agent = self._agents.require(extension)
        if agent.state in HANDLING_STATES:
            raise AgentBusy(f"agent {extension} is {agent.state.value}; end its call first")
        for call_id in list(agent.held_calls):
            self._calls.release_hold(self._calls[call_id])
        for name in agent.queues:
            self._calls.queues[name].agents.discard(extension)
        self._agents.remove(agent)

    @command
    def upsert_queue(self, config: QueueConfig) -> None:
        """Add or replace a queue; calls already waiting keep their place and are re-timed."""
        queue = self._calls.queues.get(config.name)
        if queue is None:
            queue = BookedQueue(
                config=config,
                handle_time=HandleTimeAverage(self._default_handle, self._handle_smoothing),
                arrivals=ArrivalRate(self._arrival_window),
            )
        else:
            queue.config = config
        self._calls.put_queue(queue)
        for extension in queue.agents:
            self._agents[extension].queues.discard(config.name)
        queue.agents = self._agents.serving(config)
        for extension in queue.agents:
            self._agents[extension].queues.add(config.name)
            if extension in self._agents.available:
                self._agents.mark_freed(extension)
        self._agents.available.set_pools(config.name, pool_specs(config), queue.agents)
        now = self._clock()
        for waiting in list(self._calls_of_queue(config.name)):
            if waiting.status in (CallStatus.WAITING, CallStatus.HELD):
                self._calls.take_out_of_line(waiting)
                self._calls.file_in_line(waiting, queue, now)

    @command
    def remove_queue(self, name: str) -> None:
        queue = self._calls.queue(name)
        in_use = [
            c.call_id for c in self._calls_of_queue(name) if c.status is not CallStatus.CONNECTED
        ]
        if in_use:
            raise QueueInUse(f"queue {name} still has {len(in_use)} call(s), e.g. {in_use[0]}")
        for extension in queue.agents:
            self._agents[extension].queues.discard(name)
        self._agents.available.drop_pools(name)
        self._calls.drop_queue(name)

    @command
    def set_site_health(self, site: str, healthy: bool) -> None:
        """Agents at an unhealthy site are never chosen; calls they hold are not touched."""
        if self._agents.set_site_health(site, healthy):
            self._publish(SiteHealthChanged(site, healthy, at=self._wall_clock()))

    @command
    def set_site_hours(self, site: str, hours: OpeningHours | None) -> None:
        """The site's business hours (None: always open); applied at once."""
        if hours is None:
            self._site_hours.pop(site, None)
            self._open_site(site, True)
        else:
            self._site_hours[site] = hours
        self._check_site_hours()

    def site_open(self, site: str) -> bool:
        """Whether ``site`` is within its business hours (a site without hours always is)."""
        return self._agents.site_open(site)

    def site_opening(self) -> Mapping[str, bool]:
        """Every site given business hours: whether it is open now."""
        return {site: self._agents.site_open(site) for site in sorted(self._site_hours)}

    def _check_site_hours(self) -> None:
        if not self._site_hours:
            self._hours_due = None
            return
        wall = self._wall_clock()
        moment = datetime.fromtimestamp(wall, UTC)
        for site, hours in self._site_hours.items():
            self._open_site(site, hours.is_open(moment))
        next_turn = (math.floor(wall / HOURS_GRANULARITY) + 1) * HOURS_GRANULARITY
        self._hours_due = self._clock() + (next_turn - wall)

    def _open_site(self, site: str, is_open: bool) -> None:
        if self._agents.set_site_open(site, is_open):
            self._publish(SiteOpeningChanged(site, is_open, at=self._wall_clock()))

    # ------------------------------------------------------------------ agent state

    @command
    def login(self, extension: str) -> None:
        agent = self._agents.require(extension)
        if not agent.reachable:
            raise InvalidTransition(f"agent {extension} cannot log in: its phone is not registered")
        self._transition(agent, AgentActivity.LOGIN)

    @command
    def logout(self, extension: str) -> None:
        """Log out; on a call the logout happens when the call's wrap-up ends."""
        agent = self._agents.require(extension)
        if agent.state in (AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL):
            agent.pending = (AgentActivity.LOGOUT, None)
            return
        if agent.state is AgentState.WRAP_UP:
            agent.pending = (AgentActivity.LOGOUT, None)
            self._finish_wrap_up(agent)
            return
        self._transition(agent, AgentActivity.LOGOUT)
        self._after_leaving_service(agent)

    @command
    def start_break(self, extension: str, reason: str) -> None:
        """Go not-ready with ``reason``; on a call the break starts when its wrap-up ends."""
        agent = self._agents.require(extension)
        if agent.state in (AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL):
            agent.pending = (AgentActivity.BREAK_START, reason)
            return
        if agent.state is AgentState.WRAP_UP:
            agent.pending = (AgentActivity.BREAK_START, reason)
            self._finish_wrap_up(agent)
            return
        self._transition(agent, AgentActivity.BREAK_START, reason)

    @command
    def end_break(self, extension: str) -> None:
        agent = self._agents.require(extension)
        if agent.pending is not None and agent.pending[0] is AgentActivity.BREAK_START:
            agent.pending = None  # the agent changed its mind before the call ended
            return
        self._transition(agent, AgentActivity.BREAK_END)

    @command
    def end_wrap_up(self, extension: str) -> None:
        """The agent is ready before its wrap-up time is over."""
        agent = self._agents.require(extension)
        if agent.state is not AgentState.WRAP_UP:
            raise InvalidTransition(f"agent {extension} is {agent.state.value}, not in wrap-up")
        self._finish_wrap_up(agent)

    @command
    def agent_reachable(self, extension: str, reachable: bool) -> None:
        """Registration news from the registrar. An unreachable agent goes OFFLINE: at once
        when idle, failing its reservation if it had one, or after its current call."""
        agent = self._agents.require(extension)
        agent.reachable = reachable
        if reachable:
            self._agents.refresh(agent)
            return
        if agent.reservation_id is not None:
            self._fail_reservation(self._reservations.require(agent.reservation_id), "error")
        if agent.state is AgentState.ON_CALL:
            agent.pending = (AgentActivity.LOGOUT, None)
        elif agent.state is AgentState.WRAP_UP:
            self._finish_wrap_up(agent)
        elif agent.state is not AgentState.OFFLINE:
            self._transition(agent, AgentActivity.UNREACHABLE)
        self._after_leaving_service(agent)

    @command
    def personal_call_started(self, extension: str, call_id: str) -> None:
        """The agent is engaged on a call that did not come from a queue (either direction):
        never offered a queue call until ``personal_call_ended`` for every such call."""
        agent = self._agents.require(extension)
        agent.personal_calls.add(call_id)
        self._agents.refresh(agent)

    @command
    def personal_call_ended(self, extension: str, call_id: str) -> None:
        agent = self._agents.require(extension)
        agent.personal_calls.discard(call_id)
        self._agents.refresh(agent)

    # ------------------------------------------------------------------ call flow

    @command
    def enqueue(self, call: RoutingRequest) -> int:
        """Put a call in line; returns its 1-based position. ``call.enqueued_at`` (wall
        clock; default now) is when the caller started waiting, e.g. before a transfer."""
        queue = self._calls.queue(call.queue)
        if call.call_id in self._calls:
            raise DuplicateCall(f"call {call.call_id} is already known to the router")
        now = self._clock()
        if call.enqueued_at is None:
            enqueued_at = now
            call = call.waiting_since(self._to_wall(now))
        else:
            enqueued_at = self._from_wall(call.enqueued_at)
        language = call.language if call.language is not None else queue.config.language
        waiting = self._calls.new_call(
            call,
            enqueued_at,
            language,
            now,
            queue.config.rings_active_after(now - enqueued_at),
        )
        if call.caller in self._agents:
            waiting.excluded[call.caller] = "the caller of this call"
        self._calls.enter_line(waiting, queue, now)
        position = self._calls.position_of(waiting, now)
        self._publish(
            CallQueued(
                call.call_id,
                call.queue,
                call.priority,
                position,
                self._to_wall(enqueued_at),
                str(call.kind),  # its value (a StrEnum; ``.value`` is slower)
                at=self._to_wall(now),
            )
        )
        return position

    def other_sites_after(self, call_id: str) -> float | None:
        """Seconds before this waiting call may be offered to other sites' agents (0: now,
        after its queue's ``sites_after_seconds`` of waiting since ``enqueued_at``); None
        when it may not be: its queue names no other site, or it is not waiting here."""
        waiting = self._calls.get(call_id)
        if waiting is None or waiting.status is not CallStatus.WAITING or waiting.for_site:
            return None
        queue = self._calls.queues.get(waiting.call.queue)
        if queue is None or not queue.config.sites:
            return None
        waited = self._clock() - waiting.enqueued_at
        return max(0.0, queue.config.sites_after_seconds - waited)

    def withdraw(self, call_id: str, reason: str) -> WaitingCallRecord | None:
        """A callback request leaves the line unserved (cancelled, expired, no longer ours):
        an agent reserved for it is released; nothing is counted. Returns what the router
        knew, or None for an unknown call. Only callbacks are withdrawn: a caller abandons."""
        waiting = self._calls.get(call_id)
        if waiting is None:
            return None
        if waiting.call.kind is not CallKind.CALLBACK:
            raise InvalidArgument(f"call {call_id} is a live call: it abandons or is dropped")
        return self._leave_line(call_id, reason, withdrawn=True)

    def abandon(self, call_id: str) -> WaitingCallRecord | None:
        """The caller hung up. Returns what the router knew, or None for an unknown call."""
        return self._leave_line(call_id, None)

    def drop(self, call_id: str, reason: str) -> WaitingCallRecord | None:
        """The server ended the call (``reason``: e.g. 'media_timeout'). A call in line or
        being offered is counted as dropped, not abandoned; a connected one simply ends."""
        return self._leave_line(call_id, reason)

    @command
    def _leave_line(
        self, call_id: str, dropped_for: str | None, withdrawn: bool = False
    ) -> WaitingCallRecord | None:
        waiting = self._calls.get(call_id)
        if waiting is None:
            return None
        now = self._clock()
        record = self._calls.record_of(waiting, now)
        if waiting.status is CallStatus.CONNECTED:
            self.call_ended(call_id)
            return record
        queue = self._calls.queues.get(waiting.call.queue)
        if waiting.status is CallStatus.OFFERED and waiting.elsewhere is not None:
            pass  # the other site's agent: that site lets it go when the call does
        elif waiting.status is CallStatus.OFFERED:
            reservation = self._reservations.pop(waiting.reservation_id or "")
            agent = self._agents[reservation.agent]
            self._transition(agent, AgentActivity.RELEASE)
            agent.clear_call()
            self._apply_pending(agent)
        else:
            self._calls.take_out_of_line(waiting)
        self._calls.forget(call_id)
        waited = now - waiting.enqueued_at
        if withdrawn:
            self._publish(
                CallWithdrawn(
                    call_id, waiting.call.queue, waited, dropped_for or "", at=self._to_wall(now)
                )
            )
            return record
        if dropped_for is not None:
            if queue is not None:
                queue.service.count_dropped()
            self._publish(
                CallDropped(call_id, waiting.call.queue, waited, dropped_for, at=self._to_wall(now))
            )
            return record
        within_sla = queue is not None and waited <= queue.config.sla_seconds
        if queue is not None:
            queue.service.count_abandoned(within_sla)
        self._publish(
            CallAbandoned(call_id, waiting.call.queue, waited, within_sla, at=self._to_wall(now))
        )
        return record

    def dispatch(self) -> list[Reservation]:
        """Match the agents and calls that changed since the last dispatch. With a dispatch
        hook, the reservations made are offered through it (and returned for information)."""
        if self._on_reservation is None:
            return self._match()
        made: list[Reservation] = []
        hook = self._on_reservation

        def collect(reservation: Reservation) -> None:
            made.append(reservation)
            hook(reservation)

        self._on_reservation = collect
        try:
            self._dispatch_to_hook()
        finally:
            self._on_reservation = hook
        return made

    def _match(self) -> list[Reservation]:
        try:
            return self._match_changes()
        finally:
            # Upkeep owed for the entries and timers added since the last dispatch: a
            # little per change, so no step ever has to do it all at once.
            self._calls.flush_timers()
            self._agents.available.pay_compaction()
            self._timers.pay_sweep()

    def _match_changes(self) -> list[Reservation]:
        reservations: list[Reservation] = []
        agents = self._agents
        while (extension := agents.take_freed()) is not None:
            agent = agents.get(extension)
            if agent is None or extension not in agents.available:
                continue
            best, competing = self._selection.best_call_for(agent, self._clock())
            if best is None:
                continue
            reservation = self._route(best, "agent", competing, freed_agent=agent)
            if reservation is not None:
                reservations.append(reservation)
            if extension in agents.available and (
                reservation is not None or best.status is CallStatus.HELD
            ):
                # Someone else took the call, or it is kept for its preferred agent: look again.
                agents.mark_freed(extension, first=True)
        now = self._clock()
        calls = self._calls.take_changed()
        if len(calls) > 1:
            calls.sort(key=lambda waiting: self._calls.rank(waiting, now))
        for waiting in calls:
            if waiting.status is WAITING:
                reservation = self._route(waiting, "call", ())
                if reservation is not None:
                    reservations.append(reservation)
        return reservations

    @command
    def ringing(self, reservation_id: str, ring_seconds: float | None = None) -> None:
        """The agent's phone rings: the ring timeout now runs instead of the reservation timeout.
        ``ring_seconds`` replaces the queue's ring timeout for this offer (a customer-first
        callback rings the customer before the agent)."""
        if ring_seconds is not None and not ring_seconds > 0:
            raise InvalidArgument(f"ring_seconds must be > 0, got {ring_seconds}")
        reservation = self._reservations.require(reservation_id)
        if reservation.ringing:
            return
        now = self._clock()
        agent = self._agents[reservation.agent]
        self._transition(agent, AgentActivity.RING)
        reservation.ringing = True
        queue = self._calls.queues.get(reservation.queue)
        ring_timeout = queue.config.ring_timeout_seconds if queue else self._reservation_timeout
        if ring_seconds is not None:
            ring_timeout = ring_seconds
        reservation.expires_at = now + ring_timeout
        self._timers.schedule(reservation.expires_at, TimerKind.RESERVATION, reservation_id)
        self._publish(
            AgentRinging(
                reservation_id,
                reservation.call_id,
                agent.extension,
                self._to_wall(reservation.expires_at),
                at=self._to_wall(now),
            )
        )

    @command
    def answered(self, reservation_id: str) -> None:
        reservation = self._reservations.require(reservation_id)
        now = self._clock()
        agent = self._agents[reservation.agent]
        waiting = self._calls[reservation.call_id]
        self._transition(agent, AgentActivity.ANSWER)
        self._reservations.pop(reservation_id)
        agent.reservation_id = None
        agent.last_caller = waiting.call.caller or None
        waiting.status = CallStatus.CONNECTED
        waiting.reservation_id = None
        waiting.answered_at = now
        waited = now - waiting.enqueued_at
        queue = self._calls.queues.get(reservation.queue)
        within_sla = queue is not None and waited <= queue.config.sla_seconds
        if queue is not None:
            queue.service.count_answered(within_sla)
        if waiting.call.caller:
            self._selection.remember_caller(waiting.call.caller, agent.extension)
        self._publish(
            QueueCallAnswered(
                waiting.call_id,
                reservation.queue,
                agent.extension,
                waited,
                within_sla,
                at=self._to_wall(now),
            )
        )

    @command
    def reservation_failed(self, reservation_id: str, reason: str) -> None:
        """The offer did not connect. The call goes back to its original place in line; on
        'no_answer' the agent is made not-ready (break 'rona'); on 'busy', 'declined' or
        'error' the agent stays ready but is never offered this call again."""
        if reason not in FAILURE_REASONS:
            raise InvalidArgument(
                f"reservation failure reason must be one of {sorted(FAILURE_REASONS)}, got {reason!r}"
            )
        self._fail_reservation(self._reservations.require(reservation_id), reason)

    @command
    def call_ended(self, call_id: str) -> None:
        """The connected call hung up: the agent enters wrap-up. For a call still in line
        or being offered this is an abandon."""
        waiting = self._calls.get(call_id)
        if waiting is None:
            raise UnknownCall(call_id)
        if waiting.status is not CONNECTED:
            self.abandon(call_id)
            return
        now = self._clock()
        if waiting.elsewhere is not None:  # its agent's state is the other site's business
            self._calls.forget(call_id)
            talk = 0.0 if waiting.answered_at is None else now - waiting.answered_at
            self._publish(QueueCallEnded(call_id, waiting.call.queue, waiting.elsewhere[1], talk,
                                         at=self._to_wall(now)))
            return
        agent = self._agents[waiting.agent or ""]
        self._calls.forget(call_id)
        agent.talk_seconds = 0.0 if waiting.answered_at is None else now - waiting.answered_at
        self._transition(agent, HANG_UP)
        self._publish(
            QueueCallEnded(
                call_id,
                waiting.call.queue,
                agent.extension,
                agent.talk_seconds,
                at=self._to_wall(now),
            )
        )
        queue = self._calls.queues.get(waiting.call.queue)
        wrap_up = queue.config.wrap_up_seconds if queue is not None else 0.0
        if wrap_up <= 0 or agent.pending is not None or not agent.reachable:
            self._finish_wrap_up(agent)
        else:
            agent.wrap_until = now + wrap_up
            self._timers.schedule(agent.wrap_until, TimerKind.WRAP_UP, agent.extension)

    @command
    def reserve_for_site(self, call: RoutingRequest, site: str,
                         agent: str | None = None) -> Reservation | Decision:
        """Another site asks for one of this site's free agents for ``call``, which waits
        there: reserve the agent the queue's strategy picks now (``agent``: only that one),
        or say why none. The call never enters this site's line; the reservation expires
        after the reservation timeout unless the call arrives (``ringing``/``answered``)
        or is released (``release_for_site``) first. Returns the reservation, or the
        decision that found nobody."""
        queue = self._calls.queue(call.queue)
        if call.call_id in self._calls:
            raise DuplicateCall(f"call {call.call_id} is already known to the router")
        now = self._clock()
        enqueued_at = now if call.enqueued_at is None else self._from_wall(call.enqueued_at)
        if call.enqueued_at is None:
            call = call.waiting_since(self._to_wall(now))
        if agent is not None:
            call = replace(call, preferred_agent=agent)
        language = call.language if call.language is not None else queue.config.language
        waiting = self._calls.new_call(
            call, enqueued_at, language, now, queue.config.rings_active_after(now - enqueued_at)
        )
        waiting.for_site = site
        waiting.hold_done = True  # a foreign call is never held here for a busy agent
        choice = self._selection.choose_agent(waiting, f"site {site}", (), None, now)
        chosen = choice.agent
        if chosen is None or (agent is not None and chosen.extension != agent):
            self._calls.forget(call.call_id)
            decision = choice.decision.get()
            if chosen is not None:
                decision = replace(decision, chosen=None, note=f"agent {agent} is not free")
            self._decisions.remember(LazyDecision.ready(decision))
            return decision
        return self._reserve(chosen, waiting, choice.decision, now)

    @command
    def release_for_site(self, reservation_id: str) -> bool:
        """The other site gave up a reservation it asked for (timed out, caller gone):
        the agent is free again. Idempotent: False when there is nothing (left) to
        release, including a reservation that was not for another site's call."""
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            return False
        waiting = self._calls.get(reservation.call_id)
        if waiting is None or waiting.for_site is None:
            return False
        self._end_foreign_reservation(reservation, AgentActivity.RELEASE)
        return True

    @command
    def offer_elsewhere(self, call_id: str, site: str, agent: str) -> None:
        """``site`` reserved its ``agent`` for this call waiting here: out of the line while
        the call is set up there (``elsewhere_answered`` / ``elsewhere_failed``)."""
        waiting = self._calls.require(call_id)
        if waiting.status is not CallStatus.WAITING:
            raise InvalidTransition(f"call {call_id} is {waiting.status.value}, not waiting")
        self._calls.take_out_of_line(waiting)
        waiting.status = CallStatus.OFFERED
        waiting.elsewhere = (site, agent)

    @command
    def elsewhere_failed(self, call_id: str) -> None:
        """The other site's agent did not take the call: back to its original place here."""
        waiting = self._calls.require(call_id)
        if waiting.elsewhere is None or waiting.status is not CallStatus.OFFERED:
            raise InvalidTransition(f"call {call_id} is not offered to another site")
        site, agent = waiting.elsewhere
        waiting.elsewhere = None
        waiting.earlier_offers.append((f"{agent}@{site}", "not_taken"))
        self._calls.return_to_line(waiting, self._clock())

    @command
    def elsewhere_answered(self, call_id: str) -> None:
        """The other site's agent answered: the call is connected (counted here, where it
        waited); ``call_ended`` ends it."""
        waiting = self._calls.require(call_id)
        if waiting.elsewhere is None or waiting.status is not CallStatus.OFFERED:
            raise InvalidTransition(f"call {call_id} is not offered to another site")
        now = self._clock()
        waiting.status = CallStatus.CONNECTED
        waiting.answered_at = now
        waited = now - waiting.enqueued_at
        queue = self._calls.queues.get(waiting.call.queue)
        within_sla = queue is not None and waited <= queue.config.sla_seconds
        if queue is not None:
            queue.service.count_answered(within_sla)
        self._publish(QueueCallAnswered(call_id, waiting.call.queue, waiting.elsewhere[1], waited,
                                        within_sla, at=self._to_wall(now)))

    def _end_foreign_reservation(self, reservation: HeldAgent, activity: AgentActivity,
                                 reason: str | None = None) -> None:
        """Another site's call leaves this router: its records are kept where it waits,
        so only the agent's state changes are published here."""
        self._reservations.pop(reservation.reservation_id)
        agent = self._agents[reservation.agent]
        self._transition(agent, activity, reason)
        if activity is AgentActivity.NO_ANSWER:
            self._schedule_rona_return(agent, self._clock())
        agent.clear_call()
        self._calls.forget(reservation.call_id)
        self._apply_pending(agent)

    def tick(self) -> list[Reservation]:
        """Run due timers (reservation and ring timeouts, wrap-ups, expansion, overflow,
        preferred-agent holds, announcements) in time order, then dispatch."""
        self._run_due_timers()
        return self.dispatch()

    @command
    def _run_due_timers(self) -> None:
        now = self._clock()
        self._calls.flush_timers()
        for kind, key, generation in self._timers.pop_due(now):
            self._run_timer(kind, key, generation, now)
        if self._hours_due is not None and now >= self._hours_due:
            self._check_site_hours()
        # At most four timers per call (expand, max wait, hold, announce), one per reservation
        # and two per agent (wrap-up, RONA return): past that many (and a margin), most are stale.
        # Both sweeps go a slice per tick, so no tick holds the event loop for long.
        live_bound = 4 * len(self._calls) + len(self._reservations) + 2 * len(self._agents) + 64
        if self._timers.sweeping:
            self._timers.sweep_step(UPKEEP_STEP)
        elif len(self._timers) > live_bound:
            self._timers.start_sweep(self._timer_is_live)
        self._agents.available.compact(UPKEEP_STEP)

    def next_due(self) -> float | None:
        """Router-clock time of the earliest timer (None: no timer): ``tick()`` has nothing
        to do before then, unless a command comes in between."""
        self._calls.flush_timers()  # a call enqueued without a dispatch yet owes its timers
        due = self._timers.next_due()
        if self._hours_due is None:
            return due
        return self._hours_due if due is None else min(due, self._hours_due)

    def _timer_is_live(self, kind: TimerKind, key: str, generation: int) -> bool:
        """Whether a timer can still do anything: a max-wait timer would otherwise keep
        every answered call's id in the heap until its due time."""
        if kind is TimerKind.RESERVATION:
            return key in self._reservations
        if kind not in CALL_TIMERS:
            return True  # an agent's (wrap-up, RONA return): few, and run when due
        waiting = self._calls.get(key)
        return waiting is not None and waiting.timer_generation == generation

    @command
    def reconcile(self, live_call_ids: Collection[str]) -> list[str]:
        """Forget calls the PBX no longer has (lost BYE or CANCEL): waiting or offered ones are
        abandoned, connected ones ended. Returns the call ids that were cleaned up."""
        # Another site's call held for a reservation is not a call here yet: its own
        # reservation timer lets it go.
        stale = [call_id for call_id, waiting in self._calls.items()
                 if call_id not in live_call_ids
                 and not (waiting.for_site is not None and waiting.status is CallStatus.OFFERED)]
        for call_id in stale:
            if call_id in self._calls:
                self.call_ended(call_id)
        return stale

    def reset_statistics(self) -> None:
        """Start a new service-level period (e.g. at midnight)."""
        for queue in self._calls.queues.values():
            queue.service.reset()

    @property
    def active_calls(self) -> int:
        """Calls the router holds: waiting, offered or connected to an agent."""
        return len(self._calls)

    @property
    def active_reservations(self) -> int:
        return len(self._reservations)

    # ------------------------------------------------------------------ views

    def agent(self, extension: str) -> AgentSnapshot:
        return self._agents.snapshot(self._agents.require(extension), self._clock(), self._to_wall)

    def agents(self) -> list[AgentSnapshot]:
        now = self._clock()
        return [self._agents.snapshot(agent, now, self._to_wall) for agent in self._agents.values()]

    def queue(self, name: str) -> QueueConfig:
        return self._calls.queue(name).config

    def queues(self) -> list[QueueConfig]:
        return [queue.config for queue in self._calls.queues.values()]

    def queue_stats(self, name: str) -> QueueStats:
        queue = self._calls.queue(name)
        now = self._clock()
        staffed, available, free_in = self._forecast.staffing(queue, now)
        oldest = [self._calls[c].enqueued_at for c in queue.held]
        line_oldest = queue.line.oldest_enqueued_at()
        if line_oldest is not None:
            oldest.append(line_oldest)
        service = queue.service
        return QueueStats(
            name=name,
            waiting=len(queue.line) + len(queue.held),
            longest_wait=now - min(oldest) if oldest else 0.0,
            ewt_seconds=self._forecast.queue_ewt(queue, staffed, free_in, now),
            agents_available=available,
            agents_staffed=staffed,
            service_level=service.service_level(queue.config.service_level_definition),
            service_level_definition=queue.config.service_level_definition.value,
            answered=service.answered,
            abandoned=service.abandoned,
            answered_within_sla=service.answered_within_sla,
            abandoned_within_sla=service.abandoned_within_sla,
            dropped=service.dropped,
            average_handle_seconds=queue.handle_time.seconds,
            arrivals_per_hour=queue.arrivals.per_second(now) * 3600.0,
        )

    def call(self, call_id: str) -> WaitingCallRecord:
        return self._calls.record_of(self._calls.require(call_id), self._clock())

    def waiting_calls(self, queue: str) -> list[WaitingCallRecord]:
        """The calls in line (and held) of ``queue``, in service order."""
        self._calls.queue(queue)
        now = self._clock()
        calls = [
            c
            for c in self._calls_of_queue(queue)
            if c.status in (CallStatus.WAITING, CallStatus.HELD)
        ]
        calls.sort(key=lambda waiting: self._calls.rank(waiting, now))
        return [
            WaitingCallRecord(c.call, c.status, now - c.enqueued_at, index, None, c.rings_active)
            for index, c in enumerate(calls, start=1)
        ]

    def position(self, call_id: str) -> int:
        """1-based place in line (1 = next); 0 once an agent is reserved or connected."""
        return self._calls.position_of(self._calls.require(call_id), self._clock())

    def ewt(self, call_id: str) -> float | None:
        """Expected seconds until this caller is offered to an agent (None: nobody staffed)."""
        waiting = self._calls.require(call_id)
        now = self._clock()
        position = self._calls.position_of(waiting, now)
        if position == 0:
            return 0.0
        return self._forecast.call_ewt(
            waiting, self._calls.queue(waiting.call.queue), position, now
        )

    def explain(self, call_id: str) -> list[Decision]:
        """The last routing decisions for a call, oldest first (kept for a while after the
        call leaves the router; see :meth:`forget_old_decisions`)."""
        decisions = self._decisions.of(call_id)
        if decisions is None:
            if call_id not in self._calls:
                raise UnknownCall(call_id)
            return []
        return list(decisions)

    @property
    def decisions_kept(self) -> int:
        """How many calls' decisions are in memory."""
        return len(self._decisions)

    def forget_old_decisions(self) -> int:
        """Drop the decisions of calls that left the router ``decisions_max_age_seconds`` ago
        or more (counted from when this first saw them gone); returns how many calls went."""
        return self._decisions.forget_old(self._clock(), self._calls)

    # ------------------------------------------------------------------ routing

    def _route(
        self,
        waiting: BookedCall,
        trigger: str,
        competing: tuple[CompetingCall, ...],
        freed_agent: BookedAgent | None = None,
    ) -> Reservation | None:
        """Find the agent for ``waiting`` and reserve it; record the decision either way."""
        now = self._clock()
        choice = self._selection.choose_agent(waiting, trigger, competing, freed_agent, now)
        if choice.agent is not None:
            return self._reserve(choice.agent, waiting, choice.decision, now)
        if choice.held_for is not None:
            self._calls.hold(waiting, choice.held_for, choice.hold_until)
        self._decisions.remember(choice.decision)
        return None

    def _reserve(
        self, agent: BookedAgent, waiting: BookedCall, decision: LazyDecision, now: float
    ) -> Reservation:
        assert agent.reservation_id is None and agent.state is AVAILABLE
        if waiting.status is HELD:
            self._calls.release_hold(waiting, back_in_line=False)
        elif waiting.for_site is None:
            self._calls.take_out_of_line(waiting)
        extension = agent.profile.extension
        self._offer_counter += 1
        agent.rotation = self._offer_counter
        self._transition(agent, RESERVE)
        reservation = HeldAgent(
            new_reservation_id(),
            waiting.call_id,
            extension,
            waiting.call.queue,
            now + self._reservation_timeout,
            decision,
        )
        reservation_id = reservation.reservation_id
        self._reservations.add(reservation)
        agent.reservation_id = reservation_id
        agent.call_id = waiting.call_id
        agent.call_queue = waiting.call.queue
        waiting.status = OFFERED
        waiting.agent = extension
        waiting.reservation_id = reservation_id
        self._timers.schedule(reservation.expires_at, RESERVATION_TIMER, reservation_id)
        self._decisions.remember(decision)
        expires_at = self._to_wall(reservation.expires_at)
        if waiting.for_site is None:  # another site's call is recorded at that site
            self._publish(
                AgentReserved(
                    reservation_id,
                    waiting.call_id,
                    extension,
                    waiting.call.queue,
                    expires_at,
                    at=self._to_wall(now),
                )
            )
        return Reservation(
            reservation_id, waiting.call_id, extension, waiting.call.queue, expires_at, decision
        )

    def _fail_reservation(self, reservation: HeldAgent, reason: str) -> None:
        now = self._clock()
        waiting = self._calls[reservation.call_id]
        if waiting.for_site is not None:
            if reason == "no_answer":
                self._end_foreign_reservation(reservation, AgentActivity.NO_ANSWER, RONA_REASON)
            else:
                self._end_foreign_reservation(reservation, AgentActivity.RELEASE)
            return
        self._reservations.pop(reservation.reservation_id)
        agent = self._agents[reservation.agent]
        if reason == "no_answer":
            self._transition(agent, AgentActivity.NO_ANSWER, RONA_REASON)
            self._schedule_rona_return(agent, now)
        else:
            waiting.excluded[agent.extension] = f"{reason} this call before"
            self._transition(agent, AgentActivity.RELEASE)
        waiting.earlier_offers.append(
            (agent.extension, "rang_out" if reason == "no_answer" else reason)
        )
        agent.clear_call()
        self._calls.return_to_line(waiting, now)
        self._publish(
            ReservationFailed(
                reservation.reservation_id,
                waiting.call_id,
                agent.extension,
                reason,
                at=self._to_wall(now),
            )
        )
        self._apply_pending(agent)

    def _expire_reservation(self, reservation: HeldAgent, now: float) -> None:
        if self._calls[reservation.call_id].for_site is not None:
            # The other site's call never came (or its phone rang out here).
            if reservation.ringing:
                self._end_foreign_reservation(reservation, AgentActivity.NO_ANSWER, RONA_REASON)
            else:
                self._end_foreign_reservation(reservation, AgentActivity.RELEASE)
            return
        self._reservations.pop(reservation.reservation_id)
        agent = self._agents[reservation.agent]
        waiting = self._calls[reservation.call_id]
        if reservation.ringing:
            self._transition(agent, AgentActivity.NO_ANSWER, RONA_REASON)
            self._schedule_rona_return(agent, now)
        else:
            self._transition(agent, AgentActivity.RELEASE)
        waiting.earlier_offers.append(
            (agent.extension, "rang_out" if reservation.ringing else "not_confirmed")
        )
        agent.clear_call()
        self._calls.return_to_line(waiting, now)
        self._publish(
            ReservationExpired(
                reservation.reservation_id,
                waiting.call_id,
                agent.extension,
                reservation.ringing,
                at=self._to_wall(now),
            )
        )
        self._apply_pending(agent)

    # ------------------------------------------------------------------ timers

    def _schedule_rona_return(self, agent: BookedAgent, now: float) -> None:
        if self._rona_return is not None and agent.state is AgentState.BREAK:
            # Only this very break ends: a later break has another start time.
            agent.rona_since = agent.state_since
            self._timers.schedule(now + self._rona_return, TimerKind.RONA_RETURN, agent.extension)

    def _run_timer(self, kind: TimerKind, key: str, generation: int, now: float) -> None:
        if kind is TimerKind.RESERVATION:
            reservation = self._reservations.get(key)
            if reservation is not None and reservation.expires_at <= now:
                self._expire_reservation(reservation, now)
            return
        if kind is TimerKind.RONA_RETURN:
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
        if kind is TimerKind.WRAP_UP:
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
        queue = self._calls.queue_of(waiting)
        if kind is TimerKind.EXPAND:
            self._expand(waiting, queue, now)
        elif kind is TimerKind.MAX_WAIT:
            self._overflow(waiting, queue, now)
        elif kind is TimerKind.HOLD:
            if waiting.status is CallStatus.HELD:
                self._calls.release_hold(waiting)
        elif kind is TimerKind.ANNOUNCE:
            position = self._calls.position_of(waiting, now)
            self._publish(
                AnnouncementDue(
                    waiting.call_id,
                    queue.config.name,
                    position,
                    self._forecast.call_ewt(waiting, queue, position, now),
                    at=self._to_wall(now),
                )
            )
            self._timers.schedule(
                now + queue.config.announce_interval_seconds, TimerKind.ANNOUNCE, key, generation
            )

    def _expand(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        expansion = queue.config.expansion
        rings = queue.config.rings_active_after(now - waiting.enqueued_at)
        # Due means due: ``enqueued_at + after`` can round up past ``now`` while ``now -
        # enqueued_at`` rounds below ``after``, and the same timer would then be rescheduled
        # at the same time forever.
        while (
            rings <= len(expansion)
            and waiting.enqueued_at + expansion[rings - 1].after_seconds <= now
        ):
            rings += 1
        if rings > waiting.rings_active:
            waiting.rings_active = rings
            self._publish(
                CallExpanded(waiting.call_id, queue.config.name, rings, at=self._to_wall(now))
            )
            if waiting.status is CallStatus.WAITING:
                self._calls.mark_changed(waiting)
        if waiting.rings_active <= len(expansion):
            ring = expansion[waiting.rings_active - 1]
            self._timers.schedule(
                waiting.enqueued_at + ring.after_seconds,
                TimerKind.EXPAND,
                waiting.call_id,
                waiting.timer_generation,
            )

    def _overflow(self, waiting: BookedCall, queue: BookedQueue, now: float) -> None:
        config = queue.config
        # Compared as it was scheduled (``entered + max``), not as ``now - entered``: at the
        # due time the two can round differently, and the call would never overflow.
        if (
            config.max_wait_seconds is None
            or now < waiting.entered_queue_at + config.max_wait_seconds
        ):
            return
        self._calls.take_out_of_line(waiting)
        target = config.overflow
        waited = now - waiting.enqueued_at
        target_queue = self._calls.queues.get(target) if target is not None else None
        if target_queue is not None:
            waiting.call = replace(waiting.call, queue=target_queue.config.name)
            waiting.entered_queue_at = now
            target_queue.arrivals.observe(now)
            self._calls.file_in_line(waiting, target_queue, now)
        else:
            self._calls.forget(waiting.call_id)
        self._publish(
            CallOverflowed(
                waiting.call_id,
                config.name,
                target,
                target_queue is not None,
                waited,
                at=self._to_wall(now),
            )
        )

    # ------------------------------------------------------------------ agent bookkeeping

    def _transition(
        self, agent: BookedAgent, activity: AgentActivity, reason: str | None = None
    ) -> None:
        old = agent.state
        new = next_state(old, activity)
        if new is None:
            raise InvalidTransition(
                f"agent {agent.extension} cannot {activity.value} while {old.value}"
            )
        now = self._clock()
        if old in STAFFED_STATES:
            agent.occupancy.record(agent.state_since, now, old in HANDLING_STATES)
        agent.state = new
        agent.state_since = now
        agent.reason = reason if new is BREAK else None
        if new is AVAILABLE and activity is not RELEASE:
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
        profile = agent.profile
        self._publish(
            AgentStateChanged(
                profile.extension, profile.site, old, new, agent.reason, at=self._to_wall(now)
            )
        )
        self._agents.refresh(agent)

    def _finish_wrap_up(self, agent: BookedAgent) -> None:
        now = self._clock()
        queue = self._calls.queues.get(agent.call_queue or "")
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
            self._transition(agent, WRAP_UP_DONE)
        if agent.state is OFFLINE:
            self._after_leaving_service(agent)

    def _apply_pending(self, agent: BookedAgent) -> None:
        """A deferred logout or break requested during a failed offer takes effect now."""
        pending = agent.pending
        if pending is None:
            return
        agent.pending = None
        if next_state(agent.state, pending[0]) is not None:
            self._transition(agent, pending[0], pending[1])
            if agent.state is AgentState.OFFLINE:
                self._after_leaving_service(agent)

    def _after_leaving_service(self, agent: BookedAgent) -> None:
        """A logged-out agent no longer holds calls waiting for it."""
        for call_id in list(agent.held_calls):
            self._calls.release_hold(self._calls[call_id])

    def _calls_of_queue(self, name: str) -> list[BookedCall]:
        offered = [r.call_id for r in self._reservations.of_queue(name)]
        return list(self._calls.of_queue(name, offered))
