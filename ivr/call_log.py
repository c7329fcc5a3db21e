"""The path each call took through the IVR, for the call-detail record and the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.recent_calls import RecentCalls

IN_PROGRESS = "in_progress"


@dataclass(slots=True)
class IvrCallRecord:
    """Nodes visited, digits taken and the outcome of one call; ``to_dict`` is the CDR ``ivr_path``."""

    call_id: str
    caller: str
    flow: str
    started_at: datetime
    language: str
    ended_at: datetime | None = None
    outcome: str = IN_PROGRESS
    customer_tier: str | None = None
    customer_known: bool | None = None
    queue: str | None = None
    extension: str | None = None
    topics: list[str] = field(default_factory=list)
    survey_score: int | None = None
    collected: dict[str, str] = field(default_factory=dict)
    # (node, node type, seconds from the start) and (node, digit, seconds): tuples, not
    # dicts, because a finished call's record stays in memory for a while.
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    digits: list[tuple[str, str, float]] = field(default_factory=list)

    def _offset(self, moment: datetime) -> float:
        return round((moment - self.started_at).total_seconds(), 3)

    def entered(self, node: str, node_type: str, moment: datetime) -> None:
        self.steps.append((node, node_type, self._offset(moment)))

    def digit(self, node: str, digit: str, moment: datetime) -> None:
        self.digits.append((node, digit, self._offset(moment)))

    @property
    def nodes(self) -> list[str]:
        return [node for node, _, _ in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller,
            "flow": self.flow,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "outcome": self.outcome,
            "language": self.language,
            "customer": {"known": self.customer_known, "tier": self.customer_tier},
            "queue": self.queue,
            "extension": self.extension,
            "self_service_topics": list(self.topics),
            "survey_score": self.survey_score,
            "collected": dict(self.collected),
            "path": [{"node": node, "type": kind, "at": at} for node, kind, at in self.steps],
            "digits": [{"node": node, "digit": digit, "at": at} for node, digit, at in self.digits],
        }


class UnknownIvrCall(KeyError):
    """No IVR record for that call id (never through the IVR, or evicted)."""


class IvrCallLog:
    """The records of live calls and of recently finished ones (see ``RecentCalls``): at
    most ``capacity``, a finished call's for ``max_age_seconds`` after it ended."""

    def __init__(self, capacity: int = 1000, max_age_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._records: RecentCalls[IvrCallRecord] = RecentCalls(capacity, max_age_seconds, clock)

    def add(self, record: IvrCallRecord) -> None:
        self._records.put(record.call_id, record)

    def call_ended(self, call_id: str) -> None:
        """The call is over (the line, not just the IVR): its record now ages out."""
        self._records.finished(call_id)

    def prune(self) -> int:
        """Drop finished calls' records past their age; returns how many went."""
        return self._records.prune()

    def record(self, call_id: str) -> IvrCallRecord:
        try:
            return self._records.get(call_id)
        except KeyError:
            raise UnknownIvrCall(call_id) from None

    def get(self, call_id: str) -> dict[str, Any]:
        """The record as JSON-ready data; raises :class:`UnknownIvrCall` (a KeyError)."""
        return self.record(call_id).to_dict()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._records

    def __len__(self) -> int:
        return len(self._records)
