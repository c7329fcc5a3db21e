"""How fast one site calls customers back: N callback requests through the API, dialled
through a SIP trunk (SIPp's built-in `uas`, which answers every call), with `--tries` at once.

Prints the time to accept the N requests over HTTP, the time until every one was
answered, the callbacks completed per second and the server's CPU per callback (its
POST, the claim, INVITE, ACK, BYE, the outcome written to the store).

    .venv/bin/python bench/bench_callbacks.py --requests 200 --tries 8
    .venv/bin/python bench/bench_callbacks.py --store postgresql+asyncpg://user@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from integration.server_fixture import PbxServer, default_config_yaml, start_pbx  # noqa: E402
from peers import sipp  # noqa: E402
from peers.procs import LOOPBACK  # noqa: E402


def _post(server: PbxServer, body: dict) -> int:
    request = urllib.request.Request(f"{server.http_url}/api/v1/callbacks", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status


def run(requests: int, tries: int, store: str | None) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    trunk = sipp.start(None, scenario="uas", workdir=workdir / "trunk", calls=requests)
    sections: dict = {
        "trunks": [{"name": "carrier", "address": f"{LOOPBACK}:{trunk.port}",
                    "caller_id": "+34910000000"}],
        "callbacks": {"concurrent_tries": tries},  # rounds every second, as by default
    }
    if store is not None:
        sections["store"] = {"url": store}
    server = start_pbx(workdir / "pbx", config_yaml=default_config_yaml(**sections),
                       extra_args=("--log-level", "warning"))
    try:
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        for n in range(requests):
            assert _post(server, {"number": f"+3460{n:07d}", "queue": "billing"}) == 201
        accepted = time.monotonic() - started
        deadline = time.monotonic() + 60 + requests
        connected = 0.0
        while time.monotonic() < deadline:
            connected = server.metric("centralita_callbacks_connected_total", 0.0, queue="billing") or 0.0
            if connected >= requests:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu = server.cpu_seconds() - cpu_before
        failed = server.metric("centralita_callback_attempts_failed_total", 0.0) or 0.0
    finally:
        server.stop()
        trunk.stop()
    return {"requests": requests, "tries_at_once": tries, "accept_seconds": round(accepted, 3),
            "all_answered_seconds": round(elapsed, 3), "connected": connected, "failed": failed,
            "callbacks_per_second": round(connected / elapsed, 1) if elapsed else 0.0,
            "server_cpu_ms_per_callback_post_included": round(1000 * cpu / max(connected, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tries", type=int, default=8, help="callbacks dialled at once")
    parser.add_argument("--store", help="store URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    print(json.dumps(run(args.requests, args.tries, args.store), indent=2))


if __name__ == "__main__":
    main()
