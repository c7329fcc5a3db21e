"""The in-process bus that carries every domain event to its consumers.

Everything that happens is published here; metrics, call records, the MQTT bridge and
screen-pops are subscribers. Call logic publishes and never updates a metric by hand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("events.bus")

Subscriber = Callable[[Any], None]


class EventBus:
    """Synchronous fan-out by event type; a failing subscriber never breaks the publisher."""

    def __init__(self) -> None:
        self._by_type: dict[type, list[Subscriber]] = defaultdict(list)
        self._all: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber, *event_types: type) -> None:
        if not event_types:
            self._all.append(subscriber)
        for event_type in event_types:
            self._by_type[event_type].append(subscriber)

    def publish(self, event: object) -> None:
        for subscriber in self._by_type.get(type(event), ()):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s", type(event).__name__)
        for subscriber in self._all:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s", type(event).__name__)
