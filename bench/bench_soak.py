"""Soak: hours of contact-center calls at a steady rate; does memory level off, does the loop stall?

SIPp on both sides, everything on free loopback ports (as ``bench_queue_flow.py``):

- the server (uvloop, ``--log-level warning``) runs the bench contact center: ``--agents``
  SIPp agents (auto-login, queue ``bench``, wrap-up 0) and the short bench flow on 100
  (``bench/scenarios/bench_flow.yaml``: a 0.6 s menu, digit 1 -> the queue);
- callers arrive at ``--rate`` calls/s for ``--minutes``: most press 1, wait in the queue,
  talk ``--talk-ms`` to an agent who then hangs up (``caller_ivr.xml``); ``--abandon-share``
  of them hang up ``--abandon-ms`` after answering instead, in the IVR or in the line
  (``caller_ivr_hangup.xml``).

Every ``--sample-seconds`` it reads the server's RSS (/proc) and /metrics, and prints one
line: calls ended so far, RSS, the in-memory history sizes (``centralita_history_entries``),
loop-lag observations over 100 ms, collector passes per generation and the longest pause
bucket. At the end:

- **RSS per 10,000 calls after warm-up**: the least-squares slope of RSS against calls ended,
  over the samples after ``--warmup-calls`` (the in-memory history fills up during warm-up:
  with the default ``history:`` limits that is about 5 minutes of calls);
- **loop stalls**: ``centralita_event_loop_lag_seconds`` observations over 100 ms and over
  250 ms (a 100 ms timer that ran that late), and the longest ones the server logged;
- **collector**: passes per generation (``python_gc_collections_total``) and the pause
  distribution per generation from ``centralita_gc_pause_seconds`` (count per bucket, sum,
  the bucket holding the median and the 99th percentile).

    .venv/bin/python bench/bench_soak.py                          # one hour at 8 calls/s
    .venv/bin/python bench/bench_soak.py --minutes 2 --warmup-calls 300
    .venv/bin/python bench/bench_soak.py --config-extra history.max_age_seconds=60 --json soak.json

Not part of the test suite: it measures, nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from integration import sipp_agents as sa  # noqa: E402
from integration.server_fixture import PbxServer, parse_prometheus, start_pbx  # noqa: E402
from peers import sipp  # noqa: E402

STALL_LOG = re.compile(r"event loop stalled for (\d+) ms")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Sample:
    elapsed: float
    calls_ended: int
    rss_mb: float
    history: dict[str, int]
    lag_over_100ms: int
    lag_over_250ms: int
    gc_collections: dict[str, int]
    gc_pauses: dict[str, dict[str, float]]  # generation -> {le: cumulative count, "sum": s}


@dataclass
class Report:
    minutes: float
    rate: float
    calls_ended: int
    caller_ok: int
    caller_failed: int
    rss_start_mb: float
    rss_after_warmup_mb: float
    rss_end_mb: float
    rss_mb_per_10k_calls: float | None
    lag_over_100ms: int
    lag_over_250ms: int
    stalls_logged_ms: list[int]
    gc_collections: dict[str, int]
    gc_pauses: dict[str, dict[str, float]]
    samples: list[Sample] = field(default_factory=list)


def _labels(key: str) -> dict[str, str]:
    return dict(LABEL.findall(key.partition("{")[2]))


def read_sample(server: PbxServer, started: float) -> Sample:
    metrics = parse_prometheus(server.metrics_text())
    ended = 0.0
    history: dict[str, int] = {}
    lag_total = lag_100 = lag_250 = 0.0
    collections: dict[str, int] = {}
    pauses: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name = key.partition("{")[0]
        labels = _labels(key)
        if name == "centralita_calls_ended_total":
            ended += value
        elif name == "centralita_history_entries":
            history[labels["holder"]] = int(value)
        elif name == "centralita_event_loop_lag_seconds_count":
            lag_total = value
        elif name == "centralita_event_loop_lag_seconds_bucket" and labels.get("le") == "0.1":
            lag_100 = value
        elif name == "centralita_event_loop_lag_seconds_bucket" and labels.get("le") == "0.25":
            lag_250 = value
        elif name == "python_gc_collections_total":
            collections[labels["generation"]] = int(value)
        elif name == "centralita_gc_pause_seconds_bucket":
            pauses.setdefault(labels["generation"], {})[labels["le"]] = value
        elif name == "centralita_gc_pause_seconds_sum":
            pauses.setdefault(labels["generation"], {})["sum"] = value
    return Sample(round(time.monotonic() - started, 1), int(ended), round(server.rss_bytes() / 2**20, 1),
                  history, int(lag_total - lag_100), int(lag_total - lag_250), collections, pauses)


def slope_per_10k(points: list[tuple[int, float]]) -> float | None:
    """Least-squares MB per 10,000 calls through (calls, rss) points."""
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(sxy / sxx * 10_000, 2) if sxx else None


def pause_summary(buckets: dict[str, float]) -> str:
    """'n=…, sum=… s, p50<=…, p99<=…, over 50 ms: …' from cumulative bucket counts."""
    bounds = sorted((float(le), count) for le, count in buckets.items() if le not in ("sum", "+Inf"))
    total = buckets.get("+Inf", 0.0)
    if not total:
        return "no passes"

    def quantile(q: float) -> str:
        for bound, count in bounds:
            if count >= q * total:
                return f"{bound * 1000:g} ms"
        return f"> {bounds[-1][0] * 1000:g} ms"

    over_50 = total - next((count for bound, count in bounds if bound == 0.05), total)
    return (f"n={int(total)}, sum={buckets.get('sum', 0.0):.2f} s, p50<={quantile(0.5)}, "
            f"p99<={quantile(0.99)}, over 50 ms: {int(over_50)}")


def config_yaml(args: argparse.Namespace) -> str:
    config = yaml.safe_load(sa.contact_center_config(sa.agent_accounts(args.agents), wrap_up_seconds=0,
                                                     ring_timeout_seconds=30, max_wait_seconds=600))
    for item in args.config_extra:
        dotted, _, value = item.partition("=")
        section, _, key = dotted.partition(".")
        config.setdefault(section, {})[key] = yaml.safe_load(value)
    return yaml.safe_dump(config, sort_keys=False)


def start_callers(server: PbxServer, scenario: Path, rate: float, duration_ms: int | None,
                  workdir: Path, args: argparse.Namespace) -> sipp.SippProcess:
    """One SIPp placing ``rate`` calls/s for the run; retried when its free port was taken."""
    for attempt in range(3):
        try:
            return sipp.start(server.sip_address, scenario=scenario, service="100",
                              calls=int(rate * args.minutes * 60), rate=rate, duration_ms=duration_ms,
                              limit=max(50, int(rate * (args.talk_ms / 1000 + 10) * 2)),
                              workdir=workdir / f"try{attempt}",
                              global_timeout_s=args.minutes * 60 + 600)
        except RuntimeError as error:
            if "in use" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def run(args: argparse.Namespace, workdir: Path) -> Report:
    server = start_pbx(workdir / "server", config_yaml=config_yaml(args), python=args.server_python,
                       extra_args=("--log-level", "warning"), startup_timeout=60)
    accounts = sa.agent_accounts(args.agents)
    agents = sa.SippAgents(server.sip_address, accounts, workdir / "agents", talk_ms=args.talk_ms,
                           short_trace=True)
    samples: list[Sample] = []
    callers: list[sipp.SippProcess] = []
    try:
        agents.start()
        deadline = time.monotonic() + 60
        while not all(state == "available" for state in sa.agent_states(server).values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the agents did not all become available")
            time.sleep(0.5)
        abandon_rate = args.rate * args.abandon_share
        plans = [(sa.CALLER_WAIT_BYE_XML, args.rate - abandon_rate, None, "callers"),
                 (sa.CALLER_HANGUP_XML, abandon_rate, args.abandon_ms, "abandoning")]
        started = time.monotonic()
        samples.append(read_sample(server, started))
        print(f"start: rss {samples[0].rss_mb} MB; {args.rate:g} calls/s for {args.minutes:g} min "
              f"({args.abandon_share:.0%} hang up after {args.abandon_ms} ms)", flush=True)
        for scenario, rate, duration, name in plans:
            if rate > 0:
                callers.append(start_callers(server, scenario, rate, duration, workdir / name, args))
        stop = threading.Event()
        while not stop.wait(args.sample_seconds):
            sample = read_sample(server, started)
            samples.append(sample)
            sizes = " ".join(f"{k}={v}" for k, v in sorted(sample.history.items()))
            print(f"{sample.elapsed:7.0f}s calls {sample.calls_ended:7d} rss {sample.rss_mb:6.1f} MB "
                  f"| lag>100ms {sample.lag_over_100ms} >250ms {sample.lag_over_250ms} "
                  f"| gc passes {sample.gc_collections} | {sizes}", flush=True)
            if all(c.process.poll() is not None for c in callers):
                stop.set()
        results = [c.wait(60) for c in callers]
        time.sleep(2)
        samples.append(read_sample(server, started))
        stalls = sorted((int(m) for m in STALL_LOG.findall(server.log_text())), reverse=True)
    finally:
        for caller in callers:
            if caller.process.poll() is None:
                caller.stop()
        agents.stop()
        server.stop()
    after_warmup = [s for s in samples if s.calls_ended >= args.warmup_calls]
    last = samples[-1]
    return Report(
        minutes=args.minutes, rate=args.rate, calls_ended=last.calls_ended,
        caller_ok=sum(r.successful for r in results), caller_failed=sum(r.failed for r in results),
        rss_start_mb=samples[0].rss_mb,
        rss_after_warmup_mb=after_warmup[0].rss_mb if after_warmup else last.rss_mb,
        rss_end_mb=last.rss_mb,
        rss_mb_per_10k_calls=slope_per_10k([(s.calls_ended, s.rss_mb) for s in after_warmup]),
        lag_over_100ms=last.lag_over_100ms, lag_over_250ms=last.lag_over_250ms,
        stalls_logged_ms=stalls[:10], gc_collections=last.gc_collections, gc_pauses=last.gc_pauses,
        samples=samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=8.0, help="calls per second")
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--talk-ms", type=int, default=2000)
    parser.add_argument("--abandon-share", type=float, default=0.1,
                        help="share of callers who hang up early")
    parser.add_argument("--abandon-ms", type=int, default=300,
                        help="they hang up this long after the answer (in the IVR at 300)")
    parser.add_argument("--warmup-calls", type=int, default=3000)
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--config-extra", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. history.max_age_seconds=60")
    parser.add_argument("--server-python", help="run the server with this interpreter (or wrapper)")
    parser.add_argument("--json", type=Path, help="write the report (with every sample) here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"work folder: {workdir}", flush=True)
    report = run(args, workdir)
    print(f"== {report.calls_ended} calls in {report.minutes:g} min at {report.rate:g}/s: "
          f"callers ok {report.caller_ok}, failed {report.caller_failed}")
    slope = report.rss_mb_per_10k_calls
    print(f"RSS {report.rss_start_mb} MB at start, {report.rss_after_warmup_mb} MB after "
          f"{args.warmup_calls} calls (warm-up), {report.rss_end_mb} MB at the end; after warm-up "
          + (f"{slope:+.2f} MB per 10,000 calls" if slope is not None else "too few samples for a slope"))
    print(f"loop lag over 100 ms: {report.lag_over_100ms}, over 250 ms: {report.lag_over_250ms}; "
          f"longest stalls logged (ms): {report.stalls_logged_ms or 'none'}")
    print(f"collector passes: {report.gc_collections}")
    for generation, buckets in sorted(report.gc_pauses.items()):
        print(f"  generation {generation} pauses: {pause_summary(buckets)}")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
        print(f"report written to {args.json}")


if __name__ == "__main__":
    main()
