"""Events of a planned disaster-recovery drill, as the drained site sees them."""

from __future__ import annotations

from dataclasses import dataclass

from events.event import Event


@dataclass(frozen=True, slots=True)
class DrainStarted(Event):
    """This site stopped taking new calls (the front door sends them to the other sites)."""

    site: str
    by: str  # who asked: "drill to bogota", an operator's name


@dataclass(frozen=True, slots=True)
class CallbacksHandedOver(Event):
    """A drained site gave up its pending callback requests for another site to adopt."""

    site: str
    requests: int


@dataclass(frozen=True, slots=True)
class DrainEnded(Event):
    """This site takes new calls again."""

    site: str
    by: str
