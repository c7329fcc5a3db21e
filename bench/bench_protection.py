"""What the per-source protection costs: call rate and server CPU per call, on and off.

Starts `pbx serve` three times on free loopback ports, once per mode:

* ``off``: ``sip.protection.enabled: false``;
* ``trusted``: the default, loopback trusted (what the other benches and the demo run):
  each message costs a lookup of its source, no token bucket;
* ``limited``: no trusted network and limits far above the offered load, so every message
  goes through both token buckets (the cost an internet-facing server pays).

In each mode SIPp's built-in ``uac`` calls extension 101 (the greeting: INVITE, 100/180, 200,
ACK, RTP for ``--hold-ms``, BYE, 200) at each of ``--rates`` for ``--seconds``; the script
prints calls, failures and the server's CPU ms per call (utime + stime from /proc). It
also times the guard alone in-process (µs per message), which the call figures on a shared
machine cannot resolve. Run:

    .venv/bin/python bench/bench_protection.py [--rates 100 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from integration.server_fixture import PbxServer, default_config_yaml, start_pbx  # noqa: E402
from peers import sipp  # noqa: E402

MODES: dict[str, dict[str, object]] = {
    "off": {"enabled": False},
    "trusted": {},
    "limited": {"trusted": [], "requests_per_second": 1_000_000, "request_burst": 1_000_000,
                "invites_per_second": 1_000_000, "invite_burst": 1_000_000},
}


@dataclass
class Row:
    mode: str
    rate: float
    calls: int
    successful: int
    failed: int
    cpu_ms_per_call: float
    throttled: float


def _drain(server: PbxServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.metric("centralita_sip_dialogs_active", 0.0) != 0.0:
        time.sleep(0.25)


def run(mode: str, rate: float, server: PbxServer, args: argparse.Namespace, workdir: Path) -> Row:
    calls = int(rate * args.seconds)
    before = server.cpu_seconds()
    result = sipp.run(server.sip_address, scenario="uac", service="101", calls=calls, rate=rate,
                      limit=max(50, int(rate * (args.hold_ms / 1000 + 2) * 2)),
                      duration_ms=args.hold_ms, timeout=calls / rate + 60,
                      workdir=workdir / f"{mode}-{rate:g}")
    _drain(server)
    cpu = server.cpu_seconds() - before
    return Row(mode, rate, calls, result.successful, result.failed,
               round(cpu * 1000 / max(result.successful, 1), 3),
               server.metric("centralita_sip_messages_throttled_total", 0.0) or 0.0)


def time_guard(messages: int = 200_000) -> dict[str, float]:
    """Microseconds per SourceGuard.admit() on the trusted and the limited path."""
    import timeit

    from pbx.configuration.protection import ProtectionSettings
    from pbx.edge.protection import SourceGuard

    results = {}
    for mode, protection in MODES.items():
        settings = ProtectionSettings(**{k: tuple(v) if isinstance(v, list) else v  # type: ignore[arg-type]
                                         for k, v in protection.items()})
        guard = SourceGuard(settings)
        sources = [(f"127.0.0.{i % 50 + 1}", 5060) for i in range(1000)]
        clock = iter(range(10**9))

        def admit_all(guard: SourceGuard = guard, sources: list[tuple[str, int]] = sources,
                      clock: Iterator[int] = clock) -> None:
            now = next(clock) * 0.001
            for source in sources:
                guard.admit(source, False, now)

        seconds = timeit.timeit(admit_all, number=messages // len(sources))
        results[mode] = round(seconds / messages * 1e6, 3)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 300])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--hold-ms", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for mode, micros in time_guard().items():
        print(f"guard alone, {mode:8s}: {micros:.3f} µs per message", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-protection-"))
    print(f"work dir {workdir}", flush=True)
    rows: list[Row] = []
    for mode, protection in MODES.items():
        config = default_config_yaml(sip={"protection": protection})
        server = start_pbx(workdir / f"server-{mode}", config_yaml=config,
                           extra_args=("--log-level", "warning"))
        try:
            for rate in args.rates:
                row = run(mode, rate, server, args, workdir)
                rows.append(row)
                print(f"{mode:8s} rate {row.rate:6.0f}/s  calls {row.calls:5d}  ok {row.successful:5d}  "
                      f"failed {row.failed:4d}  cpu {row.cpu_ms_per_call:6.3f} ms/call  "
                      f"throttled {row.throttled:.0f}", flush=True)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.failed == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
