"""How long `pbx simulate` takes for a day of a large contact center.

A generated center: AGENTS agents over two sites (Madrid, Bogotá) and QUEUES queues,
each agent with a main skill and a second one (so it serves two queues), in early and
late shifts with breaks in each site's local time; a day of calls shaped like a
weekday (morning peak, lunch dip, afternoon bump) sized for about 85 % occupancy, with
lognormal talk, wrap-up, exponential patience, IVR self-service and callbacks on
every fourth queue. The real router runs every call and ticks every 0.25 s of virtual
time while anything can be due, as the server does.

    .venv/bin/python bench/bench_simulate.py                 # 500 agents, 20 queues
    .venv/bin/python bench/bench_simulate.py --agents 1000 --queues 40 --json out.json

Prints wall and CPU seconds, calls, events and router ticks, and the day's totals.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import AgentProfile, QueueConfig, SkillExpansion  # noqa: E402
from simulation import (  # noqa: E402
    Break,
    CallbackOffer,
    Distribution,
    QueueLoad,
    Scenario,
    Simulation,
    StaffGroup,
    build_report,
)

HANDLE = Distribution("lognormal", 300.0, 0.6)
WRAP_UP = Distribution("uniform", low=5.0, high=15.0)
# A weekday from 08:00 to 20:00 on the center's clock: share of the peak per hour.
DAY_SHAPE = [0.55, 0.85, 1.0, 0.95, 0.8, 0.7, 0.8, 0.9, 0.85, 0.7, 0.55, 0.4]


def center(agents: int, queues: int) -> Scenario:
    sites = {"madrid": "Europe/Madrid", "bogota": "America/Bogota"}
    configs = []
    for q in range(queues):
        configs.append(QueueConfig(
            f"queue{q:02d}", skills={f"skill{q:02d}": 5}, wrap_up_seconds=15,
            max_wait_seconds=600, overflow=f"queue{(q + 1) % queues:02d}",
            expansion=(SkillExpansion(90, {f"skill{q:02d}": 3}),)))
    per_queue = agents // queues
    staff = []
    for q in range(queues):
        skills = {f"skill{q:02d}": 7, f"skill{(q + 1) % queues:02d}": 4}
        for shift, (start, end, site) in enumerate(((8, 16, "madrid"), (12, 20, "madrid"),
                                                   (6, 14, "bogota"))):
            count = per_queue // 3 + (1 if shift < per_queue % 3 else 0)
            profile = AgentProfile("x", f"q{q} s{shift}", site, skills, frozenset({"es"}))
            breaks = (Break((start + 2) * 3600.0, 900), Break((start + 4) * 3600.0, 1800, "lunch"))
            staff.append(StaffGroup(f"q{q:02d}-{site}-{shift}", profile, count,
                                    start * 3600.0, end * 3600.0, breaks))
    # Agents on duty per hour on the Madrid clock (Bogotá is 6 h behind in December).
    on_duty = [sum(1 for s, e in ((8, 16), (12, 20), (12, 20)) if s <= hour < e) / 3
               for hour in range(8, 20)]
    loads = []
    for q in range(queues):
        calls = []
        for hour, shape in enumerate(DAY_SHAPE):
            erlangs = 0.85 * per_queue * min(on_duty[hour], shape + 0.1)
            # Divided by 0.9: a tenth of the callers finish in the IVR's self-service.
            calls += [erlangs * 900 / (HANDLE.average + WRAP_UP.average) / 0.9] * 4
        callback = CallbackOffer(120, 0.3) if q % 4 == 0 else None
        loads.append(QueueLoad(f"queue{q:02d}", tuple(calls), HANDLE, opens=8 * 3600.0,
                               wrap_up=WRAP_UP, patience=Distribution("exponential", 240),
                               self_service=0.1, ivr_seconds=30, callback=callback))
    return Scenario("bench center", date(2026, 12, 7), "Europe/Madrid", tuple(configs), sites,
                    tuple(loads), tuple(staff), agent_answer=Distribution("uniform", low=2, high=5),
                    start=7 * 3600.0, end=21 * 3600.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    scenario = center(args.agents, args.queues)
    wall, cpu = time.perf_counter(), time.process_time()
    result = Simulation(scenario, args.seed).run()
    report = build_report(result)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    totals = [queue["total"] for queue in report["queues"].values()]
    offered = sum(t["offered"] for t in totals)
    answered = sum(t["answered"] for t in totals)
    within = [t["service_level"] for t in totals if t["service_level"] is not None]
    figures = {
        "agents": sum(g.count for g in scenario.staff),
        "queues": len(scenario.queues),
        "simulated_hours": (scenario.end - scenario.start) / 3600,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "calls_offered": offered,
        "calls_answered": answered,
        "calls_abandoned": sum(t["abandoned"] for t in totals),
        "events": result.events_run,
        "router_ticks": result.router_ticks,
        "cpu_us_per_call": round(1e6 * cpu / max(1, offered)),
        "service_level_range": [round(min(within), 3), round(max(within), 3)] if within else None,
        "site_occupancy": {name: round(s["occupancy"], 3) for name, s in report["sites"].items()
                           if s["occupancy"] is not None},
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    for key, value in figures.items():
        print(f"{key:>20}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
