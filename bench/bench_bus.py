"""Cross-site reservation round trip over the site bus: latency p50/p99 and CPU.

Site ``madrid`` (this process) asks site ``bogota`` (a separate process, its own
event loop, like a second server) to reserve an agent, over a real Mosquitto:
request published, bogota's decision callback answers, the response comes back.
Each reservation is released afterwards (a cancel), as a router would after the call.
The same round trip over the in-process bus (both sites in this process, no
broker) is printed beside it as the floor: what the bus logic costs without MQTT.

Run: ``.venv/bin/python bench/bench_bus.py [--url mqtt://127.0.0.1:1883] [--count 2000]
[--concurrency 1]``. Without a broker answering at ``--url`` a private ``mosquitto``
is started on a free port and stopped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt  # noqa: E402

from pbx.bus import (  # noqa: E402
    CallerContext,
    InProcessBroker,
    InProcessSiteBus,
    MqttSiteBus,
    ReservationCancel,
    ReservationDecision,
    ReservationRequest,
    Topics,
)
from pbx.bus.mqtt import parse_url  # noqa: E402
from pbx.bus.site_bus import BusCore  # noqa: E402

SITES = ["madrid", "bogota"]
AGENTS = {"1001": "madrid", **{f"2{n:03d}": "bogota" for n in range(1, 65)}}
CALLER = CallerContext(("language", "menu", "billing"), "es", 5, 1_790_000_000.0)


class Owner:
    """bogota's side: reserve a free agent, release it on cancel (a router's minimum)."""

    def __init__(self) -> None:
        self.free = [agent for agent, site in AGENTS.items() if site == "bogota"]
        self.held: dict[str, str] = {}

    def decide(self, request: ReservationRequest) -> ReservationDecision:
        if not self.free:
            return ReservationDecision(None, "no agent available")
        agent = self.free.pop()
        self.held[request.reservation_id] = agent
        return ReservationDecision(agent)

    def release(self, cancel: ReservationCancel) -> None:
        agent = self.held.pop(cancel.reservation_id, None)
        if agent is not None:
            self.free.append(agent)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _serve_bogota(url: str, prefix: str, ready: multiprocessing.synchronize.Event,
                        stop: multiprocessing.synchronize.Event, cpu: multiprocessing.Queue
                        ) -> None:
    owner = Owner()
    bus = MqttSiteBus(url, "bogota", SITES, AGENTS, topics=Topics(prefix))
    bus.serve_reservations(owner.decide, owner.release)
    await bus.start()
    await bus.wait_connected(10)
    ready.set()
    started = cpu_seconds()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    cpu.put(cpu_seconds() - started)
    await bus.close()


def bogota_process(url: str, prefix: str, ready: multiprocessing.synchronize.Event,
                   stop: multiprocessing.synchronize.Event, cpu: multiprocessing.Queue) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_bogota(url, prefix, ready, stop, cpu))


async def round_trips(madrid: BusCore, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []

    async def one(index: int) -> None:
        started = time.perf_counter()
        result = await madrid.reserve("bogota", f"call-{index}", "billing", CALLER, 2.0)
        latencies.append(time.perf_counter() - started)
        if not result.reserved:
            raise RuntimeError(f"reservation {index}: {result}")
        madrid.cancel_reservation("bogota", result.reservation_id, "call ended")

    async def worker(offset: int) -> None:
        for index in range(offset, count, concurrency):
            await one(index)

    await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return latencies


def summary(label: str, latencies: list[float], cpu: float | None = None,
            peer_cpu: float | None = None) -> str:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    text = (f"{label:<34} n={len(ordered):>6}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
            f"mean {statistics.fmean(ordered) * 1000:7.3f} ms  max {ordered[-1] * 1000:7.2f} ms")
    if cpu is not None:
        text += f"  asker CPU {cpu / len(ordered) * 1e6:6.0f} us/res"
    if peer_cpu is not None:
        text += f"  owner CPU {peer_cpu / len(ordered) * 1e6:6.0f} us/res"
    return text


def broker_answers(url: str) -> bool:
    host, port = parse_url(url)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


@contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url and broker_answers(url):
        yield url
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    folder = Path(tempfile.mkdtemp(prefix="bench-bus-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      "set_tcp_nodelay true\n"
                      + ("user root\n" if os.geteuid() == 0 else ""))
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    private = f"mqtt://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if broker_answers(private):
                break
            time.sleep(0.05)
        print(f"started a private mosquitto at {private}")
        yield private
    finally:
        process.terminate()
        process.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


async def forget_statuses(url: str, prefix: str) -> None:
    """Leave nothing retained on a shared broker (the sites' goodbye statuses)."""
    host, port = parse_url(url)
    async with aiomqtt.Client(host, port) as client:
        for site in SITES:
            await client.publish(f"{prefix}/v1/sites/{site}/status", b"", qos=1, retain=True)


async def bench_mqtt(url: str, count: int, concurrency: int, warmup: int) -> str:
    prefix = f"bench-{secrets.token_hex(4)}"
    context = multiprocessing.get_context("spawn")
    ready, stop, cpu = context.Event(), context.Event(), context.Queue()
    owner = context.Process(target=bogota_process, args=(url, prefix, ready, stop, cpu))
    owner.start()
    madrid = MqttSiteBus(url, "madrid", SITES, AGENTS, topics=Topics(prefix))
    try:
        await madrid.start()
        await madrid.wait_connected(10)
        if not await asyncio.to_thread(ready.wait, 15):
            raise RuntimeError("the bogota process did not connect")
        while not madrid.health.is_up("bogota"):
            await asyncio.sleep(0.01)
        await round_trips(madrid, warmup, concurrency)
        started = cpu_seconds()
        latencies = await round_trips(madrid, count, concurrency)
        spent = cpu_seconds() - started
    finally:
        stop.set()
        await madrid.close()
    peer = await asyncio.to_thread(cpu.get, True, 10)
    owner.join(10)
    await forget_statuses(url, prefix)
    return summary(f"MQTT, 2 processes, concurrency {concurrency}", latencies, spent, peer)


async def bench_in_process(count: int, concurrency: int, warmup: int) -> str:
    shared = InProcessBroker()
    owner = Owner()
    bogota = InProcessSiteBus(shared, "bogota", SITES, AGENTS)
    madrid = InProcessSiteBus(shared, "madrid", SITES, AGENTS)
    bogota.serve_reservations(owner.decide, owner.release)
    await bogota.start()
    await madrid.start()
    try:
        while not madrid.health.is_up("bogota"):
            await asyncio.sleep(0.01)
        await round_trips(madrid, warmup, concurrency)
        started = cpu_seconds()
        latencies = await round_trips(madrid, count, concurrency)
        spent = cpu_seconds() - started
    finally:
        await madrid.close()
        await bogota.close()
    return summary(f"in-process, 1 process, conc. {concurrency}", latencies, spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    arguments = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    with broker(arguments.url) as url:
        print(f"broker {url}; {arguments.count} reservations after {arguments.warmup} warm-up")
        print(asyncio.run(bench_mqtt(url, arguments.count, arguments.concurrency,
                                     arguments.warmup)))
    print(asyncio.run(bench_in_process(arguments.count, arguments.concurrency, arguments.warmup)))


if __name__ == "__main__":
    main()
