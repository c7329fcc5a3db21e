"""The discrete-event loop: a day of callers and agents played against the real ``Router``.

(Over 500 lines: what each event does to the router and how the router's events are
read back belong together; split, neither half could be checked alone.)

Virtual time only: the router's injected clock reads the loop's ``now``, so a day
runs in seconds with no sockets and no sleeping. The loop does what the server's
queue service does with a router: enqueue calls, carry out each reservation
(ring the agent, answer), end calls, let agents log in, take breaks and log out,
mark sites down, and run ``Router.tick()`` every ``router_tick_seconds`` like the
server does (only while something can be due: a call in the router, an agent in
wrap-up or on a ring-no-answer break; connected calls have no timer). Every figure of the report is read from
the router's own domain events (``QueueCallAnswered``, ``CallAbandoned``,
``AgentStateChanged``, ...), as the server's metrics are: the router pushes them to the
simulation's sink, which reads them back after each step it drives.

Callbacks use the real request steps (``callbacks.requests``) and line order
(``callbacks.due_in_line_order``): an accepted callback leaves the line and comes
back with the caller's original enqueue time, so it keeps its place.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from callbacks import CallbackRequest, CallbackState, Outcome, due_in_line_order
from callbacks.requests import apply_outcome, claim, new_request
from events import (
    AgentReserved,
    AgentStateChanged,
    CallAbandoned,
    CallDropped,
    CallOverflowed,
    CallQueued,
    Event,
    EventSink,
    QueueCallAnswered,
    ReservationExpired,
    ReservationFailed,
)
from router import AgentState, InvalidTransition, Reservation, Router, RoutingRequest
from simulation.report import DayStatistics
from simulation.scenario import INTERVAL_SECONDS, QueueLoad, Scenario

_STAFFED = frozenset({AgentState.AVAILABLE, AgentState.RESERVED, AgentState.RINGING,
                      AgentState.ON_CALL, AgentState.WRAP_UP})
_CALLBACK_LEASE = timedelta(minutes=5)
_SIMULATION_SITE = "simulation"  # owner of the simulated callback requests

# Event kinds, in the order same-time events run (ends before starts frees agents first).
_CALL_END, _WRAP_END, _ANSWER, _ABANDON, _ENQUEUE, _ARRIVAL = range(6)
_BREAK_END, _AWAY_END, _SITE_UP, _LOGIN, _SITE_DOWN, _AWAY_START, _BREAK_START, _LOGOUT = range(6, 14)
_CALLBACK_DUE = 14


@dataclass(eq=False, slots=True)
class _SimCall:
    """A caller as the simulator follows it (the router knows it by ``router_id``)."""

    number: int
    load: QueueLoad
    interval: int  # of its arrival in the report; -1: before the report starts
    enqueued_at: float = 0.0
    handle: float = 0.0
    wrap_up: float = 0.0
    router_id: str | None = None
    queue: str = ""
    reservation_id: str | None = None
    connected: bool = False
    agent: str | None = None
    request: CallbackRequest | None = None
    callback_queue: str = ""  # where the callback was requested: its outcome is counted there
    tries: int = 0


@dataclass
class _AgentTrack:
    site: str
    queues: tuple[str, ...]
    state: AgentState = AgentState.OFFLINE
    since: float = 0.0
    queue: str | None = None  # of the call it is handling
    wrap_generation: int = 0
    reason: str | None = None


# Builds the router a simulation drives, from the simulated clock and the sink its events
# must be pushed to.
RouterFactory = Callable[[Callable[[], float], EventSink], Router]


@dataclass
class SimulationResult:
    scenario: Scenario
    seed: int
    statistics: DayStatistics
    events_run: int
    router_ticks: int
    warnings: list[str] = field(default_factory=list)
    agent_queues: dict[str, tuple[str, ...]] = field(default_factory=dict)


def center_seconds(scenario: Scenario, timezone: str, local_seconds: float) -> float:
    """Seconds on the center clock of ``local_seconds`` after midnight in ``timezone`` (wall time)."""
    midnight = datetime.combine(scenario.day, time(0), tzinfo=ZoneInfo(scenario.timezone))
    wall = datetime.combine(scenario.day, time(0)) + timedelta(seconds=local_seconds)
    return wall.replace(tzinfo=ZoneInfo(timezone)).timestamp() - midnight.timestamp()


class Simulation:
    """One run of a scenario with one seed; ``run()`` returns its statistics."""

    def __init__(self, scenario: Scenario, seed: int = 1,
                 router_factory: RouterFactory | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.now = scenario.start
        self._rng = random.Random(seed)
        # The router's events, pushed as they happen, until _record_events reads them.
        self._router_events: list[Event] = []
        factory = router_factory or (lambda clock, publish: Router(clock, publish=publish))
        self.router = factory(lambda: self.now, self._router_events.append)
        self._midnight_utc = datetime.combine(scenario.day, time(0),
                                              tzinfo=ZoneInfo(scenario.timezone)).timestamp()
        self._events: list[tuple[float, int, int, object]] = []
        self._order = itertools.count()
        self._call_numbers = itertools.count(1)
        self._calls: dict[str, _SimCall] = {}  # by router call id
        self._reservations: dict[str, str] = {}  # live reservation -> router call id
        self._agents: dict[str, _AgentTrack] = {}
        self._away: dict[int, list[str]] = {}
        self._pending_callbacks: dict[str, tuple[CallbackRequest, _SimCall]] = {}
        self._overflowed_away: list[str] = []
        self._wrapping = 0
        self._rona = 0
        self._events_run = 0
        self._ticks = 0
        self._warnings: list[str] = []
        self._configs = {config.name: config for config in scenario.queues}
        intervals = max(1, math.ceil((scenario.end - scenario.start) / INTERVAL_SECONDS))
        self.statistics = DayStatistics(scenario.start, intervals, [c.name for c in scenario.queues])
        self._report_from = scenario.start + scenario.warm_up

    # ------------------------------------------------------------------ set-up

    def _schedule(self, at: float, kind: int, payload: object = None) -> None:
        heapq.heappush(self._events, (at, kind, next(self._order), payload))

    def _set_up(self) -> None:
        scenario = self.scenario
        for config in scenario.queues:
            self.router.upsert_queue(config)
        for group in scenario.staff:
            timezone = scenario.site_timezones.get(group.profile.site, scenario.timezone)
            start = center_seconds(scenario, timezone, group.shift_start)
            end = center_seconds(scenario, timezone, group.shift_end)
            breaks = [(center_seconds(scenario, timezone, b.start), b) for b in group.breaks]
            for index in range(group.count):
                extension = f"{group.name}-{index + 1:03d}"
                profile = replace(group.profile, extension=extension,
                                  name=f"{group.profile.name} {index + 1}")
                self.router.upsert_agent(profile)
                self._agents[extension] = _AgentTrack(profile.site, ())
                self._schedule(start, _LOGIN, extension)
                self._schedule(end, _LOGOUT, extension)
                for at, pause in breaks:
                    # Breaks are staggered over the group so a team does not leave at once.
                    offset = (index % 4) * pause.seconds if group.count > 3 else 0.0
                    self._schedule(at + offset, _BREAK_START, (extension, pause.reason))
                    self._schedule(at + offset + pause.seconds, _BREAK_END, extension)
        for snapshot in self.router.agents():
            self._agents[snapshot.extension].queues = tuple(snapshot.queues)
        for outage in scenario.outages:
            self._schedule(outage.start, _SITE_DOWN, outage.site)
            self._schedule(outage.end, _SITE_UP, outage.site)
        for number, away in enumerate(scenario.away):
            self._schedule(away.start, _AWAY_START, number)
            self._schedule(away.end, _AWAY_END, number)
        for load in scenario.loads:
            # Callers before the simulated span are not simulated (nor piled up at its start).
            self._schedule_next_arrival(load, max(load.opens, scenario.start))
            config = self._configs[load.queue]
            if load.wrap_up.average > config.wrap_up_seconds:
                self._warnings.append(
                    f"queue {load.queue}: mean wrap-up {load.wrap_up.average:g} s is over the "
                    f"queue's wrap_up_seconds {config.wrap_up_seconds:g}: the router ends wrap-up there")
        self._router_events.clear()  # agents and queues set up: nothing to count yet

    def _schedule_next_arrival(self, load: QueueLoad, after: float) -> None:
        """Poisson arrivals at a rate constant within each interval: draw the gap at the
        current rate; crossing into the next interval redraws there (memoryless)."""
        at = after
        while True:
            index = int((at - load.opens) // INTERVAL_SECONDS)
            if index >= len(load.calls) or at >= self.scenario.end:
                return
            interval_end = load.opens + (index + 1) * INTERVAL_SECONDS
            expected = load.calls[index]
            if expected > 0:
                gap = self._rng.expovariate(expected / INTERVAL_SECONDS)
                if at + gap < interval_end:
                    self._schedule(at + gap, _ARRIVAL, load)
                    return
            at = interval_end

    # ------------------------------------------------------------------ the loop

    def run(self) -> SimulationResult:
        self._set_up()
        scenario = self.scenario
        tick = scenario.router_tick_seconds
        next_tick = scenario.start + tick
        events = self._events
        while events:
            at = events[0][0]
            if at >= scenario.end:
                break
            if self._timers_may_be_due():
                while next_tick <= at:
                    self._run_tick(next_tick)
                    next_tick += tick
            elif next_tick <= at:  # nothing can be due: skip to the tick after this event
                next_tick = scenario.start + (math.floor((at - scenario.start) / tick) + 1) * tick
            at, kind, _, payload = heapq.heappop(events)
            self._advance(at)
            self._events_run += 1
            self._handle(kind, payload)
            self._carry_out(self.router.dispatch())
        self._advance(scenario.end)
        self.statistics.close(scenario.end, self._agents.items())
        return SimulationResult(scenario, self.seed, self.statistics, self._events_run,
                                self._ticks, self._warnings,
                                {name: track.queues for name, track in self._agents.items()})

    def _timers_may_be_due(self) -> bool:
        """Router timers belong to calls in line, reservations, wrap-ups and ring-no-answer
        breaks: with none of these, ticking would find nothing due."""
        return bool(self._reservations or self._wrapping or self._rona
                    or self.statistics.callers_in_line)

    def _run_tick(self, at: float) -> None:
        self._advance(at)
        self._ticks += 1
        self._carry_out(self.router.tick())

    def _advance(self, at: float) -> None:
        if at > self.now:
            self.now = at

    # ------------------------------------------------------------------ what happens

    def _handle(self, kind: int, payload: object) -> None:
        router = self.router
        if kind == _ARRIVAL:
            assert isinstance(payload, QueueLoad)
            self._arrive(payload)
        elif kind == _ENQUEUE:
            assert isinstance(payload, _SimCall)
            self._enqueue(payload)
        elif kind == _ANSWER:
            assert isinstance(payload, str)
            self._answer(payload)
        elif kind == _ABANDON:
            assert isinstance(payload, _SimCall)
            call = payload
            if call.router_id is not None and not call.connected and call.request is None:
                router.abandon(call.router_id)
        elif kind == _CALL_END:
            assert isinstance(payload, _SimCall)
            self._end_call(payload)
        elif kind == _WRAP_END:
            assert isinstance(payload, tuple)
            extension, generation = payload
            track = self._agents[extension]
            if track.state is AgentState.WRAP_UP and track.wrap_generation == generation:
                router.end_wrap_up(extension)
        elif kind == _LOGIN:
            router.login(str(payload))
        elif kind == _LOGOUT:
            router.logout(str(payload))
        elif kind == _BREAK_START:
            assert isinstance(payload, tuple)
            extension, reason = payload
            if self._agents[extension].state is not AgentState.OFFLINE:
                self._start_break(extension, reason)
        elif kind == _BREAK_END:
            self._end_break(str(payload))
        elif kind == _SITE_DOWN:
            router.set_site_health(str(payload), False)
        elif kind == _SITE_UP:
            router.set_site_health(str(payload), True)
        elif kind == _AWAY_START:
            assert isinstance(payload, int)
            away = self.scenario.away[payload]
            chosen = [ext for ext, track in self._agents.items()
                      if track.site == away.site and track.state in _STAFFED][:away.count]
            if len(chosen) < away.count:
                self._warnings.append(f"{away.reason} at {away.site}: {away.count} agents asked, "
                                      f"{len(chosen)} were logged in")
            self._away[payload] = chosen
            for extension in chosen:
                self._start_break(extension, away.reason)
        elif kind == _AWAY_END:
            assert isinstance(payload, int)
            for extension in self._away.pop(payload, []):
                self._end_break(extension)
        elif kind == _CALLBACK_DUE:
            self._dial_due_callbacks()
        self._record_events()

    def _start_break(self, extension: str, reason: str) -> None:
        try:
            self.router.start_break(extension, reason)
        except InvalidTransition:
            pass  # logged out meanwhile

    def _end_break(self, extension: str) -> None:
        try:
            self.router.end_break(extension)
        except InvalidTransition:
            pass  # not on that break (logged out, or the break was deferred and dropped)

    def _arrive(self, load: QueueLoad) -> None:
        self._schedule_next_arrival(load, self.now)
        number = next(self._call_numbers)
        interval = self._interval_of(self.now)
        call = _SimCall(number, load, interval)
        if load.self_service and self._rng.random() < load.self_service:
            self.statistics.contained(load.queue, interval)
            return
        if load.ivr_seconds > 0:
            self._schedule(self.now + load.ivr_seconds, _ENQUEUE, call)
        else:
            self._enqueue(call)

    def _interval_of(self, at: float) -> int:
        if at < self._report_from:
            return -1
        return self.statistics.interval_of(at)

    def _enqueue(self, call: _SimCall) -> None:
        load = call.load
        call.enqueued_at = self.now
        call.queue = load.queue
        call.router_id = f"c{call.number}"
        call.handle = load.handle.sample(self._rng)
        call.wrap_up = load.wrap_up.sample(self._rng)
        self._calls[call.router_id] = call
        self.statistics.offered(load.queue, call.interval)
        self.router.enqueue(RoutingRequest(call.router_id, load.queue))
        self._record_events()
        self._carry_out(self.router.dispatch())
        if call.connected or call.reservation_id is not None:
            return
        offer = load.callback
        if offer is not None:
            estimate = self.router.ewt(call.router_id)
            if (estimate is None or estimate > offer.offer_over_seconds) \
                    and self._rng.random() < offer.uptake:
                self._take_callback(call)
                return
        if load.patience is not None:
            self._schedule(self.now + load.patience.sample(self._rng), _ABANDON, call)

    def _take_callback(self, call: _SimCall) -> None:
        """The caller accepts a callback: out of the line now, back at the same place."""
        offer = call.load.callback
        assert offer is not None and call.router_id is not None
        self.router.drop(call.router_id, "callback")
        self._record_events()
        del self._calls[call.router_id]
        self.statistics.callback_requested(call.queue, call.interval)
        call.callback_queue = call.queue
        call.request = new_request(
            f"+{call.number:011d}", call.queue, site=_SIMULATION_SITE, now=self._utc(self.now),
            lease=_CALLBACK_LEASE, policy=offer.policy, requested_at=self._utc(call.enqueued_at),
            origin_call_id=call.router_id)
        self._pending_callbacks[call.request.id] = (call.request, call)
        self._dial_due_callbacks()

    def _dial_due_callbacks(self) -> None:
        """Due callback requests join their queue's line in line order, at their original time."""
        pending = {request.id: (request, call) for request, call in self._pending_callbacks.values()}
        for request in due_in_line_order([r for r, _ in pending.values()], self._utc(self.now)):
            _, call = pending[request.id]
            del self._pending_callbacks[request.id]
            call.request = request
            call.tries += 1
            call.router_id = f"c{call.number}-callback{call.tries}"
            self._calls[call.router_id] = call
            self.router.enqueue(RoutingRequest(call.router_id, call.queue, enqueued_at=call.enqueued_at))
            self._record_events()

    def _carry_out(self, reservations: list[Reservation]) -> None:
        """Ring each reserved agent; it answers after the scenario's ring time."""
        self._record_events()
        for reservation in reservations:
            call = self._calls[reservation.call_id]
            rid = reservation.reservation_id
            self._reservations[rid] = reservation.call_id
            call.reservation_id = rid
            self.router.ringing(rid)
            delay = self.scenario.agent_answer.sample(self._rng)
            if call.request is not None:
                offer = call.load.callback
                assert offer is not None
                call.request = claim(call.request, _SIMULATION_SITE, self._utc(self.now),
                                     _CALLBACK_LEASE)
                delay += offer.ring.sample(self._rng)
            if delay <= 0:
                self._answer(rid)
            else:
                self._schedule(self.now + delay, _ANSWER, rid)
        self._record_events()

    def _answer(self, rid: str) -> None:
        call_id = self._reservations.pop(rid, None)
        if call_id is None:
            return  # the caller hung up or the ring timed out first
        call = self._calls[call_id]
        if call.request is not None:
            offer = call.load.callback
            assert offer is not None
            answered = self._rng.random() < offer.answer_share
            outcome = Outcome.ANSWERED if answered else Outcome.NO_ANSWER
            call.request = apply_outcome(call.request, outcome, self._utc(self.now),
                                         site=_SIMULATION_SITE, policy=offer.policy)
            if not answered:
                self.router.drop(call_id, "callback_no_answer")  # releases the agent
                self._record_events()
                del self._calls[call_id]
                call.router_id = call.reservation_id = None
                self._after_failed_callback(call)
                return
            self.statistics.callback_completed(call.callback_queue, call.interval)
        call.reservation_id = None
        self.router.answered(rid)
        call.connected = True
        self._schedule(self.now + call.handle, _CALL_END, call)

    def _after_failed_callback(self, call: _SimCall) -> None:
        request = call.request
        assert request is not None
        if request.state is CallbackState.PENDING:
            self._pending_callbacks[request.id] = (request, call)
            due = (request.earliest_at.timestamp() - self._midnight_utc)
            self._schedule(max(due, self.now), _CALLBACK_DUE)
        else:
            self.statistics.callback_failed(call.callback_queue, call.interval)

    def _end_call(self, call: _SimCall) -> None:
        assert call.router_id is not None
        agent = call.agent
        self.router.call_ended(call.router_id)
        del self._calls[call.router_id]
        self._record_events()
        if agent is None:
            return
        track = self._agents[agent]
        if track.state is not AgentState.WRAP_UP:
            return
        cap = self._configs[track.queue or call.queue].wrap_up_seconds
        if call.wrap_up < cap:
            if call.wrap_up <= 0:
                self.router.end_wrap_up(agent)
            else:
                self._schedule(self.now + call.wrap_up, _WRAP_END, (agent, track.wrap_generation))

    # ------------------------------------------------------------------ the router's events

    def _record_events(self) -> None:
        statistics = self.statistics
        if not self._router_events:
            return
        # Taken as a batch: what the handling below makes the router do is read by the
        # nested call at its end.
        pushed = self._router_events[:]
        self._router_events.clear()
        for event in pushed:
            if isinstance(event, AgentStateChanged):
                track = self._agents[event.agent]
                statistics.agent_span(event.agent, track, event.at)
                if track.state is AgentState.WRAP_UP:
                    self._wrapping -= 1
                elif track.state is AgentState.BREAK and track.reason == "rona":
                    self._rona -= 1
                new = AgentState(event.new)  # the router passes its members: no copy made
                track.state, track.since, track.reason = new, event.at, event.reason
                if new is AgentState.WRAP_UP:
                    self._wrapping += 1
                    track.wrap_generation += 1
                elif new is AgentState.BREAK and event.reason == "rona":
                    self._rona += 1
            elif isinstance(event, AgentReserved):
                self._agents[event.agent].queue = event.queue
                call = self._calls[event.call_id]
                statistics.left_line(call.queue, self.now)
            elif isinstance(event, CallQueued):
                statistics.joined_line(event.queue, self.now)
            elif isinstance(event, ReservationExpired | ReservationFailed):
                call_id = self._reservations.pop(event.reservation_id, None)
                if call_id is not None:
                    call = self._calls[call_id]
                    call.reservation_id = None
                    statistics.joined_line(call.queue, self.now)
                    if call.request is not None and call.request.state is CallbackState.DIALING:
                        # The router keeps the callback at its place; so does the request.
                        offer = call.load.callback
                        assert offer is not None
                        call.request = apply_outcome(call.request, Outcome.AGENT_REJECTED,
                                                     self._utc(self.now), site=_SIMULATION_SITE,
                                                     policy=offer.policy)
            elif isinstance(event, QueueCallAnswered):
                call = self._calls[event.call_id]
                call.agent = event.agent
                statistics.answered(event.queue, call.interval, event.waited_seconds, event.within_sla)
            elif isinstance(event, CallAbandoned | CallDropped):
                gone = self._calls.get(event.call_id)
                if gone is None:
                    continue
                if gone.reservation_id is None:
                    statistics.left_line(gone.queue, self.now)
                else:
                    self._reservations.pop(gone.reservation_id, None)
                    gone.reservation_id = None
                if isinstance(event, CallAbandoned):
                    statistics.abandoned(event.queue, gone.interval, event.waited_seconds,
                                         event.within_sla)
                    del self._calls[event.call_id]
                    gone.router_id = None
            elif isinstance(event, CallOverflowed):
                call = self._calls[event.call_id]
                statistics.overflowed(call.queue, event.target if event.moved else None,
                                      call.interval)
                if event.moved and event.target is not None:
                    statistics.left_line(call.queue, self.now)
                    statistics.joined_line(event.target, self.now)
                    call.queue = event.target
                else:
                    self._overflowed_away.append(event.call_id)
        if self._overflowed_away:
            # The target is not a queue: the server takes the caller out of the router.
            away, self._overflowed_away = self._overflowed_away, []
            for call_id in away:
                call = self._calls.pop(call_id)
                call.router_id = None
                statistics.left_line(call.queue, self.now)
                self.router.drop(call_id, "overflow")
            self._record_events()

    def _utc(self, at: float) -> datetime:
        return datetime.fromtimestamp(self._midnight_utc + at, ZoneInfo("UTC"))
