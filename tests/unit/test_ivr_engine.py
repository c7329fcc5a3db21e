"""The IVR engine against a fake call: what it plays, which branch a digit takes, events."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from events import EventBus
from events.ivr import (
    CallDeflected,
    DigitReceived,
    EnqueueRequested,
    IvrFinished,
    IvrNodeEntered,
    LanguageSelected,
    SelfServiceAnswered,
    SurveyScored,
)
from ivr.call_log import IvrCallLog, UnknownIvrCall
from ivr.engine import (
    CustomerProfile,
    EnqueueRequest,
    FlowRunner,
    HoldMusicGateway,
    IvrCallInterface,
)
from ivr.flow import Flow, load_flow, load_flows
from ivr.metrics import IvrMetrics
from pbx.media.prompt import Prompt, PromptLibrary

SHORT = 0.02  # seconds: every input timeout in these tests


def name_of(prompt: Prompt) -> str:
    return f"{prompt.path.parent.name}/{prompt.path.stem}"


class FakeMedia:
    """Records playback. A prompt finishes at once unless a digit is scripted for it:
    then the digit is pressed while it plays and it plays on until stopped (barge-in)."""

    def __init__(self, call: FakeCall) -> None:
        self.call = call
        self.played: list[str] = []
        self.repeating: list[str] = []
        self.stopped: list[str] = []
        self._current: list[str] = []
        self._on_done: Callable[[bool], None] | None = None

    def play(self, prompts: Prompt | Sequence[Prompt],
             on_done: Callable[[bool], None] | None = None, *, repeat: bool = False) -> None:
        self._finish(False)
        names = [name_of(p) for p in ((prompts,) if isinstance(prompts, Prompt) else prompts)]
        self._current = names
        self._on_done = on_done
        loop = asyncio.get_running_loop()
        if repeat:
            self.repeating.extend(names)
            return
        self.played.extend(names)
        pressed = [self._scripted(name) for name in names if name in self.call.script]
        pressed = [digits for digits in pressed if digits]
        if pressed:
            for digits in pressed:
                for digit in digits:
                    loop.call_soon(self.call.digits.put_nowait, digit)
            return
        if any(name in self.call.hang_up_during for name in names):
            loop.call_soon(self.call.hung_up.set)
            return
        loop.call_soon(self._finish, True)

    def _scripted(self, name: str) -> str:
        """The digits pressed during this play of ``name``: a list scripts one entry per play
        ("" for a play heard in silence)."""
        script = self.call.script[name]
        if isinstance(script, list):
            digits = script.pop(0)
            if not script:
                del self.call.script[name]
            return digits
        return self.call.script.pop(name)

    def stop_playback(self) -> None:
        if self._on_done is not None:
            self.stopped.extend(self._current)
        self._finish(False)

    def _finish(self, finished: bool) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(finished)


class FakeCall:
    def __init__(self, script: dict[str, str | list[str]] | None = None, *,
                 caller: str = "600100200",
                 hang_up_during: Sequence[str] = ()) -> None:
        self.call_id = "call-1"
        self.caller = caller
        self.script = dict(script or {})
        self.hang_up_during = set(hang_up_during)
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.hung_up = asyncio.Event()
        self.media = FakeMedia(self)
        self.hang_ups = 0

    def hang_up(self) -> None:
        self.hang_ups += 1
        self.hung_up.set()


class RecordingGateway:
    def __init__(self) -> None:
        self.enqueued: list[EnqueueRequest] = []
        self.transfers: list[tuple[str, str]] = []

    async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
        self.enqueued.append(request)

    async def transfer(self, call: IvrCallInterface, extension: str, language: str) -> None:
        self.transfers.append((extension, language))


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary()


@pytest.fixture(scope="module")
def demo(prompts: PromptLibrary) -> Flow:
    return load_flows(["demo"], prompts)["demo"]


def short_demo(prompts: PromptLibrary) -> Flow:
    """The demo flow with every timeout made short."""
    text = (load_flows(["demo"], prompts)["demo"].source)
    with open(text, encoding="utf-8") as handle:
        yaml_text = handle.read().replace("timeout: 5", f"timeout: {SHORT}").replace(
            "timeout: 6", f"timeout: {SHORT}")
    return load_flow(yaml_text, "demo-short.yaml", prompts)


def flow_of(text: str, prompts: PromptLibrary) -> Flow:
    return load_flow(textwrap.dedent(text), "test.yaml", prompts)


# The flow's clock in these tests; events are stamped with it (Event.at).
FLOW_CLOCK_TIME = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
FLOW_NOW = FLOW_CLOCK_TIME.timestamp()


class Harness:
    def __init__(self, flow: Flow, prompts: PromptLibrary, *,
                 profiles: dict[str, CustomerProfile] | None = None,
                 clock: Callable[[], datetime] = lambda: FLOW_CLOCK_TIME,
                 ) -> None:
        self.bus = EventBus()
        self.events: list[Any] = []
        self.bus.subscribe(self.events.append)
        self.registry = CollectorRegistry()
        IvrMetrics(self.registry).subscribe(self.bus)
        self.gateway = RecordingGateway()
        self.log = IvrCallLog(capacity=10)
        self.profiles = profiles or {}

        async def lookup(number: str) -> CustomerProfile | None:
            if number == "boom":
                raise ConnectionError("store down")
            return self.profiles.get(number)

        self.runner = FlowRunner(flow, prompts, self.bus, enqueue=self.gateway, clock=clock,
                                 lookup_customer=lookup, call_log=self.log)

    async def run(self, call: FakeCall) -> dict[str, Any]:
        record = await asyncio.wait_for(self.runner.run(call), 10)
        return record.to_dict()

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


# ------------------------------------------------------------------ the demo flow


async def test_demo_digit_during_main_menu_barges_in_and_reaches_billing(
        prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "1"})
    record = await harness.run(call)
    assert call.media.played == ["common/choose_language", "common/choose_language",
                                 "en/language_chosen", "en/welcome", "en/main_menu"]
    assert call.media.stopped == ["en/main_menu"]  # barge-in stopped the menu prompt
    assert record["outcome"] == "enqueued" and record["queue"] == "billing"
    assert [step["node"] for step in record["path"]] == [
        "lookup", "choose_language", "welcome", "main_menu", "billing_queue"]
    assert record["digits"][0]["node"] == "main_menu" and record["digits"][0]["digit"] == "1"
    [request] = harness.gateway.enqueued
    assert (request.queue, dict(request.skills), request.language) == ("billing", {}, "en")
    assert harness.of(EnqueueRequested)[0].queue == "billing"
    assert harness.of(IvrFinished)[0].outcome == "enqueued"
    assert harness.metric("centralita_ivr_node_entries_total", flow="demo", node="main_menu") == 1
    assert harness.metric("centralita_ivr_enqueued_total", queue="billing") == 1


async def test_demo_caller_who_presses_nothing_reaches_general_queue(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall()
    record = await harness.run(call)
    assert record["queue"] == "general"
    # The language question twice, English said, then three menu attempts with the
    # no-input prompt between them, then the fallback.
    assert call.media.played == ["common/choose_language", "common/choose_language",
                                 "en/language_chosen", "en/welcome", "en/main_menu",
                                 "en/no_input", "en/main_menu", "en/no_input", "en/main_menu"]
    assert harness.of(LanguageSelected)[0].source == "default"


async def test_demo_spanish_by_digit(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"common/choose_language": "2", "es/main_menu": "2"})
    record = await harness.run(call)
    assert call.media.played == ["common/choose_language", "es/language_chosen", "es/welcome",
                                 "es/main_menu"]
    assert record["language"] == "es" and record["queue"] == "support"
    assert harness.gateway.enqueued[0].language == "es"
    assert harness.of(LanguageSelected)[0] == LanguageSelected("call-1", "demo", "es", "digit", at=FLOW_NOW)


async def test_demo_slow_caller_answers_the_repeated_language_question(
        prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"common/choose_language": ["", "2"], "es/main_menu": "1"})
    record = await harness.run(call)
    assert call.media.played == ["common/choose_language", "common/choose_language",
                                 "es/language_chosen", "es/welcome", "es/main_menu"]
    assert record["language"] == "es" and record["queue"] == "billing"
    assert harness.of(LanguageSelected)[0].source == "digit"
    assert [d["node"] for d in record["digits"]] == ["choose_language", "main_menu"]


async def test_language_digit_during_the_default_confirmation_is_not_a_menu_choice(
        prompts: PromptLibrary) -> None:
    flow = flow_of("""
        name: lang
        start: choose
        language: en
        languages: [en, es]
        nodes:
          choose:
            type: language
            options: {1: en, 2: es}
            timeout: 0.02
            retries: 1
            confirm_prompt: "{lang}/language_chosen"
            next: menu
          menu:
            type: menu
            prompt: "{lang}/main_menu"
            timeout: 0.02
            retries: 0
            options: {1: billing}
            fallback: general
          billing: {type: enqueue, queue: billing}
          general: {type: enqueue, queue: general}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall()

    # The late "1" arrives while "English." plays (no barge-in there): it is dropped.
    original = FakeMedia.play

    def play(self: FakeMedia, prompts_: Any, on_done: Any = None, *, repeat: bool = False) -> None:
        original(self, prompts_, on_done, repeat=repeat)
        if self._current == ["en/language_chosen"]:
            self.call.digits.put_nowait("1")

    call.media.play = play.__get__(call.media)  # type: ignore[method-assign]
    record = await harness.run(call)
    assert call.media.played == ["common/choose_language", "common/choose_language",
                                 "en/language_chosen", "en/main_menu"]
    assert record["queue"] == "general", record
    assert harness.of(LanguageSelected)[0].source == "default"


async def test_demo_language_from_profile_skips_the_question(prompts: PromptLibrary) -> None:
    profile = CustomerProfile("600100200", tier="vip", language="es", last_agent="1003",
                              preferred_agent="1001")
    harness = Harness(short_demo(prompts), prompts, profiles={"600100200": profile})
    call = FakeCall({"es/main_menu": "0"})
    record = await harness.run(call)
    assert call.media.played == ["es/welcome", "es/main_menu"]
    assert record["customer"] == {"known": True, "tier": "vip"}
    [request] = harness.gateway.enqueued
    assert (request.queue, request.priority) == ("general", 3)
    assert (request.preferred_agent, request.last_agent) == ("1001", "1003")
    assert harness.of(LanguageSelected)[0].source == "profile"


async def test_demo_failed_lookup_treats_caller_as_unknown(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "1"}, caller="boom")
    record = await harness.run(call)
    assert record["customer"] == {"known": False, "tier": None}
    assert harness.gateway.enqueued[0].priority == 1


async def test_demo_self_service_then_silence_is_deflected(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "3", "en/faq_menu": "1"})
    record = await harness.run(call)
    assert call.media.played[-4:] == ["en/faq_menu", "en/faq_password_reset",
                                      "en/press_0_for_agent", "en/goodbye"]
    assert record["outcome"] == "deflected"
    assert record["self_service_topics"] == ["password_reset"]
    assert call.hang_ups == 1
    assert harness.of(SelfServiceAnswered)[0].topic == "password_reset"
    assert harness.of(CallDeflected) == [CallDeflected("call-1", "demo", "password_reset", at=FLOW_NOW)]
    assert not harness.gateway.enqueued
    assert harness.metric("centralita_ivr_deflections_total", topic="password_reset") == 1
    assert harness.metric("centralita_ivr_deflection_ratio", topic="password_reset") == 1.0


async def test_deflection_rate_counts_callers_who_asked_for_an_agent(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    await harness.run(FakeCall({"en/main_menu": "3", "en/faq_menu": "2"}))
    # Second caller presses 0 during "press 0 for an agent": not deflected.
    second = FakeCall({"en/main_menu": "3", "en/faq_menu": "2", "en/press_0_for_agent": "0"})
    record = await harness.run(second)
    assert record["outcome"] == "enqueued" and record["queue"] == "general"
    assert harness.metric("centralita_ivr_self_service_answers_total", topic="opening_hours") == 2
    assert harness.metric("centralita_ivr_deflections_total", topic="opening_hours") == 1
    assert harness.metric("centralita_ivr_deflection_ratio", topic="opening_hours") == 0.5


async def test_digit_during_the_answer_barges_in(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "3", "en/faq_menu": "3", "en/faq_order_status": "0"})
    record = await harness.run(call)
    assert "en/faq_order_status" in call.media.stopped
    assert record["queue"] == "general"


async def test_caller_hanging_up_in_the_menu_is_abandoned(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall(hang_up_during=["en/main_menu"])
    record = await harness.run(call)
    assert record["outcome"] == "abandoned"
    assert record["path"][-1]["node"] == "main_menu"
    assert harness.of(IvrFinished) == [IvrFinished("call-1", "demo", "abandoned", "main_menu",
                                                     at=FLOW_NOW)]
    assert harness.metric("centralita_ivr_outcomes_total", flow="demo", outcome="abandoned") == 1


async def test_caller_hanging_up_after_an_answer_is_deflected(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "3", "en/faq_menu": "2"},
                    hang_up_during=["en/faq_opening_hours"])
    record = await harness.run(call)
    assert record["outcome"] == "deflected"
    assert harness.of(CallDeflected)[0].topic == "opening_hours"


async def test_server_cancelling_the_application_still_finishes_the_record(
        prompts: PromptLibrary) -> None:
    # The call manager cancels the application's task when the caller's BYE arrives.
    harness = Harness(short_demo(prompts), prompts)
    call = FakeCall({"en/main_menu": "3", "en/faq_menu": "1", "en/faq_password_reset": ""})
    running = asyncio.ensure_future(harness.runner.run(call))
    while "call-1" not in harness.log or (
            "faq_password_reset" not in harness.log.record("call-1").nodes):
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    record = harness.log.get("call-1")
    assert record["outcome"] == "deflected" and record["ended_at"] is not None
    assert harness.of(CallDeflected)[0].topic == "password_reset"


# ------------------------------------------------------------------ node types


async def test_menu_invalid_digit_plays_its_own_prompt_then_accepts_a_retry(
        prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: menu
        nodes:
          menu:
            type: menu
            prompt: en/main_menu
            invalid_prompt: en/closed
            options: {{1: queue}}
            fallback: bye
            timeout: {SHORT}
          queue: {{type: enqueue, queue: sales, priority: 7, skills: [spanish]}}
          bye: {{type: hangup}}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall({"en/main_menu": "9", "en/closed": "1"})
    record = await harness.run(call)
    assert call.media.played == ["en/main_menu", "en/closed"]
    assert call.media.stopped == ["en/main_menu", "en/closed"]
    assert record["queue"] == "sales"
    assert [d["digit"] for d in record["digits"]] == ["9", "1"]
    assert [(e.node, e.digit) for e in harness.of(DigitReceived)] == [("menu", "9"), ("menu", "1")]
    request = harness.gateway.enqueued[0]
    assert (request.priority, dict(request.skills)) == (7, {"spanish": 1})


async def test_menu_wrong_input_every_time_ends_on_the_fallback(prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: menu
        nodes:
          menu:
            type: menu
            prompt: en/main_menu
            options: {{1: queue}}
            fallback: bye
            retries: 1
            timeout: {SHORT}
          queue: {{type: enqueue, queue: sales}}
          bye: {{type: hangup, prompt: en/goodbye}}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall({"en/main_menu": "7", "en/invalid_option": "8"})
    record = await harness.run(call)
    assert call.media.played == ["en/main_menu", "en/invalid_option", "en/goodbye"]
    assert record["outcome"] == "hung_up" and call.hang_ups == 1
    assert record["path"][-1]["node"] == "bye"


async def test_digit_pressed_before_a_prompt_skips_it(prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: hello
        nodes:
          hello: {{type: play, prompt: [en/welcome, en/please_hold], next: menu}}
          menu: {{type: menu, prompt: en/main_menu, options: {{2: q}}, fallback: bye, timeout: {SHORT}}}
          q: {{type: enqueue, queue: support}}
          bye: {{type: hangup}}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall({"en/welcome": "2"})
    record = await harness.run(call)
    # Both greeting prompts went out as one playlist; the digit stopped it and the
    # menu never played its prompt.
    assert call.media.played == ["en/welcome", "en/please_hold"]
    assert record["queue"] == "support"


async def test_play_without_barge_in_plays_to_the_end(prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: legal
        nodes:
          legal: {{type: play, prompt: en/welcome, barge_in: false, next: menu}}
          menu: {{type: menu, prompt: en/main_menu, options: {{2: q}}, fallback: bye, timeout: {SHORT}}}
          q: {{type: enqueue, queue: support}}
          bye: {{type: hangup}}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall()
    call.digits.put_nowait("2")
    record = await harness.run(call)
    assert call.media.played == ["en/welcome"] and call.media.stopped == []
    assert record["queue"] == "support"


def collect_flow(prompts: PromptLibrary, **overrides: Any) -> Flow:
    settings = {"min_length": 3, "max_length": 5, "terminator": '"#"',
                "inter_digit_timeout": SHORT, "overall_timeout": 5, "timeout": SHORT,
                "retries": 1} | overrides
    options = ", ".join(f"{key}: {value}" for key, value in settings.items())
    return load_flow(
        "start: account\n"
        "nodes:\n"
        f"  account: {{type: collect, prompt: en/main_menu, variable: account, {options},"
        " next: done, fallback: bye}\n"
        "  done: {type: enqueue, queue: billing}\n"
        "  bye: {type: hangup}\n", "collect.yaml", prompts)


async def test_collect_stops_at_the_terminator(prompts: PromptLibrary) -> None:
    harness = Harness(collect_flow(prompts), prompts)
    record = await harness.run(FakeCall({"en/main_menu": "1234#9"}))
    assert record["collected"] == {"account": "1234"} and record["queue"] == "billing"


async def test_collect_stops_at_max_length(prompts: PromptLibrary) -> None:
    harness = Harness(collect_flow(prompts), prompts)
    record = await harness.run(FakeCall({"en/main_menu": "1234567"}))
    assert record["collected"] == {"account": "12345"}


async def test_collect_too_short_after_inter_digit_timeout_retries(prompts: PromptLibrary) -> None:
    harness = Harness(collect_flow(prompts), prompts)
    call = FakeCall({"en/main_menu": "12", "en/invalid_option": "987"})
    record = await harness.run(call)
    assert call.media.played == ["en/main_menu", "en/invalid_option"]
    assert record["collected"] == {"account": "987"}


async def test_collect_without_input_ends_on_fallback(prompts: PromptLibrary) -> None:
    harness = Harness(collect_flow(prompts), prompts)
    call = FakeCall()
    record = await harness.run(call)
    assert call.media.played == ["en/main_menu", "en/no_input", "en/main_menu"]
    assert record["outcome"] == "hung_up" and record["collected"] == {}


async def test_collect_overall_timeout_cuts_a_slow_entry(prompts: PromptLibrary) -> None:
    # Digits keep coming within the inter-digit timeout, but the entry as a whole
    # may take only a moment: what was typed by then is judged.
    # The last digit comes long after the overall timeout and long before the inter-digit
    # one, so only the overall timeout can leave it out, however loaded the machine is.
    flow = collect_flow(prompts, inter_digit_timeout=30, overall_timeout=0.3, retries=0,
                        max_length=10)
    harness = Harness(flow, prompts)
    call = FakeCall({"en/main_menu": "1"})

    async def slow_typist() -> None:
        while "en/main_menu" not in call.media.played:  # the 1 is keyed during the prompt
            await asyncio.sleep(0.005)
        for digit in "234":
            await asyncio.sleep(0.005)
            call.digits.put_nowait(digit)
        await asyncio.sleep(10)
        call.digits.put_nowait("5")

    typist = asyncio.ensure_future(slow_typist())
    try:
        record = await harness.run(call)
    finally:
        typist.cancel()
    assert record["collected"] == {"account": "1234"}


async def test_survey_scores(prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: survey
        nodes:
          survey: {{type: survey, timeout: {SHORT}, next: bye}}
          bye: {{type: hangup}}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall({"en/survey": "9", "en/invalid_option": "4"})
    record = await harness.run(call)
    assert call.media.played == ["en/survey", "en/invalid_option", "en/thank_you"]
    assert record["survey_score"] == 4
    assert harness.of(SurveyScored) == [SurveyScored("call-1", "test", 4, at=FLOW_NOW)]
    assert harness.metric("centralita_ivr_survey_score_count") == 1
    assert harness.metric("centralita_ivr_survey_score_sum") == 4
    assert harness.metric("centralita_ivr_survey_score_bucket", le="3.0") == 0
    assert harness.metric("centralita_ivr_survey_score_bucket", le="4.0") == 1


async def test_survey_without_answer_moves_on_unscored(prompts: PromptLibrary) -> None:
    flow = flow_of(f"""\
        start: survey
        nodes:
          survey: {{type: survey, timeout: {SHORT}, retries: 0, next: bye}}
          bye: {{type: hangup}}
        """, prompts)
    harness = Harness(flow, prompts)
    record = await harness.run(FakeCall())
    assert record["survey_score"] is None and not harness.of(SurveyScored)


HOURS_FLOW = """\
    start: hours
    nodes:
      hours:
        type: business_hours
        timezone: America/New_York
        weekly: {mon-fri: "09:00-17:00"}
        holidays: ["2025-07-04"]
        open: q
        closed: closed
      q: {type: enqueue, queue: sales}
      closed: {type: hangup, prompt: en/closed}
    """


@pytest.mark.parametrize(("moment", "outcome"), [
    (datetime(2025, 7, 3, 14, 0, tzinfo=UTC), "enqueued"),   # Thu 10:00 in New York
    (datetime(2025, 7, 3, 12, 0, tzinfo=UTC), "hung_up"),    # 08:00 there: not yet
    (datetime(2025, 7, 4, 15, 0, tzinfo=UTC), "hung_up"),    # Independence Day
    (datetime(2025, 7, 5, 15, 0, tzinfo=UTC), "hung_up"),    # Saturday
])
async def test_business_hours_by_injected_clock(prompts: PromptLibrary, moment: datetime,
                                                outcome: str) -> None:
    harness = Harness(flow_of(HOURS_FLOW, prompts), prompts, clock=lambda: moment)
    call = FakeCall()
    record = await harness.run(call)
    assert record["outcome"] == outcome
    assert call.media.played == ([] if outcome == "enqueued" else ["en/closed"])


async def test_transfer_to_an_extension(prompts: PromptLibrary) -> None:
    flow = flow_of("""\
        start: desk
        nodes:
          desk: {type: transfer, extension: "1001", prompt: en/please_hold}
        """, prompts)
    harness = Harness(flow, prompts)
    call = FakeCall()
    record = await harness.run(call)
    assert harness.gateway.transfers == [("1001", "en")]
    assert record["outcome"] == "transferred" and record["extension"] == "1001"
    assert call.media.played == ["en/please_hold"]


async def test_lookup_branches_on_known_and_unknown(prompts: PromptLibrary) -> None:
    flow = flow_of("""\
        start: who
        nodes:
          who: {type: lookup_caller, known: vip_desk, unknown: queue}
          vip_desk: {type: transfer, extension: "1002"}
          queue: {type: enqueue, queue: general}
        """, prompts)
    harness = Harness(flow, prompts, profiles={"555": CustomerProfile("555", tier="vip")})
    assert (await harness.run(FakeCall(caller="555")))["outcome"] == "transferred"
    assert (await harness.run(FakeCall(caller="556")))["outcome"] == "enqueued"


# ------------------------------------------------------------------ gateways, log, errors


async def test_hold_music_gateway_holds_until_hang_up(prompts: PromptLibrary) -> None:
    gateway = HoldMusicGateway(prompts)
    call = FakeCall()
    request = EnqueueRequest("call-1", "600", "general", 1, language="es")
    holding = asyncio.ensure_future(gateway.enqueue(call, request))
    for _ in range(5):
        await asyncio.sleep(0)
    assert call.media.played == ["es/please_hold"]
    assert call.media.repeating == ["common/hold_music"]
    assert not holding.done()
    call.hung_up.set()
    await asyncio.wait_for(holding, 1)


async def test_call_log_is_bounded_and_live(prompts: PromptLibrary) -> None:
    log = IvrCallLog(capacity=2)
    flow = flow_of("start: bye\nnodes:\n  bye: {type: hangup}\n", prompts)
    runner = FlowRunner(flow, prompts, EventBus(), enqueue=RecordingGateway(), call_log=log)
    for call_id in ("a", "b", "c"):
        call = FakeCall()
        call.call_id = call_id
        await runner.run(call)
    assert len(log) == 2 and "a" not in log
    assert log.get("c")["outcome"] == "hung_up"
    with pytest.raises(UnknownIvrCall):
        log.get("a")
    with pytest.raises(KeyError):
        log.get("never")


async def test_node_entered_events_follow_the_path(prompts: PromptLibrary) -> None:
    harness = Harness(short_demo(prompts), prompts)
    await harness.run(FakeCall({"en/main_menu": "2"}))
    assert [event.node for event in harness.of(IvrNodeEntered)] == [
        "lookup", "choose_language", "welcome", "main_menu", "support_queue"]


async def test_failing_node_ends_the_call_as_error(prompts: PromptLibrary) -> None:
    class BrokenGateway(RecordingGateway):
        async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
            raise RuntimeError("router unavailable")

    flow = flow_of("start: q\nnodes:\n  q: {type: enqueue, queue: general}\n", prompts)
    bus = EventBus()
    finished: list[IvrFinished] = []
    bus.subscribe(finished.append, IvrFinished)
    runner = FlowRunner(flow, prompts, bus, enqueue=BrokenGateway())
    call = FakeCall()
    record = await runner.run(call)
    assert record.outcome == "error" and call.hang_ups == 1
    assert finished[0].outcome == "error"


def test_a_transfer_gateway_is_required_when_enqueue_cannot_transfer(
        prompts: PromptLibrary, demo: Flow) -> None:
    class EnqueueOnly:
        async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
            return None

    with pytest.raises(TypeError):
        FlowRunner(demo, prompts, EventBus(), enqueue=EnqueueOnly())
