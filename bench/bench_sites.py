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
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import asyncpg  # noqa: E402

from integration.mosquitto_fixture import clear_retained  # noqa: E402
from integration.server_fixture import PbxServer, default_config_yaml, start_pbx  # noqa: E402
from peers import raw  # noqa: E402

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


def until(predicate, timeout: float) -> float:
    """Poll back to back; the monotonic time the predicate first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
    raise TimeoutError("not seen in time")


def start_site(workdir: Path, config: str, site: str) -> PbxServer:
    return start_pbx(workdir / f"{site}-{secrets.token_hex(3)}", config_yaml=config,
                     extra_args=("--site", site, "--log-level", "warning"))


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})")


async def create_database(dsn: str) -> str:
    name = f"centralita_bench_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(dsn: str, name: str) -> None:
    connection = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def run(args: argparse.Namespace, workdir: Path, database_url: str, prefix: str) -> None:
    config = default_config_yaml(
        bus={"url": args.url, "topic_prefix": prefix, "heartbeat_interval": 1},
        store={"url": database_url})
    madrid = start_site(workdir, config, "madrid")
    bogota = start_site(workdir, config, "bogota")
    try:
        until(lambda: madrid.healthz()["bus"]["sites"]["bogota"]["up"], 10)
        phone = raw.UdpPeer((bogota.host, bogota.sip_port))
        result = raw.register(phone, AGENT, PASSWORD, expires=3600,
                              contact=f"<sip:{AGENT}@{phone.local[0]}:{phone.local[1]}>")
        assert result.final is not None and result.final.status == 200
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
            until(lambda: madrid.healthz()["bus"]["sites"]["bogota"]["up"], 15)
            killed = time.monotonic()
            bogota.process.kill()
            deaths.append(until(lambda: not madrid.healthz()["bus"]["sites"]["bogota"]["up"], 10)
                          - killed)
            bogota.stop()
            bogota = start_site(workdir, config, "bogota")
        print(f"bogota killed (SIGKILL) -> down at madrid: {describe(deaths)}")
    finally:
        bogota.stop()
        madrid.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="the broker")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created and dropped)")
    parser.add_argument("--count", type=int, default=200, help="break/available round trips")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILL repetitions")
    args = parser.parse_args()
    name = asyncio.run(create_database(args.postgres))
    url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    prefix = f"bench-{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sites-") as workdir:
            run(args, Path(workdir), url, prefix)
    finally:
        asyncio.run(drop_database(args.postgres, name))
        asyncio.run(clear_retained(args.url, prefix))  # the broker keeps nothing of the run


if __name__ == "__main__":
    main()
