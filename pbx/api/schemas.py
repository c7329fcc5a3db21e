"""Request and response bodies of the HTTP API, as pydantic models.

Requests are validated in strict JSON mode: ``"5"`` is not a proficiency and
``1`` is not a boolean. The same models feed ``/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from pbx.store import CustomerTier
from router import AgentState, PriorityOrder, ServiceLevelDefinition, Strategy

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


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ---------------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. skills.sales")
    message: str
    type: str = Field(description="machine-readable kind, e.g. less_than_equal, missing")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. validation_failed, not_found")
    message: str
    fields: list[FieldProblem] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


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


class BreakRequest(RequestModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class AgentLive(BaseModel):
    state: AgentState
    state_since: float = Field(description="when the state began (Unix seconds)")
    reason: str | None
    occupancy: float | None
    last_caller: str | None
    reserved_call: str | None
    reachable: bool
    site_healthy: bool
    queues: list[str]
    pending: str | None = Field(description="'logout' or 'break:<reason>' deferred until the call ends")
    personal_calls: int = Field(0, description="calls the agent is on that did not come from a queue"
                                " (direct calls, calling the IVR): busy for routing while above 0")


class AgentView(BaseModel):
    extension: str
    name: str
    site: str
    skills: dict[str, int]
    languages: list[str]
    capacity: int
    active: bool
    live: AgentLive | None = Field(description="live state; null while the agent is inactive")


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


class QueueCreate(QueueFields):
    name: Identifier


class QueueView(QueueCreate):
    model_config = ConfigDict(extra="ignore")


class QueueStatsView(BaseModel):
    name: str
    waiting: int
    longest_wait: float = Field(description="seconds the oldest waiting call has waited")
    ewt_seconds: float | None = Field(description="estimated wait for a new call")
    agents_available: int
    agents_staffed: int
    service_level: float | None = Field(description="share answered within the SLA, 0-1")
    answered: int
    abandoned: int
    answered_within_sla: int
    average_handle_seconds: float
    arrivals_per_hour: float
    service_level_definition: str
    abandoned_within_sla: int = Field(description="abandoned after waiting at most sla_seconds")
    dropped: int = Field(description="ended by the server while waiting (e.g. media timeout); "
                                     "not abandons, not in the service level")


# -- routing explanations -------------------------------------------------------------


class CandidateScoreView(BaseModel):
    extension: str
    score: list[float]


class RejectionView(BaseModel):
    extension: str
    reason: str


class CompetingCallView(BaseModel):
    call_id: str
    queue: str
    priority: int
    score: float


class CallOrderView(BaseModel):
    priority_order: str = Field(description="'strict' or 'aging'")
    priority: int
    waited: float
    score: float = Field(description="strict: priority; aging: priority + aging_weight * "
                                     "waited / sla_seconds")


class PreferenceView(BaseModel):
    agent: str
    source: str = Field(description="'customer' (preferred agent) or 'last_agent'")
    outcome: str = Field(description="offered, held, not_free or not_qualified")
    reason: str | None
    hold_until: float | None
    hold_bound: str | None = Field(
        description="preferred_agent_wait_seconds or preferred_agent_max_hold_seconds")


class EarlierOfferView(BaseModel):
    agent: str
    outcome: str = Field(description="rang_out, not_confirmed, busy, declined or error")


class DecisionView(BaseModel):
    at: float
    call_id: str
    queue: str
    trigger: str = Field(description="'call' or 'agent'")
    policy: str
    chosen: str | None
    ring: int | None
    eligible: list[CandidateScoreView]
    rejected: list[RejectionView]
    competing_calls: list[CompetingCallView]
    note: str
    order: CallOrderView | None = Field(default=None, description="the call's own rank")
    preference: PreferenceView | None = Field(
        default=None, description="the call's preferred or last agent and what became of it")
    earlier_offers: list[EarlierOfferView] = Field(
        default_factory=list, description="agents offered this call before who did not take it")


class RoutingView(BaseModel):
    call_id: str
    decisions: list[DecisionView]


# -- sites and customers --------------------------------------------------------------


class SiteFields(RequestModel):
    timezone: TimeZoneName = "UTC"
    healthy: bool = True


class SiteCreate(SiteFields):
    name: Identifier


class SiteView(BaseModel):
    name: str
    timezone: str
    healthy: bool


class CustomerFields(RequestModel):
    name: DisplayName = ""
    tier: CustomerTier = CustomerTier.FREE
    language: Language | None = None
    preferred_agent: Identifier | None = None
    notes: Annotated[str, StringConstraints(max_length=4000)] = ""


class CustomerCreate(CustomerFields):
    number: PhoneNumber


class CustomerView(BaseModel):
    number: str
    name: str
    tier: CustomerTier
    language: str | None
    preferred_agent: str | None
    last_agent: str | None = Field(description="set by the server after each answered call")
    notes: str


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
