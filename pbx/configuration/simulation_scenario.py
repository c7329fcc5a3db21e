"""The scenario file of `pbx simulate`: pydantic models of its keys, validated against the
server configuration, and turned into a ``simulation.Scenario``.

The models are ``settings.validation`` sections like the configuration's: strict, unknown
keys refused, every problem reported as ``FILE:LINE: key: reason`` and all of them in one
go. The sites, queues and agents the scenario names are checked against the server
configuration, given to the models in the validation context. See the README's
"Simulator" section for the format and ``pbx/scenarios/monday.yaml`` for an example.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from callbacks import CallbackPolicy, InvalidPolicy
from pbx.configuration.models import Language, Proficiency, SkillName, TimeZoneName
from pbx.configuration.server import ServerConfig
from router import AgentProfile, RouterError
from settings.located_yaml import ConfigError, LocatedDocument, in_file_order, load_yaml_file
from settings.validation import ListOf, NonEmpty, Section, Text, validate_value
from simulation.scenario import (
    DISTRIBUTIONS,
    AgentsAway,
    Break,
    CallbackOffer,
    Distribution,
    QueueLoad,
    Scenario,
    SiteOutage,
    StaffGroup,
)

_DAY = 86400.0
_TIME = re.compile(r"^(\d{1,2}):([0-5]\d)$")
SHIPPED_SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def scenario_path(reference: str) -> Path:
    """A file path, or the name of a shipped scenario (``monday``)."""
    path = Path(reference)
    shipped = SHIPPED_SCENARIOS / f"{reference}.yaml"
    if not path.exists() and "/" not in reference and shipped.exists():
        return shipped
    return path


# ---------------------------------------------------------------------- value types


def _clock_time(value: Any) -> float:
    found = _TIME.match(value) if isinstance(value, str) else None
    if found is None or int(found.group(1)) > 48:
        # YAML reads an unquoted 10:00 as the number 600.
        raise ValueError('must be a time "HH:MM" in quotes (up to "48:00" for the next day)')
    return 3600.0 * int(found.group(1)) + 60.0 * int(found.group(2))


def clock(seconds: float) -> str:
    """Seconds after midnight as HH:MM, as the file writes them."""
    minutes = round(seconds / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _day(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    if not isinstance(value, date) or hasattr(value, "hour"):
        raise ValueError("must be a date like 2026-12-07")
    return value


def _pair(value: Any) -> Any:
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError('must be ["HH:MM", "HH:MM"]')
    return tuple(value)


def _configured(kind: str, key: str) -> Any:
    """A validator: the value must name one of the configuration's ``key`` (in the context)."""

    def check(name: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get(key, ())
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ValueError(f"unknown {kind} {name!r} (the configuration has: {listed})")
        return name

    return AfterValidator(check)


ClockTime = Annotated[float, PlainValidator(_clock_time)]  # "HH:MM": seconds after midnight
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
CallsPerInterval = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1)]
SiteName = Annotated[Text, _configured("site", "sites")]
QueueName = Annotated[Text, _configured("queue", "queues")]
AgentName = Annotated[Text, _configured("agent", "agents")]
Shift = Annotated[tuple[ClockTime, ClockTime], BeforeValidator(_pair)]

_SHAPES = "{constant: S}, {exponential: MEAN}, {lognormal: MEAN, cv: CV}, {uniform: [LOW, HIGH]}"


def _low_high(value: Any) -> Any:
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError("must be [LOW, HIGH] in seconds")
    return tuple(value)


class Duration(Section):
    """Seconds: a number (constant) or one of the shapes, like ``{exponential: 180}``."""

    constant: Seconds | None = None
    exponential: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    lognormal: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    cv: Seconds | None = None  # lognormal's standard deviation / mean
    uniform: Annotated[tuple[Seconds, Seconds], BeforeValidator(_low_high)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_shape(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"must be at least 0 seconds, not {value}")
            return {"constant": value}
        if not isinstance(value, dict):
            raise ValueError("must be seconds or a distribution like {exponential: 180}")
        if len([key for key in value if key in DISTRIBUTIONS]) != 1:
            raise ValueError(f"must be one of {_SHAPES}")
        return value

    @field_validator("uniform")
    @classmethod
    def _low_not_above_high(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"must be [LOW, HIGH] with LOW <= HIGH, not [{value[0]:g}, {value[1]:g}]")
        return value

    @model_validator(mode="after")
    def _cv_with_lognormal(self) -> Duration:
        if self.lognormal is not None and self.cv is None:
            raise ValueError("lognormal needs cv (standard deviation / mean), e.g. 0.6")
        if self.lognormal is None and self.cv is not None:
            raise ValueError("cv only applies to lognormal")
        return self

    @property
    def distribution(self) -> Distribution:
        if self.uniform is not None:
            return Distribution("uniform", low=self.uniform[0], high=self.uniform[1])
        if self.lognormal is not None:
            return Distribution("lognormal", self.lognormal, self.cv or 0.0)
        if self.exponential is not None:
            return Distribution("exponential", self.exponential)
        return Distribution("constant", self.constant or 0.0)


def _some_talk(handle: Duration) -> Duration:
    if handle.distribution.average <= 0:
        raise ValueError("must average more than 0 seconds")
    return handle


# ---------------------------------------------------------------------- sections


class CallbackSettings(Section):
    offer_over_seconds: Annotated[float, Field(ge=0, le=86400)]  # the router's estimated wait
    uptake: Share  # share of those offered who accept
    answer_share: Share = 0.9  # share who answer when called back
    ring_seconds: Duration = Duration(constant=8.0)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_minutes: float = Field(2.0, ge=0.1, le=24 * 60)

    @field_validator("retry_minutes")
    @classmethod
    def _a_valid_policy(cls, minutes: float, info: ValidationInfo) -> float:
        try:
            CallbackPolicy(max_attempts=info.data.get("max_attempts", 3),
                           retry_delay=timedelta(minutes=minutes))
        except InvalidPolicy as error:
            raise ValueError(str(error)) from None
        return minutes

    @property
    def offer(self) -> CallbackOffer:
        policy = CallbackPolicy(max_attempts=self.max_attempts,
                                retry_delay=timedelta(minutes=self.retry_minutes))
        return CallbackOffer(self.offer_over_seconds, self.uptake, self.answer_share,
                             self.ring_seconds.distribution, policy)


class QueueLoadSettings(Section):
    """The callers of one queue of the configuration (its key under ``queues``)."""

    opens: ClockTime = 0.0  # calls[0] is the quarter hour from here
    calls: Annotated[ListOf[CallsPerInterval], NonEmpty]  # expected calls per 15 minutes
    handle: Annotated[Duration, AfterValidator(_some_talk)]
    wrap_up: Duration = Duration(constant=0.0)
    patience: Duration | None = None  # None: nobody hangs up
    self_service: Share = 0.0
    ivr_seconds: float = Field(0.0, ge=0, le=3600)
    callback: CallbackSettings | None = None

    def load(self, queue: str) -> QueueLoad:
        return QueueLoad(
            queue=queue, calls=self.calls, handle=self.handle.distribution, opens=self.opens,
            wrap_up=self.wrap_up.distribution,
            patience=self.patience.distribution if self.patience is not None else None,
            self_service=self.self_service, ivr_seconds=self.ivr_seconds,
            callback=self.callback.offer if self.callback is not None else None)


class BreakSettings(Section):
    at: ClockTime
    minutes: float = Field(15.0, ge=1, le=600)
    reason: Text = "break"


class StaffGroupSettings(Section):
    """``count`` identical agents; ``like`` copies site, skills and languages of an agent
    of the configuration, each of which may be given instead."""

    name: Text
    like: AgentName | None = None
    site: SiteName | None = Field(None, validate_default=True)
    skills: dict[SkillName, Proficiency] | None = None
    languages: ListOf[Language] | None = None
    count: int = Field(1, ge=0, le=100_000)
    shift: Shift  # in the site's local time
    breaks: ListOf[BreakSettings] = ()

    @field_validator("shift")
    @classmethod
    def _ends_after_it_starts(cls, shift: tuple[float, float]) -> tuple[float, float]:
        if shift[1] <= shift[0]:
            raise ValueError('must end after it starts ("26:00" is 02:00 the next day)')
        return shift

    @field_validator("breaks")
    @classmethod
    def _within_the_shift(cls, breaks: tuple[BreakSettings, ...],
                          info: ValidationInfo) -> tuple[BreakSettings, ...]:
        shift = info.data.get("shift")
        if shift is None:
            return breaks  # the shift has an error of its own
        outside = [f"breaks[{i}] at {clock(item.at)}" for i, item in enumerate(breaks)
                   if not shift[0] <= item.at < shift[1]]
        if outside:
            raise ValueError(f"{', '.join(outside)} not within the shift "
                             f"({clock(shift[0])}-{clock(shift[1])})")
        return breaks

    @field_validator("site")
    @classmethod
    def _given_or_copied(cls, site: str | None, info: ValidationInfo) -> str | None:
        # "like" missing from info.data: it has an error of its own.
        if site is None and "like" in info.data and info.data["like"] is None:
            raise ValueError("is required unless like: names an agent of the configuration to copy")
        return site

    def profile(self, agents: Mapping[str, AgentProfile]) -> AgentProfile:
        base = agents[self.like] if self.like is not None else None
        site = self.site or (base.site if base else "")
        skills = self.skills if self.skills is not None else dict(base.skills) if base else {}
        languages = self.languages if self.languages is not None else base.languages if base else ()
        return AgentProfile(self.name, self.name, site, skills, frozenset(languages))


class EventSettings(Section):
    """``{site_down: SITE, from, to}`` or ``{away: SITE, count, from, to, reason}``, on the
    report's clock."""

    site_down: SiteName | None = None
    away: SiteName | None = None
    count: int | None = Field(None, ge=1, le=100_000)  # away: how many agents (default 1)
    start: ClockTime = Field(alias="from")
    end: ClockTime = Field(alias="to")
    reason: Text | None = None  # away: why (default "drill")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: float, info: ValidationInfo) -> float:
        if "start" in info.data and end <= info.data["start"]:
            raise ValueError("must be after 'from'")
        return end

    @model_validator(mode="after")
    def _one_kind(self) -> EventSettings:
        if (self.site_down is None) == (self.away is None):
            raise ValueError("must be one of {site_down: SITE, from, to} or "
                             "{away: SITE, count, from, to, reason}")
        if self.site_down is not None and (self.count is not None or self.reason is not None):
            raise ValueError("count and reason are for away, not site_down")
        return self


def _some_queue(queues: dict[str, QueueLoadSettings]) -> dict[str, QueueLoadSettings]:
    if not queues:
        raise ValueError("needs the callers of at least one queue")
    return queues


class ScenarioFile(Section):
    scenario: Text = "scenario"  # a name for the report
    day: Annotated[date, PlainValidator(_day)]  # the date simulated: it sets the UTC offsets
    timezone: TimeZoneName | None = None  # the report's clock; default: the first site's
    start: ClockTime = Field(0.0, alias="from")
    end: ClockTime = Field(_DAY, alias="to")
    warm_up_minutes: float = Field(0.0, ge=0, le=24 * 60)
    agent_answer_seconds: Duration = Duration(constant=0.0)
    router_tick_seconds: float = Field(Scenario.router_tick_seconds, ge=0.01, le=60)
    queues: Annotated[dict[QueueName, QueueLoadSettings], AfterValidator(_some_queue)]
    staff: Annotated[ListOf[StaffGroupSettings], NonEmpty]
    events: ListOf[EventSettings] = ()

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: float, info: ValidationInfo) -> float:
        if "start" in info.data and end <= info.data["start"]:
            raise ValueError("must be after 'from'")
        return end


# ---------------------------------------------------------------------- loading


def _duplicate_group_names(document: LocatedDocument) -> list[str]:
    """Two staff groups with one name (read as written, so reported even when a group has
    other mistakes)."""
    staff = document.data.get("staff") if isinstance(document.data, dict) else None
    seen: set[str] = set()
    problems = []
    for i, item in enumerate(staff if isinstance(staff, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if name is None:
            continue
        if str(name) in seen:
            problems.append(document.problem(f"staff[{i}].name", f"group {str(name)!r} is defined twice"))
        seen.add(str(name))
    return problems


def load_scenario(path: Path, config: ServerConfig) -> Scenario:
    """Read ``path``; raises ``ConfigError`` listing every problem."""
    document = load_yaml_file(path)
    center = config.contact_center
    sites = {site.name: site.timezone for site in center.sites}
    agents = {record.extension: record.profile for record in center.agents}
    queues = {queue.name: queue for queue in center.queues}
    problems: list[str] = []
    found: ScenarioFile | None = validate_value(
        document, problems, "", ScenarioFile, document.data,
        context={"sites": sites, "queues": queues, "agents": agents})
    problems.extend(_duplicate_group_names(document))
    if found is None or problems:
        raise ConfigError(in_file_order(problems))
    staff = []
    for i, group in enumerate(found.staff):
        try:
            staff.append(StaffGroup(group.name, group.profile(agents), group.count, group.shift[0],
                                    group.shift[1], tuple(Break(b.at, 60.0 * b.minutes, b.reason)
                                                          for b in group.breaks)))
        except RouterError as error:
            problems.append(document.problem(f"staff[{i}]", str(error)))
    if problems:
        raise ConfigError(in_file_order(problems))
    outages = [SiteOutage(event.site_down, event.start, event.end)
               for event in found.events if event.site_down is not None]
    away = [AgentsAway(event.away, event.count or 1, event.start, event.end, event.reason or "drill")
            for event in found.events if event.away is not None]
    return Scenario(
        name=found.scenario, day=found.day, timezone=found.timezone or next(iter(sites.values()), "UTC"),
        queues=tuple(queues.values()), site_timezones=sites,
        loads=tuple(settings.load(name) for name, settings in found.queues.items()),
        staff=tuple(staff), outages=tuple(outages), away=tuple(away),
        agent_answer=found.agent_answer_seconds.distribution, start=found.start, end=found.end,
        router_tick_seconds=found.router_tick_seconds, warm_up=60.0 * found.warm_up_minutes)
