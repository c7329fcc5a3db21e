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
import time
from pathlib import Path

import yaml
from site_bench import cpu_seconds, describe, main, register_phone, start_site

from pbx.bus import MqttSiteBus, Topics
from pbx.bus.codec import AgentPresence, CallerContext

AGENT, PASSWORD = "1006", "demo1006"


async def ask(args: argparse.Namespace, config: str, bogota_pid: int) -> None:
    document = yaml.safe_load(config)
    agent_sites = {agent["extension"]: agent["site"] for agent in document["agents"]}
    madrid = MqttSiteBus(args.url, "madrid", ("madrid", "bogota"), agent_sites,
                         topics=Topics(document["bus"]["topic_prefix"]), heartbeat_interval=1.0)
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


def run(args: argparse.Namespace, workdir: Path, config_text: str) -> None:
    document = yaml.safe_load(config_text)
    billing = next(q for q in document["queues"] if q["name"] == "billing")
    billing["sites"] = ["bogota"]  # bogota's router decides only for queues that allow it
    config = yaml.safe_dump(document, sort_keys=False)
    bogota = start_site(workdir, config, "bogota")
    try:
        phone = register_phone(bogota, AGENT, PASSWORD)
        asyncio.run(ask(args, config, bogota.process.pid))
        phone.close()
    finally:
        bogota.stop()


if __name__ == "__main__":
    main(__doc__, run, count=(500, "timed reservations"), warm_up=(50, "untimed reservations first"))
