"""Randomised churn of agents and calls against the router's safety invariants.

Invariants checked after every step:
- an agent holds at most one reservation, and a call is offered to at most one agent;
- every offer went to an agent that was free, reachable, at a healthy site and
  qualified for the call (skills at the minimum of an active ring, language);
- after a dispatch, no free agent qualifies for any call still waiting (nobody
  waits while a qualified agent idles), and a held call's preferred agent is busy.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from events import CallAbandoned, Event, QueueCallAnswered, ReservationExpired, ReservationFailed
from router import (
    AgentProfile,
    AgentSnapshot,
    AgentState,
    CallStatus,
    QueueConfig,
    Reservation,
    Router,
    RouterError,
    RoutingRequest,
    SkillExpansion,
    Strategy,
)

AGENTS = {
    "a1": ({"billing": 6, "sales": 2}, {"en"}, "mad"),
    "a2": ({"billing": 3}, {"en", "es"}, "mad"),
    "a3": ({"sales": 7}, {"es"}, "bcn"),
    "a4": ({"billing": 9, "fraud": 4}, {"en"}, "bcn"),
    "a5": ({"general": 5}, {"en", "es"}, "mad"),
    "a6": ({"sales": 4, "billing": 5}, {"en", "es"}, "bcn"),
}
QUEUES = [
    QueueConfig(
        "billing",
        skills={"billing": 5},
        strategy=Strategy.SKILL_WEIGHTED,
        wrap_up_seconds=5,
        ring_timeout_seconds=10,
        expansion=(SkillExpansion(20, {"billing": 3}), SkillExpansion(40, {"general": 5})),
        max_wait_seconds=90,
        overflow="sales",
    ),
    QueueConfig(
        "sales",
        skills={"sales": 3},
        strategy=Strategy.ROUND_ROBIN,
        wrap_up_seconds=0,
        preferred_agent_wait_seconds=15,
    ),
    QueueConfig("spanish", language="es", strategy=Strategy.LEAST_OCCUPANCY, wrap_up_seconds=3),
]
agent_ids = st.sampled_from(sorted(AGENTS))


def meets(skills: Mapping[str, int], requirement: Mapping[str, int]) -> bool:
    return all(skills.get(skill, 0) >= level for skill, level in requirement.items())


class RouterChurn(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.published: list[Event] = []
        self.router = Router(lambda: self.now, reservation_timeout_seconds=3,
                             publish=self.published.append)
        for queue in QUEUES:
            self.router.upsert_queue(queue)
        for extension, (skills, languages, site) in AGENTS.items():
            self.router.upsert_agent(
                AgentProfile(extension, extension, site, skills, frozenset(languages))
            )
        self.calls: dict[str, RoutingRequest] = {}
        self.refused: set[tuple[str, str]] = set()
        self.reservations: dict[str, Reservation] = {}
        self.next_call = 0

    # ---------------------------------------------------------------- helpers

    def snapshots(self) -> dict[str, AgentSnapshot]:
        return {snapshot.extension: snapshot for snapshot in self.router.agents()}

    def qualifies(self, extension: str, call_id: str, rings_active: int) -> bool:
        skills, languages, _ = AGENTS[extension]
        call = self.router.call(call_id).call  # the router's: an overflow moves it to another queue
        queue = self.router.queue(call.queue)
        language = call.language if call.language is not None else queue.language
        if language is not None and language not in languages:
            return False
        if not meets(skills, call.skills):
            return False
        return any(meets(skills, ring) for ring in queue.rings[:rings_active])

    def free(self, snapshot: AgentSnapshot) -> bool:
        return (
            snapshot.state is AgentState.AVAILABLE and snapshot.reachable and snapshot.site_healthy
        )

    def accept(self, reservations: list[Reservation]) -> None:
        snapshots = self.snapshots()
        for reservation in reservations:
            assert reservation.reservation_id not in self.reservations
            record = self.router.call(reservation.call_id)
            assert record.status is CallStatus.OFFERED and record.agent == reservation.agent
            assert self.qualifies(reservation.agent, reservation.call_id, record.rings_active)
            assert (reservation.call_id, reservation.agent) not in self.refused
            snapshot = snapshots[reservation.agent]
            assert snapshot.reachable and snapshot.site_healthy
            assert snapshot.state is AgentState.RESERVED
            self.reservations[reservation.reservation_id] = reservation
        self.check_nobody_idles_while_a_call_waits()

    def check_nobody_idles_while_a_call_waits(self) -> None:
        free = [s.extension for s in self.snapshots().values() if self.free(s)]
        for queue in QUEUES:
            for record in self.router.waiting_calls(queue.name):
                call_id = record.call.call_id
                candidates = [record.agent] if record.status is CallStatus.HELD else free
                for extension in candidates:
                    if extension in free and (call_id, extension) not in self.refused:
                        assert not self.qualifies(extension, call_id, record.rings_active), (
                            f"{extension} idles while {call_id} waits"
                        )

    def forget_finished_reservations(self) -> None:
        """Follow the event stream: it is how consumers learn that an offer ended."""
        events, self.published[:] = self.published[:], []
        for event in events:
            if isinstance(event, ReservationExpired | ReservationFailed):
                self.reservations.pop(event.reservation_id, None)
            elif isinstance(event, CallAbandoned | QueueCallAnswered):
                for reservation_id, reservation in list(self.reservations.items()):
                    if reservation.call_id == event.call_id:
                        del self.reservations[reservation_id]

    # ---------------------------------------------------------------- agent rules

    @rule(extension=agent_ids)
    def login(self, extension: str) -> None:
        try:
            self.router.login(extension)
        except RouterError:
            pass
        self.forget_finished_reservations()

    @rule(extension=agent_ids)
    def logout(self, extension: str) -> None:
        try:
            self.router.logout(extension)
        except RouterError:
            pass
        self.forget_finished_reservations()

    @rule(extension=agent_ids, reason=st.sampled_from(["lunch", "training"]))
    def start_break(self, extension: str, reason: str) -> None:
        try:
            self.router.start_break(extension, reason)
        except RouterError:
            pass
        self.forget_finished_reservations()

    @rule(extension=agent_ids)
    def end_break(self, extension: str) -> None:
        try:
            self.router.end_break(extension)
        except RouterError:
            pass
        self.forget_finished_reservations()

    @rule(extension=agent_ids, reachable=st.booleans())
    def registration(self, extension: str, reachable: bool) -> None:
        reserved = self.router.agent(extension).reserved_call
        self.router.agent_reachable(extension, reachable)
        if not reachable and reserved is not None:
            self.refused.add((reserved, extension))  # failed with 'error'
        self.forget_finished_reservations()

    @rule(site=st.sampled_from(["mad", "bcn"]), healthy=st.booleans())
    def site_health(self, site: str, healthy: bool) -> None:
        self.router.set_site_health(site, healthy)

    # ---------------------------------------------------------------- call rules

    @rule(
        queue=st.sampled_from([q.name for q in QUEUES]),
        priority=st.integers(1, 3),
        language=st.sampled_from([None, "en", "es"]),
        extra=st.sampled_from([{}, {"fraud": 2}]),
        preferred=st.sampled_from([None, "a1", "a3"]),
        age=st.sampled_from([0.0, 30.0]),
    )
    def enqueue(
        self,
        queue: str,
        priority: int,
        language: str | None,
        extra: dict[str, int],
        preferred: str | None,
        age: float,
    ) -> None:
        self.next_call += 1
        call = RoutingRequest(
            f"c{self.next_call}",
            queue,
            priority=priority,
            language=language,
            caller=f"+34{self.next_call % 3}",
            preferred_agent=preferred,
            enqueued_at=self.now - age,
            skills=extra,
        )
        self.calls[call.call_id] = call
        self.router.enqueue(call)

    @rule()
    def dispatch(self) -> None:
        reservations = self.router.dispatch()
        self.forget_finished_reservations()
        self.accept(reservations)

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, 11.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        reservations = self.router.tick()
        self.forget_finished_reservations()
        self.accept(reservations)

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.calls)))
        self.router.abandon(call_id)
        self.forget_finished_reservations()

    @precondition(lambda self: bool(self.reservations))
    @rule(
        data=st.data(), outcome=st.sampled_from(["ring", "answer", "no_answer", "busy", "declined"])
    )
    def offer_outcome(self, data: st.DataObject, outcome: str) -> None:
        # In offer order, not by id: ids are random, and a draw that depends on them would
        # make a failing example impossible to replay or shrink.
        reservation_id = data.draw(st.sampled_from(list(self.reservations)))
        reservation = self.reservations[reservation_id]
        if outcome == "ring":
            self.router.ringing(reservation_id)
            return
        if outcome == "answer":
            self.router.answered(reservation_id)
        else:
            self.router.reservation_failed(reservation_id, outcome)
            if outcome != "no_answer":
                self.refused.add((reservation.call_id, reservation.agent))
        self.forget_finished_reservations()

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def hang_up(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.calls)))
        try:
            self.router.call_ended(call_id)
        except RouterError:
            del self.calls[call_id]  # already gone (abandoned or overflowed out)
        self.forget_finished_reservations()

    # ---------------------------------------------------------------- invariants

    @invariant()
    def one_reservation_per_agent_and_per_call(self) -> None:
        offered_calls = []
        for snapshot in self.router.agents():
            if snapshot.state in (AgentState.RESERVED, AgentState.RINGING):
                assert snapshot.reserved_call is not None
                offered_calls.append(snapshot.reserved_call)
            else:
                assert snapshot.reserved_call is None
        assert len(offered_calls) == len(set(offered_calls))
        agents_of_reservations = [r.agent for r in self.reservations.values()]
        assert len(agents_of_reservations) == len(set(agents_of_reservations))


RouterChurn.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
TestRouterChurn = RouterChurn.TestCase
