"""A callback's turn in the waiting line, and the connection of agent and customer.

Due requests wait in the router's line beside live callers (``keep``, each round of the
``CallbackService``): a ``RoutingRequest`` of kind callback at the request's ORIGINAL
enqueue time and priority, so positions and waits count it and nobody who came later is
served before it. When the router reserves an agent for one (``offer``, through the
``QueueService``), the service claims the request and tries it here (``dial``):

- agent-first (default): ring the agent (the screen-pop says it is a callback: number,
  original enqueue time, queue, priority, language), and once the agent answers, play
  them hold music while the customer is dialled through the queue's trunk; the customer
  answers: agent and customer are bridged. The customer does not answer, is busy or the
  number is invalid: the agent's call is hung up (wrap-up, as after a short call) and
  the outcome goes to the request (retry with backoff, or done). An agent who declines
  or lets it ring out is a ring-no-answer: the router puts the request back at its place
  and the request is back to pending (``agent_rejected``, no try counted).
- customer-first (``callbacks.queues.<q>.connect: customer_first``): the reserved agent
  is held while the customer is dialled; once the customer answers they hear hold music
  while the agent rings. An agent who does not take it puts the request back at its
  place in line with the customer still on hold, until the next agent answers or the
  customer hangs up.

The try ends when agent and customer are bridged (the request is completed); the
conversation goes on until either hangs up, and the other is then hung up too; the
agent then wraps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from callbacks import CallbackRequest, Outcome
from events import AgentOffered, CallEnded, EventBus, ReservationExpired
from pbx.calls.callback_service import TryResult
from pbx.calls.manager import CallLeg, CallManager, Dial, SipCall
from pbx.calls.outbound import OutboundCall, TrunkDialer
from pbx.calls.queueing import MUSIC_ON_HOLD
from pbx.configuration.callbacks import CallbackConfig
from pbx.media.engine import MediaEngine
from pbx.media.prompt import PromptLibrary
from router import CallKind, CallStatus, Reservation, Router, RouterError, RoutingRequest

log = logging.getLogger("pbx.calls.callback_connection")

CALL_ID_PREFIX = "callback-"
# An agent who declines a callback's preview or lets it ring out is a ring-no-answer
# (not-ready); a phone that cannot be reached at all is the router's 'error'.
_PREVIEW_NOT_TAKEN = frozenset({486, 600, 603, 408, 480, 487})
# Held for a customer-first callback beyond the customer's and the agent's ring times.
_CUSTOMER_FIRST_MARGIN_SECONDS = 5.0
_HUNG_UP_ON_HOLD = "the customer hung up on hold before an agent answered"


def call_id_of(request_id: str) -> str:
    """The id of a callback request in the router's line (and of its call with the agent)."""
    return f"{CALL_ID_PREFIX}{request_id}"


@dataclass(eq=False)
class CallbackEntry:
    """A request in the router's line, from joining it until it leaves or its try ends."""

    request: CallbackRequest
    offers: asyncio.Queue[Reservation] = field(default_factory=asyncio.Queue)
    trying: bool = False  # its turn came: claimed (or being claimed) and tried

    @property
    def call_id(self) -> str:
        return call_id_of(self.request.id)


@dataclass(eq=False)
class _AgentRing:
    """One reservation's ring of the agent's phone."""

    reservation: Reservation
    call: SipCall
    outcome: asyncio.Future[CallLeg | str]  # the answered leg, or why the agent did not take it
    dial: Dial | None = None

    @property
    def leg(self) -> CallLeg | None:
        if not self.outcome.done():
            return None
        answer = self.outcome.result()
        return answer if isinstance(answer, CallLeg) else None

    @property
    def why_not(self) -> str:
        answer = self.outcome.result() if self.outcome.done() else "called off"
        return answer if isinstance(answer, str) else ""


@dataclass(eq=False)
class _Conversation:
    call: SipCall
    customer: OutboundCall
    agent_gone: asyncio.Event
    task: asyncio.Task[None] | None = None


class CallbackConnector:
    """The ``CallbackLine`` and ``CallbackDialer`` of the server (see the module docstring).
    ``take_turn`` is the callback service's: it claims a request and tries it here."""

    def __init__(self, router: Router, calls: CallManager, media: MediaEngine, prompts: PromptLibrary,
                 outbound: TrunkDialer, config: CallbackConfig, events: EventBus) -> None:
        self.router = router
        self.calls = calls
        self.media = media
        self.outbound = outbound
        self.config = config
        self.events = events
        self.take_turn: Callable[[str], bool] | None = None
        self.entries: dict[str, CallbackEntry] = {}  # by router call id
        self._music = prompts.get(MUSIC_ON_HOLD)
        self._rings: dict[str, _AgentRing] = {}  # by reservation id
        self._agent_calls: dict[str, asyncio.Event] = {}  # agents' calls watched, by call id
        self._talking: dict[str, _Conversation] = {}  # by router call id
        events.subscribe(self._ring_out, ReservationExpired)
        events.subscribe(self._agent_call_ended, CallEnded)

    def resources(self) -> dict[str, int]:
        return {"callbacks_in_line": len(self.entries), "callback_conversations": len(self._talking)}

    # -- the line (CallbackLine) -----------------------------------------------------
    def keep(self, due: list[CallbackRequest]) -> None:
        wanted = {call_id_of(request.id): request for request in due}
        for call_id, entry in list(self.entries.items()):
            if not entry.trying and call_id not in wanted:
                self._withdraw(entry, "no longer due here")
        for call_id, request in wanted.items():
            waiting = self.entries.get(call_id)
            if waiting is None:
                if call_id not in self._talking:
                    self._enter_line(request)
            elif not waiting.trying:
                waiting.request = request

    def _enter_line(self, request: CallbackRequest) -> None:
        entry = CallbackEntry(request)
        self.entries[entry.call_id] = entry  # known before the router may offer it (at once)
        try:
            self.router.enqueue(RoutingRequest(
                entry.call_id, request.queue, priority=request.priority, caller=request.number,
                enqueued_at=request.requested_at.timestamp(), kind=CallKind.CALLBACK))
        except RouterError as error:
            self.entries.pop(entry.call_id, None)
            log.error("callback %s: cannot wait in queue %s: %s", request.id, request.queue, error)
            return
        log.info("callback %s for %s waits in queue %s at its place (enqueued %s)", request.id,
                 request.number, request.queue, request.requested_at.isoformat(timespec="seconds"))

    def _withdraw(self, entry: CallbackEntry, reason: str) -> None:
        self.entries.pop(entry.call_id, None)
        with contextlib.suppress(RouterError):
            self.router.withdraw(entry.call_id, reason)

    def not_claimed(self, request_id: str) -> None:
        entry = self.entries.get(call_id_of(request_id))
        if entry is not None:
            log.info("callback %s: its turn came but it is no longer this site's to dial", request_id)
            self._withdraw(entry, "not claimable")

    def try_over(self, request_id: str) -> None:
        """An agent reserved while the last try was ending gets the next turn now."""
        entry = self.entries.get(call_id_of(request_id))
        if entry is not None and not entry.trying and not entry.offers.empty():
            self._start_turn(entry)

    # -- the router's reservations (through the QueueService) ---------------------------
    def offer(self, reservation: Reservation) -> bool:
        entry = self.entries.get(reservation.call_id)
        if entry is None:
            return False
        entry.offers.put_nowait(reservation)
        if not entry.trying:
            self._start_turn(entry)
        return True

    def _start_turn(self, entry: CallbackEntry) -> None:
        if self.take_turn is None:
            raise RuntimeError("the callback connector has no callback service")
        # Refused while the previous try is still being recorded: try_over starts it then.
        entry.trying = self.take_turn(entry.request.id)

    def call_ids(self) -> set[str]:
        return set(self.entries) | set(self._talking)

    # -- a try (CallbackDialer) --------------------------------------------------------
    def can_dial(self, queue: str) -> bool:
        return self.outbound.can_dial(queue)

    async def dial(self, request: CallbackRequest) -> TryResult:
        entry = self.entries.get(call_id_of(request.id))
        if entry is None or not entry.trying:
            return TryResult(Outcome.AGENT_REJECTED, "no agent reserved for it")
        entry.request = request
        try:
            if self.config.callbacks.for_queue(request.queue).connect == "customer_first":
                return await self._customer_first(entry)
            return await self._agent_first(entry)
        finally:
            entry.trying = False
            self._after_try(entry)

    def _after_try(self, entry: CallbackEntry) -> None:
        """Back in line (an agent did not take it), talking, or out of the router."""
        try:
            status = self.router.call(entry.call_id).status
        except RouterError:
            self.entries.pop(entry.call_id, None)
            return
        if status in (CallStatus.WAITING, CallStatus.HELD):
            return  # the router put it back at its place: the next agent gets it
        self.entries.pop(entry.call_id, None)
        if entry.call_id in self._talking:
            return  # the conversation ends it (the agent then wraps up)
        with contextlib.suppress(RouterError):
            if status is CallStatus.CONNECTED:
                self.router.call_ended(entry.call_id)  # the agent wraps up, as after a short call
            else:
                self.router.withdraw(entry.call_id, "try over")

    async def _agent_first(self, entry: CallbackEntry) -> TryResult:
        request = entry.request
        ring = await self._ring_agent(entry, await entry.offers.get(), already_ringing=False)
        agent_leg = ring.leg
        if agent_leg is None:
            return TryResult(Outcome.AGENT_REJECTED, f"agent {ring.reservation.agent}: {ring.why_not}")
        assert agent_leg.media is not None
        self._step(lambda: self.router.answered(ring.reservation.reservation_id))
        agent_leg.media.play(self._music, repeat=True)  # while the customer's phone rings
        agent_gone = self._watch(ring.call)
        dialling = asyncio.ensure_future(self._dial_customer(request))
        gone = asyncio.ensure_future(agent_gone.wait())
        try:
            await asyncio.wait({dialling, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not dialling.done():
                dialling.cancel()  # the agent hung up, or the try was called off: CANCEL
                with contextlib.suppress(asyncio.CancelledError):
                    await dialling
            if dialling.cancelled():
                self._agent_calls.pop(ring.call.call_id, None)
                self.calls.hang_up(ring.call, "callback_called_off")
        if dialling.cancelled():
            return TryResult(Outcome.AGENT_REJECTED, f"agent {ring.reservation.agent} hung up "
                             "before the customer answered")
        result, customer = dialling.result()
        if customer is None:
            log.info("callback %s: the customer was not reached (%s); agent %s is told",
                     request.id, result.outcome.value, ring.reservation.agent)
            self._agent_calls.pop(ring.call.call_id, None)
            self.calls.hang_up(ring.call, f"callback_{result.outcome.value}")
            return result
        if ring.call.ended:  # the agent left as the customer answered
            self._agent_calls.pop(ring.call.call_id, None)
            self.outbound.hang_up(customer, "agent_gone")
            return TryResult(Outcome.AGENT_REJECTED, "the agent hung up as the customer answered",
                             result.call_id)
        self._bridge(entry, ring.call, agent_leg, customer, agent_gone)
        return result

    async def _customer_first(self, entry: CallbackEntry) -> TryResult:
        request = entry.request
        reservation = await entry.offers.get()
        rules = self.config.callbacks.for_queue(request.queue)
        ring_timeout = self.router.queue(request.queue).ring_timeout_seconds
        # The agent is held while the customer's phone rings, then while the agent's does.
        self._step(lambda: self.router.ringing(
            reservation.reservation_id,
            rules.no_answer_seconds + ring_timeout + _CUSTOMER_FIRST_MARGIN_SECONDS))
        try:
            result, customer = await self._dial_customer(request)
        except asyncio.CancelledError:
            self._step(lambda: self.router.withdraw(entry.call_id, "called off"))
            raise
        if customer is None:
            return result  # the reserved agent is released when the entry leaves the line
        customer.media.play(self._music, repeat=True)
        bridged = False
        already_ringing = True
        try:
            while True:
                ring = await self._ring_agent(entry, reservation, already_ringing=already_ringing,
                                              customer=customer)
                agent_leg = ring.leg
                if agent_leg is not None:
                    self._step(functools.partial(self.router.answered, ring.reservation.reservation_id))
                    self._bridge(entry, ring.call, agent_leg, customer, self._watch(ring.call))
                    bridged = True
                    return result
                if customer.ended.is_set():
                    return TryResult(Outcome.NO_ANSWER, _HUNG_UP_ON_HOLD, result.call_id)
                # Back at its place in line, the customer on hold: wait for the next agent.
                next_reservation = await self._next_offer(entry, customer)
                if next_reservation is None:
                    return TryResult(Outcome.NO_ANSWER, _HUNG_UP_ON_HOLD, result.call_id)
                reservation = next_reservation
                already_ringing = False
        finally:
            if not bridged:
                if not customer.ended.is_set():
                    self.outbound.hang_up(customer, "callback_called_off")
                with contextlib.suppress(RouterError):
                    if self.router.call(entry.call_id).status is not CallStatus.CONNECTED:
                        self.router.withdraw(entry.call_id, "customer gone")

    async def _next_offer(self, entry: CallbackEntry, customer: OutboundCall) -> Reservation | None:
        offer = asyncio.ensure_future(entry.offers.get())
        gone = asyncio.ensure_future(customer.ended.wait())
        try:
            await asyncio.wait({offer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not offer.done():
                offer.cancel()
        if offer.done() and not offer.cancelled():
            return offer.result() if not customer.ended.is_set() else None
        return None

    async def _dial_customer(self, request: CallbackRequest) -> tuple[TryResult, OutboundCall | None]:
        trunk = self.config.trunk_for(request.queue)
        if trunk is None:
            return TryResult(Outcome.TRUNK_FAILURE, f"no trunk for queue {request.queue}"), None
        rules = self.config.callbacks.for_queue(request.queue)
        return await self.outbound.call(request.number, trunk, ring_seconds=rules.no_answer_seconds)

    # -- the agent's phone ---------------------------------------------------------------
    async def _ring_agent(self, entry: CallbackEntry, reservation: Reservation, *,
                          already_ringing: bool, customer: OutboundCall | None = None) -> _AgentRing:
        """Ring the reserved agent; returns when the agent answered or did not take it (the
        router told: back at its place in line), or when ``customer`` hung up meanwhile (the
        entry then leaves the line)."""
        request = entry.request
        call = SipCall(entry.call_id, "callback", request.number, reservation.agent,
                       self.calls.endpoint.now())
        ring = _AgentRing(reservation, call, asyncio.get_running_loop().create_future())
        rid = reservation.reservation_id
        if not self._still_reserved(entry, reservation):
            ring.outcome.set_result("the reservation ended before the phone rang")
            return ring
        self._rings[rid] = ring

        def answered(leg: CallLeg) -> None:
            if ring.outcome.done():
                self.calls.hang_up_leg(leg)  # answered after the router gave up on it
                return
            ring.outcome.set_result(leg)

        def failed(status: int) -> None:
            if ring.outcome.done():
                return
            reason = "no_answer" if status in _PREVIEW_NOT_TAKEN else "error"
            self._step(lambda: self.router.reservation_failed(rid, reason))
            ring.outcome.set_result(f"did not take it ({status}, {reason})")

        headers = (("X-Centralita-Queue", reservation.queue),
                   ("X-Centralita-Caller", request.number),
                   ("X-Centralita-Callback", request.id))
        try:
            try:
                ring.dial = await self.calls.dial(call, reservation.agent, on_answered=answered,
                                                  on_failed=failed, extra_headers=headers,
                                                  personal=False)
            except OSError as error:
                log.error("callback %s: cannot ring agent %s: %s", request.id, reservation.agent, error)
            if ring.dial is None:
                failed(503)
                return ring
            if ring.outcome.done():
                return ring
            if not already_ringing:
                self._step(lambda: self.router.ringing(rid))
            self._screen_pop(entry, reservation)
            waits: set[asyncio.Future[object]] = {ring.outcome}  # type: ignore[arg-type]
            if customer is not None:
                waits.add(asyncio.ensure_future(customer.ended.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    if waiting is not ring.outcome:
                        waiting.cancel()
            if not ring.outcome.done():  # the customer hung up while the agent's phone rang
                ring.outcome.set_result("the customer hung up")
                self._step(lambda: self.router.withdraw(entry.call_id, "customer hung up"))
            return ring
        finally:
            self._rings.pop(rid, None)
            if not ring.outcome.done():  # called off (CancelledError)
                ring.outcome.set_result("called off")
                self._step(lambda: self.router.withdraw(entry.call_id, "called off"))
            if ring.leg is None and ring.dial is not None:
                self.calls.cancel_dial(ring.dial)

    def _still_reserved(self, entry: CallbackEntry, reservation: Reservation) -> bool:
        try:
            record = self.router.call(entry.call_id)
        except RouterError:
            return False
        return record.status is CallStatus.OFFERED and record.agent == reservation.agent

    def _ring_out(self, event: ReservationExpired) -> None:
        """Ring timeout: the router already put the request back and the agent on not-ready."""
        ring = self._rings.get(event.reservation_id)
        if ring is not None and not ring.outcome.done():
            ring.outcome.set_result("rang out")

    def _screen_pop(self, entry: CallbackEntry, reservation: Reservation) -> None:
        request = entry.request
        context: dict[str, object] = {
            "kind": "callback",
            "callback_id": request.id,
            "caller": request.number,
            "queue": request.queue,
            "priority": request.priority,
            "language": self.router.queue(request.queue).language,
            "enqueued_at": request.requested_at.isoformat(),
            "attempts": request.attempts,
            "origin_call_id": request.origin_call_id,
            "routing": reservation.decision.to_dict() if reservation.decision else None,
        }
        self.events.publish(AgentOffered(entry.call_id, reservation.agent, reservation.queue,
                                         request.number, context))

    # -- the conversation ----------------------------------------------------------------
    def _watch(self, call: SipCall) -> asyncio.Event:
        """An event set when the agent's call ends (the agent hung up, or it was ended)."""
        ended = self._agent_calls.setdefault(call.call_id, asyncio.Event())
        if call.ended:
            ended.set()
        return ended

    def _agent_call_ended(self, event: CallEnded) -> None:
        ended = self._agent_calls.get(event.call_id)
        if ended is not None:
            ended.set()

    def _bridge(self, entry: CallbackEntry, call: SipCall, agent_leg: CallLeg,
                customer: OutboundCall, agent_gone: asyncio.Event) -> None:
        """Agent and customer talk; whoever hangs up first ends the other's call too."""
        assert agent_leg.media is not None
        agent_leg.media.stop_playback()
        customer.media.stop_playback()
        agent_leg.media.on_dtmf = None
        self.media.bridge(agent_leg.media, customer.media)
        call.bridged_at = self.calls.endpoint.now()
        log.info("callback %s: agent %s and customer %s connected", entry.request.id,
                 call.callee, customer.number)
        conversation = _Conversation(call, customer, agent_gone)
        self._talking[entry.call_id] = conversation
        conversation.task = asyncio.get_running_loop().create_task(
            self._converse(entry.call_id, conversation))

    async def _converse(self, call_id: str, conversation: _Conversation) -> None:
        call, customer = conversation.call, conversation.customer
        waits = {asyncio.ensure_future(conversation.agent_gone.wait()),
                 asyncio.ensure_future(customer.ended.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            self._agent_calls.pop(call.call_id, None)
            if not customer.ended.is_set():
                self.outbound.hang_up(customer, "agent_hangup")
            if not call.ended:
                self.calls.hang_up(call, "customer_hangup")
            self._talking.pop(call_id, None)
            with contextlib.suppress(RouterError):
                self.router.call_ended(call_id)  # the agent wraps up

    async def close(self) -> None:
        """Hang up the conversations under way (the server stops)."""
        tasks = [c.task for c in self._talking.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _step(self, step: Callable[[], object]) -> None:
        try:
            step()
        except RouterError as error:
            log.warning("router refused a callback step: %s", error)
