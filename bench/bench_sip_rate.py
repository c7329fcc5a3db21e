"""Highest SIP call rate the server carries with zero failed calls, and its CPU per call.

Starts `pbx serve` (embedded demo config, uvloop, warning-level logs) on free loopback
ports, then runs SIPp's built-in ``uac`` against extension 101 (the greeting application:
INVITE, 100/180, 200 with SDP, ACK, RTP greeting for ``--hold-ms``, BYE, 200) in steps of
increasing rate, ``--seconds`` worth of calls per step. It doubles the rate until a step
fails, then bisects between the last clean and the first failing rate.

For every step it prints the calls, failures, the server's CPU seconds per call (utime +
stime deltas from /proc/PID/stat) and its RSS. Run:

    .venv/bin/python bench/bench_sip_rate.py [--start 50] [--max 3200] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from integration.server_fixture import PbxServer, ServerStartError, start_pbx  # noqa: E402
from peers import sipp  # noqa: E402


@dataclass
class Step:
    rate: float
    calls: int
    successful: int
    failed: int
    returncode: int
    cpu_seconds: float
    cpu_ms_per_call: float
    rss_mb: float
    wall_seconds: float

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful == self.calls


def drain(server: PbxServer, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if server.metric("centralita_sip_dialogs_active", 0.0) == 0.0:
                return True
        except Exception:
            pass
        time.sleep(0.25)
    return False


def run_step(server: PbxServer, rate: float, args: argparse.Namespace, workdir: Path) -> Step:
    calls = max(args.min_calls, int(rate * args.seconds))
    before = server.cpu_seconds()
    started = time.monotonic()
    result = sipp.run(
        server.sip_address,
        scenario="uac",
        service="101",  # the greeting: the SIP core's own cost, without the IVR
        calls=calls,
        rate=rate,
        limit=max(50, int(rate * (args.hold_ms / 1000 + 2) * 2)),
        duration_ms=args.hold_ms,
        transport=args.transport,
        timeout=calls / rate + 60,
        workdir=workdir / f"rate-{rate:g}",
    )
    wall = time.monotonic() - started
    drain(server)
    cpu = server.cpu_seconds() - before
    done = max(result.successful, 1)
    return Step(
        rate=rate,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        returncode=result.returncode,
        cpu_seconds=round(cpu, 3),
        cpu_ms_per_call=round(cpu * 1000 / done, 3),
        rss_mb=round(server.rss_bytes() / 2**20, 1),
        wall_seconds=round(wall, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, default=50, help="first rate (calls/s)")
    parser.add_argument("--max", type=float, default=3200, help="highest rate tried")
    parser.add_argument("--seconds", type=float, default=6, help="seconds of calls per step")
    parser.add_argument("--min-calls", type=int, default=200, help="at least this many per step")
    parser.add_argument("--hold-ms", type=int, default=1000, help="call length (SIPp -d)")
    parser.add_argument("--transport", default="u1", help="SIPp -t: u1 (UDP) or t1 (TCP)")
    parser.add_argument(
        "--resolution",
        type=float,
        default=0.1,
        help="stop bisecting when the gap is below this fraction",
    )
    parser.add_argument("--json", type=Path, help="also write the steps here as JSON")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-sip-rate-"))
    steps: list[Step] = []
    log_level = ("--log-level", "warning")
    try:
        server = start_pbx(workdir / "server", extra_args=log_level)
    except ServerStartError as error:
        print(f"the server does not start: {error}")
        return 2

    def measure(rate: float) -> Step:
        nonlocal server
        step = run_step(server, rate, args, workdir)
        steps.append(step)
        print(
            f"rate {step.rate:8.1f}/s  calls {step.calls:6d}  ok {step.successful:6d}  "
            f"failed {step.failed:5d}  exit {step.returncode:3d}  "
            f"cpu {step.cpu_ms_per_call:7.3f} ms/call  rss {step.rss_mb:6.1f} MB  "
            f"({step.wall_seconds:.0f} s)  {'clean' if step.clean else 'FAILED'}",
            flush=True,
        )
        if not server.alive():
            print(
                f"  the server exited ({server.process.returncode}) during this step; "
                f"log tail:\n{server.log_tail(15)}",
                flush=True,
            )
        if not step.clean or not server.alive():
            # Start the next step from a fresh server: a failed step may leave calls behind.
            server.stop()
            server = start_pbx(workdir / f"server-after-{rate:g}", extra_args=log_level)
        return step

    print(
        f"server pid {server.pid} at {server.sip_address}; SIPp uac -> 100, "
        f"-d {args.hold_ms} ms, -t {args.transport}; work dir {workdir}",
        flush=True,
    )
    good, bad = 0.0, None
    try:
        rate = args.start
        while rate <= args.max:
            if measure(rate).clean:
                good = rate
                rate *= 2
            else:
                bad = rate
                break
        if bad is not None:
            while good and (bad - good) / bad > args.resolution:
                middle = round((good + bad) / 2)
                if measure(middle).clean:
                    good = middle
                else:
                    bad = middle
    except ServerStartError as error:
        print(f"could not restart the server after a failed step: {error}")
    finally:
        server.stop()

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(s) for s in steps], indent=2))
    best = max((s for s in steps if s.clean), key=lambda s: s.rate, default=None)
    print()
    if best is None:
        print(f"no clean step: even {args.start:g} calls/s failed")
        return 1
    ceiling = f"(first failing rate {bad:g}/s)" if bad else f"(never failed up to {args.max:g})"
    print(f"highest rate with zero failed calls: {best.rate:g} calls/s {ceiling}")
    print(
        f"server CPU per call at that rate: {best.cpu_ms_per_call:.3f} ms "
        f"(reference: Asterisk ~10 ms per IVR-to-agent call on this machine)"
    )
    print(f"server RSS after that step: {best.rss_mb:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
