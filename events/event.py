"""What every domain event shares: the time it happened, and a plain-data form.

``at`` is wall-clock time in Unix seconds. A publisher that runs on an injected clock
(the router, the site bus) passes its own reading; any other event is stamped when it is
made, which is when it happened. ``at`` is keyword-only so each family keeps its own
positional fields.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": <class name>, <field>: <value>, ...}`` with enums as their values:
        JSON-ready for logs, the bus and the API."""
        data: dict[str, Any] = {"type": type(self).__name__}
        for item in dataclasses.fields(self):
            data[item.name] = _plain(getattr(self, item.name))
        return data


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


# Where a publisher pushes its events as they happen (``EventBus.publish``, a list's append).
EventSink = Callable[[Event], None]
