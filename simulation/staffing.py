"""Staffing mode: the fewest agents per interval that meet a service-level target.

For each queue and each interval with callers, the interval's arrival rate is held
steady for ``hours`` (after ``warm_up`` seconds left out) with the queue's handle,
wrap-up and patience, served by N identical agents through the real router; N is
searched from Erlang C's answer (handle plus wrap-up as the handle time, for the
callers the IVR's self-service leaves) down while
the target is still met and up until it is. Every N uses the same seed (common
random numbers), so the comparison between N and N+1 is not drowned in noise.

Each queue is staffed as if alone: agents shared between queues, overflow and
skill expansion are left to a full simulation of the schedule that results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from router import AgentProfile, QueueConfig
from simulation.engine import Simulation
from simulation.erlang import erlang_c_agents
from simulation.report import service_level
from simulation.scenario import INTERVAL_SECONDS, QueueLoad, Scenario, StaffGroup

_STAFFING_SITE = "staffing"


@dataclass(frozen=True)
class StaffingTarget:
    service_level: float = 0.8  # share of calls ...
    seconds: float = 20.0  # ... answered within this many seconds


@dataclass(frozen=True)
class IntervalStaffing:
    start: float
    calls: float
    erlang_c_agents: int
    simulated_agents: int
    simulated_service_level: float | None

    def to_dict(self) -> dict[str, Any]:
        minutes = int(self.start // 60)
        return {"start": f"{minutes // 60:02d}:{minutes % 60:02d}", "calls": self.calls,
                "erlang_c_agents": self.erlang_c_agents, "simulated_agents": self.simulated_agents,
                "simulated_service_level": self.simulated_service_level}


def simulated_service_level(scenario: Scenario, load: QueueLoad, config: QueueConfig,
                            agents: int, target: StaffingTarget, *, hours: float,
                            warm_up: float, seed: int) -> float | None:
    """Service level of ``agents`` serving ``load`` alone at a steady rate (per the queue's
    own service-level definition, with ``target.seconds`` as its threshold)."""
    if agents == 0:
        return 0.0
    intervals = max(1, round((hours * 3600 + warm_up) / INTERVAL_SECONDS))
    alone = replace(config, sla_seconds=target.seconds, overflow=None, max_wait_seconds=None,
                    expansion=())
    steady = replace(load, calls=(load.calls[0],) * intervals, opens=0.0)
    group = StaffGroup("agent", AgentProfile("agent", "Agent", _STAFFING_SITE,
                                             dict(config.skills), frozenset(
                                                 {config.language} if config.language else ())),
                       agents, 0.0, 10 * 86400.0)
    single = replace(scenario, queues=(alone,), loads=(steady,), staff=(group,), outages=(),
                     away=(), start=0.0, end=intervals * INTERVAL_SECONDS + 1800.0,
                     warm_up=warm_up, site_timezones={_STAFFING_SITE: scenario.timezone})
    result = Simulation(single, seed).run()
    rows = result.statistics.queues[alone.name]
    total = rows[0]
    for row in rows[1:]:
        for name in ("answered", "answered_within", "abandoned", "abandoned_within"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return service_level(alone.service_level_definition, total)


def staff_queue(scenario: Scenario, load: QueueLoad, target: StaffingTarget, *,
                hours: float = 3.0, warm_up: float = 1800.0, seed: int = 1) -> list[IntervalStaffing]:
    config = next(c for c in scenario.queues if c.name == load.queue)
    handle = load.handle.average + load.wrap_up.average
    found: dict[float, tuple[int, int, float | None]] = {}
    plan = []
    for index, calls in enumerate(load.calls):
        if calls not in found:
            found[calls] = _search(scenario, load, config, calls, handle, target, hours, warm_up, seed)
        erlang, agents, achieved = found[calls]
        plan.append(IntervalStaffing(load.opens + index * INTERVAL_SECONDS, calls, erlang, agents,
                                     achieved))
    return plan


def _search(scenario: Scenario, load: QueueLoad, config: QueueConfig, calls: float,
            handle: float, target: StaffingTarget, hours: float, warm_up: float,
            seed: int) -> tuple[int, int, float | None]:
    if calls <= 0:
        return 0, 0, None
    reaching = calls * (1.0 - load.self_service)  # the IVR's self-service never reaches agents
    erlang = erlang_c_agents(reaching / INTERVAL_SECONDS, handle, target.seconds,
                             target.service_level)
    one_rate = replace(load, calls=(calls,))
    levels: dict[int, float | None] = {}

    def meets(agents: int) -> bool:
        if agents not in levels:
            levels[agents] = simulated_service_level(scenario, one_rate, config, agents, target,
                                                     hours=hours, warm_up=warm_up, seed=seed)
        level = levels[agents]
        return level is not None and level >= target.service_level

    agents = max(1, erlang)
    if meets(agents):
        while agents > 1 and meets(agents - 1):
            agents -= 1
    else:
        while not meets(agents):
            agents += 1
    return erlang, agents, levels[agents]


def render_staffing(plan: dict[str, list[IntervalStaffing]], target: StaffingTarget) -> str:
    lines = [f"Staffing for {100 * target.service_level:g}% answered within {target.seconds:g}s "
             "(each queue staffed alone; calls: per 15 minutes, before IVR self-service)"]
    for queue, rows in plan.items():
        lines += ["", f"queue {queue}", f"  {'time':>5} {'calls':>6} {'erlang C':>8} "
                  f"{'simulated':>9} {'sim SL':>6}"]
        for row in rows:
            if row.calls <= 0:
                continue
            data = row.to_dict()
            level = row.simulated_service_level
            lines.append(f"  {data['start']:>5} {row.calls:>6g} {row.erlang_c_agents:>8} "
                         f"{row.simulated_agents:>9} "
                         f"{'-' if level is None else f'{100 * level:.0f}%':>6}")
    return "\n".join(lines) + "\n"
