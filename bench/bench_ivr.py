"""How many concurrent IVR calls one process sustains with outgoing RTP jitter p99 under 5 ms.

The process under test (this script, uvloop) runs N IVR calls: each is a real
RtpSession driven by the engine through a menu (prompt playing, DTMF listening);
the caller presses 1 over RFC 4733 and is then held on "please hold" + music.
The callers live in a separate receiver process (plain sockets, kernel receive
timestamps via SO_TIMESTAMPNS, so its own scheduling does not count), which sends
the digit and measures, per stream, how far each packet's arrival strays from
the 20 ms grid between consecutive packets. Reported per N: jitter p50/p99/max,
packets lost, CPU of the IVR process per call and its memory per call.

    .venv/bin/python bench/bench_ivr.py                  # ramps 50, 100, 200, 400, 800
    .venv/bin/python bench/bench_ivr.py --calls 300 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python 3.11 lacks the name
TELEPHONE_EVENT_PT = 101
BENCH_FLOW = """\
name: bench
start: menu
nodes:
  menu:
    type: menu
    prompt: en/main_menu
    options: {1: queue}
    fallback: queue
    timeout: 60
  queue: {type: enqueue, queue: general}
"""


# ------------------------------------------------------------------ receiver process


def _rtp_event_packets(digit: str, ssrc: int) -> list[bytes]:
    from pbx.media.telephone_event import dtmf_event_packets

    header = struct.Struct("!BBHII")
    packets = []
    for index, payload in enumerate(dtmf_event_packets(digit, 100, 10)):
        marker = 0x80 if index == 0 else 0
        packets.append(
            header.pack(0x80, TELEPHONE_EVENT_PT | marker, index + 1, 8000, ssrc) + payload
        )
    return packets


def receiver(count: int, seconds: float, digit_after: float) -> None:
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        sockets.append(sock)
    print(json.dumps([s.getsockname()[1] for s in sockets]), flush=True)
    targets = json.loads(sys.stdin.readline())
    by_fd = {s.fileno(): i for i, s in enumerate(sockets)}
    last_arrival = [0.0] * count
    last_sequence = [-1] * count
    deviations: list[float] = []
    received = [0] * count
    lost = 0
    poller = select.epoll()
    for sock in sockets:
        poller.register(sock.fileno(), select.EPOLLIN)
    start = time.monotonic()
    digit_sent = False
    measure_from = start + digit_after + 1.0  # after the digit: steady hold music
    while time.monotonic() - start < seconds:
        if not digit_sent and time.monotonic() - start >= digit_after:
            for i, sock in enumerate(sockets):
                for packet in _rtp_event_packets("1", 0x1000 + i):
                    sock.sendto(packet, ("127.0.0.1", targets[i]))
            digit_sent = True
        for fd, _ in poller.poll(0.05):
            i = by_fd[fd]
            sock = sockets[i]
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                arrival = time.monotonic()
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds_part, nanoseconds = struct.unpack("qq", value[:16])
                        arrival = seconds_part + nanoseconds / 1e9
                sequence = struct.unpack_from("!H", data, 2)[0]
                if time.monotonic() >= measure_from:
                    received[i] += 1
                    previous = last_sequence[i]
                    if previous >= 0:
                        step = (sequence - previous) & 0xFFFF
                        if step == 1:
                            deviations.append(abs(arrival - last_arrival[i] - 0.020))
                        elif step > 1:
                            lost += step - 1
                last_sequence[i] = sequence
                last_arrival[i] = arrival
    deviations.sort()

    def percentile(p: float) -> float:
        return (
            deviations[min(len(deviations) - 1, int(p * len(deviations)))] * 1000
            if deviations
            else 0.0
        )

    window = seconds - digit_after - 1.0
    print(
        json.dumps(
            {
                "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99),
                "max_ms": deviations[-1] * 1000 if deviations else 0.0,
                "packets": sum(received),
                "expected": int(count * window / 0.020),
                "lost": lost,
            }
        ),
        flush=True,
    )


# ------------------------------------------------------------------ IVR process


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class BenchCall:
    def __init__(self, call_id: str, media: object) -> None:
        self.call_id = call_id
        self.caller = "bench"
        self.media = media
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.hung_up = asyncio.Event()

    def hang_up(self) -> None:
        self.hung_up.set()


async def run_ivr(count: int, seconds: float) -> dict[str, float]:
    from events import EventBus
    from ivr.call_log import IvrCallLog
    from ivr.engine import FlowRunner, HoldMusicGateway
    from ivr.flow import load_flow
    from pbx.media.ports import PortAllocator
    from pbx.media.prompt import PromptLibrary
    from pbx.media.stream import RtpSession

    prompts = PromptLibrary()
    flow = load_flow(BENCH_FLOW, "bench.yaml", prompts)
    log = IvrCallLog(capacity=count)
    runner = FlowRunner(flow, prompts, EventBus(), enqueue=HoldMusicGateway(prompts), call_log=log)
    digit_after = 1.5
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--receiver",
            str(count),
            "--seconds",
            str(seconds),
            "--digit-after",
            str(digit_after),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    loop = asyncio.get_running_loop()
    caller_ports = json.loads(await loop.run_in_executor(None, child.stdout.readline))
    rss_before = _rss_bytes()
    ports = PortAllocator("127.0.0.1", 30000, 30000 + 4 * count + 100)
    sessions = []
    calls = []
    for i, port in enumerate(caller_ports):
        session = await RtpSession.open(
            ports, remote=("127.0.0.1", port), telephone_event_payload_type=TELEPHONE_EVENT_PT
        )
        call = BenchCall(f"bench-{i}", session)
        session.on_dtmf = call.digits.put_nowait
        sessions.append(session)
        calls.append(call)
    tasks = [asyncio.ensure_future(runner.run(call)) for call in calls]  # type: ignore[arg-type]
    child.stdin.write(json.dumps([s.local_port for s in sessions]) + "\n")
    child.stdin.flush()
    await asyncio.sleep(digit_after + 1.0)
    rss_during = _rss_bytes()
    cpu_start, wall_start = time.process_time(), time.monotonic()
    report = json.loads(await loop.run_in_executor(None, child.stdout.readline))
    cpu = time.process_time() - cpu_start
    wall = time.monotonic() - wall_start
    in_queue = sum(1 for call in calls if log.get(call.call_id)["queue"] == "general")
    digits_taken = sum(1 for call in calls if log.get(call.call_id)["digits"])
    for call in calls:
        call.hung_up.set()
    await asyncio.gather(*tasks)
    for session in sessions:
        session.close()
    child.wait()
    report.update(
        {
            "calls": count,
            "took_digit": digits_taken,
            "enqueued": in_queue,
            "cpu_percent_per_call": 100 * cpu / wall / count,
            "cpu_percent_total": 100 * cpu / wall,
            "rss_kib_per_call": (rss_during - rss_before) / 1024 / count,
        }
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, action="append", help="concurrent calls (repeatable)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--digit-after", type=float, default=1.5, help=argparse.SUPPRESS)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if args.receiver:
        receiver(args.receiver, args.seconds, args.digit_after)
        return 0
    import uvloop

    counts = args.calls or [50, 100, 200, 400, 800]
    print(
        f"{'calls':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>6} {'digit':>6} "
        f"{'cpu%/call':>9} {'cpu% all':>8} {'KiB/call':>8}"
    )
    best = 0
    for count in counts:
        if args.no_uvloop:
            report = asyncio.run(run_ivr(count, args.seconds))
        else:
            report = uvloop.run(run_ivr(count, args.seconds))
        print(
            f"{count:>6} {report['p50_ms']:>7.2f} {report['p99_ms']:>7.2f} {report['max_ms']:>7.2f} "
            f"{report['lost']:>6} {report['took_digit']:>6} {report['cpu_percent_per_call']:>9.3f} "
            f"{report['cpu_percent_total']:>8.1f} {report['rss_kib_per_call']:>8.1f}",
            flush=True,
        )
        if report["p99_ms"] < 5.0 and report["took_digit"] == count:
            best = count
    print(
        f"largest N with jitter p99 < 5 ms and every digit taken: {best or 'none'}"
        f" (os.cpu_count()={os.cpu_count()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
