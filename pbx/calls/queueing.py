"""Queue to agent: the bridge between the router's decisions and SIP calls.

The IVR hands a caller over (`enqueue`, the IVR's EnqueueGateway); from then
on the router decides and this module carries its decisions out: a
reservation becomes a ringing INVITE to the agent's phones, an answer bridges
the caller's media to the agent's, a ring-out, busy or decline goes back to the
router (which puts the caller back at the head of the line and picks the next
agent). The router pushes its events onto the server's event bus as they happen
(``Router(publish=...)``); this module reacts there to those it must carry out
(a ring-out, an announcement due, an overflow to an account). Every router command
dispatches at once and hands each reservation to ``offer`` (the router's
``on_reservation`` hook); ``run_timers`` runs its due timers.

While waiting, the caller hears music on hold, interrupted at the queue's
interval by their position and estimated wait ("you are next" at the head of
the line). Connecting an agent stops any prompt at once: an announcement never
delays the agent, and the agent never hears it.

Callback offers (``offer_callbacks``): a waiting caller who presses the offer digit
hears the IVR's ``offer_callback`` node (confirm their number or key another); they
keep their place in line meanwhile, so one who declines is where they were, and an
agent who answers meanwhile ends the offer and gets the caller. Once the queue's
estimated wait passes its ``offer_after_wait`` the "please hold" and the
announcements end with "to be called back instead, press 9".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from events import (
    AnnouncementDue,
    AnnouncementPlayed,
    CallbackOffered,
    CallOverflowed,
    CallTransferred,
    EventBus,
    ReservationExpired,
    StaleCallsRepaired,
)
from ivr.engine import (
    CallbackGateway,
    CallbackOfferOutcome,
    EnqueueRequest,
    FlowRunner,
    IvrCallInterface,
    OfferBooking,
)
from ivr.flow import Flow
from ivr.nodes import OfferCallbackNode, minutes_said
from pbx.calls.manager import ApplicationCall, CallLeg, CallManager, Dial
from pbx.media.prompt import Prompt, PromptLibrary
from pbx.store import InterruptedWait
from router import Reservation, Router, RouterError, RoutingRequest, UnknownAgent

log = logging.getLogger("pbx.calls.queueing")

MUSIC_ON_HOLD = "common/hold_music"
# Router failure reasons for the final status an agent's phone gave.
FAILURE_OF_STATUS = {486: "busy", 600: "busy", 603: "declined", 408: "no_answer", 480: "no_answer",
                      487: "no_answer"}
MAX_ANNOUNCED_NUMBER = 20
# End causes (pbx.calls.manager) that mean the caller hung up; any other cause is the server's doing.
CALLER_CAUSES = frozenset({"caller_hangup", "cancelled"})
# How long an enqueue waits for the store to say whether the caller has a place kept.
KEPT_PLACE_TIMEOUT_SECONDS = 2.0
# Dialled from an agent's softphone; documented in the README.
FEATURE_CODES = {"*21": "login", "*22": "logout", "*23": "break", "*24": "available"}


class CallbackEntries(Protocol):
    """Callback requests waiting in the router's lines beside live callers
    (``pbx.calls.callback_connection``): no caller's call, so this module hands them on."""

    def offer(self, reservation: Reservation) -> bool:
        """Take a reservation made for a callback in line; False when it is no callback."""
        ...

    def call_ids(self) -> set[str]:
        """The router's call ids of the callbacks held (in line, or being connected)."""
        ...


@dataclass(eq=False)
class QueuedCaller:
    """A caller handed to the router, from enqueue until hang-up."""

    handle: ApplicationCall
    request: EnqueueRequest
    language: str
    enqueued_at: float | None = None  # wall time of the first enqueue; kept across transfers
    reservation: Reservation | None = None
    dial: Dial | None = None
    agent_leg: CallLeg | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    offer: asyncio.Task[CallbackOfferOutcome] | None = None  # the last callback offer

    @property
    def offering(self) -> bool:
        return self.offer is not None and not self.offer.done()

    @property
    def callback_booked(self) -> bool:
        """The caller left the line with a callback request (the offer hung up on them)."""
        offer = self.offer
        return (offer is not None and offer.done() and not offer.cancelled()
                and offer.exception() is None and offer.result() in _LEFT_WITH_CALLBACK)

    @property
    def call_id(self) -> str:
        return self.handle.call_id


_LEFT_WITH_CALLBACK = frozenset({CallbackOfferOutcome.BOOKED, CallbackOfferOutcome.ALREADY_PENDING})
# The key said after "to be called back instead, press".
_KEY_PROMPTS = {**{digit: f"number_{digit}" for digit in "0123456789"}, "*": "star", "#": "pound"}


@dataclass
class CallbackOffers:
    """How waiting callers are offered a callback: the key that asks for one, the estimated
    wait (seconds, per queue) past which the offer is announced, and the IVR runner whose
    ``offer_callback`` node books it."""

    runner: FlowRunner
    gateway: CallbackGateway
    digit: str | None
    offer_after_wait: Mapping[str, float]
    _nodes: dict[str, OfferCallbackNode] = field(default_factory=dict)

    def node(self, queue: str) -> OfferCallbackNode:
        node = self._nodes.get(queue)
        if node is None:
            node = OfferCallbackNode.model_validate(
                {"type": "offer_callback", "queue": queue, "next": "back_in_line", "timeout": 5.0,
                 "retries": 2, "inter_digit_timeout": 4.0, "overall_timeout": 30.0},
                context={"node": "queue_callback_offer"})
            self._nodes[queue] = node
        return node

    def announced(self, queue: str, ewt_seconds: float | None) -> bool:
        """True when the offer is said to callers of ``queue`` with this estimated wait
        (unknown, nobody staffed, counts as long)."""
        threshold = self.offer_after_wait.get(queue)
        if self.digit is None or threshold is None:
            return False
        return ewt_seconds is None or ewt_seconds >= threshold


def announced_minutes(ewt_seconds: float | None) -> int | None:
    """The wait said to the caller, in whole minutes (None under a minute or unknown)."""
    if ewt_seconds is None or ewt_seconds < 60:
        return None
    return min(MAX_ANNOUNCED_NUMBER, math.ceil(ewt_seconds / 60))


class QueueService:
    """Implements the IVR's EnqueueGateway (and TransferGateway, through `ivr_transfers`)
    on top of the router and the call manager."""

    def __init__(self, router: Router, calls: CallManager, prompts: PromptLibrary, events: EventBus,
                 *, on_agent_ringing: Callable[[QueuedCaller, Reservation], None] | None = None,
                 on_agent_answered: Callable[[QueuedCaller, str], None] | None = None,
                 kept_place: Callable[[str, str], Awaitable[InterruptedWait | None]] | None = None,
                 ) -> None:
        self.router = router
        self.calls = calls
        self.prompts = prompts
        self.events = events
        self.on_agent_ringing = on_agent_ringing
        self.on_agent_answered = on_agent_answered
        self.kept_place = kept_place  # (number, queue) -> the place an interrupted call left
        self.queued: dict[str, QueuedCaller] = {}
        # Told of every caller put in line (the cross-site calls may ask other sites).
        self.on_waiting: Callable[[QueuedCaller], None] | None = None
        # Router call ids of other sites' calls this server carries, given the live Call-IDs
        # (the cross-site calls): reconciliation must not end them.
        self.foreign_calls: Callable[[frozenset[str]], set[str]] | None = None
        self.callbacks: CallbackEntries | None = None
        self.callback_offers: CallbackOffers | None = None
        self._music = prompts.get(MUSIC_ON_HOLD)
        self._tasks: set[asyncio.Task[None]] = set()
        calls.transfer_handler = self.transfer
        calls.feature_codes = frozenset(FEATURE_CODES)
        calls.on_personal_call = self.personal_call
        # The router's decisions this module carries out; the router must publish to `events`.
        events.subscribe(self._ring_out, ReservationExpired)
        events.subscribe(self._announce, AnnouncementDue)
        events.subscribe(self._overflow_elsewhere, CallOverflowed)
        calls.call_holders.append(self.forget_dead_calls)

    def personal_call(self, account: str, call_key: str, engaged: bool) -> None:
        """An account joins or leaves a call that is no queue's offer to it (a direct call
        either way, calling the IVR, a transfer to it): an agent is busy for routing then."""
        try:
            if engaged:
                self.router.personal_call_started(account, call_key)
            else:
                self.router.personal_call_ended(account, call_key)
        except UnknownAgent:
            return  # a plain account, not an agent

    def offer_callbacks(self, gateway: CallbackGateway, digit: str | None,
                        offer_after_wait: Mapping[str, float]) -> None:
        """Let waiting callers ask for a callback with ``digit`` (None: they cannot), and
        announce the offer in the queues of ``offer_after_wait`` past that estimated wait."""
        flow = Flow("queue_callback_offer", "callbacks.offer_digit", "", "en", ("en",), {})
        runner = FlowRunner(flow, self.prompts, self.events, enqueue=self,
                            transfer=IvrTransfers(self), callbacks=gateway)
        self.callback_offers = CallbackOffers(runner, gateway, digit, dict(offer_after_wait))
        for queue in offer_after_wait:  # checks the prompts now, not on a caller's call
            self.callback_offers.node(queue)
        if digit is not None:
            self.prompts.get(f"en/{_KEY_PROMPTS[digit]}")

    def resources(self) -> dict[str, int]:
        """What queued callers hold; all zero on an idle server (a test checks it)."""
        return {
            "queued_calls": len(self.queued),
            "queue_tasks": len(self._tasks),
            "router_calls": self.router.active_calls,
            "router_reservations": self.router.active_reservations,
        }

    # -- the IVR hands a caller over -------------------------------------------------
    async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
        assert isinstance(call, ApplicationCall)
        language = request.language or call.extension.language
        queued = QueuedCaller(call, request, language)
        priority, enqueued_at = request.priority, None
        kept = await self._kept_place_of(call.call_id, request)
        if kept is not None:
            priority, enqueued_at = max(priority, kept.priority), kept.enqueued_at.timestamp()
        router_call = RoutingRequest(call_id=call.call_id, queue=request.queue, priority=priority,
                           language=request.language, caller=request.caller,
                           preferred_agent=request.preferred_agent, last_agent=request.last_agent,
                           enqueued_at=enqueued_at, skills=dict(request.skills))
        self.queued[call.call_id] = queued  # known before the router may offer it (at once)
        try:
            self.router.enqueue(router_call)
        except RouterError as exc:
            del self.queued[call.call_id]
            log.error("call %s: cannot queue in %s: %s", call.call_id, request.queue, exc)
            return
        queued.enqueued_at = self.router.call(call.call_id).call.enqueued_at
        greeting = [self._prompt(language, "please_hold")]
        greeting += self._callback_offer(queued, self._estimated_wait(queued))
        call.media.play(greeting, on_done=lambda _: self._hold(queued))
        if self.on_waiting is not None:
            self.on_waiting(queued)
        offers = self.callback_offers
        listener = None
        if offers is not None and offers.digit is not None:
            listener = asyncio.get_running_loop().create_task(self._take_digits(queued, offers))
        try:
            await queued.finished.wait()
        finally:
            if listener is not None:
                listener.cancel()
            if queued.offer is not None:
                queued.offer.cancel()
            self._leave(queued)

    async def _kept_place_of(self, call_id: str, request: EnqueueRequest) -> InterruptedWait | None:
        """The place this caller had in the queue when their site died, if they have one."""
        if self.kept_place is None or not request.caller:
            return None
        try:
            # Not asyncio.wait_for: in Python 3.11 it loses a cancellation (the caller hanging
            # up) that lands as the lookup finishes, and the call would wait in line forever.
            async with asyncio.timeout(KEPT_PLACE_TIMEOUT_SECONDS):
                kept = await self.kept_place(request.caller, request.queue)
        except Exception as error:  # the store is slow or down: the caller queues as new
            log.warning("call %s: could not look up a kept place in %s for %s (%s)", call_id,
                        request.queue, request.caller, error or type(error).__name__)
            return None
        if kept is not None:
            log.info("call %s: %s calls again after call %s was interrupted%s: back in %s "
                     "with priority %d, in line since %s", call_id, request.caller, kept.call_id,
                     f" at site {kept.site}" if kept.site else "", request.queue,
                     max(request.priority, kept.priority),
                     kept.enqueued_at.isoformat(timespec="seconds"))
        return kept

    def _leave(self, queued: QueuedCaller) -> None:
        """The caller's call is over: tell the router how it ended."""
        if self.queued.pop(queued.call_id, None) is None:
            return
        queued.reservation = None  # an agent's phone still being dialled is not charged for it
        if queued.dial is not None:
            self.calls.cancel_dial(queued.dial)
            queued.dial = None  # its answer callback holds `queued`: no cycle left behind
        cause = queued.handle.call.end_cause
        if queued.callback_booked:
            cause = "callback_requested"  # hung up by the offer, not an abandon
        try:
            if cause is None or cause in CALLER_CAUSES:
                self.router.call_ended(queued.call_id)  # an abandon while still waiting or ringing
            else:
                self.router.drop(queued.call_id, cause)  # the server ended it: not the caller's abandon
        except RouterError:
            pass  # already forgotten (reconciled)

    # -- the router's side -----------------------------------------------------------
    def run_timers(self) -> None:
        """Run the router's due timers; what they decide is pushed (events, offers)."""
        self.router.tick()

    def offer(self, reservation: Reservation) -> None:
        """The router reserved an agent for a caller: ring the agent's phone."""
        queued = self.queued.get(reservation.call_id)
        if queued is None:
            if self.callbacks is not None and self.callbacks.offer(reservation):
                return
            self.router.reservation_failed(reservation.reservation_id, "error")
            return
        queued.reservation = reservation
        task = asyncio.get_running_loop().create_task(self._ring_agent(queued, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ring_agent(self, queued: QueuedCaller, reservation: Reservation) -> None:
        rid = reservation.reservation_id

        def answered(leg: CallLeg) -> None:
            if queued.reservation is not reservation:
                self.calls.hang_up_leg(leg)  # answered after the router gave up on it
                return
            queued.dial = None
            queued.agent_leg = leg
            self.stop_callback_offer(queued)
            self.calls.connect_media(queued.handle.call, leg)
            self._router_step(lambda: self.router.answered(rid))
            if self.on_agent_answered is not None:
                self.on_agent_answered(queued, reservation.agent)

        def failed(status: int) -> None:
            queued.dial = None
            if queued.reservation is not reservation:
                return  # the router already moved on (ring timeout)
            queued.reservation = None
            reason = FAILURE_OF_STATUS.get(status, "error")
            log.info("call %s: agent %s did not take it (%d, %s)", queued.call_id, reservation.agent,
                     status, reason)
            self._router_step(lambda: self.router.reservation_failed(rid, reason))

        context = (("X-Centralita-Queue", reservation.queue),
                   ("X-Centralita-Caller", queued.request.caller or "anonymous"))
        try:
            dial = await self.calls.dial(queued.handle.call, reservation.agent, on_answered=answered,
                                         on_failed=failed, extra_headers=context, personal=False)
        except OSError as exc:
            log.error("call %s: cannot ring agent %s: %s", queued.call_id, reservation.agent, exc)
            dial = None
        if queued.reservation is not reservation or queued.handle.call.ended:
            # The router moved on, or the caller hung up while the agent's leg was being
            # opened: an abandon (told to the router by _leave), not the agent's failure.
            if dial is not None:
                self.calls.cancel_dial(dial)
            return
        if dial is None:
            failed(503)
            return
        queued.dial = dial
        self._router_step(lambda: self.router.ringing(rid))
        if self.on_agent_ringing is not None:
            self.on_agent_ringing(queued, reservation)

    def _router_step(self, step: Callable[[], None]) -> None:
        try:
            step()
        except RouterError as exc:
            log.warning("router refused a step: %s", exc)

    def _ring_out(self, event: ReservationExpired) -> None:
        """Ring timeout: the router has already put the caller back and the agent on break."""
        queued = self.queued.get(event.call_id)
        if queued is None or queued.reservation is None \
                or queued.reservation.reservation_id != event.reservation_id:
            return
        queued.reservation = None
        if queued.dial is not None:
            self.calls.cancel_dial(queued.dial)
            queued.dial = None

    # -- transfers and feature codes ------------------------------------------------
    def transfer(self, leg: CallLeg, target: str) -> int:
        """An agent's blind transfer: to a queue (the caller keeps priority, context and the
        original time in line) or to an account. Returns the status for the REFER."""
        queued = next((q for q in self.queued.values() if q.agent_leg is leg), None)
        if queued is None:
            return 403
        in_queue = target in {q.name for q in self.router.queues()}
        if not in_queue and target not in self.calls.config.accounts:
            return 404
        agent = leg.dial.user if leg.dial else ""
        self.calls.detach(leg)
        queued.agent_leg = None
        self._router_step(lambda: self.router.call_ended(queued.call_id))  # the agent wraps up
        self.events.publish(CallTransferred(queued.call_id, agent, target))
        self._hold(queued)
        if in_queue:
            self.router.enqueue(RoutingRequest(call_id=queued.call_id, queue=target, priority=queued.request.priority,
                                     language=queued.request.language, caller=queued.request.caller,
                                     preferred_agent=None, last_agent=None, enqueued_at=queued.enqueued_at,
                                     skills=dict(queued.request.skills)))
        else:
            self._ring_account(queued, target)
        return 202

    async def transfer_from_ivr(self, call: IvrCallInterface, extension: str, language: str) -> None:
        """The IVR's transfer node: ring an account for the caller; returns when it is over."""
        assert isinstance(call, ApplicationCall)
        over = asyncio.Event()

        def answered(leg: CallLeg) -> None:
            self.calls.connect_media(call.call, leg)

        def failed(status: int) -> None:
            log.info("call %s: transfer to %s failed (%d)", call.call_id, extension, status)
            over.set()

        call.media.play(self._prompt(language, "please_hold"), on_done=lambda _: None)
        try:
            dial = await self.calls.dial(call.call, extension, on_answered=answered, on_failed=failed)
        except OSError as exc:  # no RTP port for the new leg: the transfer fails, the call goes on
            log.error("call %s: cannot ring %s: %s", call.call_id, extension, exc)
            return
        if dial is None:
            return
        await over.wait()

    def apply_feature(self, agent: str, code: str) -> str | None:
        """Carry out a feature code dialled by `agent`; None when done, else why not."""
        action = FEATURE_CODES.get(code)
        try:
            if action == "login":
                self.router.login(agent)
            elif action == "logout":
                self.router.logout(agent)
            elif action == "break":
                self.router.start_break(agent, "feature code")
            elif action == "available":
                self.router.end_break(agent)
            else:
                return f"unknown feature code {code}"
        except RouterError as exc:
            return str(exc)
        return None

    # -- what the caller hears -------------------------------------------------------
    def _prompt(self, language: str, name: str) -> Prompt:
        return self.prompts.get(f"{language}/{name}")

    def _hold(self, queued: QueuedCaller) -> None:
        media = queued.handle.leg.media
        if queued.agent_leg is None and not queued.offering and media is not None \
                and not media.closed and not media.playing:
            media.play(self._music, repeat=True)

    # -- callbacks asked for while waiting ----------------------------------------
    def _estimated_wait(self, queued: QueuedCaller) -> float | None:
        try:
            return self.router.ewt(queued.call_id)
        except RouterError:
            return None

    def _queue_of(self, queued: QueuedCaller) -> str:
        """The queue the caller waits in now (an overflow may have moved them)."""
        try:
            return self.router.call(queued.call_id).call.queue
        except RouterError:
            return queued.request.queue

    def _callback_offer(self, queued: QueuedCaller, ewt_seconds: float | None) -> list[Prompt]:
        """'To be called back instead, press 9', once the queue's estimated wait passes its
        offer_after_wait; else nothing."""
        offers = self.callback_offers
        queue = self._queue_of(queued)
        if offers is None or offers.digit is None or not offers.announced(queue, ewt_seconds):
            return []
        self.events.publish(CallbackOffered(queued.call_id, queue, "announced"))
        return [self._prompt(queued.language, "callback_offer"),
                self._prompt(queued.language, _KEY_PROMPTS[offers.digit])]

    async def _take_digits(self, queued: QueuedCaller, offers: CallbackOffers) -> None:
        """A waiting caller's keys: the offer digit asks for a callback; others are dropped."""
        digits = queued.handle.digits
        while True:
            digit = await digits.get()
            if digit != offers.digit or queued.agent_leg is not None \
                    or queued.reservation is not None:
                continue  # an agent is being rung or talks to them: no offer now
            try:
                await self._offer_callback(queued, offers)
            except Exception:  # the caller stays in line whatever the offer did
                log.exception("call %s: the callback offer failed", queued.call_id)
            if queued.callback_booked:
                return
            while not digits.empty():  # keys pressed during the offer ask for nothing more
                digits.get_nowait()

    def stop_callback_offer(self, queued: QueuedCaller) -> None:
        """The caller is connected now: an offer under way stops unsaid."""
        if queued.offer is not None:
            queued.offer.cancel()

    async def _offer_callback(self, queued: QueuedCaller, offers: CallbackOffers) -> None:
        media = queued.handle.leg.media
        if media is None or media.closed:
            return
        queue = self._queue_of(queued)
        log.info("call %s: asks for a callback while waiting in %s", queued.call_id, queue)
        self.events.publish(CallbackOffered(queued.call_id, queue, "asked"))
        booking = OfferBooking()
        offer = asyncio.ensure_future(offers.runner.offer_callback(
            queued.handle, offers.node(queue), language=queued.language,
            priority=queued.request.priority, enqueued_at=queued.enqueued_at, booking=booking))
        queued.offer = offer
        media.stop_playback()  # the music (its end does not restart it: an offer is under way)
        try:
            await asyncio.wait((offer,))
        finally:
            offer.cancel()  # this listener ends (the caller hung up): so does the offer
        if offer.cancelled():  # an agent answered meanwhile: a request it booked is not needed
            request_id = await booking.booked_request()
            if request_id is not None:
                await offers.gateway.withdraw_callback(
                    request_id, f"the caller reached an agent during the offer (call {queued.call_id})")
            return
        error = offer.exception()
        if error is not None:
            log.error("call %s: the callback offer failed", queued.call_id, exc_info=error)
        elif queued.callback_booked:
            return
        # Declined or not booked: they never left their place; back to the music.
        self._hold(queued)

    def _announce(self, event: AnnouncementDue) -> None:
        queued = self.queued.get(event.call_id)
        media = queued.handle.leg.media if queued is not None else None
        if queued is None or media is None or media.closed or queued.agent_leg is not None \
                or queued.offering:
            return
        minutes = announced_minutes(event.ewt_seconds)
        prompts = self.announcement(queued.language, event.position, event.ewt_seconds)
        prompts += self._callback_offer(queued, event.ewt_seconds)
        media.play(prompts, on_done=lambda _: self._hold(queued))
        kind = "you_are_next" if event.position <= 1 else "position"
        log.debug("call %s: announced %s %d, wait %s min", event.call_id, kind, event.position, minutes)
        self.events.publish(AnnouncementPlayed(event.call_id, event.queue, kind, event.position,
                                               event.ewt_seconds, minutes))

    def announcement(self, language: str, position: int, ewt_seconds: float | None) -> list[Prompt]:
        """'You are next' at the head of the line, else the position; then the wait in minutes."""
        if position <= 1:
            prompts = [self._prompt(language, "you_are_next")]
        else:
            prompts = [self._prompt(language, "your_position_is"),
                       self._prompt(language, f"number_{min(position, MAX_ANNOUNCED_NUMBER)}")]
        minutes = announced_minutes(ewt_seconds)
        if minutes is not None:
            prompts += [self._prompt(language, name)
                        for name in ("estimated_wait", *minutes_said(minutes))]
        return prompts

    def _overflow_elsewhere(self, event: CallOverflowed) -> None:
        """Maximum wait reached and the target is not a queue: ring that account instead."""
        queued = self.queued.get(event.call_id)
        if queued is None or event.moved:
            return
        target = event.target
        if target is None or target not in self.calls.config.accounts:
            log.info("call %s: overflow with no reachable target (%s); ending", event.call_id, target)
            queued.finished.set()
            return
        self._ring_account(queued, target)

    def _ring_account(self, queued: QueuedCaller, target: str) -> None:
        """Ring a plain account for a caller who left the router (overflow, transfer)."""

        def answered(leg: CallLeg) -> None:
            queued.agent_leg = leg
            self.stop_callback_offer(queued)
            self.calls.connect_media(queued.handle.call, leg)

        def failed(status: int) -> None:
            queued.finished.set()

        async def ring() -> None:
            try:
                dial = await self.calls.dial(queued.handle.call, target, on_answered=answered,
                                             on_failed=failed)
            except OSError as exc:  # no RTP port for the new leg: the caller is not left on hold
                log.error("call %s: cannot ring %s: %s", queued.call_id, target, exc)
                dial = None
            if dial is None:
                queued.finished.set()

        task = asyncio.get_running_loop().create_task(ring())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reconciliation ----------------------------------------------------------------
    def forget_dead_calls(self, live_call_ids: frozenset[str]) -> list[str]:
        """Make the router forget calls the PBX no longer carries (a lost BYE, a crash in a
        handler): the router's view must never keep an agent busy for a call that is gone.
        Called by ``CallManager.reconcile`` with the Call-IDs of every live call."""
        for queued in list(self.queued.values()):
            if queued.handle.call.ended or queued.call_id not in live_call_ids:
                self._leave(queued)  # normally done by its task a moment later; do it now
        live = set(self.queued)
        if self.callbacks is not None:
            live |= self.callbacks.call_ids()
        if self.foreign_calls is not None:
            live |= self.foreign_calls(live_call_ids)
        stale = self.router.reconcile(live)
        if stale:
            log.warning("reconciled %d call(s) the router still held: %s", len(stale), ", ".join(stale))
            self.events.publish(StaleCallsRepaired(tuple(stale), "reconciliation"))
        return stale


class IvrTransfers:
    """The IVR's TransferGateway: its `transfer` node rings an account."""

    def __init__(self, queues: QueueService) -> None:
        self.queues = queues

    async def transfer(self, call: IvrCallInterface, extension: str, language: str) -> None:
        await self.queues.transfer_from_ivr(call, extension, language)
