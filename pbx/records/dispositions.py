"""How a call ended (the CDR's ``disposition``), decided from what its events said.

The router's word wins (answered, abandoned, dropped, overflowed, transferred by an agent);
otherwise the IVR's outcome; otherwise the line's: who hung up and whether it was answered.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbx.records.call_state import CallInProgress


class Disposition(enum.StrEnum):
    """How a call ended, as the CDR says it."""

    ANSWERED = "answered"  # an agent (queued calls) or the dialled extension answered
    ABANDONED = "abandoned"  # the caller hung up first: in the IVR, in line or while it rang
    DROPPED = "dropped"  # the server ended it while it waited (media timeout, dialog gone, shutdown)
    DEFLECTED = "deflected"  # ended after a self-service answer, never reaching a queue
    OVERFLOWED = "overflowed"  # taken out of the router at max wait (to an extension, voicemail)
    TRANSFERRED = "transferred"  # the IVR or an agent sent it on, and no agent answered after
    COMPLETED = "completed"  # the IVR flow or application ended it (closed hours, goodbye)
    REJECTED = "rejected"  # the callee refused (busy, decline)
    FAILED = "failed"  # unreachable, error, no ACK, the queue never took it
    INTERRUPTED = "interrupted"  # still live when the recorder closed (or its server died)


# Telephony end causes (pbx.calls.manager) that mean the caller gave up.
CALLER_CAUSES = frozenset({"caller_hangup", "cancelled"})

# A callback try's outcome (callbacks.Outcome values) as its call's disposition; any other
# outcome (no answer, invalid number, trunk failure...) is a failed call, and the queue
# log's CALLBACK line keeps the outcome itself.
_CALLBACK_DISPOSITIONS = {"answered": Disposition.ANSWERED, "busy": Disposition.REJECTED,
                          "interrupted": Disposition.INTERRUPTED}


def callback_disposition(outcome: str) -> Disposition:
    return _CALLBACK_DISPOSITIONS.get(outcome, Disposition.FAILED)


def disposition_of(call: CallInProgress) -> Disposition:
    if call.router_outcome is not None:
        return call.router_outcome
    caller_gave_up = call.cause in CALLER_CAUSES
    if call.in_router:  # the router never said how it ended
        if call.ended is None:
            return Disposition.INTERRUPTED
        return Disposition.ABANDONED if caller_gave_up else Disposition.FAILED
    if call.deflected:
        return Disposition.DEFLECTED
    if call.transferred_to is not None:
        return Disposition.TRANSFERRED
    outcome = call.ivr_outcome
    if outcome == "abandoned":
        # Hanging up during the greeting, before being asked anything, is not giving up
        # on service: the caller heard what the extension had to say.
        return Disposition.ABANDONED if call.asked_caller else Disposition.COMPLETED
    if outcome == "hung_up":
        return Disposition.COMPLETED
    if outcome == "error":
        return Disposition.FAILED
    if outcome == "enqueued" or call.requested_queue is not None:
        # The IVR handed the call over but the router never took it.
        return Disposition.ABANDONED if caller_gave_up else Disposition.FAILED
    if call.ended is None:
        return Disposition.INTERRUPTED
    if call.line_answered is not None:
        return Disposition.ANSWERED if call.kind == "bridge" else Disposition.COMPLETED
    if call.cause == "rejected":
        return Disposition.REJECTED
    if caller_gave_up:
        return Disposition.ABANDONED
    return Disposition.FAILED
