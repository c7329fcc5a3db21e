"""The life of one call leg (one SIP dialog of a call) as a table of states and events.

Rules of this file (everything that moves a leg lives here):

* A leg is one INVITE dialog: towards the caller (we are its UAS) or towards one
  registered phone of a callee (we are its UAC, one leg per fork).
* ``TRANSITIONS`` maps ``(state, event) -> new state``. The call manager changes a
  leg's state only by :meth:`LegLife.move`; it decides what to send, this table
  decides where the leg stands afterwards.
* A pair missing from the table is an illegal transition: :meth:`LegLife.move`
  raises :class:`IllegalLegTransition` and leaves the state unchanged, and the call
  manager logs and counts it. A leg is never left silently in a state its dialog
  has left; the periodic reconciliation compares each leg's state with the dialogs
  and transactions the server still holds for it (``CALL_LEGS.md`` beside this file).
* Repeats that change nothing (a retransmitted 2xx or ACK, a 183 after a 180) are not
  events: the call manager reads the state and ignores them.
* No I/O, no clock: the table can be checked line by line, and is, by a unit test.
"""

from __future__ import annotations

from enum import StrEnum


class LegState(StrEnum):
    TRYING = "trying"  # INVITE received (caller) or sent (callee); no provisional yet
    RINGING = "ringing"  # 180/183 sent to the caller, or received from a callee's phone
    ANSWERED = "answered"  # our 2xx sent to the caller; its ACK not yet received
    CONFIRMED = "confirmed"  # the dialog is up: ACK received (caller) or sent (callee)
    FAILED = "failed"  # a fork that did not answer: refused, timed out or cancelled by us
    ENDED = "ended"  # BYE sent or received, or the call was torn down around it

    @property
    def answered(self) -> bool:
        """The leg has a dialog: ending it takes a BYE."""
        return self in _ANSWERED

    @property
    def ringing(self) -> bool:
        """The INVITE is still pending: ending the leg takes a CANCEL or a final response."""
        return self in _UNANSWERED

    @property
    def over(self) -> bool:
        return self in _OVER


class LegEvent(StrEnum):
    PROVISIONAL = "1xx sent or received"
    ANSWER_SENT = "2xx sent to the caller"
    ACK_RECEIVED = "ACK received for our 2xx"
    ANSWER_RECEIVED = "2xx received from a callee, ACKed"
    REJECTED = "final non-2xx received, timeout or unusable answer"
    CANCELLED = "CANCEL sent: the fork is no longer wanted"
    UNWANTED_ANSWER = "2xx for a fork no longer wanted: ACK then BYE"
    BYE_RECEIVED = "BYE received"
    HUNG_UP = "BYE sent for this leg alone"
    CALL_ENDED = "call torn down: BYE, CANCEL or final response as the state needs"


_ANSWERED = frozenset({LegState.ANSWERED, LegState.CONFIRMED})
_UNANSWERED = frozenset({LegState.TRYING, LegState.RINGING})
_OVER = frozenset({LegState.FAILED, LegState.ENDED})

S, E = LegState, LegEvent
Transitions = dict[tuple[LegState, LegEvent], LegState]

TRANSITIONS: Transitions = {
    # Not answered yet (caller: INVITE received; callee: INVITE sent).
    (S.TRYING, E.PROVISIONAL): S.RINGING,
    (S.TRYING, E.ANSWER_SENT): S.ANSWERED,
    (S.TRYING, E.ANSWER_RECEIVED): S.CONFIRMED,
    (S.TRYING, E.REJECTED): S.FAILED,
    (S.TRYING, E.CANCELLED): S.FAILED,
    (S.TRYING, E.UNWANTED_ANSWER): S.ENDED,
    (S.TRYING, E.CALL_ENDED): S.ENDED,
    (S.RINGING, E.ANSWER_SENT): S.ANSWERED,
    (S.RINGING, E.ANSWER_RECEIVED): S.CONFIRMED,
    (S.RINGING, E.REJECTED): S.FAILED,
    (S.RINGING, E.CANCELLED): S.FAILED,
    (S.RINGING, E.UNWANTED_ANSWER): S.ENDED,
    (S.RINGING, E.CALL_ENDED): S.ENDED,
    # Answered by us, waiting for the caller's ACK (no ACK at all: the IST's Timer L
    # reports it and the call is torn down, CALL_ENDED).
    (S.ANSWERED, E.ACK_RECEIVED): S.CONFIRMED,
    (S.ANSWERED, E.BYE_RECEIVED): S.ENDED,
    (S.ANSWERED, E.HUNG_UP): S.ENDED,
    (S.ANSWERED, E.CALL_ENDED): S.ENDED,
    # The dialog is up.
    (S.CONFIRMED, E.BYE_RECEIVED): S.ENDED,
    (S.CONFIRMED, E.HUNG_UP): S.ENDED,
    (S.CONFIRMED, E.CALL_ENDED): S.ENDED,
    # A fork that failed: its 2xx may still cross our CANCEL (RFC 3261 §9.1).
    (S.FAILED, E.UNWANTED_ANSWER): S.ENDED,
    (S.FAILED, E.CALL_ENDED): S.ENDED,
    # Ended: a 2xx crossing the CANCEL sent when the call was torn down.
    (S.ENDED, E.UNWANTED_ANSWER): S.ENDED,
}


class IllegalLegTransition(Exception):
    """An event the leg's state does not allow (a bug, reported rather than hidden)."""

    def __init__(self, state: LegState, event: LegEvent) -> None:
        super().__init__(f"a leg in state {state.value!r} cannot take {event.name} ({event.value})")
        self.state = state
        self.event = event


class LegLife:
    """Where one leg stands; moves only through ``TRANSITIONS``."""

    __slots__ = ("state",)

    def __init__(self, state: LegState = LegState.TRYING) -> None:
        self.state = state

    def move(self, event: LegEvent) -> LegState:
        """Apply `event`; returns the new state, or raises IllegalLegTransition (state kept)."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalLegTransition(self.state, event)
        self.state = new
        return new
