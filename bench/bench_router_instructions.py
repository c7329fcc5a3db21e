"""Instructions per routing decision, counted by valgrind's callgrind rather than timed:
a figure the load of a shared machine does not move (``bench_router.py`` times the same
decisions).

Each checkout runs in its own process under ``valgrind --tool=callgrind``, building the
same router as ``bench_router.py`` (10,000 agents, 200 skills, 1,000 calls waiting) with
collection off; only the decision itself (the commands ``bench_router.py`` times) is
counted: it runs inside a ctypes call, callgrind collects only inside libffi's
``ffi_call`` (``--toggle-collect``) and dumps a part per kind when ``os.getppid()`` is
called after it (``--dump-before``). The figure is the mean over the decisions of each
kind, the few thousand instructions of the ctypes call included (the same for both
checkouts).

Run: ``.venv/bin/python bench/bench_router_instructions.py [--decisions N] [--against DIR]``
(needs valgrind; several minutes: callgrind runs the set-up some 50 times slower).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_router  # noqa: E402

# The counted part of a decision runs inside a ctypes call: callgrind collects only inside
# libffi's ``ffi_call``, which only ctypes uses. After each kind ``os.getppid()`` (which
# nothing else here calls) makes callgrind dump that kind's count into a part of its own.
_call_no_args = ctypes.pythonapi.PyObject_CallNoArgs
_call_no_args.argtypes, _call_no_args.restype = [ctypes.py_object], ctypes.py_object
KINDS = ("call arrives", "agent frees", "agent takes", "no agent")


def enter(work: Callable[[], Any]) -> Any:
    return _call_no_args(work)


def count_decisions(bench: bench_router.Bench, kind: str, decisions: int) -> int:
    """Run ``decisions`` decisions of ``kind`` as ``bench_router.Bench`` does, the timed
    commands through the kind's entry point; returns how many were counted."""
    router, routing, rng = bench.router, bench.routing, bench.rng
    RoutingRequest = routing.RoutingRequest
    counted = 0
    if kind == "no agent":
        queues = bench.unservable or bench.queue_names
        for n in range(decisions):
            request = RoutingRequest(f"nobody{n}", rng.choice(queues), language="eu")
            enter(lambda request=request: (router.enqueue(request), router.dispatch())[1])
            counted += 1
            router.abandon(request.call_id)
            bench.tick_now_and_then(n)
        return counted
    if kind == "call arrives":
        for n in range(decisions):
            request = RoutingRequest(f"arrive{n}", rng.choice(bench.servable),
                                     priority=rng.randint(1, 3))
            reservations = enter(
                lambda request=request: (router.enqueue(request), router.dispatch())[1]
            )
            assert reservations and reservations[0].call_id == request.call_id
            counted += 1
            router.abandon(request.call_id)
            router.dispatch()
            bench.clock.now += 0.001
            bench.tick_now_and_then(n)
        return counted
    # Agents finishing a call: for "agent takes" only those who take a waiting call count.
    n = 0
    while counted < decisions:
        if kind == "agent frees":
            if n >= len(bench.live):
                break
            call_id = bench.live[n]
        else:
            if not bench.taking:
                bench.start_takes()
            call_id = bench.taking.pop()
        n += 1
        if not bench_router.connected(router, call_id, routing):
            continue
        reservations = enter(
            lambda call_id=call_id: (router.call_ended(call_id), router.dispatch())[1]
        )
        if kind == "agent frees" or reservations:
            counted += 1
        for reservation in reservations:
            router.answered(reservation.reservation_id)
            bench.refills.append(reservation.call_id)
            router.enqueue(RoutingRequest(f"refill-{kind}-{n}", reservation.queue,
                                          priority=rng.randint(1, 3)))
            for again in router.dispatch():
                router.answered(again.reservation_id)
        bench.clock.now += 0.001
        bench.tick_now_and_then(n)
    return counted


def child(decisions: int, checkout: str | None) -> None:
    routing = bench_router.this_router if checkout is None else bench_router.load_router(checkout)
    bench = bench_router.Bench("", routing, 7)
    gc.collect()
    gc.freeze()
    os.getppid()  # part 1: the set-up (nothing collected)
    counts = {}
    for kind in KINDS:
        if kind == "agent frees":
            bench.start_frees()
        elif kind == "agent takes":
            bench.start_takes()
        counts[kind] = count_decisions(bench, kind, decisions)
        os.getppid()  # this kind's part
    print("COUNTS", repr(counts))


def total(part: Path) -> int:
    """The instructions a callgrind part file counted."""
    for line in part.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    return 0


def measure(decisions: int, checkout: str | None, folder: Path) -> dict[str, float]:
    out_file = folder / f"callgrind.{'this' if checkout is None else 'other'}"
    command = [
        "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=ffi_call",
        "--dump-before=getppid", f"--callgrind-out-file={out_file}",
        sys.executable, __file__, "--child", "--decisions", str(decisions),
    ]
    if checkout is not None:
        command += ["--against", checkout]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    counts = eval(result.stdout.split("COUNTS", 1)[1].strip())  # our own repr
    # Parts .1 (set-up) then one per kind, in order.
    return {
        kind: total(Path(f"{out_file}.{index}")) / counts[kind]
        for index, kind in enumerate(KINDS, start=2)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--against", metavar="DIR", help="another checkout, counted the same way")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.decisions, args.against)
        return
    with tempfile.TemporaryDirectory(prefix="bench-router-instructions-") as folder:
        runs = [("this", None)] + ([("other", args.against)] if args.against else [])
        # Side by side (the counts do not depend on what else runs).
        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {
                label: pool.submit(measure, args.decisions, checkout, Path(folder))
                for label, checkout in runs
            }
        results = {label: future.result() for label, future in futures.items()}
    for kind in KINDS:
        line = "  ".join(f"{label} {results[label][kind] / 1000:8.1f}k" for label in results)
        print(f"{kind:<14} instructions per decision: {line}")
    print(f"(mean over {args.decisions} decisions of each kind; load average "
          f"{os.getloadavg()[0]:.1f}, which does not change them)")


if __name__ == "__main__":
    main()
