"""Cost of one routing decision at contact-center scale.

10,000 agents, 200 skills, 250 queues (200 single-skill, 50 two-skill, the four
strategies mixed), most agents on a call and 1,000 calls waiting. Measures:

- call arrives:  ``enqueue`` + ``dispatch`` for a call that finds a free,
  qualified agent through the availability index (then abandoned, which puts
  the agent back with its idle time unchanged);
- agent frees:   ``call_ended`` + ``dispatch``: a busy agent finishes (no
  wrap-up) and takes the best of the waiting calls across its queues; the call
  is then answered and a fresh call enqueued so the line stays at 1,000;
- no agent:      ``enqueue`` + ``dispatch`` of a call nobody free can take (the
  explanation's bounded rejection sample is built), then abandoned.

Run: ``.venv/bin/python bench/bench_router.py [--seed N] [--decisions N]``
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from router import (
    AgentProfile,
    AgentState,
    CallStatus,
    QueueConfig,
    Router,
    RoutingRequest,
    Strategy,
    UnknownCall,
)

OPTIONS: dict[str, int] = {}  # Router keyword overrides, for experiments
AGENTS = 10_000
SKILLS = 200
WAITING = 1_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def build(seed: int) -> tuple[Router, Clock, random.Random, list[str]]:
    rng = random.Random(seed)
    clock = Clock()
    router = Router(clock, reservation_timeout_seconds=1e9, **OPTIONS)
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


def fill(router: Router, clock: Clock, rng: random.Random, queue_names: list[str]) -> int:
    """Put most agents on a call and leave WAITING calls in line."""
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


def connected(router: Router, call_id: str) -> bool:
    try:
        return router.call(call_id).status is CallStatus.CONNECTED
    except UnknownCall:
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
        f"{name:<14} n={len(wall):>5}  wall p50={percentile(wall, 0.50):7.1f} "
        f"p99={percentile(wall, 0.99):7.1f} max={max(wall) / 1000:8.1f}  "
        f"cpu p50={percentile(cpu, 0.50):7.1f} p99={percentile(cpu, 0.99):7.1f} "
        f"max={max(cpu) / 1000:8.1f}  mean={statistics.fmean(wall) / 1000:6.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the ~1M setup objects to the cyclic GC (its full passes show up in p99)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    router, clock, rng, queue_names = build(args.seed)
    calls_made = fill(router, clock, rng, queue_names)
    agents = router.agents()
    busy = [a.extension for a in agents if a.state is AgentState.ON_CALL]
    free = sum(a.state is AgentState.AVAILABLE for a in agents)
    waiting = sum(router.queue_stats(name).waiting for name in queue_names)
    print(
        f"setup {time.perf_counter() - started:.1f} s: {len(agents)} agents ({len(busy)} on a call, "
        f"{free} free), {SKILLS} skills, {len(queue_names)} queues, {waiting} calls waiting"
    )
    if not args.no_gc_freeze:
        # What a long-running server does after loading its configuration: move the
        # long-lived objects out of the collector's way.
        gc.collect()
        gc.freeze()
    servable = [n for n in queue_names if router.queue_stats(n).agents_available > 0]
    unservable = [n for n in queue_names if router.queue_stats(n).agents_available == 0]
    ticks = Timings()

    def tick_now_and_then(n: int) -> None:
        # The server ticks the router every 250 ms (timers, index upkeep); at this
        # decision rate that is about every 100 decisions. Timed on its own.
        if n % 100 == 99:
            ticks.start()
            for reservation in router.tick():
                router.answered(reservation.reservation_id)
            ticks.stop()

    arrive = Timings()
    for n in range(args.decisions):
        call_id = f"arrive{n}"
        queue = rng.choice(servable)
        arrive.start()
        router.enqueue(RoutingRequest(call_id, queue, priority=rng.randint(1, 3)))
        reservations = router.dispatch()
        arrive.stop()
        assert reservations and reservations[0].call_id == call_id
        router.abandon(call_id)
        router.dispatch()  # the released agent might take a waiting call: keep the invariant
        clock.now += 0.001
        tick_now_and_then(n)

    frees = Timings()
    live = [c for c in (f"fill{n}" for n in range(1, calls_made + 1)) if connected(router, c)]
    rng.shuffle(live)
    for n, call_id in enumerate(live[: args.decisions]):
        frees.start()
        router.call_ended(call_id)
        reservations = router.dispatch()
        frees.stop()
        for reservation in reservations:
            router.answered(reservation.reservation_id)
            router.enqueue(
                RoutingRequest(f"refill{n}", reservation.queue, priority=rng.randint(1, 3))
            )
            for again in router.dispatch():
                router.answered(again.reservation_id)
        clock.now += 0.001
        tick_now_and_then(n)

    nobody = Timings()
    for n in range(args.decisions):
        call_id = f"nobody{n}"
        queue = rng.choice(unservable) if unservable else rng.choice(queue_names)
        nobody.start()
        router.enqueue(RoutingRequest(call_id, queue, language="eu"))  # nobody speaks Basque here
        router.dispatch()
        nobody.stop()
        router.abandon(call_id)
        tick_now_and_then(n)

    report("call arrives", arrive)
    report("agent frees", frees)
    report("no agent", nobody)
    report("tick", ticks)  # every ~100 decisions


if __name__ == "__main__":
    main()
