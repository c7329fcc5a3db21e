"""Why the router did what it did: one ``Decision`` per routing attempt for a call.

Cost model. Explanations must not make the fast path scan every agent, so a
decision records only what the index walk touched anyway (the chosen agent, the
qualified runners-up it passed, and agents it skipped with the reason) plus a
bounded sample (``Router(explain_sample=...)``) of agents that hold the call's
most selective requirement but were not free, each with the reason it could not
be chosen ('busy (on_call)', 'site unhealthy', 'skill billing 3 < 5', ...). The
sample is drawn from the per-skill membership set, so it costs O(sample), never
O(agents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """An eligible agent and its rank key under the queue's policy (lower ranks first)."""

    extension: str
    score: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"extension": self.extension, "score": list(self.score)}


@dataclass(frozen=True, slots=True)
class Rejection:
    extension: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"extension": self.extension, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class CompetingCall:
    """A call that an agent who just became free could have taken instead."""

    call_id: str
    queue: str
    priority: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "queue": self.queue,
            "priority": self.priority,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Preference:
    """The agent this call prefers and what became of the preference.

    ``source``: 'customer' (the customer's preferred agent) or 'last_agent' (who served
    this caller last). ``outcome``: 'offered' (free, so offered first), 'held' (busy; the
    call waits for it until ``hold_until``), 'not_free' (busy and no hold: hold off,
    already used, or its bound reached), 'not_qualified' (``reason`` says why).
    ``hold_bound`` names what ended the hold: 'preferred_agent_wait_seconds' or
    'preferred_agent_max_hold_seconds' (the SLA by default).
    """

    agent: str
    source: str
    outcome: str
    reason: str | None = None
    hold_until: float | None = None
    hold_bound: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "source": self.source,
            "outcome": self.outcome,
            "reason": self.reason,
            "hold_until": self.hold_until,
            "hold_bound": self.hold_bound,
        }


@dataclass(frozen=True, slots=True)
class CallOrder:
    """Where the call stood in its queue's order of service when it was decided.

    ``priority_order`` 'strict': score = priority; 'aging': score = priority +
    aging_weight * waited / sla_seconds (see ``router.waiting_line``).
    """

    priority_order: str
    priority: int
    waited: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "priority_order": self.priority_order,
            "priority": self.priority,
            "waited": self.waited,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing attempt for ``call_id``.

    ``trigger`` is 'call' (the call looked for an agent) or 'agent' (a freed agent
    looked across its queues for the call to serve first). ``chosen`` is None when
    nobody could take the call. ``ring`` is the skill ring used (0 = base skills).
    ``eligible`` holds the chosen agent first, then the runners-up, and each score is,
    by policy: longest_idle (idle seconds,); least_occupancy (decayed handling
    seconds, idle seconds); round_robin (offer sequence of its last call, idle
    seconds); skill_weighted (proficiency in the primary skill, idle seconds);
    preferred_agent (idle seconds,). ``competing_calls`` lists, for trigger 'agent',
    the class heads the freed agent compared, with their aging scores.
    ``order`` is the call's own score; ``preference`` its preferred agent, if any;
    ``earlier_offers`` the agents offered this call before who did not take it, each
    as (agent, outcome) with outcome 'rang_out', 'busy', 'declined' or 'error'.
    """

    at: float
    call_id: str
    queue: str
    trigger: str
    policy: str
    chosen: str | None
    ring: int | None
    eligible: tuple[CandidateScore, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    competing_calls: tuple[CompetingCall, ...] = field(default=())
    note: str = ""
    order: CallOrder | None = None
    preference: Preference | None = None
    earlier_offers: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "call_id": self.call_id,
            "queue": self.queue,
            "trigger": self.trigger,
            "policy": self.policy,
            "chosen": self.chosen,
            "ring": self.ring,
            "eligible": [item.to_dict() for item in self.eligible],
            "rejected": [item.to_dict() for item in self.rejected],
            "competing_calls": [item.to_dict() for item in self.competing_calls],
            "note": self.note,
            "order": None if self.order is None else self.order.to_dict(),
            "preference": None if self.preference is None else self.preference.to_dict(),
            "earlier_offers": [
                {"agent": agent, "outcome": outcome} for agent, outcome in self.earlier_offers
            ],
        }


class LazyDecision:
    """A decision as the few values the router had when it decided, turned into a
    ``Decision`` (and its scored candidates, rejections and call order) the first time
    someone reads it: the API, a call's record, a screen-pop. Most are read once or never
    while the call is being routed, and building the records cost more than the search.
    Whatever could change later (scores, reasons, earlier offers) is taken when deciding;
    only the records are built late. Built once: every read gets the same ``Decision``."""

    __slots__ = ("call_id", "_build", "_values", "_decision")

    def __init__(
        self, call_id: str, build: Callable[..., Decision], values: tuple[Any, ...]
    ) -> None:
        self.call_id = call_id
        self._build = build
        self._values: tuple[Any, ...] | None = values
        self._decision: Decision | None = None

    @classmethod
    def ready(cls, decision: Decision) -> LazyDecision:
        """A decision already built (the rare kinds: preferred agents, other sites)."""
        lazy = cls(decision.call_id, _built, ())
        lazy._decision = decision
        lazy._values = None
        return lazy

    def get(self) -> Decision:
        decision = self._decision
        if decision is None:
            assert self._values is not None
            decision = self._decision = self._build(*self._values)
            self._values = None  # what it was built from is not needed again
        return decision


def _built() -> Decision:
    raise AssertionError("a ready decision is never built")
