"""What the site benches share (``bench_sites.py``, ``bench_site_reservations.py``,
``bench_site_calls.py``): their command line (``--url`` the broker, ``--postgres`` the
server a database is created on for the run and dropped after), real ``pbx serve --site``
processes on loopback configured for that broker and database, a registered raw UDP
phone, polling, CPU from /proc, and how figures are printed.

A bench's ``main`` is ``site_bench.main(__doc__, run, count=..., ...)``; its ``run(args,
workdir, config)`` gets the demo contact center's YAML for the run's broker, topic prefix
and database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import asyncpg  # noqa: E402

from integration.mosquitto_fixture import clear_retained  # noqa: E402
from integration.server_fixture import PbxServer, default_config_yaml, start_pbx  # noqa: E402
from peers import raw  # noqa: E402

Run = Callable[[argparse.Namespace, Path, str], None]


def start_site(workdir: Path, config: str, site: str) -> PbxServer:
    return start_pbx(
        workdir / f"{site}-{secrets.token_hex(3)}",
        config_yaml=config,
        extra_args=("--site", site, "--log-level", "warning"),
    )


def register_phone(server: PbxServer, user: str, password: str) -> raw.UdpPeer:
    """A raw UDP phone registered as ``user`` with ``server`` (for an hour)."""
    phone = raw.UdpPeer((server.host, server.sip_port))
    result = raw.register(
        phone,
        user,
        password,
        expires=3600,
        contact=f"<sip:{user}@{phone.local[0]}:{phone.local[1]}>",
    )
    assert result.final is not None and result.final.status == 200, result
    return phone


def until(predicate: Callable[[], object], timeout: float) -> float:
    """Poll back to back; the monotonic time the predicate first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
    raise TimeoutError("not seen in time")


def site_up(server: PbxServer, site: str) -> bool:
    return bool(server.healthz()["bus"]["sites"][site]["up"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})"
    )


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


def main(doc: str, run: Run, **counts: tuple[int, str]) -> None:
    """Parse the command line (``counts``: option name -> (default, help)), then give
    ``run`` a work directory and the demo configuration on a database of its own and a topic
    prefix of its own; the database is dropped and the broker's retained messages cleared
    afterwards, whatever happens."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="the broker")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (a database is created and dropped)",
    )
    for option, (default, text) in counts.items():
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=default, help=text)
    args = parser.parse_args()
    name = asyncio.run(create_database(args.postgres))
    url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    prefix = f"bench-{secrets.token_hex(4)}"
    config = default_config_yaml(
        bus={"url": args.url, "topic_prefix": prefix, "heartbeat_interval": 1}, store={"url": url}
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sites-") as workdir:
            run(args, Path(workdir), config)
    finally:
        asyncio.run(drop_database(args.postgres, name))
        asyncio.run(clear_retained(args.url, prefix))  # the broker keeps nothing of the run
