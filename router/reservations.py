"""Reservations: an agent held for one call while the PBX rings its phone.

Ids are globally unique (``res-`` and 32 hex digits: a random 64-bit prefix drawn once per
process, then a counter): a site's reservations never collide with another site's, nor
with its own from before a restart; a counter costs far less than a UUID per offer.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from router.errors import UnknownReservation
from router.explanations import Decision, LazyDecision

RESERVATION_ID_PREFIX = "res-"


_ID_PREFIX = f"{RESERVATION_ID_PREFIX}{secrets.randbits(64):016x}"
_ID_COUNTER = itertools.count(1)


def new_reservation_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class Reservation(NamedTuple):
    """An agent held for one call; the PBX should now ring ``agent``'s phone.
    ``expires_at`` is wall-clock time (Unix seconds). Immutable, and a tuple: one is made
    for every offer, and a frozen dataclass cost three times as much to build."""

    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float
    explained: LazyDecision  # read ``decision``

    @property
    def decision(self) -> Decision:
        """Why this agent (built the first time it is read)."""
        return self.explained.get()

    def to_dict(self) -> dict[str, object]:
        return {
            "reservation_id": self.reservation_id,
            "call_id": self.call_id,
            "agent": self.agent,
            "queue": self.queue,
            "expires_at": self.expires_at,
            "decision": self.decision.to_dict(),
        }


@dataclass(eq=False, slots=True)
class HeldAgent:
    """A live reservation; ``expires_at`` is on the router's monotonic clock."""

    reservation_id: str
    call_id: str
    agent: str
    queue: str
    expires_at: float
    decision: LazyDecision
    ringing: bool = False


class ReservationBook:
    def __init__(self) -> None:
        self._live: dict[str, HeldAgent] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, reservation_id: object) -> bool:
        return reservation_id in self._live

    def add(self, reservation: HeldAgent) -> None:
        self._live[reservation.reservation_id] = reservation

    def get(self, reservation_id: str) -> HeldAgent | None:
        return self._live.get(reservation_id)

    def require(self, reservation_id: str) -> HeldAgent:
        reservation = self._live.get(reservation_id)
        if reservation is None:
            raise UnknownReservation(reservation_id)
        return reservation

    def pop(self, reservation_id: str) -> HeldAgent:
        return self._live.pop(reservation_id)

    def of_queue(self, queue: str) -> list[HeldAgent]:
        return [r for r in self._live.values() if r.queue == queue]
