"""The contact center's records as validated models: agents, queues, sites, customers.

One model per concept, shared by the configuration file (``contact_center``) and the HTTP
API's request bodies (``pbx.api``), with the conversions into the store's records and the
router's configuration. Validated in strict JSON mode by the API: ``"5"`` is not a
proficiency and ``1`` is not a boolean.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ivr.hours import BusinessHours, HoursFormatError, OpeningInterval, parse_days, parse_intervals
from pbx.store import AgentRecord, CustomerRecord, CustomerTier, SiteRecord
from router import AgentProfile, PriorityOrder, QueueConfig, ServiceLevelDefinition, Strategy
from router.config import ANY_SITE

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
]
SkillName = Identifier
Proficiency = Annotated[int, Field(ge=1, le=10, description="1 (novice) to 10 (expert)")]
Language = Annotated[
    str,
    StringConstraints(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"),
]
DisplayName = Annotated[str, StringConstraints(max_length=200)]
PhoneNumber = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^\+?[A-Za-z0-9_.-]+$")
]


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error
    return name


TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_time_zone)]


def weekly_hours(value: dict[str, str]) -> dict[str, str]:
    """Days (``mon-fri``, ``sat``) to hours (``09:00-18:00``, ``closed``), each day once."""
    seen: set[int] = set()
    for days, hours in value.items():
        try:
            numbers = parse_days(days)
            parse_intervals(hours)
        except HoursFormatError as error:
            raise ValueError(str(error)) from None
        if seen & set(numbers):
            raise ValueError(f"{days!r} gives hours for a day already given")
        seen |= set(numbers)
    return value


def business_hours(timezone: str, weekly: dict[str, str], holidays: frozenset[date]) -> BusinessHours:
    days: dict[int, tuple[OpeningInterval, ...]] = {}
    for written, hours in weekly.items():
        for day in parse_days(written):
            days[day] = parse_intervals(hours)
    return BusinessHours(ZoneInfo(timezone), days, holidays)


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")



# -- agents ---------------------------------------------------------------------------


# The fields of router.AgentProfile (plus 'active'), with the API's constraints and docs;
# tests/unit/test_one_model_per_concept.py keeps the two in step. The router keeps its own
# dataclass: it is pure (no pydantic), and guards its invariants itself.
class AgentFields(RequestModel):
    name: DisplayName
    site: Identifier
    skills: dict[SkillName, Proficiency] = Field(default_factory=dict)
    languages: list[Language] = Field(default_factory=list)
    capacity: int = Field(default=1, ge=1, le=1, description="calls at once; voice agents take 1")
    active: bool = Field(default=True, description="inactive agents are kept but not routed to")


class AgentCreate(AgentFields):
    extension: Identifier


def agent_record(extension: str, fields: AgentFields) -> AgentRecord:
    return AgentRecord(AgentProfile.from_dict({**fields.model_dump(), "extension": extension}),
                       active=fields.active)


# -- queues ---------------------------------------------------------------------------


class ExpansionRing(RequestModel):
    after_seconds: float = Field(ge=0)
    skills: dict[SkillName, Proficiency]


# The fields of router.QueueConfig (see AgentFields for why two classes).
class QueueFields(RequestModel):
    skills: dict[SkillName, Proficiency] = Field(
        default_factory=dict, description="required skill -> minimum proficiency"
    )
    language: Language | None = None
    sla_seconds: float = Field(default=20, gt=0)
    sla_percent: float = Field(default=80, gt=0, le=100)
    strategy: Strategy = Strategy.LONGEST_IDLE
    wrap_up_seconds: float = Field(default=10, ge=0)
    ring_timeout_seconds: float = Field(default=15, gt=0)
    max_wait_seconds: float | None = Field(default=None, gt=0)
    overflow: Identifier | None = None
    announce_interval_seconds: float = Field(default=30, gt=0)
    preferred_agent_wait_seconds: float = Field(default=0, ge=0)
    expansion: list[ExpansionRing] = Field(default_factory=list)
    aging_weight: float = Field(default=1.0, ge=0)
    priority_order: PriorityOrder = Field(
        default=PriorityOrder.AGING,
        description="'strict': a higher tier always goes first; 'aging': waiting raises rank",
    )
    preferred_agent_max_hold_seconds: float | None = Field(
        default=None, ge=0,
        description="never hold a call for its busy preferred agent past this wait "
                    "(default: sla_seconds); then any free qualified agent takes it",
    )
    service_level_definition: ServiceLevelDefinition = Field(
        default=ServiceLevelDefinition.SHORT_ABANDONS_EXCLUDED,
        description="abandons_missed, short_abandons_excluded, short_abandons_met or "
                    "abandons_excluded ('short': abandoned within sla_seconds)",
    )
    sites: list[Identifier] | Literal["any"] = Field(
        default_factory=list,
        description="other sites whose agents may take this queue's calls when none is free "
                    "at the site the call waits at; 'any': every site; empty: that site only",
    )
    sites_after_seconds: float = Field(
        default=0, ge=0,
        description="how long a caller waits for the agents of the site it waits at before "
                    "the other sites (sites) are asked; 0: at once",
    )


class QueueCreate(QueueFields):
    name: Identifier


def queue_config(name: str, fields: QueueFields) -> QueueConfig:
    data = fields.model_dump()
    if data["sites"] == ANY_SITE:
        data["sites"] = [ANY_SITE]
    return QueueConfig.from_dict({**data, "name": name})


# -- sites and customers --------------------------------------------------------------


class SiteHours(RequestModel):
    """When a site's agents take calls, in the site's own time zone (follow-the-sun)."""

    weekly: Annotated[dict[str, str], AfterValidator(weekly_hours)] = Field(
        description="days (mon-fri, sat, sun) to hours (08:00-20:00, 09:00-13:00, 15:00-19:00, "
                    "closed); a day not named is closed")
    holidays: list[date] = Field(default_factory=list, description="closed all day (2026-12-25)")


class SiteFields(RequestModel):
    timezone: TimeZoneName = "UTC"
    healthy: bool = True
    business_hours: SiteHours | None = Field(
        default=None, description="outside them the site's agents are offered no call, local or "
                                  "from another site; null: always open")


class SiteCreate(SiteFields):
    name: Identifier


def site_record(name: str, fields: SiteFields) -> SiteRecord:
    hours = None if fields.business_hours is None else fields.business_hours.model_dump(mode="json")
    return SiteRecord(name, fields.timezone, fields.healthy, hours)


def opening_hours(site: SiteRecord) -> BusinessHours | None:
    """The site's business hours as the router reads them; None: always open."""
    if site.business_hours is None:
        return None
    hours = SiteHours.model_validate(site.business_hours)
    return business_hours(site.timezone, hours.weekly, frozenset(hours.holidays))


def site_fields_of(site: SiteRecord) -> dict[str, Any]:
    """A stored site as the API's body fields (what a PATCH merges into)."""
    return {"timezone": site.timezone, "healthy": site.healthy,
            "business_hours": None if site.business_hours is None else dict(site.business_hours)}


class CustomerFields(RequestModel):
    name: DisplayName = ""
    tier: CustomerTier = CustomerTier.FREE
    language: Language | None = None
    preferred_agent: Identifier | None = None
    notes: Annotated[str, StringConstraints(max_length=4000)] = ""


class CustomerCreate(CustomerFields):
    number: PhoneNumber


def customer_record(number: str, fields: CustomerFields, last_agent: str | None) -> CustomerRecord:
    return CustomerRecord(
        number=number,
        name=fields.name,
        tier=fields.tier,
        language=fields.language,
        preferred_agent=fields.preferred_agent,
        last_agent=last_agent,
        notes=fields.notes,
    )
