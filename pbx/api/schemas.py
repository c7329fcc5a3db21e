"""The HTTP API's own bodies, as pydantic models: the views it answers with, errors, and
requests that only the API takes. The contact center's records (agents, queues, sites,
customers) are ``pbx.configuration.models``, shared with the configuration file. Requests
are validated in strict JSON mode; the same models feed ``/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pbx.configuration.models import DisplayName, QueueCreate, RequestModel, SiteHours
from pbx.store import CustomerTier
from router import AgentState

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
    site_open: bool = Field(True, description="within its site's business hours (sites[].business_hours):"
                            " outside them the agent is offered no call")
    queues: list[str]
    pending: str | None = Field(description="'logout' or 'break:<reason>' deferred until the call ends")
    personal_calls: int = Field(0, description="calls the agent is on that did not come from a queue"
                                " (direct calls, calling the IVR): busy for routing while above 0")


class RemoteAgentView(BaseModel):
    site: str = Field(description="the site that owns the agent and publishes its state")
    presence: str = Field(description="offline, available, reserved, on_call, wrap_up or break")
    since: float = Field(description="when that presence began (Unix seconds, the owner's clock)")
    site_up: bool = Field(description="whether the owning site is up in this site's view")


class AgentView(BaseModel):
    extension: str
    name: str
    site: str
    skills: dict[str, int]
    languages: list[str]
    capacity: int
    active: bool
    live: AgentLive | None = Field(description="live state; null while the agent is inactive")
    remote: RemoteAgentView | None = Field(
        None, description="on one site of several, another site's agent as its own site "
                          "publishes it on the bus (live is then this site's view: not "
                          "registered here); null for this server's own agents")


# -- queues ---------------------------------------------------------------------------


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


class SiteView(BaseModel):
    name: str
    timezone: str
    healthy: bool
    business_hours: SiteHours | None = None


class SiteOverrideFields(RequestModel):
    forced: Literal["down", "up"] | None = Field(
        description="down: no calls to its agents; up: up whatever its heartbeat says; "
                    "null: back to its heartbeat and last will")
    by: DisplayName = Field("api", description="who forces it (published with the override)")


class SiteOverrideView(BaseModel):
    site: str
    forced: str | None
    by: str
    up: bool = Field(description="the site's health in this site's view, after the override")


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
