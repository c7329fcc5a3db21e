"""The IVR's offer_callback node: its validation at load, and what a caller hears and books.

The call is the fake of test_ivr_engine (prompts finish at once, scripted digits are pressed
while a prompt plays); the callback desk is a recording gateway that judges numbers with the
real ``callbacks.numbers`` rules and keeps one pending request per number and queue.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from test_ivr_engine import SHORT, FakeCall, Harness

from callbacks import InvalidNumber, normalize_number
from events.callbacks import CallbackOfferAnswered, CallbackOffered
from ivr.engine import (
    CallbackAnswer,
    CallbackBooking,
    CallbackOfferOutcome,
    CallbackOrder,
    CustomerProfile,
    OfferBooking,
    said_minutes,
)
from ivr.flow import Flow, load_flow
from ivr.nodes import OfferCallbackNode, minutes_said
from pbx.media.prompt import PromptLibrary
from router.calls import PRIORITY_VIP
from settings.located_yaml import ConfigError


class RecordingDesk:
    """A CallbackGateway that books in memory: one pending request per number and queue."""

    def __init__(self, *, ewt: float | None = 300.0, fails: bool = False) -> None:
        self.ewt = ewt
        self.fails = fails
        self.hold: asyncio.Event | None = None  # set: a booking waits for it (a slow store)
        self.withdrawn: list[str] = []
        self.orders: list[CallbackOrder] = []
        self.pending: set[tuple[str, str]] = set()

    def number_problem(self, number: str) -> str | None:
        try:
            normalize_number(number)
        except InvalidNumber as error:
            return error.problem.value
        return None

    def estimated_wait(self, queue: str, call_id: str) -> float | None:
        return self.ewt

    async def request_callback(self, order: CallbackOrder) -> CallbackAnswer:
        self.orders.append(order)
        if self.hold is not None:
            await self.hold.wait()
        if self.fails:
            return CallbackAnswer(CallbackBooking.NOT_BOOKED)
        number = normalize_number(order.number)
        if (number, order.queue) in self.pending:
            return CallbackAnswer(CallbackBooking.ALREADY_PENDING, number)
        self.pending.add((number, order.queue))
        return CallbackAnswer(CallbackBooking.BOOKED, number, request_id=f"cb-{len(self.orders)}")


    async def withdraw_callback(self, request_id: str, reason: str) -> None:
        self.withdrawn.append(request_id)


OFFER_FLOW = """\
    start: lookup
    languages: [en]
    defaults: {timeout: %(short)s, retries: 1, inter_digit_timeout: %(short)s, overall_timeout: 1}
    nodes:
      lookup: {type: lookup_caller, next: offer}
      offer: {type: offer_callback, queue: billing, next: wait}
      wait: {type: enqueue, queue: billing}
"""


def offer_flow(prompts: PromptLibrary) -> Flow:
    return load_flow(textwrap.dedent(OFFER_FLOW % {"short": SHORT}), "offer.yaml", prompts)


def harness(prompts: PromptLibrary, desk: RecordingDesk | None, **options) -> Harness:
    built = Harness(offer_flow(prompts), prompts, **options)
    built.runner.callbacks = desk
    return built


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary()


# ------------------------------------------------------------------ validation at load


def load_problems(text: str, prompts: PromptLibrary) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_flow(textwrap.dedent(text), "flows/offer.yaml", prompts)
    return raised.value.problems


def test_queue_and_next_are_required_and_located(prompts: PromptLibrary) -> None:
    problems = load_problems("""\
        start: offer
        nodes:
          offer: {type: offer_callback}
          bye: {type: hangup}
        """, prompts)
    assert "flows/offer.yaml:3: nodes.offer.queue: is required" in problems
    assert "flows/offer.yaml:3: nodes.offer.next: is required" in problems


def test_the_answer_digits_must_differ_and_leave_pound_for_the_number(prompts: PromptLibrary) -> None:
    problems = load_problems("""\
        start: offer
        nodes:
          offer: {type: offer_callback, queue: billing, next: wait, confirm_digit: 2}
          other: {type: offer_callback, queue: billing, next: wait, decline_digit: "#"}
          third: {type: offer_callback, queue: billing, next: wait, confirm_digit: x}
          wait: {type: enqueue, queue: billing}
        """, prompts)
    assert any(p.startswith("flows/offer.yaml:3: nodes.offer.decline_digit: ")
               and "must differ" in p for p in problems), problems
    assert any(p.startswith("flows/offer.yaml:4: nodes.other.decline_digit: ")
               and "# ends a keyed number" in p for p in problems), problems
    assert any(p.startswith("flows/offer.yaml:5: nodes.third.confirm_digit: ")
               and "not a DTMF key" in p for p in problems), problems


def test_an_unknown_target_and_an_unknown_queue_are_reported(prompts: PromptLibrary) -> None:
    problems = load_problems("""\
        start: offer
        nodes:
          offer: {type: offer_callback, queue: billing, next: nowhere}
        """, prompts)
    assert problems == ["flows/offer.yaml:3: nodes.offer.next: unknown node 'nowhere'"]
    flow = offer_flow(prompts)
    assert flow.unknown_references({"support"}, set()) == [
        "offer.yaml:6: nodes.offer.queue: unknown queue 'billing' (not under queues)",
        "offer.yaml:7: nodes.wait.queue: unknown queue 'billing' (not under queues)"]
    assert flow.unknown_references({"billing"}, set()) == []


def test_its_prompts_are_checked_in_every_language_of_the_flow(prompts: PromptLibrary,
                                                               tmp_path) -> None:
    node = OfferCallbackNode.model_validate(
        {"type": "offer_callback", "queue": "q", "next": "n", "timeout": 1, "retries": 0,
         "inter_digit_timeout": 1, "overall_timeout": 1}, context={"node": "offer"})
    assert {spec.path("es") for _, spec in node.prompts()} >= {
        "es/callback_wait_about", "es/callback_confirm_menu", "es/callback_enter_number",
        "es/number_0", "es/star"}
    problems = load_problems("""\
        start: offer
        nodes:
          offer: {type: offer_callback, queue: billing, next: wait, menu_prompt: en/nothing}
          wait: {type: enqueue, queue: billing}
        """, prompts)
    assert len(problems) == 1 and problems[0].startswith(
        "flows/offer.yaml:3: nodes.offer.menu_prompt: missing prompt file"), problems
    problems = load_problems("""\
        start: offer
        languages: [en, fr]
        nodes:
          offer: {type: offer_callback, queue: billing, next: wait}
          wait: {type: enqueue, queue: billing}
        """, prompts)
    assert any("nodes.offer.type: missing prompt file" in p and "fr/callback_wait_about" in p
               for p in problems), problems


def test_said_minutes() -> None:
    assert said_minutes(None) is None
    assert [said_minutes(s) for s in (0, 30, 60, 61, 299, 3600)] == [1, 1, 1, 2, 5, 20]


# ------------------------------------------------------------------ what the caller hears


async def test_the_caller_confirms_their_own_number(prompts: PromptLibrary) -> None:
    desk = RecordingDesk(ewt=250)
    runner = harness(prompts, desk, profiles={"600100200": CustomerProfile("600100200", "vip")})
    call = FakeCall({"en/callback_confirm_menu": "1"}, caller="600100200")
    record = await runner.run(call)
    digits = [f"en/number_{d}" for d in "600100200"]
    assert call.media.played == [
        "en/callback_wait_about", "en/number_5", "en/minutes", "en/callback_number_is", *digits,
        "en/callback_confirm_menu", "en/callback_confirmed", "en/goodbye"]
    assert desk.orders == [CallbackOrder("call-1", "600100200", "billing", PRIORITY_VIP, None)]
    assert call.hang_ups == 1
    assert record["outcome"] == "callback_requested" and record["queue"] == "billing"
    assert record["collected"] == {"callback_number": "600100200"}
    assert runner.gateway.enqueued == []  # the flow ended at the offer
    assert runner.metric("centralita_ivr_outcomes_total", flow="offer",
                         outcome="callback_requested") == 1
    assert [(e.queue, e.how) for e in runner.of(CallbackOffered)] == [("billing", "ivr")]
    assert [e.outcome for e in runner.of(CallbackOfferAnswered)] == ["booked"]


async def test_an_unknown_wait_is_said_as_soon_as_an_agent_is_free(prompts: PromptLibrary) -> None:
    desk = RecordingDesk(ewt=None)
    call = FakeCall({"en/callback_confirm_menu": "1"})
    await harness(prompts, desk).run(call)
    assert call.media.played[0] == "en/callback_wait_unknown"
    assert "en/minutes" not in call.media.played


async def test_a_wait_of_one_minute_is_said_whole(prompts: PromptLibrary) -> None:
    desk = RecordingDesk(ewt=45)
    call = FakeCall({"en/callback_confirm_menu": "1"})
    await harness(prompts, desk).run(call)
    assert call.media.played[:3] == ["en/callback_wait_about", "en/one_minute",
                                     "en/callback_number_is"]
    assert "en/minutes" not in call.media.played
    assert minutes_said(1) == ("one_minute",)
    assert minutes_said(7) == ("number_7", "minutes")


async def test_a_keyed_number_after_a_refusal_is_booked(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall({"en/callback_confirm_menu": "2",
                     "en/callback_enter_number": ["91*2#", "915550123#"]})
    record = await harness(prompts, desk).run(call)
    said = [p for p in call.media.played if p.startswith("en/callback_")]
    assert said == ["en/callback_wait_about", "en/callback_number_is", "en/callback_confirm_menu",
                    "en/callback_enter_number", "en/callback_number_digits_only",
                    "en/callback_enter_number", "en/callback_confirmed"]
    assert [order.number for order in desk.orders] == ["915550123"]
    assert record["outcome"] == "callback_requested"
    assert record["collected"] == {"callback_number_keyed": "915550123",
                                   "callback_number": "915550123"}


async def test_every_keyed_number_refused_goes_on_to_next(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall({"en/callback_confirm_menu": "2",
                     "en/callback_enter_number": ["12#", "1234567890123456#"]})
    record = await harness(prompts, desk).run(call)
    said = [p for p in call.media.played if p.startswith("en/callback_number_too")]
    assert said == ["en/callback_number_too_short", "en/callback_number_too_long"]
    assert desk.orders == [] and call.hang_ups == 0
    assert record["outcome"] == "enqueued"


async def test_an_anonymous_caller_is_asked_for_a_number_at_once(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall({"en/callback_enter_number": "915550123#"}, caller="anonymous")
    await harness(prompts, desk).run(call)
    assert call.media.played[:4] == ["en/callback_wait_about", "en/number_5", "en/minutes",
                                     "en/callback_enter_number"]
    assert "en/callback_number_is" not in call.media.played
    assert [order.number for order in desk.orders] == ["915550123"]


async def test_star_declines_and_the_flow_goes_on(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall({"en/callback_confirm_menu": "*"})
    runner = harness(prompts, desk)
    record = await runner.run(call)
    assert [e.outcome for e in runner.of(CallbackOfferAnswered)] == ["declined"]
    assert desk.orders == [] and call.hang_ups == 0
    assert record["outcome"] == "enqueued" and record["queue"] == "billing"


async def test_star_while_keying_declines(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall({"en/callback_confirm_menu": "2", "en/callback_enter_number": "*"})
    record = await harness(prompts, desk).run(call)
    assert desk.orders == [] and record["outcome"] == "enqueued"


async def test_silence_declines_after_the_retries(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    call = FakeCall()
    record = await harness(prompts, desk).run(call)
    assert call.media.played.count("en/callback_confirm_menu") == 2
    assert "en/no_input" in call.media.played
    assert desk.orders == [] and record["outcome"] == "enqueued"


async def test_a_pending_request_is_not_booked_twice(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    desk.pending.add(("600100200", "billing"))
    call = FakeCall({"en/callback_confirm_menu": "1"})
    record = await harness(prompts, desk).run(call)
    assert call.media.played[-2:] == ["en/callback_already_pending", "en/goodbye"]
    assert call.hang_ups == 1 and record["outcome"] == "callback_requested"


async def test_a_desk_that_cannot_book_sends_the_caller_on(prompts: PromptLibrary) -> None:
    desk = RecordingDesk(fails=True)
    call = FakeCall({"en/callback_confirm_menu": "1"})
    record = await harness(prompts, desk).run(call)
    assert "en/callback_not_booked" in call.media.played
    assert call.hang_ups == 0 and record["outcome"] == "enqueued"


async def test_without_a_desk_the_node_moves_on(prompts: PromptLibrary) -> None:
    call = FakeCall({"en/callback_confirm_menu": "1"})
    runner = harness(prompts, None)
    record = await runner.run(call)
    assert call.media.played == [] and record["outcome"] == "enqueued"
    assert runner.of(CallbackOffered) == [] and runner.of(CallbackOfferAnswered) == []


async def test_a_waiting_caller_keeps_their_enqueue_time_and_priority(prompts: PromptLibrary) -> None:
    desk = RecordingDesk()
    runner = harness(prompts, desk)
    node = runner.runner.flow.nodes["offer"]
    assert isinstance(node, OfferCallbackNode)
    call = FakeCall({"es/callback_confirm_menu": "1"})
    outcome = await runner.runner.offer_callback(call, node, language="es", priority=7,
                                                 enqueued_at=1_700_000_000.0)
    assert outcome is CallbackOfferOutcome.BOOKED
    assert desk.orders == [CallbackOrder("call-1", "600100200", "billing", 7, 1_700_000_000.0)]
    assert call.media.played[-2:] == ["es/callback_confirmed", "es/goodbye"]


async def test_a_node_with_other_keys_says_them_with_its_own_prompts(prompts: PromptLibrary) -> None:
    flow = load_flow(textwrap.dedent("""\
        start: offer
        languages: [en]
        defaults: {timeout: SHORT, retries: 0, inter_digit_timeout: SHORT}
        nodes:
          offer: {type: offer_callback, queue: billing, next: wait, confirm_digit: 5,
                  other_number_digit: 6, decline_digit: 0, menu_prompt: en/main_menu,
                  enter_number_prompt: en/faq_menu}
          wait: {type: enqueue, queue: billing}
        """).replace("SHORT", str(SHORT)), "keys.yaml", prompts)
    built = Harness(flow, prompts)
    desk = RecordingDesk()
    built.runner.callbacks = desk
    call = FakeCall({"en/main_menu": "6", "en/faq_menu": "600700800#"})
    record = await built.run(call)
    assert "en/main_menu" in call.media.played and "en/faq_menu" in call.media.played
    assert [order.number for order in desk.orders] == ["600700800"]
    assert record["outcome"] == "callback_requested"


@pytest.mark.parametrize(("ewt", "offered"), [(30.0, False), (120.0, True), (None, True)])
async def test_offer_after_wait_offers_only_past_the_queues_estimated_wait(
        prompts: PromptLibrary, ewt: float | None, offered: bool) -> None:
    flow = load_flow(textwrap.dedent("""\
        start: offer
        languages: [en]
        defaults: {timeout: SHORT, retries: 0}
        nodes:
          offer: {type: offer_callback, queue: billing, next: wait, offer_after_wait: 60}
          wait: {type: enqueue, queue: billing}
        """).replace("SHORT", str(SHORT)), "wait.yaml", prompts)
    built = Harness(flow, prompts)
    built.runner.callbacks = RecordingDesk(ewt=ewt)
    call = FakeCall({"en/callback_confirm_menu": "1"})
    record = await built.run(call)
    assert record["outcome"] == ("callback_requested" if offered else "enqueued")
    assert (built.of(CallbackOffered) != []) is offered
    assert ("en/callback_confirm_menu" in call.media.played) is offered


async def test_an_offer_called_off_during_its_booking_still_knows_the_request(
        prompts: PromptLibrary) -> None:
    # A waiting caller is served by an agent while the desk is still writing the request:
    # the offer stops at once, the write is not cut in half, and the request it made can be
    # withdrawn by whoever called the offer off.
    desk = RecordingDesk()
    desk.hold = asyncio.Event()
    built = harness(prompts, desk)
    node = built.runner.flow.nodes["offer"]
    assert isinstance(node, OfferCallbackNode)
    booking = OfferBooking()
    call = FakeCall({"en/callback_confirm_menu": "1"})
    offer = asyncio.ensure_future(built.runner.offer_callback(
        call, node, language="en", priority=1, enqueued_at=None, booking=booking))
    while not desk.orders:
        await asyncio.sleep(0.001)
    offer.cancel()
    await asyncio.wait((offer,))
    assert offer.cancelled()
    desk.hold.set()
    assert await booking.booked_request() == "cb-1"
    assert call.hang_ups == 0 and "en/callback_confirmed" not in call.media.played


async def test_an_offer_that_booked_nothing_has_no_request_to_withdraw(
        prompts: PromptLibrary) -> None:
    assert await OfferBooking().booked_request() is None
    desk = RecordingDesk()
    desk.pending.add(("600100200", "billing"))
    built = harness(prompts, desk)
    booking = OfferBooking()
    node = built.runner.flow.nodes["offer"]
    assert isinstance(node, OfferCallbackNode)
    outcome = await built.runner.offer_callback(
        FakeCall({"en/callback_confirm_menu": "1"}), node, language="en", priority=1,
        enqueued_at=None, booking=booking)
    assert outcome is CallbackOfferOutcome.ALREADY_PENDING
    assert await booking.booked_request() is None  # the pending one predates this offer
