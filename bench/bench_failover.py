"""Time to recover when a site dies behind the Kamailio front door.

Each repetition starts two real sites (`pbx serve`, the embedded demo configuration, each
its own SQLite) behind Kamailio with the shipped configuration, calls the greeting through
the front door at ``--rate`` calls/s with SIPp, kills one site with SIGKILL after
``--kill-after`` seconds and keeps calling. From each call's INVITE and 200 times it reports:

* first failover answer: the kill -> the first call that had been sent to the dead site
  being answered by the survivor (the dispatcher gave up on the silent site);
* recovered: the kill -> the last such call answered; calls placed later never wait;
* failed new calls (placed after the kill, never answered: should be 0) and the calls the
  dead site held when it died (lost: their media and dialog lived there).

Then p50 and max over the repetitions.

Run: ``.venv/bin/python bench/bench_failover.py [--repetitions 10] [--rate 10]
[--json FILE]``. Needs Kamailio and SIPp (``scripts/install-test-deps``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from integration.front_door_calls import FailoverSummary, read_call_traces, start_callers  # noqa: E402
from integration.kamailio_fixture import start_front_door  # noqa: E402
from integration.server_fixture import start_pbx  # noqa: E402


def one_repetition(workdir: Path, args: argparse.Namespace) -> FailoverSummary:
    sites = {name: start_pbx(workdir / name, extra_args=("--log-level", "warning"))
             for name in ("madrid", "bogota")}
    door = None
    try:
        door = start_front_door({name: site.sip_address for name, site in sites.items()},
                                folder=workdir / "kamailio",
                                answer_timeout_ms=args.answer_timeout_ms)
        calls = int(args.rate * (args.kill_after + args.after))
        callers, log_path = start_callers(door.address, workdir / "callers", calls=calls,
                                          rate=args.rate, talk_ms=args.talk_ms)
        time.sleep(args.kill_after)
        killed_at = time.time()
        sites["madrid"].process.kill()
        callers.wait(args.after + 30)
        return FailoverSummary.of(read_call_traces(log_path), killed_at,
                                  sites["madrid"].sip_port)
    finally:
        if door is not None:
            door.stop()
        for site in sites.values():
            site.stop()


def describe(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} s, max {max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second")
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds of calls first")
    parser.add_argument("--after", type=float, default=6.0, help="seconds of calls after the kill")
    parser.add_argument("--talk-ms", type=int, default=1000, help="each call's length")
    parser.add_argument("--answer-timeout-ms", type=int, default=1000,
                        help="the front door's SITE_ANSWER_TIMEOUT_MS")
    parser.add_argument("--json", type=Path, help="write every repetition's figures here")
    args = parser.parse_args()

    results: list[FailoverSummary] = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as folder:
        for repetition in range(args.repetitions):
            summary = one_repetition(Path(folder) / f"r{repetition}", args)
            results.append(summary)
            first = summary.first_failover_answer_s
            print(f"#{repetition + 1}: placed after kill {summary.placed_after}, failed "
                  f"{summary.failed_after}, failed over {summary.failed_over}, first failover "
                  f"answer {'-' if first is None else f'{first:.2f} s'}, recovered "
                  f"{summary.recovered_s:.2f} s, lost held calls {summary.lost_held}",
                  flush=True)

    firsts = [r.first_failover_answer_s for r in results if r.first_failover_answer_s is not None]
    print(f"\n{len(results)} repetitions at {args.rate:g} calls/s, "
          f"answer timeout {args.answer_timeout_ms} ms")
    if firsts:
        print(f"first failover answer after the kill: {describe(firsts)}")
    print(f"recovered (no new call waits any more): {describe([r.recovered_s for r in results])}")
    print(f"new calls failed after the kill: {sum(r.failed_after for r in results)} "
          f"of {sum(r.placed_after for r in results)}")
    print(f"calls held by the dead site, lost: "
          f"{describe_count([r.lost_held for r in results])}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
        print(f"written to {args.json}")


def describe_count(values: list[int]) -> str:
    return f"p50 {statistics.median(values):g}, max {max(values)} per repetition"


if __name__ == "__main__":
    main()
