"""Cross-site reservations through a real owning site: how long madrid waits for bogota's
router to reserve one of its agents, and what that costs bogota's process.

Starts one real `pbx serve --site bogota` on loopback (the demo contact center, a
PostgreSQL database created for the run and dropped afterwards, the Mosquitto at
``--url``); bogota's agent 1006 registers with it (a raw UDP phone). Madrid is the
site bus a madrid server runs (``MqttSiteBus``), in this process. ``--count`` times,
after ``--warm-up`` untimed ones: madrid asks bogota to reserve an agent for a billing
call (timed: request sent until the answer is back), then cancels it and waits until
bogota's agent is available again on the bus (so every request finds the agent free).
Reports p50/p99/max of the reservation round trip and bogota's CPU (user + system,
from /proc) per reservation and cancel.

Run: ``.venv/bin/python bench/bench_site_reservations.py [--url mqtt://127.0.0.1:1883]
[--postgres postgresql://postgres@127.0.0.1:5432] [--count 500] [--warm-up 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_sites import create_database, describe, drop_database, start_site  # noqa: E402

from integration.mosquitto_fixture import clear_retained  # noqa: E402
from integration.server_fixture import default_config_yaml  # noqa: E402
from pbx.bus import MqttSiteBus, Topics  # noqa: E402
from pbx.bus.codec import AgentPresence, CallerContext  # noqa: E402
from peers import raw  # noqa: E402

AGENT, PASSWORD = "1006", "demo1006"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ask(args: argparse.Namespace, config: str, prefix: str, bogota_pid: int) -> None:
    agent_sites = {agent["extension"]: agent["site"] for agent in yaml.safe_load(config)["agents"]}
    madrid = MqttSiteBus(args.url, "madrid", ("madrid", "bogota"), agent_sites,
                         topics=Topics(prefix), heartbeat_interval=1.0)
    await madrid.start()
    caller = CallerContext(("language", "menu", "billing"), "es", 2, time.time())

    async def agent_free() -> None:
        deadline = time.monotonic() + 10
        while True:
            state = madrid.remote_agents.get(AGENT)
            if state is not None and state.presence is AgentPresence.AVAILABLE:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {AGENT} not available at bogota: {state}")
            await asyncio.sleep(0.001)

    try:
        deadline = time.monotonic() + 10
        while not madrid.health.is_up("bogota"):
            if time.monotonic() > deadline:
                raise TimeoutError("bogota not up")
            await asyncio.sleep(0.05)
        await agent_free()
        trips: list[float] = []
        cpu_before = 0.0
        for index in range(args.warm_up + args.count):
            if index == args.warm_up:
                cpu_before = cpu_seconds(bogota_pid)
            started = time.perf_counter()
            result = await madrid.reserve("bogota", f"bench-{index}", "billing", caller, 5.0)
            elapsed = time.perf_counter() - started
            if not result.reserved:
                raise RuntimeError(f"reservation {index} not made: {result}")
            if index >= args.warm_up:
                trips.append(elapsed)
            madrid.cancel_reservation("bogota", result.reservation_id, "bench")
            await agent_free()
        cpu = cpu_seconds(bogota_pid) - cpu_before
        print(f"reservation madrid -> bogota's router -> madrid: {describe(trips)}")
        print(f"bogota CPU per reservation + cancel (and the agent's two state "
              f"publications): {cpu / args.count * 1000:.2f} ms")
    finally:
        await madrid.close()


def run(args: argparse.Namespace, workdir: Path, database_url: str, prefix: str) -> None:
    config = default_config_yaml(
        bus={"url": args.url, "topic_prefix": prefix, "heartbeat_interval": 1},
        store={"url": database_url})
    bogota = start_site(workdir, config, "bogota")
    try:
        phone = raw.UdpPeer((bogota.host, bogota.sip_port))
        result = raw.register(phone, AGENT, PASSWORD, expires=3600,
                              contact=f"<sip:{AGENT}@{phone.local[0]}:{phone.local[1]}>")
        assert result.final is not None and result.final.status == 200
        asyncio.run(ask(args, config, prefix, bogota.process.pid))
        phone.close()
    finally:
        bogota.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="the broker")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created and dropped)")
    parser.add_argument("--count", type=int, default=500, help="timed reservations")
    parser.add_argument("--warm-up", type=int, default=50, help="untimed reservations first")
    args = parser.parse_args()
    name = asyncio.run(create_database(args.postgres))
    url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    prefix = f"bench-{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-reservations-") as workdir:
            run(args, Path(workdir), url, prefix)
    finally:
        asyncio.run(drop_database(args.postgres, name))
        asyncio.run(clear_retained(args.url, prefix))


if __name__ == "__main__":
    main()
