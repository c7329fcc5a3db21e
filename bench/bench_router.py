"""Cost of one routing decision at contact-center scale.

10,000 agents, 200 skills, 250 queues (200 single-skill, 50 two-skill, the four
strategies mixed), most agents on a call and 1,000 calls waiting. Measures:

- call arrives:  ``enqueue`` + ``dispatch`` for a call that finds a free,
  qualified agent through the availability index (then abandoned, which puts
  the agent back with its idle time unchanged);
- agent frees:   ``call_ended`` + ``dispatch``: a busy agent finishes (no
  wrap-up) and takes the best of the waiting calls across its queues if one
  qualifies (for about 3 % of them: the calls wait in queues whose agents are
  busy); the call is then answered and a fresh call enqueued so the line stays
  at 1,000;
- agent takes:   the same for agents serving a queue with calls waiting, counted
  only when the agent took a call (what a freed agent costs in a busy center);
- no agent:      ``enqueue`` + ``dispatch`` of a call nobody free can take (the
  explanation's bounded rejection sample is built), then abandoned.

``--against DIR`` runs another checkout's router (e.g. a ``git archive`` of main) in the
same process, built the same way, and interleaves the two decision by decision (which
one goes first alternates): both see the same moment of a shared machine, where runs in
turn differ by up to twice.

Run: ``.venv/bin/python bench/bench_router.py [--seed N] [--decisions N] [--against DIR]``
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import router as this_router

OPTIONS: dict[str, int] = {}  # Router keyword overrides, for experiments
AGENTS = 10_000
SKILLS = 200
WAITING = 1_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def load_router(checkout: str) -> ModuleType:
    """The ``router`` package of another checkout, imported beside this one's: its modules
    (and its ``events``) are its own objects; this process's ``sys.modules`` is restored."""
    packages = ("router", "events")
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] in packages}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(checkout))
    try:
        import router as other_router

        return other_router
    finally:
        sys.path.pop(0)
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]
        sys.modules.update(ours)


def build(seed: int, routing: Any) -> tuple[Any, Clock, random.Random, list[str]]:
    """``routing``: the ``router`` package to build with."""
    QueueConfig, AgentProfile, Strategy = (
        routing.QueueConfig,
        routing.AgentProfile,
        routing.Strategy,
    )
    rng = random.Random(seed)
    clock = Clock()
    router = routing.Router(clock, reservation_timeout_seconds=1e9, **OPTIONS)
    strategies = list(Strategy)
    queues = []
    for skill in range(SKILLS):
        queues.append(
            QueueConfig(
                f"q{skill}",
                skills={f"s{skill}": rng.randint(1, 5)},
                strategy=strategies[skill % 4],
                wrap_up_seconds=0,
            )
        )
    for n in range(50):
        a, b = rng.sample(range(SKILLS), 2)
        queues.append(
            QueueConfig(
                f"pair{n}",
                skills={f"s{a}": rng.randint(1, 4), f"s{b}": rng.randint(1, 4)},
                strategy=strategies[n % 4],
                wrap_up_seconds=0,
            )
        )
    for queue in queues:
        router.upsert_queue(queue)
    profiles = []
    for n in range(AGENTS):
        skills = {f"s{s}": rng.randint(1, 10) for s in rng.sample(range(SKILLS), 4)}
        languages = frozenset({"en", "es"} if rng.random() < 0.3 else {"en"})
        profiles.append(
            AgentProfile(f"{n:05d}", f"Agent {n}", rng.choice(["mad", "bcn"]), skills, languages)
        )
    started = time.perf_counter()
    for profile in profiles:
        router.upsert_agent(profile)
    print(f"adding {AGENTS} agents to {len(queues)} queues: {time.perf_counter() - started:.2f} s")
    for profile in profiles:
        router.login(profile.extension)
        clock.now += 0.01
    return router, clock, rng, [q.name for q in queues]


def fill(
    router: Any, clock: Clock, rng: random.Random, queue_names: list[str], routing: Any
) -> int:
    """Put most agents on a call and leave WAITING calls in line."""
    RoutingRequest = routing.RoutingRequest
    call_number = 0
    waiting = 0
    while waiting < WAITING:
        call_number += 1
        router.enqueue(
            RoutingRequest(
                f"fill{call_number}", rng.choice(queue_names), priority=rng.randint(1, 3)
            )
        )
        reservations = router.dispatch()
        for reservation in reservations:
            router.answered(reservation.reservation_id)
        if not reservations:
            waiting += 1
        clock.now += 0.001
    return call_number


def connected(router: Any, call_id: str, routing: Any) -> bool:
    try:
        return router.call(call_id).status is routing.CallStatus.CONNECTED
    except routing.UnknownCall:
        return False


def percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


class Timings:
    """Wall time (what the event loop sees) and this thread's CPU time (the same step
    without the time the shared machine gave to other processes) of each step."""

    def __init__(self) -> None:
        self.wall: list[int] = []
        self.cpu: list[int] = []
        self._wall_begin = self._cpu_begin = 0

    def start(self) -> None:
        self._cpu_begin = time.thread_time_ns()
        self._wall_begin = time.perf_counter_ns()

    def stop(self) -> None:
        self.wall.append(time.perf_counter_ns() - self._wall_begin)
        self.cpu.append(time.thread_time_ns() - self._cpu_begin)


def report(name: str, timings: Timings) -> None:
    wall, cpu = timings.wall, timings.cpu
    print(
        f"{name:<20} n={len(wall):>5}  wall p50={percentile(wall, 0.50):7.1f} "
        f"p99={percentile(wall, 0.99):7.1f} max={max(wall) / 1000:8.1f}  "
        f"cpu p50={percentile(cpu, 0.50):7.1f} p99={percentile(cpu, 0.99):7.1f} "
        f"max={max(cpu) / 1000:8.1f}  mean={statistics.fmean(wall) / 1000:6.1f} µs"
    )


class Bench:
    """One router at the bench's scale and the three decision kinds, one step at a time."""

    def __init__(self, label: str, routing: Any, seed: int) -> None:
        self.label = label
        self.routing = routing
        started = time.perf_counter()
        self.router, self.clock, self.rng, self.queue_names = build(seed, routing)
        router = self.router
        self.calls_made = fill(router, self.clock, self.rng, self.queue_names, routing)
        agents = router.agents()
        busy = sum(a.state is routing.AgentState.ON_CALL for a in agents)
        free = sum(a.state is routing.AgentState.AVAILABLE for a in agents)
        waiting = sum(router.queue_stats(name).waiting for name in self.queue_names)
        print(
            f"{label}setup {time.perf_counter() - started:.1f} s: {len(agents)} agents ({busy} on "
            f"a call, {free} free), {SKILLS} skills, {len(self.queue_names)} queues, "
            f"{waiting} calls waiting"
        )
        stats = {name: router.queue_stats(name) for name in self.queue_names}
        self.servable = [n for n in self.queue_names if stats[n].agents_available > 0]
        self.unservable = [n for n in self.queue_names if stats[n].agents_available == 0]
        self.timings = {
            kind: Timings()
            for kind in ("call arrives", "agent frees", "agent takes", "no agent", "tick")
        }
        self.live: list[str] = []
        self.taking: list[str] = []
        self.refills: list[str] = []  # calls enqueued to keep the line full, later answered

    def tick_now_and_then(self, n: int) -> None:
        # The server ticks the router every 250 ms (timers, index upkeep); at this
        # decision rate that is about every 100 decisions. Timed on its own.
        if n % 100 == 99:
            ticks = self.timings["tick"]
            ticks.start()
            for reservation in self.router.tick():
                self.router.answered(reservation.reservation_id)
            ticks.stop()

    def arrive(self, n: int) -> None:
        router, RoutingRequest = self.router, self.routing.RoutingRequest
        call_id = f"arrive{n}"
        queue = self.rng.choice(self.servable)
        priority = self.rng.randint(1, 3)
        timing = self.timings["call arrives"]
        timing.start()
        router.enqueue(RoutingRequest(call_id, queue, priority=priority))
        reservations = router.dispatch()
        timing.stop()
        assert reservations and reservations[0].call_id == call_id
        router.abandon(call_id)
        router.dispatch()  # the released agent might take a waiting call: keep the invariant
        self.clock.now += 0.001
        self.tick_now_and_then(n)

    def start_frees(self) -> None:
        calls = (f"fill{n}" for n in range(1, self.calls_made + 1))
        self.live = [c for c in calls if connected(self.router, c, self.routing)]
        self.rng.shuffle(self.live)

    def start_takes(self) -> None:
        """Connected calls whose agent serves a queue with calls waiting (looked for again
        when they run out)."""
        router = self.router
        waiting = {name for name in self.queue_names if router.queue_stats(name).waiting}
        calls = [f"fill{n}" for n in range(1, self.calls_made + 1)] + self.refills
        live = [c for c in calls if connected(router, c, self.routing)]
        self.taking = [
            c for c in live if waiting.intersection(router.agent(router.call(c).agent).queues)
        ]
        self.rng.shuffle(self.taking)

    def take(self, n: int) -> None:
        if not self.taking:
            self.start_takes()
        self.free(n, [self.taking.pop()], "agent takes")

    def free(self, n: int, calls: list[str] | None = None, kind: str = "agent frees") -> None:
        if calls is None:
            if n >= len(self.live):
                return
            call_id = self.live[n]
        else:
            (call_id,) = calls
        router, RoutingRequest = self.router, self.routing.RoutingRequest
        if not connected(router, call_id, self.routing):
            return
        timing = self.timings[kind]
        timing.start()
        router.call_ended(call_id)
        reservations = router.dispatch()
        timing.stop()
        if kind == "agent takes" and not reservations:
            timing.wall.pop()  # it found no call after all: not this kind
            timing.cpu.pop()
        for reservation in reservations:
            router.answered(reservation.reservation_id)
            self.refills.append(reservation.call_id)
            router.enqueue(
                RoutingRequest(f"refill-{kind}-{n}", reservation.queue, priority=self.rng.randint(1, 3))
            )
            for again in router.dispatch():
                router.answered(again.reservation_id)
        self.clock.now += 0.001
        self.tick_now_and_then(n)

    def nobody(self, n: int) -> None:
        router, RoutingRequest = self.router, self.routing.RoutingRequest
        call_id = f"nobody{n}"
        queues = self.unservable or self.queue_names
        queue = self.rng.choice(queues)
        timing = self.timings["no agent"]
        timing.start()
        router.enqueue(RoutingRequest(call_id, queue, language="eu"))  # nobody speaks Basque here
        router.dispatch()
        timing.stop()
        router.abandon(call_id)
        self.tick_now_and_then(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the ~1M setup objects to the cyclic GC (its full passes show up in p99)",
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="another checkout whose router runs beside this one, decisions interleaved",
    )
    args = parser.parse_args()
    benches = [Bench("" if args.against is None else "this  ", this_router, args.seed)]
    if args.against is not None:
        print(f"other = {args.against}")
        benches.append(Bench("other ", load_router(args.against), args.seed))
    if not args.no_gc_freeze:
        # What a long-running server does after loading its configuration: move the
        # long-lived objects out of the collector's way.
        gc.collect()
        gc.freeze()
    steps: list[tuple[Callable[[Bench], None] | None, Callable[[Bench, int], None]]] = [
        (None, Bench.arrive),
        (Bench.start_frees, Bench.free),
        (Bench.start_takes, Bench.take),
        (None, Bench.nobody),
    ]
    for prepare, step in steps:
        for bench in benches:
            if prepare is not None:
                prepare(bench)
        for n in range(args.decisions):
            for bench in benches if n % 2 == 0 else benches[::-1]:
                step(bench, n)
    print(f"load average {os.getloadavg()[0]:.1f}")
    # tick: every ~100 decisions
    for kind in ("call arrives", "agent frees", "agent takes", "no agent", "tick"):
        for bench in benches:
            report(f"{bench.label}{kind}", bench.timings[kind])


if __name__ == "__main__":
    main()
