"""Durable callback requests: a caller hangs up and is called back, keeping their place in line.

Pure domain (stdlib only, clock injected): ``requests`` (the request and its state
table), ``numbers`` (which numbers can be dialled), ``policy`` (per-queue tries,
backoff, expiry), ``scheduling`` (what is due, in line order), ``store`` (the
storage interface) and ``desk`` (the door through which requests change).
See ``callbacks/README.md``.
"""

from callbacks.desk import DEFAULT_LEASE, CallbackDesk
from callbacks.errors import CallbackConflict, CallbackError, IllegalTransition, LeaseHeld, NotDue
from callbacks.numbers import InvalidNumber, NumberProblem, normalize_number
from callbacks.policy import CallbackPolicy, InvalidPolicy
from callbacks.requests import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    CallbackRequest,
    CallbackState,
    Outcome,
    OutcomeRecord,
    Trigger,
)
from callbacks.scheduling import due_in_line_order, duplicate_of, line_key
from callbacks.store import CallbackStore

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_LEASE",
    "FINAL_STATES",
    "TRANSITIONS",
    "CallbackConflict",
    "CallbackDesk",
    "CallbackError",
    "CallbackPolicy",
    "CallbackRequest",
    "CallbackState",
    "CallbackStore",
    "IllegalTransition",
    "InvalidNumber",
    "InvalidPolicy",
    "LeaseHeld",
    "NotDue",
    "NumberProblem",
    "Outcome",
    "OutcomeRecord",
    "Trigger",
    "due_in_line_order",
    "duplicate_of",
    "line_key",
    "normalize_number",
]
