"""What a simulated day did: counters per queue and 15-minute interval, per site and
per agent, and the report built from them (JSON and a readable table; the plot is
``simulation.plot``).

Calls are counted in the interval they arrived in (answered, abandoned and their
waits too), so an interval's service level is that of its callers. Occupancy is
handling time (reserved, ringing, talking, wrap-up) over logged-in time; a queue's
occupancy counts the time agents spent on its calls over the logged-in time of the
agents who can serve it (an agent serving several queues counts in each).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router import AgentState, ServiceLevelDefinition
from simulation.erlang import ErlangC, erlang_a
from simulation.scenario import INTERVAL_SECONDS

if TYPE_CHECKING:
    from simulation.engine import SimulationResult
    from simulation.scenario import QueueLoad, Scenario

_STAFFED = frozenset({AgentState.AVAILABLE, AgentState.RESERVED, AgentState.RINGING,
                      AgentState.ON_CALL, AgentState.WRAP_UP})
_HANDLING = _STAFFED - {AgentState.AVAILABLE}


class AgentTrack(Protocol):
    site: str
    queues: tuple[str, ...]
    state: AgentState
    since: float
    queue: str | None


@dataclass
class QueueInterval:
    offered: int = 0
    contained: int = 0  # finished in the IVR's self-service
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    abandoned_within: int = 0
    overflow_out: int = 0
    overflow_in: int = 0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    callbacks_failed: int = 0
    answered_wait: float = 0.0
    longest_wait: float = 0.0
    busy_seconds: float = 0.0
    staffed_seconds: float = 0.0
    waiting_seconds: float = 0.0  # caller-seconds spent in line
    waiting_most: int = 0


@dataclass
class Occupancy:
    busy: float = 0.0
    staffed: float = 0.0

    @property
    def share(self) -> float | None:
        return self.busy / self.staffed if self.staffed > 0 else None


class DayStatistics:
    """Counters the engine feeds from the router's events."""

    def __init__(self, start: float, intervals: int, queues: Iterable[str]) -> None:
        self.start = start
        self.intervals = intervals
        self.queues = {name: [QueueInterval() for _ in range(intervals)] for name in queues}
        self.sites: dict[str, list[Occupancy]] = {}
        self.agents: dict[str, Occupancy] = {}
        self._in_line = dict.fromkeys(self.queues, 0)
        self._line_since = dict.fromkeys(self.queues, start)  # per queue: integrated up to

    def interval_of(self, at: float) -> int:
        return min(self.intervals - 1, max(0, int((at - self.start) // INTERVAL_SECONDS)))

    def _spread(self, start: float, end: float) -> Iterable[tuple[int, float]]:
        """(interval, seconds) pieces of [start, end)."""
        first = self.interval_of(start)
        if first == self.interval_of(end) or first == self.intervals - 1:
            if end > start:
                yield first, end - start
            return
        while end > start:
            index = self.interval_of(start)
            boundary = self.start + (index + 1) * INTERVAL_SECONDS
            if index == self.intervals - 1:
                boundary = max(boundary, end)
            piece = min(end, boundary) - start
            yield index, piece
            start += piece

    # calls
    def contained(self, queue: str, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].contained += 1

    def offered(self, queue: str, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].offered += 1

    def answered(self, queue: str, interval: int, waited: float, within: bool) -> None:
        if interval >= 0:
            row = self.queues[queue][interval]
            row.answered += 1
            row.answered_within += within
            row.answered_wait += waited
            row.longest_wait = max(row.longest_wait, waited)

    def abandoned(self, queue: str, interval: int, waited: float, within: bool) -> None:
        if interval >= 0:
            row = self.queues[queue][interval]
            row.abandoned += 1
            row.abandoned_within += within
            row.longest_wait = max(row.longest_wait, waited)

    def overflowed(self, queue: str, target: str | None, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].overflow_out += 1
            if target is not None:
                self.queues[target][interval].overflow_in += 1

    def callback_requested(self, queue: str, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].callbacks_requested += 1

    def callback_completed(self, queue: str, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].callbacks_completed += 1

    def callback_failed(self, queue: str, interval: int) -> None:
        if interval >= 0:
            self.queues[queue][interval].callbacks_failed += 1

    # callers in line, integrated over time (per queue, whenever its count changes)
    def _integrate(self, queue: str, at: float) -> None:
        since = self._line_since[queue]
        count = self._in_line[queue]
        if count and at > since:
            rows = self.queues[queue]
            for index, seconds in self._spread(since, at):
                rows[index].waiting_seconds += count * seconds
        self._line_since[queue] = max(since, at)

    @property
    def callers_in_line(self) -> int:
        return sum(self._in_line.values())

    def in_line(self, queue: str) -> int:
        """Callers of ``queue`` waiting now (not yet offered to an agent)."""
        return self._in_line[queue]

    def joined_line(self, queue: str, at: float) -> None:
        self._integrate(queue, at)
        self._in_line[queue] += 1
        row = self.queues[queue][self.interval_of(at)]
        row.waiting_most = max(row.waiting_most, self._in_line[queue])

    def left_line(self, queue: str, at: float) -> None:
        self._integrate(queue, at)
        self._in_line[queue] -= 1

    # agents
    def agent_span(self, agent: str, track: AgentTrack, end: float) -> None:
        """The agent was in ``track.state`` from ``track.since`` to ``end``."""
        state = track.state
        if state not in _STAFFED or end <= track.since:
            return
        busy = state in _HANDLING
        seconds = end - track.since
        occupancy = self.agents.setdefault(agent, Occupancy())
        occupancy.staffed += seconds
        site = self.sites.get(track.site)
        if site is None:
            site = self.sites[track.site] = [Occupancy() for _ in range(self.intervals)]
        for index, piece in self._spread(track.since, end):
            site[index].staffed += piece
            if busy:
                site[index].busy += piece
            for queue in track.queues:
                self.queues[queue][index].staffed_seconds += piece
            if busy and track.queue is not None:
                self.queues[track.queue][index].busy_seconds += piece
        if busy:
            occupancy.busy += seconds

    def close(self, end: float, agents: Iterable[tuple[str, AgentTrack]]) -> None:
        """The day is over: count the callers still in line and the agents still logged in."""
        for queue in self.queues:
            self._integrate(queue, end)
        for agent, track in agents:
            self.agent_span(agent, track, end)
            track.since = end


def service_level(definition: ServiceLevelDefinition, row: QueueInterval) -> float | None:
    """The queue's service-level definition applied to one interval (None: no call counts)."""
    met, counted = row.answered_within, row.answered + row.abandoned
    if definition is ServiceLevelDefinition.SHORT_ABANDONS_EXCLUDED:
        counted -= row.abandoned_within
    elif definition is ServiceLevelDefinition.SHORT_ABANDONS_MET:
        met += row.abandoned_within
    elif definition is ServiceLevelDefinition.ABANDONS_EXCLUDED:
        counted = row.answered
    return met / counted if counted else None


def _sum_rows(rows: Iterable[QueueInterval]) -> QueueInterval:
    total = QueueInterval()
    for row in rows:
        for name, value in vars(row).items():
            if name in ("longest_wait", "waiting_most"):
                setattr(total, name, max(getattr(total, name), value))
            else:
                setattr(total, name, getattr(total, name) + value)
    return total


def model_of(scenario: Scenario, load: QueueLoad | None, shared: bool) -> str:
    """Which queueing model describes this queue, and so what the Erlang column means."""
    if load is None:
        return "no callers of its own (overflow only): simulation only"
    notes = []
    if shared:
        notes.append("agents shared with other queues")
    config = next(c for c in scenario.queues if c.name == load.queue)
    if config.expansion or config.max_wait_seconds is not None:
        notes.append("skill expansion or overflow")
    if load.callback is not None:
        notes.append("callbacks")
    base = "Erlang A (callers abandon)" if load.patience is not None else "Erlang C"
    if notes:
        return f"{base} as a one-pool approximation only ({', '.join(notes)}): simulation decides"
    if load.patience is not None and load.patience.kind != "exponential":
        return f"{base} with the mean patience (patience not exponential): approximation"
    if load.handle.kind != "exponential":
        return f"{base} with the mean handle time (handle not exponential): approximation"
    return base


def _erlang_reference(load: QueueLoad | None, row: QueueInterval, config_sla: float,
                      definition: ServiceLevelDefinition) -> float | None:
    """Service level the Erlang model gives for the interval's arrivals and logged-in agents."""
    if load is None or row.offered == 0:
        return None
    agents = round(row.staffed_seconds / INTERVAL_SECONDS)
    rate = row.offered / INTERVAL_SECONDS
    handle = load.handle.average + load.wrap_up.average
    if agents < 1:
        return 0.0
    if load.patience is None:
        return ErlangC(agents, rate * handle, handle, config_sla).service_level
    model = erlang_a(agents, rate, handle, max(load.patience.average, 1e-3))
    return model.service_level(config_sla, definition.value)


def build_report(result: SimulationResult) -> dict[str, Any]:
    scenario = result.scenario
    statistics = result.statistics
    loads = {load.queue: load for load in scenario.loads}
    queue_agents: dict[str, set[str]] = {}
    for agent_queues in result.agent_queues.values():
        for queue in agent_queues:
            queue_agents.setdefault(queue, set()).update(agent_queues)
    queues: dict[str, Any] = {}
    for config in scenario.queues:
        rows = statistics.queues[config.name]
        load = loads.get(config.name)
        shared = len(queue_agents.get(config.name, {config.name})) > 1
        intervals = []
        for index, row in enumerate(rows):
            intervals.append(_row_dict(scenario, statistics, index, row, config, load))
        total = _sum_rows(rows)
        queues[config.name] = {
            "model": model_of(scenario, load, shared),
            "service_level_target": {"percent": config.sla_percent, "seconds": config.sla_seconds,
                                     "definition": config.service_level_definition.value},
            "total": _figures(total, config.service_level_definition,
                              seconds=INTERVAL_SECONDS * len(rows)),
            "intervals": intervals,
        }
    sites = {}
    for site, occupancy_rows in sorted(statistics.sites.items()):
        busy = sum(o.busy for o in occupancy_rows)
        staffed = sum(o.staffed for o in occupancy_rows)
        sites[site] = {
            "occupancy": busy / staffed if staffed else None,
            "agent_hours": staffed / 3600,
            "intervals": [{"start": _clock(statistics.start + i * INTERVAL_SECONDS),
                           "agents": o.staffed / INTERVAL_SECONDS, "occupancy": o.share}
                          for i, o in enumerate(occupancy_rows)],
        }
    agents = {name: {"occupancy": o.share, "logged_in_hours": o.staffed / 3600}
              for name, o in sorted(statistics.agents.items())}
    return {
        "scenario": scenario.name,
        "day": scenario.day.isoformat(),
        "timezone": scenario.timezone,
        "site_timezones": dict(sorted(scenario.site_timezones.items())),
        "seed": result.seed,
        "interval_minutes": INTERVAL_SECONDS // 60,
        "queues": queues,
        "sites": sites,
        "agents": agents,
        "events": _events(scenario),
        "warnings": result.warnings,
        "run": {"events": result.events_run, "router_ticks": result.router_ticks},
    }


def _events(scenario: Scenario) -> list[dict[str, Any]]:
    """The scenario's events on the report's clock, in the order they start."""
    events: list[dict[str, Any]] = [
        {"kind": "site_down", "site": o.site, "from": _clock(o.start), "to": _clock(o.end)}
        for o in scenario.outages]
    events += [{"kind": "away", "site": a.site, "count": a.count, "reason": a.reason,
                "from": _clock(a.start), "to": _clock(a.end)} for a in scenario.away]
    return sorted(events, key=lambda event: event["from"].zfill(5))


def _figures(row: QueueInterval, definition: ServiceLevelDefinition, seconds: float) -> dict[str, Any]:
    return {
        "offered": row.offered,
        "contained_in_ivr": row.contained,
        "answered": row.answered,
        "abandoned": row.abandoned,
        "overflow_out": row.overflow_out,
        "overflow_in": row.overflow_in,
        "callbacks_requested": row.callbacks_requested,
        "callbacks_completed": row.callbacks_completed,
        "callbacks_failed": row.callbacks_failed,
        "service_level": service_level(definition, row),
        "average_speed_of_answer": row.answered_wait / row.answered if row.answered else None,
        "occupancy": row.busy_seconds / row.staffed_seconds if row.staffed_seconds else None,
        "longest_wait": row.longest_wait,
        "agents": row.staffed_seconds / seconds,
        "waiting_average": row.waiting_seconds / seconds,
        "waiting_most": row.waiting_most,
    }


def _row_dict(scenario: Scenario, statistics: DayStatistics, index: int, row: QueueInterval,
              config: Any, load: QueueLoad | None) -> dict[str, Any]:
    figures = _figures(row, config.service_level_definition, seconds=INTERVAL_SECONDS)
    figures["start"] = _clock(statistics.start + index * INTERVAL_SECONDS)
    figures["erlang_service_level"] = _erlang_reference(load, row, config.sla_seconds,
                                                        config.service_level_definition)
    return figures


def _clock(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def render_table(report: dict[str, Any]) -> str:
    """The report as text: one block per queue, one line per interval with calls or agents."""
    lines = [f"Simulated day {report['day']} ({report['timezone']}), scenario {report['scenario']}, "
             f"seed {report['seed']}"]
    for warning in report["warnings"]:
        lines.append(f"warning: {warning}")
    header = (f"{'time':>5} {'offered':>7} {'answer':>6} {'aband':>5} {'ovfl':>4} {'SL':>5} "
              f"{'erlang':>6} {'ASA':>5} {'occ':>4} {'agents':>6} {'longest':>7} {'waiting':>7}")
    for name, queue in report["queues"].items():
        target = queue["service_level_target"]
        total = queue["total"]
        lines += ["", f"queue {name}: target {target['percent']:g}% in {target['seconds']:g}s "
                  f"({target['definition']}); model: {queue['model']}",
                  f"  day: offered {total['offered']}, IVR self-service {total['contained_in_ivr']}, "
                  f"answered {total['answered']}, abandoned {total['abandoned']}, "
                  f"SL {_percent(total['service_level'])}, ASA {_seconds(total['average_speed_of_answer'])}, "
                  f"occupancy {_percent(total['occupancy'])}, longest wait {_seconds(total['longest_wait'])}, "
                  f"callbacks {total['callbacks_requested']} ({total['callbacks_completed']} completed)",
                  "  " + header]
        for row in queue["intervals"]:
            if not row["offered"] and row["agents"] < 0.01 and not row["overflow_in"]:
                continue
            lines.append(
                f"  {row['start']:>5} {row['offered']:>7} {row['answered']:>6} {row['abandoned']:>5} "
                f"{row['overflow_out']:>4} {_percent(row['service_level']):>5} "
                f"{_percent(row['erlang_service_level']):>6} "
                f"{_seconds(row['average_speed_of_answer']):>5} {_percent(row['occupancy']):>4} "
                f"{row['agents']:>6.1f} {_seconds(row['longest_wait']):>7} {row['waiting_average']:>7.1f}")
    lines += ["", "sites: " + ", ".join(
        f"{site} occupancy {_percent(data['occupancy'])} over {data['agent_hours']:.1f} agent-hours"
        for site, data in report["sites"].items())]
    occupancies = [a["occupancy"] for a in report["agents"].values() if a["occupancy"] is not None]
    if occupancies:
        lines.append(f"agents: {len(occupancies)} logged in; occupancy lowest {_percent(min(occupancies))}, "
                     f"median {_percent(sorted(occupancies)[len(occupancies) // 2])}, "
                     f"highest {_percent(max(occupancies))}")
    return "\n".join(lines) + "\n"
