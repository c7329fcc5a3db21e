"""The configuration of callbacks and of the SIP trunks they dial out through.

Sections ``site``, ``trunks`` and ``callbacks`` of the YAML file, as pydantic models
(validated like the contact-center sections, errors named by file, line and key):

    site: madrid                 # this server's site (``pbx serve --site`` overrides it;
                                 # default: "local", the one site of a single server)
    trunks:
      - name: carrier
        address: 192.0.2.10:5060
        transport: udp           # or tcp
        username: centralita     # digest credentials, when the trunk challenges
        password: secret
        caller_id: "+34910000000"
    callbacks:
      trunk: carrier             # the default for queues that name none (one trunk: that one)
      queues:
        billing:
          max_attempts: 3
          business_hours: {timezone: Europe/Madrid, weekly: {mon-fri: "09:00-18:00"}}
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from callbacks import CallbackPolicy, InvalidNumber, normalize_number
from ivr.hours import BusinessHours, HoursFormatError, OpeningInterval, parse_days, parse_intervals
from settings.located_yaml import LocatedDocument

# A single server without a site configured is this one site.
DEFAULT_SITE = "local"

Name = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrunkSettings(_Settings):
    """A SIP trunk the server places outbound calls through."""

    name: Name
    address: str = Field(description="HOST:PORT of the trunk (an IP address)")
    transport: Literal["udp", "tcp"] = "udp"
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: str | None = Field(default=None, min_length=1, max_length=256)
    caller_id: str = Field(description="the number the called customer sees")
    domain: str | None = Field(default=None, description="host part of the Request-URI and From "
                                                 "(default: the trunk's address)")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        from pbx.config import parse_host_port

        parse_host_port(value)
        return value

    @field_validator("caller_id")
    @classmethod
    def _dialable(cls, value: str) -> str:
        try:
            return normalize_number(value)
        except InvalidNumber as error:
            raise ValueError(error.reason) from None

    @model_validator(mode="after")
    def _credentials_together(self) -> TrunkSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (digest credentials)")
        return self

    @property
    def host(self) -> str:
        from pbx.config import parse_host_port

        return parse_host_port(self.address)[0]

    @property
    def port(self) -> int:
        from pbx.config import parse_host_port

        return parse_host_port(self.address)[1]


class BusinessHoursSettings(_Settings):
    timezone: str
    weekly: dict[str, str] = Field(description="days (mon-fri, sat) to hours (09:00-18:00, closed)")
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Madrid)") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _week(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[int] = set()
        for days, hours in value.items():
            try:
                numbers = parse_days(str(days))
                parse_intervals(hours)
            except HoursFormatError as error:
                raise ValueError(str(error)) from None
            if seen & set(numbers):
                raise ValueError(f"{days!r} gives hours for a day already given")
            seen |= set(numbers)
        return value

    def hours(self) -> BusinessHours:
        weekly: dict[int, tuple[OpeningInterval, ...]] = {}
        for days, hours in self.weekly.items():
            for day in parse_days(days):
                weekly[day] = parse_intervals(hours)
        return BusinessHours(ZoneInfo(self.timezone), weekly, frozenset(self.holidays))


class QueueCallbackSettings(_Settings):
    """One queue's callbacks: the trunk, how often and when to try."""

    trunk: Name | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_delay_seconds: float = Field(default=120, gt=0, le=86400)
    backoff: float = Field(default=2.0, ge=1, le=10)
    max_retry_delay_seconds: float = Field(default=3600, gt=0, le=7 * 86400)
    expiry_seconds: float = Field(default=86400, gt=0, le=30 * 86400)
    no_answer_seconds: float = Field(default=30, gt=0, le=300,
                                     description="how long the customer's phone rings before "
                                                 "the try counts as no answer")
    business_hours: BusinessHoursSettings | None = None

    @model_validator(mode="after")
    def _delays(self) -> QueueCallbackSettings:
        if self.max_retry_delay_seconds < self.retry_delay_seconds:
            raise ValueError("max_retry_delay_seconds is shorter than retry_delay_seconds")
        return self

    def policy(self) -> CallbackPolicy:
        return CallbackPolicy(self.max_attempts, timedelta(seconds=self.retry_delay_seconds),
                              self.backoff, timedelta(seconds=self.max_retry_delay_seconds),
                              timedelta(seconds=self.expiry_seconds))


class CallbackSettings(_Settings):
    trunk: Name | None = Field(default=None, description="the trunk of queues that name none")
    lease_seconds: float = Field(default=30, ge=1, le=3600,
                                 description="how long this site's hold on its requests lasts "
                                             "without renewal; another site adopts them after")
    poll_seconds: float = Field(default=1.0, gt=0, le=60, description="how often due requests are looked for")
    concurrent_tries: int = Field(default=4, ge=1, le=1000, description="callbacks dialled at once by this site")
    queues: dict[Name, QueueCallbackSettings] = Field(default_factory=dict)

    def for_queue(self, queue: str) -> QueueCallbackSettings:
        return self.queues.get(queue) or _DEFAULT_QUEUE


_DEFAULT_QUEUE = QueueCallbackSettings()


class CallbackConfig(_Settings):
    """Everything callbacks need from the file: the trunks and the per-queue rules."""

    trunks: tuple[TrunkSettings, ...] = ()
    callbacks: CallbackSettings = CallbackSettings()

    def trunk(self, name: str) -> TrunkSettings | None:
        return next((trunk for trunk in self.trunks if trunk.name == name), None)

    def trunk_for(self, queue: str) -> TrunkSettings | None:
        """The trunk a queue's callbacks dial through: its own, the default, or the only one."""
        name = self.callbacks.for_queue(queue).trunk or self.callbacks.trunk
        if name is not None:
            return self.trunk(name)
        return self.trunks[0] if len(self.trunks) == 1 else None


def _problems(document: LocatedDocument, error: ValidationError, prefix: str) -> list[str]:
    found = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        path = f"{prefix}{where}" if not where.startswith("[") else f"{prefix.rstrip('.')}{where}"
        message = detail["msg"].removeprefix("Value error, ")
        found.append(document.problem(path.rstrip("."), message))
    return found


def parse_site(document: LocatedDocument, problems: list[str]) -> str:
    """The ``site`` key: this server's site name."""
    data: dict[str, Any] = document.data if isinstance(document.data, dict) else {}
    site = data.get("site", DEFAULT_SITE)
    if not isinstance(site, str) or not site or len(site) > 64:
        problems.append(document.problem("site", "must be a site name (1-64 characters)"))
        return DEFAULT_SITE
    return site


def parse_callback_config(document: LocatedDocument, problems: list[str], *,
                          queue_names: set[str]) -> CallbackConfig:
    """The ``trunks`` and ``callbacks`` sections; problems are appended, located."""
    data: dict[str, Any] = document.data if isinstance(document.data, dict) else {}

    trunks: list[TrunkSettings] = []
    raw_trunks = data.get("trunks") or []
    if not isinstance(raw_trunks, list):
        problems.append(document.problem("trunks", "must be a list of trunks"))
        raw_trunks = []
    seen: set[str] = set()
    for i, item in enumerate(raw_trunks):
        name = str(item.get("name")) if isinstance(item, dict) else None
        if name in seen:
            problems.append(document.problem(f"trunks[{i}].name", f"trunk {name} is defined twice"))
            continue
        if name is not None:
            seen.add(name)
        try:
            trunks.append(TrunkSettings.model_validate(item))
        except ValidationError as error:
            problems.extend(_problems(document, error, f"trunks[{i}]."))
    trunk_names = {str(item.get("name")) for item in raw_trunks if isinstance(item, dict)}

    settings = CallbackSettings()
    raw = data.get("callbacks")
    if raw is not None:
        try:
            settings = CallbackSettings.model_validate(raw)
        except ValidationError as error:
            problems.extend(_problems(document, error, "callbacks."))
    if settings.trunk is not None and settings.trunk not in trunk_names:
        problems.append(document.problem("callbacks.trunk", f"unknown trunk {settings.trunk!r} "
                                                            "(define it under trunks)"))
    for queue, rules in settings.queues.items():
        path = f"callbacks.queues.{queue}"
        if queue not in queue_names:
            problems.append(document.problem(path, f"unknown queue {queue!r} (define it under queues)"))
        if rules.trunk is not None and rules.trunk not in trunk_names:
            problems.append(document.problem(f"{path}.trunk", f"unknown trunk {rules.trunk!r} "
                                                              "(define it under trunks)"))
    if len(trunk_names) > 1 and settings.trunk is None:
        for queue in sorted(queue_names):
            if settings.for_queue(queue).trunk is None:
                problems.append(document.problem(
                    f"callbacks.queues.{queue}" if queue in settings.queues else "callbacks",
                    f"several trunks are defined: name the trunk of queue {queue!r}'s callbacks "
                    "(callbacks.queues.<queue>.trunk) or a default (callbacks.trunk)"))
    return CallbackConfig(trunks=tuple(trunks), callbacks=settings)
