#!/usr/bin/env python3
"""Media-plane benchmark: N RtpSessions playing a prompt on the one media clock.

The sender is this process (uvloop, one MediaClock, N sessions looping the hold
music). The receiver is a separate process holding N UDP sockets; the kernel
stamps every datagram on arrival (SO_TIMESTAMPNS), so the receiver's own
scheduling does not colour the jitter figures. For each N it reports

* jitter: |inter-arrival gap - 20 ms| per stream, p50 / p99 / max over all gaps,
* CPU: sender user+system seconds per wall second, per stream (getrusage),
* memory: sender RSS growth per stream after opening and starting them,

and ramps N up to the largest count whose p99 jitter stays under 5 ms.
Reference (Asterisk on this machine): ~400 such calls at 0.24% of a core and
~150 KB each.

With ``--engine rtpengine`` the sender is a private rtpengine (userspace, one thread)
playing the same WAV to each stream (ng ``play media``, one call per stream); CPU and
memory are rtpengine's, from /proc: the IVR's prompts through rtpengine, side by side.

Usage: bench/bench_media.py [--seconds 6] [--counts 50,100,...] [--codec PCMU] [--engine rtpengine]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import resource
import selectors
import socket
import struct
import sys
import tempfile
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import uvloop  # noqa: E402

from integration.rtpengine_fixture import PrivateRtpengine  # noqa: E402
from pbx.media.clock import shared_media_clock  # noqa: E402
from pbx.media.ng import NgClient  # noqa: E402
from pbx.media.ports import PortAllocator
from pbx.media.prompt import PromptLibrary  # noqa: E402
from pbx.media.stream import RtpSession  # noqa: E402

HOST = "127.0.0.1"
INTERVAL = 0.020
# Linux values; Python's socket module does not export them.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def percentile(sorted_values: array[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


# --------------------------------------------------------------------- receiver


def receiver_main(count: int, control: Connection) -> None:
    """Bind ``count`` sockets, send their ports, then record kernel arrival times."""
    selector = selectors.DefaultSelector()
    sockets = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        sockets.append(sock)
    control.send([s.getsockname()[1] for s in sockets])

    last_arrival = [0.0] * count
    last_sequence = [-1] * count
    jitter = array("d")
    packets = 0
    lost = 0
    measuring = False
    ancillary_size = socket.CMSG_SPACE(_TIMESPEC.size)
    while True:
        if control.poll():
            command = control.recv()
            if command == "measure":
                measuring = True
                jitter = array("d")
                packets = lost = 0
            elif command == "stop":
                break
        for key, _ in selector.select(timeout=0.05):
            index = key.data
            sock = sockets[index]
            while True:
                try:
                    data, ancillary, _flags, _addr = sock.recvmsg(512, ancillary_size)
                except BlockingIOError:
                    break
                arrival = time.time()
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
                        arrival = seconds + nanoseconds * 1e-9
                sequence = (data[2] << 8) | data[3]
                previous = last_sequence[index]
                if measuring and previous >= 0:
                    step = (sequence - previous) & 0xFFFF
                    if step == 1:
                        jitter.append(abs(arrival - last_arrival[index] - INTERVAL))
                    elif step < 0x8000:
                        lost += step - 1
                    packets += 1
                last_sequence[index] = sequence
                last_arrival[index] = arrival
    ordered = array("d", sorted(jitter))
    control.send(
        {
            "packets": packets,
            "lost": lost,
            "p50": percentile(ordered, 0.50),
            "p99": percentile(ordered, 0.99),
            "max": ordered[-1] if ordered else float("nan"),
        }
    )
    for sock in sockets:
        sock.close()


# ----------------------------------------------------------------------- sender


class TickProbe:
    """A stream that sends nothing and records when its turn in the tick comes."""

    def __init__(self) -> None:
        self.times = array("d")

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def jitter(self, fraction: float) -> float:
        times = self.times
        gaps = array(
            "d", sorted(abs(b - a - INTERVAL) for a, b in zip(times, times[1:], strict=False))
        )
        return percentile(gaps, fraction)


async def run_step(
    count: int, seconds: float, codec: str, allocator: PortAllocator
) -> dict[str, float]:
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    receiver = context.Process(target=receiver_main, args=(count, child), daemon=True)
    receiver.start()
    loop = asyncio.get_running_loop()
    ports: list[int] = await loop.run_in_executor(None, parent.recv)

    prompt = PromptLibrary().get("common/hold_music")
    gc.collect()
    rss_before = rss_bytes()
    sessions = [
        await RtpSession.open(allocator, remote=(HOST, port), codec=codec) for port in ports
    ]
    for session in sessions:
        session.play(prompt, repeat=True)
    await asyncio.sleep(1.0)  # warm-up: first ticks, socket buffers, caches
    rss_after = rss_bytes()

    clock = shared_media_clock()
    probe = TickProbe()
    clock.register(probe)  # after the sessions: it sees when the burst of sends ends
    parent.send("measure")
    dropped_before = clock.ticks_dropped
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - wall_before
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    parent.send("stop")
    clock.unregister(probe)
    stats: dict[str, float] = await loop.run_in_executor(None, parent.recv)
    receiver.join(5)

    sent = sum(s.packets_sent for s in sessions)
    for session in sessions:
        session.close()
    await asyncio.sleep(0.1)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    stats.update(
        count=count,
        cpu_per_stream=cpu / wall / count,
        cpu_total=cpu / wall,
        rss_per_stream=(rss_after - rss_before) / count,
        ticks_dropped=clock.ticks_dropped - dropped_before,
        expected=count * wall / INTERVAL,
        sent=sent,
        burst_end_p99=probe.jitter(0.99),
    )
    return stats


HOLD_MUSIC_WAV = Path(__file__).resolve().parents[1] / "pbx/media/prompts/common/hold_music.wav"


def _sdp(port: int, codec: str) -> str:
    payload = 0 if codec == "PCMU" else 8
    return "\r\n".join(["v=0", f"o=- 1 1 IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}", "t=0 0",
                         f"m=audio {port} RTP/AVP {payload}", f"a=rtpmap:{payload} {codec}/8000",
                         "a=sendrecv", ""])


async def run_rtpengine_step(count: int, seconds: float, codec: str, engine: PrivateRtpengine,
                             client: NgClient) -> dict[str, float]:
    """The same step, rtpengine playing: one call per stream, its caller the receiver's socket."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    receiver = context.Process(target=receiver_main, args=(count, child), daemon=True)
    receiver.start()
    loop = asyncio.get_running_loop()
    ports: list[int] = await loop.run_in_executor(None, parent.recv)
    rss_before = engine.rss_bytes()
    calls = [f"bench-{count}-{index}" for index in range(count)]
    for call, port in zip(calls, ports, strict=True):
        await client.command("offer", **{"call-id": call, "from-tag": "inside", "sdp": _sdp(9, codec),
                                         "flags": ["trust-address"]})
        await client.command("answer", **{"call-id": call, "from-tag": "inside", "to-tag": "caller",
                                          "sdp": _sdp(port, codec), "flags": ["trust-address"]})
        await client.command("play media", **{"call-id": call, "from-tag": "caller",
                                              "file": str(HOLD_MUSIC_WAV), "repeat-times": 1000})
    await asyncio.sleep(1.0)
    rss_after = engine.rss_bytes()
    parent.send("measure")
    cpu_before = engine.cpu_seconds()
    wall_before = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - wall_before
    cpu = engine.cpu_seconds() - cpu_before
    parent.send("stop")
    stats: dict[str, float] = await loop.run_in_executor(None, parent.recv)
    receiver.join(5)
    for call in calls:
        await client.command("delete", **{"call-id": call, "delete-delay": 0})
    stats.update(count=count, cpu_per_stream=cpu / wall / count, cpu_total=cpu / wall,
                 rss_per_stream=(rss_after - rss_before) / count, ticks_dropped=0,
                 expected=count * wall / INTERVAL, sent=0, burst_end_p99=float("nan"))
    return stats


async def main(counts: list[int], seconds: float, codec: str, keep_going: bool,
               engine_name: str = "embedded") -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{'N':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>6} {'core %':>7} "
          f"{'%/stream':>9} {'KB/stream':>10} {'dropped':>8} {'burst p99':>9}")  # fmt: skip
    # Below the ephemeral range; ports taken by other programs are skipped.
    allocator = PortAllocator(HOST, 16384, 32766)
    engine = client = None
    if engine_name == "rtpengine":
        engine = PrivateRtpengine(Path(tempfile.mkdtemp(prefix="bench-media-rtpengine-")),
                                  range_size=8000)
        engine.start()
        client = await NgClient.connect((HOST, engine.ng_port), timeout=5.0)
    try:
        await _ramp(counts, seconds, codec, keep_going, allocator, engine, client)
    finally:
        if engine is not None:
            engine.stop()


async def _ramp(counts, seconds, codec, keep_going, allocator, engine, client) -> None:
    best = 0
    for count in counts:
        if engine is not None:
            stats = await run_rtpengine_step(count, seconds, codec, engine, client)
        else:
            stats = await run_step(count, seconds, codec, allocator)
        ok = stats["p99"] < 0.005
        if ok:
            best = count
        print(
            f"{count:>6} {stats['p50'] * 1e3:>8.3f} {stats['p99'] * 1e3:>8.3f} {stats['max'] * 1e3:>8.2f} "
            f"{stats['lost']:>6.0f} {stats['cpu_total'] * 100:>7.1f} {stats['cpu_per_stream'] * 100:>9.4f} "
            f"{stats['rss_per_stream'] / 1024:>10.1f} {stats['ticks_dropped']:>8.0f} "
            f"{stats['burst_end_p99'] * 1e3:>9.3f}" + ("" if ok else "   <- p99 >= 5 ms"),
            flush=True,
        )
        if not keep_going and (not ok or stats["cpu_total"] > 0.95):
            break
    print(f"\nhighest N with p99 jitter < 5 ms: {best}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window per step")
    parser.add_argument("--counts", default="50,100,200,400,600,800,1000,1200,1500,2000,2500,3000")
    parser.add_argument("--codec", default="PCMU", choices=["PCMU", "PCMA"])
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--keep-going", action="store_true", help="run every count, even past 5 ms")
    parser.add_argument("--engine", default="embedded", choices=["embedded", "rtpengine"],
                        help="who plays: this process's media clock, or a private rtpengine")
    arguments = parser.parse_args()
    benchmark = main(
        [int(n) for n in arguments.counts.split(",")],
        arguments.seconds,
        arguments.codec,
        arguments.keep_going,
        arguments.engine,
    )
    if arguments.loop == "uvloop":
        uvloop.run(benchmark)
    else:
        asyncio.run(benchmark)
