"""The contact-center call rate: caller -> IVR digit -> queue -> agent answers -> talk -> hang up.

SIPp on both sides, everything on free loopback ports:

- the server (uvloop, ``--log-level warning``) runs a config with N agents (auto-login,
  queue ``bench`` with wrap-up 0) and the short bench flow on extension 100
  (``bench/scenarios/bench_flow.yaml``: a 0.6 s menu prompt, digit 1 -> the queue);
- the agents are SIPp UAS processes (``tests/integration/sipp_agents.py``): each group
  registers with digest auth, then answers every INVITE (180, 200 + SDP), plays A-law and
  hangs up after ``--talk-ms``;
- the callers are one SIPp (``bench/scenarios/caller_ivr.xml``): INVITE 100, ACK, RFC 2833
  "1", A-law, then wait for the BYE the server relays from the agent.

A call counts only when BOTH the caller's and the agent's SIPp completed it; a step is clean
when every call placed did, SIPp exited 0 and no agent was ever offered two calls at once
(from the agents' ``-trace_shortmsg``).

Modes (default: all three, in this order):

``rate``        the highest calls/s with zero failed calls: doubles from ``--start`` until a
                step fails, then bisects to ``--resolution``. Per step: server CPU ms per call
                (utime+stime deltas from /proc/PID/stat, including the drain), RSS, peak
                concurrent calls (server's ``centralita_calls_active``) and RSS per concurrent
                call (peak RSS - RSS before the step, over the peak).
``concurrent``  how many concurrent 10-second calls it holds: level N places 2N calls at N/10
                calls/s, agents talking ``--hold-s`` (10 s), so about N calls are up at once
                for the second half of the step; N doubles from ``--conc-start`` until
                failures, then bisects.
``profile``     one step at ``--profile-rate`` (default: half the clean rate found, else 10)
                under py-spy (``--profiler py-spy``, sampling, no overhead on the server) or
                cProfile (``--profiler cprofile``: ``python -m cProfile -o``); prints the top
                25 functions by own time and by cumulative time.

    .venv/bin/python bench/bench_queue_flow.py                     # everything
    .venv/bin/python bench/bench_queue_flow.py --mode rate --start 10 --seconds 10
    .venv/bin/python bench/bench_queue_flow.py --mode concurrent --conc-start 50
    .venv/bin/python bench/bench_queue_flow.py --mode profile --profile-rate 20 --profiler cprofile

The reference (same flow, this machine kind): Asterisk 22 carries 80 calls/s with zero
failures at about 12.7 ms CPU per call, and about 400 concurrent 10-second calls at 0.95 MB
each. SIPp runs on the same machine and competes for the CPU, so a ceiling is a property of
the pair; the CPU per call is the server's alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import yaml  # noqa: E402

from integration import sipp_agents as sa  # noqa: E402
from integration.rtpengine_fixture import PrivateRtpengine  # noqa: E402
from integration.server_fixture import PbxServer, ServerStartError, start_pbx  # noqa: E402
from peers import sipp  # noqa: E402
from peers.procs import LOOPBACK, stop_process_group  # noqa: E402

ASTERISK = {"rate": 80.0, "cpu_ms_per_call": 12.7, "concurrent": 400, "mb_per_call": 0.95}

# The callers' SDP offers SIPp's [auto_media_port]: -mp + 4 * (call number - 1) modulo 10,000
# (audio and video RTP/RTCP per call), so a random -mp high in the ephemeral range went past
# 65535 after about a thousand calls and the server rightly refused the offer (400). A base
# from 10,000 keeps the window below the server's RTP range (20,000-29,999) and Linux's
# ephemeral ports (32,768-60,999) the other peers bind; a call number reuses its ports 2,500
# calls later, long after that call ended at any rate measured here. SIPp binds only the
# base and base + 2 (its echo sockets), so the base is the first such pair free.
CALLER_MEDIA_BASES = range(10000, 10400, 4)
CALLER_MEDIA_CALLS = 2500  # calls before SIPp reuses the first call's ports


@dataclass
class Step:
    mode: str
    rate: float
    calls: int
    talk_ms: int
    agents: int
    caller_ok: int
    caller_failed: int
    caller_exit: int
    agent_ok: int
    agent_failed: int
    completed: int            # calls both sides completed
    worst_agent_concurrency: int
    cpu_seconds: float
    cpu_ms_per_call: float     # every server process: pbx serve, and rtpengine when it carries media
    server_cpu_percent: float  # of one core, over the step's wall time
    machine_busy_percent: float  # all cores, everything (SIPp included)
    rss_before_mb: float
    rss_peak_mb: float
    peak_concurrent: int
    mb_per_concurrent: float
    wall_seconds: float
    full_gc_passes: int = 0        # generation-2 collector passes during the step
    full_gc_ms_mean: float = 0.0   # their mean pause
    loop_stalls_over_25ms: int = 0  # lag probes (every 100 ms) that ran over 25 ms late ...
    loop_stalls_over_100ms: int = 0  # ... and over 100 ms (the histogram's 25 and 100 ms buckets)
    media_engine: str = "embedded"
    rtpengine_cpu_seconds: float = 0.0  # rtpengine's share of cpu_seconds
    rtpengine_rss_mb: float = 0.0       # rtpengine's resident memory at the end of the step
    note: str = ""

    @property
    def clean(self) -> bool:
        return (self.caller_exit == 0 and self.caller_failed == 0 and self.agent_failed == 0
                and self.completed == self.calls and self.worst_agent_concurrency <= 1)

    def line(self) -> str:
        verdict = "clean" if self.clean else "FAILED"
        return (f"{self.mode:10s} {self.media_engine:9s} rate {self.rate:7.1f}/s calls {self.calls:5d} talk {self.talk_ms / 1000:4.1f}s "
                f"agents {self.agents:4d} | caller ok {self.caller_ok:5d} fail {self.caller_failed:4d} "
                f"exit {self.caller_exit:3d} | agent ok {self.agent_ok:5d} fail {self.agent_failed:4d} "
                f"| worst/agent {self.worst_agent_concurrency} | cpu {self.cpu_ms_per_call:6.2f} ms/call "
                f"({self.server_cpu_percent:3.0f}% core, box {self.machine_busy_percent:3.0f}%"
                + (f", rtpengine {self.rtpengine_cpu_seconds * 1000 / max(self.completed, 1):.2f} ms/call"
                   f" {self.rtpengine_rss_mb:.1f} MB" if self.media_engine == "rtpengine" else "") + ") "
                f"| rss {self.rss_before_mb:5.1f}->{self.rss_peak_mb:5.1f} MB, peak {self.peak_concurrent:4d} "
                f"calls, {self.mb_per_concurrent:5.3f} MB/call | full gc {self.full_gc_passes} x "
                f"{self.full_gc_ms_mean:.0f} ms, lag >25 ms {self.loop_stalls_over_25ms} "
                f">100 ms {self.loop_stalls_over_100ms} | {verdict}"
                + (f" ({self.note})" if self.note else ""))


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class Sampler(threading.Thread):
    """Every ``interval``: the server's RSS and active calls (peak of each)."""

    def __init__(self, server: PbxServer, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.initial_rss = server.rss_bytes()
        self.peak_rss = self.initial_rss
        self.peak_calls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.server.rss_bytes())
            calls = self.server.metric("centralita_calls_active", 0.0) or 0.0
            self.peak_calls = max(self.peak_calls, int(calls))
        except Exception:  # the server may be busy or gone; a missed sample is fine
            pass

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


def loop_pauses(server: PbxServer) -> dict[str, float]:
    """Full collector passes (count, seconds) and event-loop lag probes, from /metrics."""
    samples = server.metrics()
    return {
        "gc2_count": samples.get('centralita_gc_pause_seconds_count{generation="2"}', 0.0),
        "gc2_sum": samples.get('centralita_gc_pause_seconds_sum{generation="2"}', 0.0),
        "lag_count": samples.get("centralita_event_loop_lag_seconds_count", 0.0),
        "lag_le_25ms": samples.get('centralita_event_loop_lag_seconds_bucket{le="0.025"}', 0.0),
        "lag_le_100ms": samples.get('centralita_event_loop_lag_seconds_bucket{le="0.1"}', 0.0),
    }


def wait_until(predicate, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def agents_for(rate: float, talk_ms: int) -> int:
    """Enough agents that the queue never runs dry at ``rate``: busy time is talk + ring."""
    return int(math.ceil(rate * (talk_ms / 1000 + 1.0) * 1.3)) + 10


def caller_media_base() -> int:
    for base in CALLER_MEDIA_BASES:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as video:
            try:
                rtp.bind((LOOPBACK, base))
                video.bind((LOOPBACK, base + 2))
            except OSError:
                continue
        return base
    raise OSError(f"no free caller media base in {CALLER_MEDIA_BASES}")


def limit_for(rate: float, talk_ms: int) -> int:
    """The callers' cap on calls open at once (SIPp -l): twice what the flow should hold."""
    return max(50, int(rate * (talk_ms / 1000 + 5) * 2))


def run_step(args: argparse.Namespace, workdir: Path, mode: str, rate: float, calls: int,
             talk_ms: int, agents_count: int | None = None, python: str | None = None,
             during=None, reference=None) -> Step:
    """One server, its agents, ``calls`` callers at ``rate``; everything stopped afterwards.

    ``during(server, seconds)`` is called right before the callers start (the profiler hook);
    if it returns a callable, that is called once the calls have drained (before any stop).
    ``reference(folder, accounts)`` starts another server instead of Centralita (Asterisk in
    ``bench_vs_asterisk.py``), with the same questions answered (``asterisk_server.py``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if rate * (talk_ms / 1000 + 3) >= CALLER_MEDIA_CALLS:  # 3 s: the IVR and the ringing
        raise ValueError(f"{rate:g} calls/s of {talk_ms} ms could have two calls on the same "
                         f"caller media ports (SIPp reuses them every {CALLER_MEDIA_CALLS} calls)")
    agents_count = agents_count or agents_for(rate, talk_ms)
    accounts = sa.agent_accounts(agents_count)
    config = sa.contact_center_config(accounts, wrap_up_seconds=0, ring_timeout_seconds=30,
                                      max_wait_seconds=600)
    rtpengine = None
    media_engine = getattr(args, "media_engine", "embedded")
    if reference is None and media_engine == "rtpengine":
        rtpengine = PrivateRtpengine(workdir / "rtpengine", threads=args.rtpengine_threads,
                                     range_size=8000)
        rtpengine.start()
        settings = yaml.safe_load(config)
        settings["media"].update(rtpengine.media_settings)
        config = yaml.safe_dump(settings, sort_keys=False)
    if reference is None:
        try:
            server = start_pbx(workdir / "server", config_yaml=config, python=python,
                               extra_args=("--log-level", "info" if args.sip_trace else "warning"),
                               sip_trace=args.sip_trace, startup_timeout=60)
        except BaseException:
            if rtpengine is not None:
                rtpengine.stop()
            raise

        def agents_ready() -> bool:
            return all(state == "available" for state in sa.agent_states(server).values())
    else:
        server = reference(workdir / "server", accounts)
        agents_ready = server.agents_ready
    agents = sa.SippAgents(server.sip_address, accounts, workdir / "agents",
                           processes=args.agent_procs, talk_ms=talk_ms, short_trace=True)
    note = ""
    try:
        try:
            agents.start()
            if not wait_until(agents_ready, 60):
                note = "not every agent became available"
            time.sleep(0.5)
            cpu_before = server.cpu_seconds()
            engine_before = rtpengine.cpu_seconds() if rtpengine is not None else 0.0
            pauses_before = loop_pauses(server)
            busy_before = machine_busy()
            sampler = Sampler(server)
            sampler.start()
            started = time.monotonic()
            limit = limit_for(rate, talk_ms)
            after = during(server, calls / rate + talk_ms / 1000) if during is not None else None
            callers = sipp.run(server.sip_address, scenario=sa.CALLER_WAIT_BYE_XML,
                               service="100", calls=calls, rate=rate, limit=limit,
                               media_port=caller_media_base(),
                               workdir=workdir / "callers",
                               timeout=calls / rate + talk_ms / 1000 + 120)
            wait_until(lambda: sum(v for k, v in agents.stats().items()
                                   if k in ("SuccessfulCall(C)", "FailedCall(C)")) >= calls, 20)
            if not wait_until(lambda: server.metric("centralita_sip_dialogs_active", 0.0) == 0, 30):
                note = (note + "; " if note else "") + "dialogs still active after 30 s"
            if after is not None:
                after()
            wall = time.monotonic() - started
            sampler.stop()
            engine_cpu = rtpengine.cpu_seconds() - engine_before if rtpengine is not None else 0.0
            engine_rss = rtpengine.rss_bytes() / 2**20 if rtpengine is not None else 0.0
            cpu = server.cpu_seconds() - cpu_before + engine_cpu
            busy_after = machine_busy()
            pauses = {k: v - pauses_before.get(k, 0.0) for k, v in loop_pauses(server).items()}
        finally:
            agent_results = agents.stop()
    finally:
        server.stop()
        if rtpengine is not None:
            rtpengine.stop()
    load = agents.load()
    agent_ok = sum(r.successful for r in agent_results)
    agent_failed = sum(r.failed for r in agent_results)
    completed = min(callers.successful, agent_ok)
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]) * 100
    rss0 = sampler.initial_rss / 2**20
    step = Step(
        mode=mode, rate=rate, calls=calls, talk_ms=talk_ms, agents=agents_count,
        caller_ok=callers.successful, caller_failed=callers.failed, caller_exit=callers.returncode,
        agent_ok=agent_ok, agent_failed=agent_failed, completed=completed,
        worst_agent_concurrency=load.worst, cpu_seconds=round(cpu, 3),
        cpu_ms_per_call=round(cpu * 1000 / max(completed, 1), 2),
        server_cpu_percent=round(cpu / wall * 100, 1), machine_busy_percent=round(busy, 1),
        rss_before_mb=round(rss0, 1), rss_peak_mb=round(sampler.peak_rss / 2**20, 1),
        peak_concurrent=sampler.peak_calls,
        mb_per_concurrent=round((sampler.peak_rss / 2**20 - rss0) / max(sampler.peak_calls, 1), 3),
        wall_seconds=round(wall, 1), full_gc_passes=int(pauses["gc2_count"]),
        full_gc_ms_mean=round(pauses["gc2_sum"] * 1000 / max(pauses["gc2_count"], 1), 1),
        loop_stalls_over_25ms=int(pauses["lag_count"] - pauses["lag_le_25ms"]),
        loop_stalls_over_100ms=int(pauses["lag_count"] - pauses["lag_le_100ms"]),
        media_engine="reference" if reference is not None else media_engine,
        rtpengine_cpu_seconds=round(engine_cpu, 3),
        rtpengine_rss_mb=round(engine_rss, 1), note=note)
    if not step.clean:
        kinds: Counter = Counter()
        for result in [callers, *agent_results]:
            kinds.update(result.failures())
        step.note = (step.note + "; " if step.note else "") + f"failures {dict(kinds)}" + (
            f"; double offers {load.overlaps[:3]}" if load.overlaps else "")
        (workdir / "failure.txt").write_text(callers.describe() + "\n" + agents.describe())
    return step


def safe_step(args, workdir, *a, **kw) -> Step | None:
    try:
        return run_step(args, workdir, *a, **kw)
    except (ServerStartError, sa.AgentSetupError, OSError, ValueError) as error:
        print(f"  step could not run: {error}", flush=True)
        return None


def search(args, workdir: Path, mode: str, start: float, maximum: float, resolution: float,
           step_at) -> tuple[float | None, list[Step]]:
    """Double from ``start`` while clean, then bisect between last clean and first failing."""
    steps: list[Step] = []
    best: float | None = None
    worst: float | None = None
    value = start
    while value <= maximum:
        step = step_at(value)
        if step is None:
            break
        steps.append(step)
        print("  " + step.line(), flush=True)
        if step.clean:
            best = value
            value *= 2
        else:
            worst = value
            break
    if best is None and worst is not None:  # the start already fails: go down
        value = start / 2
        while value >= 1:
            step = step_at(value)
            if step is None:
                break
            steps.append(step)
            print("  " + step.line(), flush=True)
            if step.clean:
                best = value
                break
            worst = value
            value /= 2
    while best is not None and worst is not None and (worst - best) / best > resolution:
        value = round((best + worst) / 2, 1)
        step = step_at(value)
        if step is None:
            break
        steps.append(step)
        print("  " + step.line(), flush=True)
        if step.clean:
            best = value
        else:
            worst = value
    return best, steps


def mode_rate(args, workdir: Path) -> tuple[float | None, list[Step]]:
    print(f"== rate: caller -> IVR digit -> queue -> agent -> talk {args.talk_ms} ms -> hang up; "
          f"{args.seconds:g} s of calls per step", flush=True)

    def at(rate: float) -> Step | None:
        calls = max(args.min_calls, int(rate * args.seconds))
        return safe_step(args, workdir / f"rate-{rate:g}", "rate", rate, calls, args.talk_ms)

    best, steps = search(args, workdir, "rate", args.start, args.max, args.resolution, at)
    clean = [s for s in steps if s.clean and s.rate == best]
    if best is not None and clean:
        s = clean[-1]
        print(f"-> highest clean rate {best:g} calls/s: {s.cpu_ms_per_call:.2f} ms CPU per call, "
              f"{s.mb_per_concurrent:.3f} MB RSS per concurrent call (peak {s.peak_concurrent}); "
              f"Asterisk 22: {ASTERISK['rate']:g}/s, {ASTERISK['cpu_ms_per_call']} ms/call -> ratio "
              f"rate {best / ASTERISK['rate']:.2f}x, CPU {s.cpu_ms_per_call / ASTERISK['cpu_ms_per_call']:.2f}x",
              flush=True)
    else:
        print("-> no clean rate found", flush=True)
    return best, steps


def mode_concurrent(args, workdir: Path) -> tuple[float | None, list[Step]]:
    hold_ms = int(args.hold_s * 1000)
    print(f"== concurrent {args.hold_s:g}-second calls: level N = 2N calls at N/{args.hold_s:g} "
          f"calls/s", flush=True)

    def at(level: float) -> Step | None:
        level = int(level)
        rate = max(level / args.hold_s, 0.5)
        return safe_step(args, workdir / f"conc-{level}", "concurrent", rate, 2 * level, hold_ms,
                         agents_count=int(level * 1.25) + 10)

    best, steps = search(args, workdir, "concurrent", args.conc_start, args.conc_max,
                         args.resolution, at)
    clean = [s for s in steps if s.clean and int(s.calls / 2) == int(best or -1)]
    if best is not None and clean:
        s = clean[-1]
        print(f"-> holds {int(best)} concurrent {args.hold_s:g}-s calls (peak seen "
              f"{s.peak_concurrent}), {s.mb_per_concurrent:.3f} MB RSS per concurrent call, "
              f"{s.cpu_ms_per_call:.2f} ms CPU per call; Asterisk 22: {ASTERISK['concurrent']} at "
              f"{ASTERISK['mb_per_call']} MB -> ratio {best / ASTERISK['concurrent']:.2f}x", flush=True)
    else:
        print("-> no clean level found", flush=True)
    return best, steps


# ---------------------------------------------------------------------- profile

def _collapsed_top(path: Path, top: int) -> str:
    """Own and cumulative sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter = Counter()
    cumulative: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[1].rsplit(":", 1)[0] + ")"
                  if " (" in frame else frame for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    lines = [f"py-spy: {total} samples over all the server's threads (idle excluded; "
             "'Runner.run' own time is uvloop's C code, the aiosqlite thread's own time is SQLite)",
             f"-- top {top} by own time --"]
    lines += [f"{own[f] / total * 100:6.2f}%  {f}" for f, _ in own.most_common(top)]
    lines += [f"-- top {top} by cumulative time --"]
    lines += [f"{cumulative[f] / total * 100:6.2f}%  {f}" for f, _ in cumulative.most_common(top)]
    return "\n".join(lines)


def calls_report(stats: pstats.Stats, completed: int, top: int) -> str:
    """Python function calls per completed call, then the top functions by calls and own time."""
    rows = stats.stats  # (file, line, name) -> (primitive calls, calls, tottime, cumtime, callers)
    per_call = max(completed, 1)
    total = sum(row[1] for row in rows.values())
    own_seconds = sum(row[2] for row in rows.values())

    def name(key) -> str:
        path, line, function = key
        return f"{Path(path).name}:{line}({function})" if line else function

    lines = [f"cProfile of the calls only (SIGUSR1 before the first call, SIGUSR2 once all "
             f"ended): {total} function calls, {total / per_call:.0f} per completed call "
             f"({completed}); {own_seconds * 1e3 / per_call:.2f} ms profiled time per call",
             f"-- top {top} by calls (per completed call, own ms per call) --"]
    for key, row in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"{row[1] / per_call:9.1f} {row[2] * 1e3 / per_call:7.3f}  {name(key)}")
    lines.append(f"-- top {top} by own time (per completed call) --")
    for key, row in sorted(rows.items(), key=lambda kv: -kv[1][2])[:top]:
        lines.append(f"{row[1] / per_call:9.1f} {row[2] * 1e3 / per_call:7.3f}  {name(key)}")
    return "\n".join(lines)


def mode_profile(args, workdir: Path, rate: float) -> None:
    seconds = args.profile_seconds
    calls = max(args.min_calls, int(rate * seconds))
    profiler = args.profiler
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if profiler == "py-spy" and py_spy is None:
        print("py-spy not found (pip install py-spy into the venv); using cProfile", flush=True)
        profiler = "cprofile"
    print(f"== profile ({profiler}) at {rate:g} calls/s, {calls} calls, talk {args.talk_ms} ms",
          flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    if profiler == "cprofile":
        out = workdir / "server.prof"
        wrapper = workdir / "python-cprofile"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m cProfile -o {out} \"$@\"\n")
        wrapper.chmod(0o755)
        step = safe_step(args, workdir / "run", "profile", rate, calls, args.talk_ms,
                         python=str(wrapper))
        if step:
            print("  " + step.line() + "  [cProfile overhead included]", flush=True)
        if not out.exists():
            print(f"  no profile written ({out}); the server did not exit cleanly", flush=True)
            return
        for key, title in (("tottime", "own"), ("cumulative", "cumulative")):
            print(f"-- top 25 by {title} time (cProfile; {out}) --", flush=True)
            stats = pstats.Stats(str(out), stream=sys.stdout)
            stats.strip_dirs().sort_stats(key).print_stats(25)
        return
    if profiler == "cprofile-calls":
        out = workdir / "calls.prof"
        wrapper = workdir / "python-profile-window"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO_ROOT / 'bench' / 'profile_window.py'}"
                           f" {out} \"$@\"\n")
        wrapper.chmod(0o755)

        def window(server: PbxServer, _duration: float):
            os.kill(server.pid, signal.SIGUSR1)
            return lambda: os.kill(server.pid, signal.SIGUSR2)

        step = safe_step(args, workdir / "run", "profile", rate, calls, args.talk_ms,
                         python=str(wrapper), during=window)
        if step:
            print("  " + step.line() + "  [cProfile overhead included]", flush=True)
        if not wait_until(out.exists, 10) or step is None:
            print(f"  no profile written ({out})", flush=True)
            return
        print(calls_report(pstats.Stats(str(out)), step.completed, 40), flush=True)
        return

    raw = workdir / "pyspy.txt"
    holder: dict[str, subprocess.Popen] = {}

    def during(server: PbxServer, duration: float) -> None:
        holder["spy"] = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(duration) + 2),
             "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "pyspy.log", "wb"),
            start_new_session=True)

    step = safe_step(args, workdir / "run", "profile", rate, calls, args.talk_ms, during=during)
    spy = holder.get("spy")
    if spy is not None:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            pass
        stop_process_group(spy)
    if step:
        print("  " + step.line(), flush=True)
    if raw.exists():
        print(_collapsed_top(raw, 25), flush=True)
    else:
        print(f"  py-spy wrote nothing; see {workdir / 'pyspy.log'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["all", "rate", "concurrent", "profile"], default="all")
    parser.add_argument("--start", type=float, default=10, help="first rate (calls/s)")
    parser.add_argument("--max", type=float, default=640, help="highest rate tried")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of calls per rate step")
    parser.add_argument("--min-calls", type=int, default=20)
    parser.add_argument("--talk-ms", type=int, default=2000, help="agent talk time in rate mode")
    parser.add_argument("--resolution", type=float, default=0.1,
                        help="stop bisecting when (fail - clean) / clean is below this")
    parser.add_argument("--agent-procs", type=int, default=2, help="SIPp UAS processes for agents")
    parser.add_argument("--conc-start", type=float, default=50, help="first concurrency level")
    parser.add_argument("--conc-max", type=float, default=3200)
    parser.add_argument("--hold-s", type=float, default=10, help="call length in concurrent mode")
    parser.add_argument("--profile-rate", type=float, default=None,
                        help="rate for the profile (default: half the clean rate, else 10)")
    parser.add_argument("--profile-seconds", type=float, default=20)
    parser.add_argument("--profiler", choices=["py-spy", "cprofile", "cprofile-calls"],
                        default="py-spy",
                        help="cprofile: the whole server process; cprofile-calls: only while "
                             "the calls run, and the function calls per completed call")
    parser.add_argument("--sip-trace", action="store_true",
                        help="run the server with --sip-trace and info logs (to diagnose a failure)")
    parser.add_argument("--media-engine", choices=["embedded", "rtpengine"], default="embedded",
                        help="rtpengine: a private rtpengine (userspace) per step carries the media; "
                             "its CPU is counted with the server's")
    parser.add_argument("--rtpengine-threads", type=int, default=1,
                        help="rtpengine's --num-threads (forwarding threads)")
    parser.add_argument("--json", type=Path, help="write every step here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-queue-flow-"))
    print(f"work folder: {workdir}  (CPUs: {os.cpu_count()})", flush=True)
    results: dict[str, object] = {"reference_asterisk_22": ASTERISK}
    best_rate = None
    if args.mode in ("all", "rate"):
        best_rate, steps = mode_rate(args, workdir / "rate")
        results["rate"] = {"best": best_rate, "steps": [asdict(s) for s in steps]}
    if args.mode in ("all", "concurrent"):
        best_level, steps = mode_concurrent(args, workdir / "concurrent")
        results["concurrent"] = {"best": best_level, "steps": [asdict(s) for s in steps]}
    if args.mode in ("all", "profile"):
        rate = args.profile_rate or (max(1.0, round(best_rate / 2)) if best_rate else 10.0)
        mode_profile(args, workdir / "profile", rate)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"steps written to {args.json}")
    print(f"work folder (SIPp stats, errors, server logs per step): {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
