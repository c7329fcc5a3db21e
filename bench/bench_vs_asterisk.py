"""Centralita and Asterisk 22 side by side on the contact-center flow, in one sitting.

The same SIPp callers (``bench/scenarios/caller_ivr.xml``: INVITE 100, RFC 4733 "1", A-law,
wait for the BYE) and the same SIPp agents (register with digest, answer, talk, hang up)
against each server in turn, alternating which goes first at every rate, so both see the
same machine. Asterisk runs ``bench/asterisk/`` (PJSIP, Background + WaitExten, app_queue
``leastrecent``, no wrap-up); Centralita runs ``bench_queue_flow.py``'s server (the bench flow,
queue ``bench``, longest idle). A step is clean when every call completed on both SIPp sides
and no agent was offered two calls at once. CPU per call is the server process's own
(utime + stime from /proc, the drain included); SIPp runs on the same machine.

    .venv/bin/python bench/bench_vs_asterisk.py --asterisk /opt/asterisk/sbin/asterisk \\
        --rates 50,100,150,200,300 --calls 2000

Asterisk is not in Debian 12: bench/README.md says how to build 22.10.1 from source.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_queue_flow as flow  # noqa: E402
from asterisk_server import AsteriskNotFound, AsteriskServer, find_asterisk  # noqa: E402

from peers.procs import free_port  # noqa: E402


def start_asterisk(binary: Path, folder: Path, accounts) -> AsteriskServer:
    folder.mkdir(parents=True, exist_ok=True)
    return AsteriskServer(binary, folder, accounts, sip_port=free_port(udp=True, tcp=True))


def step(args, workdir: Path, server: str, rate: float, binary: Path) -> flow.Step | None:
    folder = workdir / f"{server}-{rate:g}"
    reference = partial(start_asterisk, binary) if server == "asterisk" else None
    try:
        return flow.run_step(args, folder, "rate", rate, args.calls, args.talk_ms, reference=reference)
    except (flow.ServerStartError, flow.sa.AgentSetupError, OSError, ValueError, RuntimeError) as error:
        print(f"  {server} at {rate:g}/s could not run: {error}", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asterisk", help="the asterisk binary (default: $ASTERISK or PATH)")
    parser.add_argument("--rates", default="50,100,150,200,300",
                        help="calls/s to try, comma-separated")
    parser.add_argument("--calls", type=int, default=2000, help="calls per step")
    parser.add_argument("--talk-ms", type=int, default=2000)
    parser.add_argument("--agent-procs", type=int, default=2)
    parser.add_argument("--only", choices=["centralita", "asterisk"], help="run one server")
    parser.add_argument("--json", type=Path, help="write every step here")
    args = parser.parse_args(argv)
    args.sip_trace = False
    try:
        binary = find_asterisk(args.asterisk) if args.only != "centralita" else Path("asterisk")
    except AsteriskNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    servers = [args.only] if args.only else ["centralita", "asterisk"]
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-asterisk-") as tmp:
        workdir = Path(tmp)
        for index, rate in enumerate(rates):
            order = servers if index % 2 == 0 else servers[::-1]
            for server in order:
                result = step(args, workdir, server, rate, binary)
                if result is None:
                    continue
                print(f"  {server:10s} " + result.line(), flush=True)
                results.append({"server": server, **asdict(result), "clean": result.clean})
    print("\n| rate | " + " | ".join(f"{s}: clean, CPU ms/call" for s in servers) + " |")
    print("|---|" + "---|" * len(servers))
    for rate in rates:
        cells = []
        for server in servers:
            found = [r for r in results if r["server"] == server and r["rate"] == rate]
            cells.append(", ".join(f"{'clean' if r['clean'] else 'FAILED'} {r['cpu_ms_per_call']:.2f}"
                                   for r in found) or "not run")
        print(f"| {rate:g} | " + " | ".join(cells) + " |")
    for server in servers:
        clean = [r["rate"] for r in results if r["server"] == server and r["clean"]]
        print(f"{server}: highest clean rate {max(clean) if clean else 'none'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
