"""The path each call took through the IVR, for the call-detail record and the API."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

IN_PROGRESS = "in_progress"


@dataclass
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
    steps: list[dict[str, Any]] = field(default_factory=list)
    digits: list[dict[str, Any]] = field(default_factory=list)

    def _offset(self, moment: datetime) -> float:
        return round((moment - self.started_at).total_seconds(), 3)

    def entered(self, node: str, node_type: str, moment: datetime) -> None:
        self.steps.append({"node": node, "type": node_type, "at": self._offset(moment)})

    def digit(self, node: str, digit: str, moment: datetime) -> None:
        self.digits.append({"node": node, "digit": digit, "at": self._offset(moment)})

    @property
    def nodes(self) -> list[str]:
        return [step["node"] for step in self.steps]

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
            "path": [dict(step) for step in self.steps],
            "digits": [dict(entry) for entry in self.digits],
        }


class UnknownIvrCall(KeyError):
    """No IVR record for that call id (never through the IVR, or evicted)."""


class IvrCallLog:
    """The records of the last ``capacity`` calls, live while a call is in the IVR."""

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._records: OrderedDict[str, IvrCallRecord] = OrderedDict()

    def add(self, record: IvrCallRecord) -> None:
        self._records[record.call_id] = record
        self._records.move_to_end(record.call_id)
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def record(self, call_id: str) -> IvrCallRecord:
        try:
            return self._records[call_id]
        except KeyError:
            raise UnknownIvrCall(call_id) from None

    def get(self, call_id: str) -> dict[str, Any]:
        """The record as JSON-ready data; raises :class:`UnknownIvrCall` (a KeyError)."""
        return self.record(call_id).to_dict()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._records

    def __len__(self) -> int:
        return len(self._records)
