"""A simulated day: what callers do and when agents work, as plain frozen dataclasses.

Times of the day are seconds since midnight of the scenario's day in the
scenario's time zone (the "center clock"), except shift and break times, which
are written in each site's own local time and converted when the day is built.
The YAML form and its validation live in ``pbx.configuration.simulation_scenario``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date

from callbacks import CallbackPolicy
from router import AgentProfile, QueueConfig

INTERVAL_SECONDS = 900  # reports and arrival rates are per 15 minutes

DISTRIBUTIONS = ("constant", "exponential", "lognormal", "uniform")


@dataclass(frozen=True)
class Distribution:
    """A duration in seconds. ``mean`` for constant and exponential; ``mean`` and ``cv``
    (standard deviation / mean) for lognormal; ``low``..``high`` for uniform."""

    kind: str
    mean: float = 0.0
    cv: float = 0.0
    low: float = 0.0
    high: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, not {self.kind!r}")
        if self.kind == "uniform":
            if not 0 <= self.low <= self.high:
                raise ValueError(f"uniform needs 0 <= low <= high, got {self.low}..{self.high}")
        elif self.mean < 0 or self.cv < 0:
            raise ValueError(f"mean and cv must be >= 0, got {self.mean}, {self.cv}")

    @property
    def average(self) -> float:
        return (self.low + self.high) / 2 if self.kind == "uniform" else self.mean

    def sample(self, rng: random.Random) -> float:
        if self.kind == "constant" or self.mean == 0 and self.kind != "uniform":
            return self.mean
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.mean)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        sigma2 = math.log(1.0 + self.cv * self.cv)
        return rng.lognormvariate(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))


@dataclass(frozen=True)
class CallbackOffer:
    """Callers whose estimated wait (the router's own) is over ``offer_over_seconds`` are
    offered a callback; ``uptake`` of them accept and leave the line keeping their place.
    When an agent is free for them the customer is dialled: ``answer_share`` answer after
    ``ring`` seconds; the others are retried as ``policy`` says."""

    offer_over_seconds: float
    uptake: float
    answer_share: float = 0.9
    ring: Distribution = Distribution("constant", 8.0)
    policy: CallbackPolicy = field(default_factory=CallbackPolicy)


@dataclass(frozen=True)
class QueueLoad:
    """The callers of one queue (one IVR topic).

    ``calls`` is the expected number of calls in each interval from ``opens`` on
    (arrivals are Poisson within an interval). ``self_service`` of them finish in the
    IVR; the others reach the queue after ``ivr_seconds``. ``patience`` None: nobody
    abandons. Wrap-up is what agents take after a call, ended by the router at the
    queue's own ``wrap_up_seconds`` at the latest (as in service)."""

    queue: str
    calls: tuple[float, ...]
    handle: Distribution
    opens: float = 0.0
    wrap_up: Distribution = Distribution("constant", 0.0)
    patience: Distribution | None = None
    self_service: float = 0.0
    ivr_seconds: float = 0.0
    callback: CallbackOffer | None = None

    def __post_init__(self) -> None:
        if any(c < 0 or not math.isfinite(c) for c in self.calls):
            raise ValueError(f"{self.queue}: calls per interval must be finite and >= 0")
        if not 0 <= self.self_service <= 1:
            raise ValueError(f"{self.queue}: self_service must be a share between 0 and 1")


@dataclass(frozen=True)
class Break:
    start: float  # seconds after the site's local midnight
    seconds: float
    reason: str = "break"


@dataclass(frozen=True)
class StaffGroup:
    """``count`` agents with one profile working one shift at ``profile.site``, in the
    site's local time (``shift_start``/``shift_end``: seconds after local midnight)."""

    name: str
    profile: AgentProfile
    count: int
    shift_start: float
    shift_end: float
    breaks: tuple[Break, ...] = ()


@dataclass(frozen=True)
class SiteOutage:
    """The site is down (no call is routed to its agents) from ``start`` to ``end``."""

    site: str
    start: float
    end: float


@dataclass(frozen=True)
class AgentsAway:
    """``count`` of a site's logged-in agents leave for ``reason`` (a drill, a meeting)
    from ``start`` to ``end``: they go on break after their current call."""

    site: str
    count: int
    start: float
    end: float
    reason: str = "drill"


@dataclass(frozen=True)
class Scenario:
    name: str
    day: date
    timezone: str  # the center clock: report intervals are in this zone
    queues: tuple[QueueConfig, ...]  # the routing as configured
    site_timezones: dict[str, str]
    loads: tuple[QueueLoad, ...]
    staff: tuple[StaffGroup, ...]
    outages: tuple[SiteOutage, ...] = ()
    away: tuple[AgentsAway, ...] = ()
    agent_answer: Distribution = Distribution("constant", 0.0)  # ring time at the agent's phone
    start: float = 0.0
    end: float = 86400.0
    router_tick_seconds: float = 0.25  # how often the server runs the router's timers
    warm_up: float = 0.0  # calls arriving before start + warm_up are left out of the report
