"""The nodes of an IVR flow: one pydantic model per node type, whose fields are its keys.

``ivr.flow`` loads a file into these models (and checks the graph they form); the
engine runs them. A node's name is its key under ``nodes``, given in the validation
context, as are the flow's languages (a language node's options must be among them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

from ivr.hours import (
    BusinessHours,
    HoursFormatError,
    OpeningInterval,
    parse_days,
    parse_holiday,
    parse_intervals,
)
from settings.validation import ListOf, NonEmpty, Section, Text

DTMF_KEYS = frozenset("0123456789*#")
LANGUAGE_PLACEHOLDER = "{lang}"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt that may differ per language: a ``{lang}`` template or a per-language map."""

    template: str | None = None
    by_language: Mapping[str, str] = field(default_factory=dict)

    def path(self, language: str) -> str:
        if language in self.by_language:
            return self.by_language[language]
        if self.template is None:
            raise KeyError(f"no prompt for language {language!r}")
        return self.template.replace(LANGUAGE_PLACEHOLDER, language)


@dataclass(frozen=True)
class InputSettings:
    """How a node waits for input and what it says when the input is missing or wrong."""

    timeout: float
    retries: int
    no_input_prompt: PromptSpec
    invalid_prompt: PromptSpec


# ---------------------------------------------------------------------- value types


def _prompt_spec(value: Any) -> PromptSpec:
    if isinstance(value, PromptSpec):
        return value
    if isinstance(value, str) and value:
        return PromptSpec(template=value)
    if isinstance(value, dict) and value and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        return PromptSpec(by_language=dict(value))
    raise ValueError("must be a prompt path or a mapping of language to prompt path")


def _one_or_list(value: Any) -> Any:
    return value if isinstance(value, list | tuple) else [value]


def _digit(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or text not in DTMF_KEYS:
        raise ValueError(f"{value!r} is not a DTMF key (0-9, * or #)")
    return text


def _flow_language(language: str, info: ValidationInfo) -> str:
    languages = (info.context or {}).get("languages", ())
    if language not in languages:
        raise ValueError(f"language {language!r} is not in the flow's languages ({', '.join(languages)})")
    return language


def _time_zone(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a time zone name like Europe/Madrid")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Madrid)") from None


def _days(value: Any) -> tuple[int, ...]:
    return tuple(parse_days(str(value)))


def _opening_hours(value: Any) -> tuple[OpeningInterval, ...]:
    if not isinstance(value, str):
        raise HoursFormatError("must be a string like '09:00-18:00' or 'closed'")
    return parse_intervals(value)


def _each_day_once(weekly: dict[tuple[int, ...], tuple[OpeningInterval, ...]]
                   ) -> dict[tuple[int, ...], tuple[OpeningInterval, ...]]:
    seen: set[int] = set()
    for days in weekly:
        twice = seen.intersection(days)
        if twice:
            names = ", ".join(("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day] for day in sorted(twice))
            raise ValueError(f"gives hours for a day already given ({names})")
        seen.update(days)
    return weekly


def _some(mapping: dict[Any, Any]) -> dict[Any, Any]:
    if not mapping:
        raise ValueError("needs at least one option")
    return mapping


def _skill_list(value: Any) -> Any:
    # [billing, spanish]: those skills at any proficiency.
    return {str(skill): 1 for skill in value} if isinstance(value, list) else value


Prompt = Annotated[PromptSpec, PlainValidator(_prompt_spec)]
Prompts = Annotated[ListOf[Prompt], BeforeValidator(_one_or_list), NonEmpty]
Digit = Annotated[str, PlainValidator(_digit)]
Target = Text  # the name of another node of the flow
DigitOptions = Annotated[dict[Digit, Target], AfterValidator(_some)]
LanguageOptions = Annotated[dict[Digit, Annotated[Text, AfterValidator(_flow_language)]],
                            AfterValidator(_some)]
Timeout = Annotated[float, Field(ge=0.001, le=300)]
Retries = Annotated[int, Field(ge=0, le=10)]


# ---------------------------------------------------------------------- nodes


class Node(Section):
    """A node of a flow; its name is its key under ``nodes`` (given in the validation context)."""

    type: str
    _name: str = PrivateAttr("")

    def model_post_init(self, context: Any, /) -> None:
        self._name = str((context or {}).get("node", ""))

    @property
    def name(self) -> str:
        return self._name

    def targets(self) -> Iterator[tuple[str, str]]:
        """(key, node name) of every node this one can continue to."""
        return iter(())

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        """(key, prompt) of every prompt this node may play."""
        return iter(())


class AsksForInput(Node):
    """A node that waits for digits; ``timeout`` and ``retries`` default to the flow's."""

    timeout: Timeout
    retries: Retries
    no_input_prompt: Prompt = PromptSpec(template="{lang}/no_input")
    invalid_prompt: Prompt = PromptSpec(template="{lang}/invalid_option")

    @property
    def input(self) -> InputSettings:
        return InputSettings(self.timeout, self.retries, self.no_input_prompt, self.invalid_prompt)

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "no_input_prompt", self.no_input_prompt
        yield "invalid_prompt", self.invalid_prompt


class PlayNode(Node):
    type: Literal["play"]
    prompt: Prompts
    next: Target
    barge_in: bool = True

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        for spec in self.prompt:
            yield "prompt", spec


class MenuNode(AsksForInput):
    type: Literal["menu"]
    prompt: Prompt
    options: DigitOptions
    fallback: Target

    def targets(self) -> Iterator[tuple[str, str]]:
        for digit, target in self.options.items():
            yield f"options.{digit}", target
        yield "fallback", self.fallback

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield from super().prompts()


class CollectNode(AsksForInput):
    type: Literal["collect"]
    prompt: Prompt
    variable: Text = Field("", validate_default=True)  # default: the node's name
    min_length: int = Field(1, ge=1, le=64)
    max_length: int = Field(0, le=64, validate_default=True)  # default: min_length
    terminator: Digit | None = None
    inter_digit_timeout: Timeout
    overall_timeout: float = Field(ge=0.001, le=3600)
    next: Target
    fallback: Target

    @field_validator("variable")
    @classmethod
    def _named_after_the_node(cls, variable: str, info: ValidationInfo) -> str:
        return variable or str((info.context or {}).get("node", ""))

    @field_validator("max_length")
    @classmethod
    def _not_below_min_length(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min_length")
        if value == 0:
            return minimum or 1
        if value < 1:
            raise ValueError(f"must be between 1 and 64, not {value}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must not be below min_length ({minimum})")
        return value

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next
        yield "fallback", self.fallback

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield from super().prompts()


class LanguageNode(Node):
    """Sets the call's language from the caller's profile, else by digit; a silent caller
    hears the question again (``retries`` times), then the flow's language is kept."""

    type: Literal["language"]
    prompt: Prompt = PromptSpec(template="common/choose_language")
    options: LanguageOptions  # digit -> language
    use_profile: bool = True
    timeout: Timeout
    retries: Retries
    invalid_prompt: Prompt = PromptSpec(template="{lang}/invalid_option")
    next: Target
    confirm_prompt: Prompt | None = None  # played in the language chosen ("English.")

    @property
    def input(self) -> InputSettings:
        return InputSettings(self.timeout, self.retries, PromptSpec(template="{lang}/no_input"),
                             self.invalid_prompt)

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "invalid_prompt", self.invalid_prompt
        if self.confirm_prompt is not None:
            yield "confirm_prompt", self.confirm_prompt


class SelfServiceNode(Node):
    """An FAQ answer, then "press 0 for an agent": the digit goes to ``agent``, else ``next``."""

    type: Literal["self_service"]
    topic: Text
    answer: Prompt
    agent_prompt: Prompt = PromptSpec(template="{lang}/press_0_for_agent")
    agent_digit: Digit = "0"
    timeout: Timeout
    agent: Target
    next: Target

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "agent", self.agent
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "answer", self.answer
        yield "agent_prompt", self.agent_prompt


class BusinessHoursNode(Node):
    type: Literal["business_hours"]
    timezone: Annotated[ZoneInfo, PlainValidator(_time_zone)]
    # {mon-fri: "09:00-18:00", sat: closed}; a day not given is closed.
    weekly: Annotated[dict[Annotated[tuple[int, ...], PlainValidator(_days)],
                           Annotated[tuple[OpeningInterval, ...], PlainValidator(_opening_hours)]],
                      AfterValidator(_each_day_once)]
    holidays: ListOf[Annotated[date, PlainValidator(parse_holiday)]] = ()
    open: Target
    closed: Target

    @property
    def hours(self) -> BusinessHours:
        weekly = {day: intervals for days, intervals in self.weekly.items() for day in days}
        return BusinessHours(self.timezone, weekly, frozenset(self.holidays))

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "open", self.open
        yield "closed", self.closed


class LookupCallerNode(Node):
    """Looks the caller's number up (tier, language, last agent); branches on known/unknown."""

    type: Literal["lookup_caller"]
    known: Target | None = None  # default: next
    unknown: Target | None = None  # default: next
    next: Target | None = Field(None, validate_default=True)

    @field_validator("next")
    @classmethod
    def _needed_unless_both_branches(cls, value: str | None, info: ValidationInfo) -> str | None:
        branches = [info.data.get(key, "") for key in ("known", "unknown")]  # "": its own error
        if value is None and None in branches:
            raise ValueError("is required unless both known and unknown are given")
        return value

    def branch(self, *, known: bool) -> str:
        """The node a known (or an unknown) caller goes to."""
        target = (self.known if known else self.unknown) or self.next
        assert target is not None  # validation refuses a node with neither
        return target

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "known", self.branch(known=True)
        yield "unknown", self.branch(known=False)


class SurveyNode(AsksForInput):
    """Asks for a 1-5 score; no valid score after the retries just moves on."""

    type: Literal["survey"]
    prompt: Prompt = PromptSpec(template="{lang}/survey")
    thank_you_prompt: Prompt = PromptSpec(template="{lang}/thank_you")
    next: Target

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "thank_you_prompt", self.thank_you_prompt
        yield from super().prompts()


class EnqueueNode(Node):
    type: Literal["enqueue"]
    queue: Text
    priority: int | None = Field(None, ge=0, le=100)
    skills: Annotated[dict[Text, Annotated[int, Field(ge=1, le=10)]],
                      BeforeValidator(_skill_list)] = Field(default_factory=dict)
    prompt: Prompt | None = None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


class OfferCallbackNode(AsksForInput):
    """Offers to call the caller back instead of waiting: says when ("in about N minutes",
    from the queue's estimated wait), lets the caller confirm the number they call from
    (``confirm_digit``) or key another ended by ``#`` (``other_number_digit``), books the
    request and hangs up. ``decline_digit``, silence or a booking that fails go to ``next``.
    Its prompts are the library's ``{lang}/callback_*`` (see ``OFFER_PROMPTS``)."""

    type: Literal["offer_callback"]
    queue: Text
    priority: int | None = Field(None, ge=0, le=100)  # default: the caller's tier
    # Offered only when the queue's estimated wait passes this (unknown counts as long);
    # a shorter wait goes straight to next. Default: always offered.
    offer_after_wait: float | None = Field(None, ge=0, le=86400)
    confirm_digit: Digit = "1"
    other_number_digit: Digit = "2"
    decline_digit: Digit = Field("*", validate_default=True)
    # They name the digits: a flow that changes them records its own.
    menu_prompt: Prompt = PromptSpec(template="{lang}/callback_confirm_menu")
    enter_number_prompt: Prompt = PromptSpec(template="{lang}/callback_enter_number")
    inter_digit_timeout: Timeout
    overall_timeout: float = Field(ge=0.001, le=3600)
    next: Target

    @field_validator("decline_digit")
    @classmethod
    def _three_different_digits(cls, value: str, info: ValidationInfo) -> str:
        chosen = [info.data.get("confirm_digit"), info.data.get("other_number_digit"), value]
        if "#" in chosen:
            raise ValueError("# ends a keyed number; it cannot also answer the offer")
        if len(set(chosen)) < 3:
            raise ValueError("confirm_digit, other_number_digit and decline_digit must differ")
        return value

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "menu_prompt", self.menu_prompt
        yield "enter_number_prompt", self.enter_number_prompt
        for name in OFFER_PROMPTS:
            yield "type", PromptSpec(template=f"{{lang}}/{name}")
        yield from super().prompts()


# What an offer_callback node says (``{lang}/NAME`` in the prompt library; scripts/make-prompts).
OFFER_PROMPTS = (
    "callback_wait_about",      # "We can call you back in about" + minutes_said(N)
    "callback_wait_unknown",    # "We can call you back as soon as an agent is free."
    "callback_number_is",       # "We will call you on" + its digits
    "callback_number_too_short",
    "callback_number_too_long",
    "callback_number_digits_only",
    "callback_confirmed",       # booked
    "callback_already_pending",  # a pending request for this number and queue exists
    "callback_not_booked",      # the desk could not take it
    "minutes", "one_minute", "goodbye", "star", "pound",
    *(f"number_{n}" for n in range(0, 21)),
)


def minutes_said(minutes: int) -> tuple[str, ...]:
    """The prompts that say a wait of `minutes` (at least 1): one minute has a prompt of its
    own, so that no language says "1 minutes" (Spanish "un minuto", not "uno minutos")."""
    if minutes == 1:
        return ("one_minute",)
    return (f"number_{minutes}", "minutes")


class TransferNode(Node):
    type: Literal["transfer"]
    extension: Text
    prompt: Prompt | None = None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


class HangupNode(Node):
    type: Literal["hangup"]
    prompt: Prompt | None = None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


NODE_TYPES: dict[str, type[Node]] = {
    "play": PlayNode,
    "menu": MenuNode,
    "collect": CollectNode,
    "language": LanguageNode,
    "self_service": SelfServiceNode,
    "business_hours": BusinessHoursNode,
    "lookup_caller": LookupCallerNode,
    "survey": SurveyNode,
    "enqueue": EnqueueNode,
    "offer_callback": OfferCallbackNode,
    "transfer": TransferNode,
    "hangup": HangupNode,
}
TERMINAL_TYPES = frozenset({"hangup", "enqueue", "transfer"})
