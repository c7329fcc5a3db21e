"""Agent states and the transitions between them, as one table.

Everything that moves an agent's state is listed in ``TRANSITIONS``; the router
looks transitions up here and never assigns a state on its own. An activity not
in the table for the current state is an ``InvalidTransition``.

Requests that cannot be honoured at once while the agent is on a call (log out,
go on break) are deferred by the router until the call's wrap-up ends; they are
not transitions of this table.
"""

from __future__ import annotations

import enum


class AgentState(enum.StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RESERVED = "reserved"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    BREAK = "break"


class AgentActivity(enum.StrEnum):
    """What happened to an agent; the input of the state table."""

    LOGIN = "login"
    LOGOUT = "logout"
    BREAK_START = "break_start"
    BREAK_END = "break_end"
    RESERVE = "reserve"
    RING = "ring"
    ANSWER = "answer"
    RELEASE = "release"  # reservation ended without fault of the agent
    NO_ANSWER = "no_answer"  # ring-no-answer: the agent is made not-ready
    HANG_UP = "hang_up"
    WRAP_UP_DONE = "wrap_up_done"
    UNREACHABLE = "unreachable"


_S = AgentState
_A = AgentActivity

TRANSITIONS: dict[tuple[AgentState, AgentActivity], AgentState] = {
    (_S.OFFLINE, _A.LOGIN): _S.AVAILABLE,
    (_S.AVAILABLE, _A.LOGOUT): _S.OFFLINE,
    (_S.AVAILABLE, _A.BREAK_START): _S.BREAK,
    (_S.AVAILABLE, _A.RESERVE): _S.RESERVED,
    (_S.AVAILABLE, _A.UNREACHABLE): _S.OFFLINE,
    (_S.RESERVED, _A.RING): _S.RINGING,
    (_S.RESERVED, _A.ANSWER): _S.ON_CALL,  # an auto-answer phone may skip the ring
    (_S.RESERVED, _A.RELEASE): _S.AVAILABLE,
    (_S.RESERVED, _A.NO_ANSWER): _S.BREAK,
    (_S.RESERVED, _A.UNREACHABLE): _S.OFFLINE,
    (_S.RINGING, _A.ANSWER): _S.ON_CALL,
    (_S.RINGING, _A.RELEASE): _S.AVAILABLE,
    (_S.RINGING, _A.NO_ANSWER): _S.BREAK,
    (_S.RINGING, _A.UNREACHABLE): _S.OFFLINE,
    (_S.ON_CALL, _A.HANG_UP): _S.WRAP_UP,
    (_S.WRAP_UP, _A.WRAP_UP_DONE): _S.AVAILABLE,
    (_S.WRAP_UP, _A.LOGOUT): _S.OFFLINE,
    (_S.WRAP_UP, _A.BREAK_START): _S.BREAK,
    (_S.WRAP_UP, _A.UNREACHABLE): _S.OFFLINE,
    (_S.BREAK, _A.BREAK_START): _S.BREAK,  # a new reason replaces the old one
    (_S.BREAK, _A.BREAK_END): _S.AVAILABLE,
    (_S.BREAK, _A.LOGOUT): _S.OFFLINE,
    (_S.BREAK, _A.UNREACHABLE): _S.OFFLINE,
}

# States in which the agent is handling a call; they count as busy for occupancy.
HANDLING_STATES = frozenset({_S.RESERVED, _S.RINGING, _S.ON_CALL, _S.WRAP_UP})
# States in which the agent is logged in and counts as staffed for wait estimates.
STAFFED_STATES = HANDLING_STATES | {_S.AVAILABLE}


def next_state(state: AgentState, activity: AgentActivity) -> AgentState | None:
    """The state after ``activity``, or None when the table does not allow it."""
    return TRANSITIONS.get((state, activity))
