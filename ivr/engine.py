"""Runs a flow against one call: plays prompts, reads DTMF, branches, hands the call on.

The engine needs only :class:`IvrCallInterface` (the server's ``ApplicationCall`` fits it), so
tests drive it with a fake call that records what was played and feeds digits.

Input rules:
- Barge-in: a digit pressed while a prompt plays stops the prompt and counts as
  input for the node reading next (it is kept as type-ahead).
- A digit pressed before a prompt starts skips that prompt.
- Wrong or missing input plays the node's own prompt (invalid_option, no_input)
  and asks again; after ``retries`` the node takes its fallback.
- Timeouts are real seconds on the event loop (configure short ones in tests);
  business hours read an injected wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from events.callbacks import CallbackOfferAnswered, CallbackOffered
from events.ivr import (
    CallDeflected,
    CallerIdentified,
    DigitReceived,
    EnqueueRequested,
    IvrFinished,
    IvrNodeEntered,
    IvrStarted,
    LanguageSelected,
    SelfServiceAnswered,
    SurveyScored,
    TransferRequested,
)
from ivr.call_log import IvrCallLog, IvrCallRecord
from ivr.flow import Flow
from ivr.nodes import (
    BusinessHoursNode,
    CollectNode,
    EnqueueNode,
    HangupNode,
    InputSettings,
    LanguageNode,
    LookupCallerNode,
    MenuNode,
    Node,
    OfferCallbackNode,
    PlayNode,
    PromptSpec,
    SelfServiceNode,
    SurveyNode,
    TransferNode,
    minutes_said,
)
from pbx.media.prompt import Prompt, PromptLibrary
from router.calls import PRIORITY_FREE, PRIORITY_PAID, PRIORITY_VIP

log = logging.getLogger("ivr.engine")

TIER_PRIORITY = {"vip": PRIORITY_VIP, "paid": PRIORITY_PAID, "free": PRIORITY_FREE}
SURVEY_SCORES = frozenset("12345")


class IvrMedia(Protocol):
    def play(self, prompts: Prompt | Sequence[Prompt],
             on_done: Callable[[bool], None] | None = None, *, repeat: bool = False) -> None: ...

    def stop_playback(self) -> None: ...


class IvrCallInterface(Protocol):
    """What the engine needs of a call (``pbx.calls.manager.ApplicationCall`` provides it)."""

    digits: asyncio.Queue[str]
    hung_up: asyncio.Event

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    @property
    def media(self) -> IvrMedia: ...

    def hang_up(self) -> None: ...


class EventPublisher(Protocol):
    def publish(self, event: object) -> None: ...


@dataclass(frozen=True)
class CustomerProfile:
    number: str
    tier: str = "free"  # vip, paid or free
    language: str | None = None
    last_agent: str | None = None
    name: str = ""
    preferred_agent: str | None = None


CustomerLookup = Callable[[str], Awaitable[CustomerProfile | None]]


@dataclass(frozen=True)
class EnqueueRequest:
    call_id: str
    caller: str
    queue: str
    priority: int
    skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    language: str | None = None
    preferred_agent: str | None = None
    """The customer's own agent: the router offers them the call first when free."""
    last_agent: str | None = None
    """The agent who served this caller last, when known (first-responder ownership)."""
    known_customer: bool | None = None
    """Whether the flow found the caller among the customers (None: it did not look)."""


class EnqueueGateway(Protocol):
    """Hands a call to the router; returns when the IVR has nothing more to do with it."""

    async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None: ...


class TransferGateway(Protocol):
    async def transfer(self, call: IvrCallInterface, extension: str, language: str) -> None: ...


class CallbackBooking(StrEnum):
    BOOKED = "booked"
    ALREADY_PENDING = "already_pending"  # one pending request per number and queue
    INVALID_NUMBER = "invalid_number"
    NOT_BOOKED = "not_booked"  # the desk could not take it (store down, ...)


@dataclass(frozen=True)
class CallbackOrder:
    """What the caller asked for: be called back on ``number`` for ``queue``."""

    call_id: str  # the call it came from
    number: str
    queue: str
    priority: int
    enqueued_at: float | None = None  # Unix seconds the caller started waiting; None: now


@dataclass(frozen=True)
class CallbackAnswer:
    booking: CallbackBooking
    number: str = ""  # as the desk keeps it
    problem: str | None = None  # why the number was refused (callbacks.NumberProblem values)
    request_id: str | None = None


class CallbackGateway(Protocol):
    """The callback desk as the IVR sees it (``pbx.calls.ivr_application.DeskCallbacks``)."""

    def number_problem(self, number: str) -> str | None:
        """Why ``number`` cannot be called back (a ``NumberProblem`` value), or None."""
        ...

    def estimated_wait(self, queue: str, call_id: str) -> float | None:
        """Seconds until an agent would take this caller (None: unknown, nobody staffed)."""
        ...

    async def request_callback(self, order: CallbackOrder) -> CallbackAnswer: ...

    async def withdraw_callback(self, request_id: str, reason: str) -> None:
        """Cancel a request booked by an offer the caller no longer needs."""
        ...


@dataclass
class OfferBooking:
    """The booking an offer made or is making, for whoever calls the offer off: a booking
    under way is never cut in half (``pending`` finishes), so its request can be withdrawn."""

    pending: asyncio.Future[CallbackAnswer] | None = None

    async def booked_request(self) -> str | None:
        """The id of the request this offer booked (waiting for a booking under way), if any."""
        if self.pending is None:
            return None
        try:
            answer = await asyncio.shield(self.pending)
        except Exception:
            return None
        return answer.request_id if answer.booking is CallbackBooking.BOOKED else None


class CallbackOfferOutcome(StrEnum):
    BOOKED = "booked"  # the caller was told and hung up on
    ALREADY_PENDING = "already_pending"  # told so and hung up on
    DECLINED = "declined"  # the decline digit, silence, or no usable number
    NOT_BOOKED = "not_booked"  # the desk refused or failed: the caller goes on


# Prompts said when a keyed number is refused, by NumberProblem value; others: invalid_prompt.
NUMBER_PROBLEM_PROMPTS = {
    "too_short": "callback_number_too_short",
    "too_long": "callback_number_too_long",
    "letters": "callback_number_digits_only",
    "symbols": "callback_number_digits_only",
}
# Keys a keyed number may hold; longer entries are refused (E.164 has at most 15 digits).
MAX_KEYED_DIGITS = 20
MAX_SAID_MINUTES = 20


def said_minutes(ewt_seconds: float | None) -> int | None:
    """The wait said to a caller, in whole minutes from 1 to 20 (None: unknown)."""
    if ewt_seconds is None:
        return None
    return max(1, min(MAX_SAID_MINUTES, math.ceil(ewt_seconds / 60)))


class HoldMusicGateway:
    """For an IVR with nothing behind it to route calls (a lone IVR, unit tests):
    "please hold", then hold music until the caller hangs up, for queues and transfers alike."""

    def __init__(self, prompts: PromptLibrary, *, hold_prompt: str = "{lang}/please_hold",
                 music: str = "common/hold_music") -> None:
        self.prompts = prompts
        self.hold_prompt = hold_prompt
        self.music = prompts.get(music)

    async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
        await self._hold(call, request.language or "en")

    async def transfer(self, call: IvrCallInterface, extension: str, language: str) -> None:
        await self._hold(call, language)

    async def _hold(self, call: IvrCallInterface, language: str) -> None:
        please_hold = self.prompts.get(self.hold_prompt.replace("{lang}", language))

        def then_music(finished: bool) -> None:
            if finished and not call.hung_up.is_set():
                call.media.play(self.music, repeat=True)

        call.media.play(please_hold, on_done=then_music)
        try:
            await call.hung_up.wait()
        finally:
            call.media.stop_playback()


def utc_now() -> datetime:
    return datetime.now(UTC)


class FlowRunner:
    """Runs one flow; shared by all calls to an extension (per-call state lives in a session)."""

    def __init__(self, flow: Flow, prompts: PromptLibrary, bus: EventPublisher, *,
                 enqueue: EnqueueGateway, transfer: TransferGateway | None = None,
                 lookup_customer: CustomerLookup | None = None,
                 clock: Callable[[], datetime] = utc_now,
                 call_log: IvrCallLog | None = None,
                 callbacks: CallbackGateway | None = None) -> None:
        self.flow = flow
        self.callbacks = callbacks
        self.prompts = prompts
        self.bus = bus
        self.enqueue = enqueue
        self.transfer = transfer if transfer is not None else _transfer_unsupported(enqueue)
        self.lookup_customer = lookup_customer
        self.clock = clock
        self.call_log = call_log if call_log is not None else IvrCallLog()

    def now(self) -> float:
        """The flow clock's reading as event time (``Event.at``: Unix seconds)."""
        return self.clock().timestamp()

    async def run(self, call: IvrCallInterface) -> IvrCallRecord:
        """Walk the flow until a terminal node or the caller hangs up; returns the call's record."""
        session = _CallSession(self, call)
        self.call_log.add(session.record)
        self.bus.publish(IvrStarted(call.call_id, self.flow.name, call.caller, at=self.now()))
        walk = asyncio.ensure_future(session.walk())
        hung_up = asyncio.ensure_future(call.hung_up.wait())
        try:
            await asyncio.wait((walk, hung_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when this task is cancelled (the server ending the call): the
            # record, deflection and IvrFinished must still be written.
            hung_up.cancel()
            if not walk.done():
                walk.cancel()
            await asyncio.wait((walk,))
            session.finish(walk)
        return session.record

    async def offer_callback(self, call: IvrCallInterface, node: OfferCallbackNode, *,
                             language: str, priority: int, enqueued_at: float | None,
                             booking: OfferBooking | None = None) -> CallbackOfferOutcome:
        """Run ``node`` for a caller outside the flow's walk (a caller waiting in a queue who
        asked for a callback); the caller keeps ``priority`` and the time they were enqueued.
        ``booking`` follows the request it books (see ``OfferBooking``)."""
        session = _CallSession(self, call)
        session.language = language
        session.node = node
        if booking is not None:
            session.booking = booking
        return await session.offer_callback(node, priority=priority, enqueued_at=enqueued_at)


def _transfer_unsupported(gateway: object) -> TransferGateway:
    """Without a transfer gateway, the enqueue gateway must also do transfers."""
    if callable(getattr(gateway, "transfer", None)):
        return gateway  # type: ignore[return-value]
    raise TypeError("pass a transfer gateway, or an enqueue gateway that also has transfer()")


class _CallSession:
    """The state of one call in the flow: language, caller profile, type-ahead digits, record."""

    def __init__(self, runner: FlowRunner, call: IvrCallInterface) -> None:
        self.runner = runner
        self.flow = runner.flow
        self.call = call
        self.language = runner.flow.language
        self.profile: CustomerProfile | None = None
        self.typeahead: deque[str] = deque()
        self.node: Node | None = None
        self.handed_off = False
        self.booking = OfferBooking()
        self.record = IvrCallRecord(call.call_id, call.caller, runner.flow.name, runner.clock(),
                                    self.language)

    def publish(self, event: object) -> None:
        self.runner.bus.publish(event)

    # ---------------------------------------------------------------- walking

    async def walk(self) -> None:
        name: str | None = self.flow.start
        while name is not None:
            node = self.flow.nodes[name]
            self.node = node
            self.record.entered(node.name, node.type, self.runner.clock())
            self.publish(IvrNodeEntered(self.call.call_id, self.flow.name, node.name, node.type,
                                        at=self.runner.now()))
            name = await self._run_node(node)

    async def _run_node(self, node: Node) -> str | None:
        if isinstance(node, PlayNode):
            await self.play(node.prompt, barge_in=node.barge_in)
            return node.next
        if isinstance(node, MenuNode):
            return await self._menu(node)
        if isinstance(node, CollectNode):
            return await self._collect(node)
        if isinstance(node, LanguageNode):
            return await self._language(node)
        if isinstance(node, SelfServiceNode):
            return await self._self_service(node)
        if isinstance(node, BusinessHoursNode):
            return node.open if node.hours.is_open(self.runner.clock()) else node.closed
        if isinstance(node, LookupCallerNode):
            return await self._lookup(node)
        if isinstance(node, SurveyNode):
            return await self._survey(node)
        if isinstance(node, EnqueueNode):
            await self._enqueue(node)
            return None
        if isinstance(node, TransferNode):
            await self._transfer(node)
            return None
        if isinstance(node, OfferCallbackNode):
            if self._wait_too_short_for_an_offer(node):
                return node.next
            if self.runner.callbacks is not None:
                self.publish(CallbackOffered(self.call.call_id, node.queue, "ivr",
                                             at=self.runner.now()))
            outcome = await self.offer_callback(node, priority=self._priority(node.priority),
                                                enqueued_at=None)
            if outcome in (CallbackOfferOutcome.BOOKED, CallbackOfferOutcome.ALREADY_PENDING):
                return None
            return node.next
        if isinstance(node, HangupNode):
            if node.prompt is not None:
                await self.play((node.prompt,), barge_in=False)
            self.record.outcome = "hung_up"
            self.call.hang_up()
            return None
        raise TypeError(f"no handler for node type {node.type!r}")

    def finish(self, walk: asyncio.Future[None]) -> None:
        record = self.record
        record.ended_at = self.runner.clock()
        error = None if walk.cancelled() else walk.exception()
        if error is not None and self.call.hung_up.is_set():
            # The caller left while a step was starting (a prompt on media already closed):
            # that is a hang-up, not a failure of the flow.
            log.info("call %s: caller hung up at node %s (%s)", self.call.call_id,
                     self.node.name if self.node else None, error)
            error = None
        if error is not None:
            log.error("call %s: IVR flow %s failed at node %s", self.call.call_id, self.flow.name,
                      self.node.name if self.node else None, exc_info=error)
            record.outcome = "error"
            self.call.hang_up()
        elif not self.handed_off and record.topics:
            record.outcome = "deflected"
            self.publish(CallDeflected(self.call.call_id, self.flow.name, record.topics[-1],
                                       at=self.runner.now()))
        elif not self.handed_off and record.outcome not in ("hung_up",):
            record.outcome = "abandoned"
        self.publish(IvrFinished(self.call.call_id, self.flow.name, record.outcome,
                                 self.node.name if self.node else None, at=self.runner.now()))

    # ---------------------------------------------------------------- media and digits

    def _prompt(self, spec: PromptSpec) -> Prompt:
        return self.runner.prompts.get(spec.path(self.language))

    async def play(self, specs: Sequence[PromptSpec], *, barge_in: bool = True) -> None:
        """Play prompts to the end, or until a digit (kept as type-ahead) when ``barge_in``."""
        if barge_in and not self.call.digits.empty():  # pressed before the prompt
            self.typeahead.append(self.call.digits.get_nowait())
        if barge_in and self.typeahead:
            return
        prompts = [self._prompt(spec) for spec in specs]
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[bool] = loop.create_future()

        def done(played_to_end: bool) -> None:
            if not finished.done():
                finished.set_result(played_to_end)

        media = self.call.media
        media.play(prompts, on_done=done)
        if not barge_in:
            await finished
            return
        digit = asyncio.ensure_future(self.call.digits.get())
        try:
            await asyncio.wait((finished, digit), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if digit.done() and not digit.cancelled():
                self.typeahead.append(digit.result())
                if not finished.done():
                    media.stop_playback()
            else:
                digit.cancel()
                if not finished.done():  # cancelled from outside (hang-up)
                    media.stop_playback()

    async def next_digit(self, timeout: float) -> str | None:
        """The next digit (type-ahead first), or None after ``timeout`` seconds."""
        if self.typeahead:
            digit: str | None = self.typeahead.popleft()
        else:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can lose a hang-up's cancel
                async with asyncio.timeout(timeout):
                    digit = await self.call.digits.get()
            except TimeoutError:
                digit = None
        if digit is not None:
            node = self.node.name if self.node else ""
            self.record.digit(node, digit, self.runner.clock())
            self.publish(DigitReceived(self.call.call_id, self.flow.name, node, digit,
                                       at=self.runner.now()))
        return digit

    async def ask(self, prompt: PromptSpec | Sequence[PromptSpec], timeout: float) -> str | None:
        specs = (prompt,) if isinstance(prompt, PromptSpec) else prompt
        await self.play(specs)
        return await self.next_digit(timeout)

    def discard_typeahead(self) -> None:
        """After a wrong entry: what was typed with it is not an answer to the retry."""
        self.typeahead.clear()
        while not self.call.digits.empty():
            self.call.digits.get_nowait()

    async def _complain(self, settings: InputSettings, digit: str | None) -> None:
        self.discard_typeahead()
        await self.play((settings.no_input_prompt if digit is None else settings.invalid_prompt,))

    # ---------------------------------------------------------------- nodes

    async def _menu(self, node: MenuNode) -> str:
        for attempt in range(node.input.retries + 1):
            digit = await self.ask(node.prompt, node.input.timeout)
            if digit is not None and digit in node.options:
                return node.options[digit]
            if attempt < node.input.retries:
                await self._complain(node.input, digit)
        return node.fallback

    async def _collect(self, node: CollectNode) -> str:
        loop = asyncio.get_running_loop()
        for attempt in range(node.input.retries + 1):
            entered = ""
            digit = await self.ask(node.prompt, node.input.timeout)
            deadline = loop.time() + node.overall_timeout
            while digit is not None and digit != node.terminator:
                entered += digit
                if len(entered) >= node.max_length:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                digit = await self.next_digit(min(node.inter_digit_timeout, remaining))
            if node.min_length <= len(entered) <= node.max_length:
                self.record.collected[node.variable] = entered
                return node.next
            if attempt < node.input.retries:
                await self._complain(node.input, entered or digit)
        return node.fallback

    def _set_language(self, language: str, source: str) -> None:
        self.language = language
        self.record.language = language
        self.publish(LanguageSelected(self.call.call_id, self.flow.name, language, source,
                                      at=self.runner.now()))

    async def _language(self, node: LanguageNode) -> str:
        choices = set(node.options.values())
        profile = self.profile
        if node.use_profile and profile is not None and profile.language in choices:
            self._set_language(profile.language, "profile")
            return node.next
        for attempt in range(node.input.retries + 1):
            digit = await self.ask(node.prompt, node.input.timeout)
            if digit is not None and digit in node.options:
                self._set_language(node.options[digit], "digit")
                if node.confirm_prompt is not None:
                    await self.play((node.confirm_prompt,))  # a caller typing ahead skips it
                return node.next
            if digit is not None and attempt < node.input.retries:
                await self._complain(node.input, digit)
            # No input: the question again (a slow caller gets the time a person needs).
        self._set_language(self.language, "default")
        if node.confirm_prompt is not None:
            # Said in full; a digit pressed meanwhile answered the language question late,
            # so it must not land in the next menu.
            await self.play((node.confirm_prompt,), barge_in=False)
            self.discard_typeahead()
        return node.next

    async def _self_service(self, node: SelfServiceNode) -> str:
        self.record.topics.append(node.topic)
        self.publish(SelfServiceAnswered(self.call.call_id, self.flow.name, node.topic,
                                         self.language, at=self.runner.now()))
        digit = await self.ask((node.answer, node.agent_prompt), node.timeout)
        return node.agent if digit == node.agent_digit else node.next

    async def _lookup(self, node: LookupCallerNode) -> str:
        lookup = self.runner.lookup_customer
        profile = None
        if lookup is not None and self.call.caller:
            try:
                profile = await lookup(self.call.caller)
            except Exception:
                log.exception("call %s: customer lookup for %s failed", self.call.call_id,
                              self.call.caller)
        self.profile = profile
        self.record.customer_known = profile is not None
        self.record.customer_tier = profile.tier if profile else None
        self.publish(CallerIdentified(self.call.call_id, self.call.caller, profile is not None,
                                      profile.tier if profile else None, at=self.runner.now()))
        return node.branch(known=profile is not None)

    async def _survey(self, node: SurveyNode) -> str:
        for attempt in range(node.input.retries + 1):
            digit = await self.ask(node.prompt, node.input.timeout)
            if digit is not None and digit in SURVEY_SCORES:
                score = int(digit)
                self.record.survey_score = score
                self.publish(SurveyScored(self.call.call_id, self.flow.name, score,
                                          at=self.runner.now()))
                await self.play((node.thank_you_prompt,), barge_in=False)
                return node.next
            if attempt < node.input.retries:
                await self._complain(node.input, digit)
        return node.next

    def _priority(self, configured: int | None) -> int:
        """The node's priority, else the caller's tier's."""
        if configured is not None:
            return configured
        profile = self.profile
        return TIER_PRIORITY.get(profile.tier, PRIORITY_FREE) if profile else PRIORITY_FREE

    async def _enqueue(self, node: EnqueueNode) -> None:
        profile = self.profile
        priority = self._priority(node.priority)
        request = EnqueueRequest(self.call.call_id, self.call.caller, node.queue, priority,
                                 MappingProxyType(dict(node.skills)), self.language,
                                 profile.preferred_agent if profile else None,
                                 profile.last_agent if profile else None,
                                 known_customer=self.record.customer_known)
        self.handed_off = True
        self.record.outcome = "enqueued"
        self.record.queue = node.queue
        self.publish(EnqueueRequested(self.call.call_id, self.flow.name, node.queue, priority,
                                      request.skills, self.language, at=self.runner.now()))
        if node.prompt is not None:
            await self.play((node.prompt,), barge_in=False)
        await self.runner.enqueue.enqueue(self.call, request)

    async def _transfer(self, node: TransferNode) -> None:
        self.handed_off = True
        self.record.outcome = "transferred"
        self.record.extension = node.extension
        self.publish(TransferRequested(self.call.call_id, self.flow.name, node.extension,
                                       at=self.runner.now()))
        if node.prompt is not None:
            await self.play((node.prompt,), barge_in=False)
        await self.runner.transfer.transfer(self.call, node.extension, self.language)

    # ---------------------------------------------------------------- callback offer

    def _wait_too_short_for_an_offer(self, node: OfferCallbackNode) -> bool:
        gateway = self.runner.callbacks
        if node.offer_after_wait is None or gateway is None:
            return False
        wait = gateway.estimated_wait(node.queue, self.call.call_id)
        return wait is not None and wait < node.offer_after_wait

    def _library(self, *names: str) -> tuple[PromptSpec, ...]:
        return tuple(PromptSpec(template=f"{{lang}}/{name}") for name in names)

    def _digits_said(self, number: str) -> tuple[PromptSpec, ...]:
        return self._library(*(f"number_{digit}" for digit in number if digit.isdigit()))

    async def offer_callback(self, node: OfferCallbackNode, *, priority: int,
                             enqueued_at: float | None) -> CallbackOfferOutcome:
        outcome = await self._offer_callback(node, priority=priority, enqueued_at=enqueued_at)
        if self.runner.callbacks is not None:
            self.publish(CallbackOfferAnswered(self.call.call_id, node.queue, outcome.value,
                                               at=self.runner.now()))
        return outcome

    async def _offer_callback(self, node: OfferCallbackNode, *, priority: int,
                              enqueued_at: float | None) -> CallbackOfferOutcome:
        gateway = self.runner.callbacks
        if gateway is None:
            log.warning("call %s: node %s offers a callback, but this server takes no callback "
                        "requests", self.call.call_id, node.name)
            return CallbackOfferOutcome.DECLINED
        minutes = said_minutes(gateway.estimated_wait(node.queue, self.call.call_id))
        when = (self._library("callback_wait_about") + self._library(*minutes_said(minutes))
                if minutes is not None else self._library("callback_wait_unknown"))
        caller_number = self.call.caller if gateway.number_problem(self.call.caller) is None else ""
        number = await self._callback_number(node, when, caller_number)
        if number is None:
            return CallbackOfferOutcome.DECLINED
        pending = asyncio.ensure_future(gateway.request_callback(
            CallbackOrder(self.call.call_id, number, node.queue, priority, enqueued_at)))
        self.booking.pending = pending
        answer = await asyncio.shield(pending)  # called off meanwhile: the write still finishes
        if answer.booking is CallbackBooking.INVALID_NUMBER:  # judged differently by the desk
            await self.play(self._library(NUMBER_PROBLEM_PROMPTS.get(answer.problem or "",
                                                                     "callback_not_booked")),
                            barge_in=False)
            return CallbackOfferOutcome.NOT_BOOKED
        if answer.booking is CallbackBooking.NOT_BOOKED:
            await self.play(self._library("callback_not_booked"), barge_in=False)
            return CallbackOfferOutcome.NOT_BOOKED
        booked = answer.booking is CallbackBooking.BOOKED
        self.handed_off = True
        self.record.outcome = "callback_requested"
        self.record.queue = node.queue
        self.record.collected["callback_number"] = answer.number or number
        await self.play(self._library("callback_confirmed" if booked else "callback_already_pending",
                                      "goodbye"), barge_in=False)
        self.call.hang_up()
        return CallbackOfferOutcome.BOOKED if booked else CallbackOfferOutcome.ALREADY_PENDING

    async def _callback_number(self, node: OfferCallbackNode, when: Sequence[PromptSpec],
                               caller_number: str) -> str | None:
        """The number to call back: the caller's own, confirmed, or one they key; None when
        they decline, stay silent or key no valid number within the retries."""
        if caller_number:
            menu = (*when, *self._library("callback_number_is"), *self._digits_said(caller_number),
                    node.menu_prompt)
            for attempt in range(node.input.retries + 1):
                digit = await self.ask(menu, node.input.timeout)
                if digit == node.confirm_digit:
                    return caller_number
                if digit == node.other_number_digit:
                    break
                if digit == node.decline_digit:
                    return None
                if attempt == node.input.retries:
                    return None
                await self._complain(node.input, digit)
                menu = (*self._library("callback_number_is"), *self._digits_said(caller_number),
                        node.menu_prompt)
            prompt: tuple[PromptSpec, ...] = (node.enter_number_prompt,)
        else:  # no number to offer (anonymous, or not dialable): ask for one
            prompt = (*when, node.enter_number_prompt)
        return await self._keyed_number(node, prompt)

    async def _keyed_number(self, node: OfferCallbackNode,
                            prompt: Sequence[PromptSpec]) -> str | None:
        gateway = self.runner.callbacks
        assert gateway is not None
        loop = asyncio.get_running_loop()
        for _ in range(node.input.retries + 1):
            digit = await self.ask(prompt, node.input.timeout)
            if digit == node.decline_digit:  # as the first key: a number never starts with it
                return None
            entered = ""
            deadline = loop.time() + node.overall_timeout
            while digit is not None and digit != "#" and len(entered) < MAX_KEYED_DIGITS:
                entered += digit
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                digit = await self.next_digit(min(node.inter_digit_timeout, remaining))
            problem = gateway.number_problem(entered) if entered else "empty"
            if problem is None:
                self.record.collected["callback_number_keyed"] = entered
                return entered
            self.discard_typeahead()  # said why even on the last try
            if problem in NUMBER_PROBLEM_PROMPTS:
                await self.play(self._library(NUMBER_PROBLEM_PROMPTS[problem]))
            else:
                await self._complain(node.input, digit if entered else None)
            prompt = (node.enter_number_prompt,)
        return None
