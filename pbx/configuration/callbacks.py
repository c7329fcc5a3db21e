"""The configuration of callbacks and of the SIP trunks they dial out through.

The ``site``, ``trunks`` and ``callbacks`` keys of the YAML file. Their models are
``settings.validation`` sections, validated by ``pbx.configuration.server.build_config`` like every
other section (errors as ``FILE:LINE: key: reason``); this module adds what spans
them: names of trunks and queues referenced from ``callbacks``. It sits beside
``pbx/configuration/server.py`` as ``pbx/configuration/contact_center.py`` does, because the HTTP API reads these
models and ``pbx.configuration.server`` imports the API's schemas.

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
          connect: agent_first   # or customer_first
          business_hours: {timezone: Europe/Madrid, weekly: {mon-fri: "09:00-18:00"}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from callbacks import CallbackPolicy, InvalidNumber, normalize_number
from ivr.hours import BusinessHours
from pbx.configuration.models import business_hours, weekly_hours
from settings.located_yaml import LocatedDocument
from settings.validation import ListOf, Section, Text, validate_items, validate_value

# A single server without a site configured is this one site.
DEFAULT_SITE = "local"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def check_name(value: str) -> str:
    """A site's, trunk's or queue's name; raises ValueError with the rule."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a name (1-64 letters, digits, '.', '_', '+', '-';"
                         " starting with a letter or digit)")
    return value


Name = Annotated[Text, AfterValidator(check_name)]


def _host_port(value: str) -> str:
    from pbx.configuration.server import (
        parse_host_port,  # pbx.configuration.server imports this module
    )

    parse_host_port(value)
    return value


def _dialable(value: str) -> str:
    try:
        return normalize_number(value)
    except InvalidNumber as error:
        raise ValueError(error.reason) from None


class TrunkSettings(Section):
    """A SIP trunk the server places outbound calls through (an item of ``trunks``)."""

    name: Name
    address: Annotated[Text, AfterValidator(_host_port)]  # IP:PORT
    transport: Literal["udp", "tcp"] = "udp"
    username: Text | None = Field(default=None, min_length=1, max_length=128)
    password: Text | None = Field(default=None, min_length=1, max_length=256, validate_default=True)
    caller_id: Annotated[Text, AfterValidator(_dialable)]  # the number the called customer sees
    domain: Text | None = None  # host of the Request-URI and From (default: the address)

    @field_validator("password")
    @classmethod
    def _with_username(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "username" not in info.data:
            return value  # the username has a mistake of its own
        if info.data["username"] is not None and value is None:
            raise ValueError("is required with a username (digest credentials)")
        if info.data["username"] is None and value is not None:
            raise ValueError("needs a username beside it (digest credentials)")
        return value

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Madrid)") from None
    return value


class BusinessHoursSettings(Section):
    timezone: Annotated[Text, AfterValidator(_time_zone)]
    weekly: Annotated[dict[str, str], AfterValidator(weekly_hours)]  # days (mon-fri, sat) to hours (09:00-18:00, closed)
    holidays: ListOf[date] = ()

    def hours(self) -> BusinessHours:
        return business_hours(self.timezone, self.weekly, frozenset(self.holidays))


class QueueCallbackSettings(Section):
    """One queue's callbacks (``callbacks.queues.<queue>``): the trunk, how often and when to try."""

    trunk: Name | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_delay_seconds: float = Field(default=120, gt=0, le=86400)
    backoff: float = Field(default=2.0, ge=1, le=10)
    max_retry_delay_seconds: float = Field(default=3600, gt=0, le=7 * 86400, validate_default=True)
    expiry_seconds: float = Field(default=86400, gt=0, le=30 * 86400)
    # How long the customer's phone rings before the try counts as no answer.
    no_answer_seconds: float = Field(default=30, gt=0, le=300)
    # When its turn comes: ring the agent first, then dial the customer (agent_first), or
    # dial the customer first and ring an agent once they answer (customer_first).
    connect: Literal["agent_first", "customer_first"] = "agent_first"
    business_hours: BusinessHoursSettings | None = None
    # Callers waiting here hear the callback offer once their estimated wait passes this many
    # seconds (or nobody is staffed to estimate it); null: only offer_digit asks for one.
    offer_after_wait: float | None = Field(default=None, ge=0, le=86400)

    @field_validator("max_retry_delay_seconds")
    @classmethod
    def _not_below_retry_delay(cls, value: float, info: ValidationInfo) -> float:
        if "retry_delay_seconds" in info.data and value < info.data["retry_delay_seconds"]:
            raise ValueError(f"must not be below retry_delay_seconds ({info.data['retry_delay_seconds']:g})")
        return value

    def policy(self) -> CallbackPolicy:
        return CallbackPolicy(self.max_attempts, timedelta(seconds=self.retry_delay_seconds),
                              self.backoff, timedelta(seconds=self.max_retry_delay_seconds),
                              timedelta(seconds=self.expiry_seconds))


def _offer_key(value: str) -> str:
    if value not in set("0123456789*#"):
        raise ValueError(f"{value!r} is not a DTMF key (0-9, * or #)")
    return value


class CallbackSettings(Section):
    """The ``callbacks`` section."""

    trunk: Name | None = None  # the trunk of queues that name none
    # How long this site's hold on its requests lasts without renewal; another site adopts them after.
    lease_seconds: float = Field(default=30, ge=1, le=3600)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)  # how often due requests are looked for
    concurrent_tries: int = Field(default=4, ge=1, le=1000)  # only without a waiting line (the server has one: agents are the limit)
    # The key a caller waiting in a queue presses to ask for a callback; null: none.
    offer_digit: Annotated[Text, AfterValidator(_offer_key)] | None = "9"
    queues: dict[Name, QueueCallbackSettings] = Field(default_factory=dict)

    def for_queue(self, queue: str) -> QueueCallbackSettings:
        return self.queues.get(queue) or _DEFAULT_QUEUE


_DEFAULT_QUEUE = QueueCallbackSettings()


@dataclass(frozen=True)
class CallbackConfig:
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


def parse_site(document: LocatedDocument, problems: list[str]) -> str:
    """The ``site`` key: this server's site name."""
    data: dict[str, Any] = document.data if isinstance(document.data, dict) else {}
    if data.get("site") is None:
        return DEFAULT_SITE
    return validate_value(document, problems, "site", Name, data["site"]) or DEFAULT_SITE


def parse_callback_config(document: LocatedDocument, problems: list[str],
                          settings: CallbackSettings | None, *,
                          queue_names: set[str]) -> CallbackConfig:
    """The ``trunks`` section, and the names the ``callbacks`` section (``settings``, None
    when it has problems of its own) refers to; problems are appended, located.
    ``queue_names`` are the queues the file declares."""
    data: dict[str, Any] = document.data if isinstance(document.data, dict) else {}

    raw_trunks = data.get("trunks")
    items = raw_trunks if isinstance(raw_trunks, list) else []
    # Names as written, valid or not: a trunk with a mistake of its own is not also
    # "unknown" where it is referred to, and a second one of the same name is refused.
    trunk_names: set[str] = set()
    duplicates: set[int] = set()
    for i, item in enumerate(items):
        name = str(item.get("name")) if isinstance(item, dict) and "name" in item else None
        if name in trunk_names:
            problems.append(document.problem(f"trunks[{i}].name", f"trunk {name} is defined twice"))
            duplicates.add(i)
        elif name is not None:
            trunk_names.add(name)
    if not isinstance(raw_trunks, list):
        validate_items(document, problems, "trunks", TrunkSettings, raw_trunks)  # names the mistake
    trunks: list[TrunkSettings] = []
    for i, item in enumerate(items):
        if i not in duplicates:
            trunk = validate_value(document, problems, f"trunks[{i}]", TrunkSettings, item)
            if trunk is not None:
                trunks.append(trunk)

    if settings is None:  # its problems are reported; its references are not checked further
        return CallbackConfig(tuple(trunks))
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
    return CallbackConfig(tuple(trunks), settings)
