"""Two sites of one contact center: how fast one site's agent state and death reach the other.

Starts two real `pbx serve --site` processes (madrid, bogota) on loopback with the demo
contact center, one PostgreSQL database (created for the run, dropped afterwards) and the
Mosquitto at ``--url``. Bogota's agent 1006 registers with bogota (a raw UDP phone); then:

* state propagation: ``--count`` times, the agent goes on break, then available again,
  through bogota's API; each change is timed from just before bogota's API call to the
  moment madrid's API (``GET /api/v1/agents/1006``, ``remote.presence``, polled
  back to back) shows it. p50/p99/max; the figure includes one HTTP request at
  bogota and madrid's polling granularity (one HTTP round trip, about 1 ms).
* death: ``--kills`` times, bogota is killed with SIGKILL and madrid's ``/healthz`` polled
  until bogota is down (its last will); bogota is started again between repetitions.

Run: ``.venv/bin/python bench/bench_sites.py [--url mqtt://127.0.0.1:1883]
[--postgres postgresql://postgres@127.0.0.1:5432] [--count 200] [--kills 5]``.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from site_bench import PbxServer, describe, main, register_phone, site_up, start_site, until

AGENT, PASSWORD = "1006", "demo1006"


def post(server: PbxServer, path: str, body: dict) -> None:
    request = urllib.request.Request(server.http_url + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        reply.read()


def remote_presence(server: PbxServer) -> str | None:
    status, body = server.http_get(f"/api/v1/agents/{AGENT}")
    remote = json.loads(body)["remote"] if status == 200 else None
    return None if remote is None else remote["presence"]


def run(args: argparse.Namespace, workdir: Path, config: str) -> None:
    madrid = start_site(workdir, config, "madrid")
    bogota = start_site(workdir, config, "bogota")
    try:
        until(lambda: site_up(madrid, "bogota"), 10)
        phone = register_phone(bogota, AGENT, PASSWORD)
        until(lambda: remote_presence(madrid) == "available", 10)
        changes: list[float] = []
        for _ in range(args.count):
            for path, body, presence in ((f"/api/v1/agents/{AGENT}/break", {"reason": "bench"}, "break"),
                                         (f"/api/v1/agents/{AGENT}/available", {}, "available")):
                started = time.monotonic()
                post(bogota, path, body)
                changes.append(until(lambda presence=presence: remote_presence(madrid) == presence, 5)
                               - started)
        print(f"agent state, bogota's API -> madrid's API: {describe(changes)}")
        phone.close()

        deaths: list[float] = []
        for _ in range(args.kills):
            until(lambda: site_up(madrid, "bogota"), 15)
            killed = time.monotonic()
            bogota.process.kill()
            deaths.append(until(lambda: not site_up(madrid, "bogota"), 10) - killed)
            bogota.stop()
            bogota = start_site(workdir, config, "bogota")
        print(f"bogota killed (SIGKILL) -> down at madrid: {describe(deaths)}")
    finally:
        bogota.stop()
        madrid.stop()


if __name__ == "__main__":
    main(__doc__, run, count=(200, "break/available round trips"), kills=(5, "SIGKILL repetitions"))
