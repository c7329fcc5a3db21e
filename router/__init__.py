"""Skill- and load-aware call routing: pure, synchronous, clock injected.

The facade is ``Router``; see ``router.router`` for the call flow,
``router.waiting_line`` for the order of waiting calls and ``router.estimates``
for wait-time estimates. Its events are in ``events.routing``.
"""

from router.agent_state import AgentState
from router.calls import (
    PRIORITY_FREE,
    PRIORITY_PAID,
    PRIORITY_VIP,
    CallKind,
    CallStatus,
    RoutingRequest,
    WaitingCallRecord,
)
from router.config import (
    AgentProfile,
    PriorityOrder,
    QueueConfig,
    ServiceLevelDefinition,
    SkillExpansion,
    Strategy,
)
from router.errors import (
    AgentBusy,
    DuplicateCall,
    InvalidArgument,
    InvalidConfig,
    InvalidTransition,
    QueueInUse,
    RouterError,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
    UnknownReservation,
)
from router.explanations import CandidateScore, CompetingCall, Decision, Rejection
from router.router import Reservation, Router
from router.views import AgentSnapshot, QueueStats

__all__ = [
    "PRIORITY_FREE",
    "PRIORITY_PAID",
    "PRIORITY_VIP",
    "AgentBusy",
    "AgentProfile",
    "AgentSnapshot",
    "AgentState",
    "RoutingRequest",
    "CallKind",
    "CallStatus",
    "CandidateScore",
    "CompetingCall",
    "Decision",
    "DuplicateCall",
    "InvalidArgument",
    "InvalidConfig",
    "InvalidTransition",
    "QueueConfig",
    "QueueInUse",
    "QueueStats",
    "Rejection",
    "Reservation",
    "Router",
    "RouterError",
    "SkillExpansion",
    "PriorityOrder",
    "ServiceLevelDefinition",
    "Strategy",
    "UnknownAgent",
    "UnknownCall",
    "UnknownQueue",
    "UnknownReservation",
    "WaitingCallRecord",
]
