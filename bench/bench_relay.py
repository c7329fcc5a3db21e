#!/usr/bin/env python3
"""The relay's cost per packet: two call legs bridged on the embedded media engine.

Each received RTP packet of a bridged call takes the relay path once (rewrite SSRC,
sequence and timestamp, transcode when the codecs differ, send); at 50 packets/s per
leg it is the hottest path of the server. This bench feeds packets straight into leg
A's receive callback (what the event loop calls for each datagram) and lets leg B send
them for real to a UDP socket nobody reads, so it measures exactly the per-packet work
the server does, without the noise of a second process competing for the CPU.

For each case (same codec, PCMU->PCMA transcoding) it prints the best and the median
of ``--repeats`` runs of ``--packets`` packets, in microseconds of CPU per packet
(process time), and the packets per CPU-second that makes.

Usage: bench/bench_relay.py [--packets 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop  # noqa: E402

from pbx.media.engine import EmbeddedMediaEngine  # noqa: E402
from pbx.media.ports import PortAllocator  # noqa: E402

HOST = "127.0.0.1"
_HEADER = struct.Struct("!BBHII")


def sink() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    return sock


async def run_case(caller_codec: str, agent_codec: str, packets: int, repeats: int) -> list[float]:
    ports = PortAllocator(HOST, 42000, 42100)
    caller_phone, agent_phone = sink(), sink()
    caller_address = caller_phone.getsockname()
    engine = EmbeddedMediaEngine(ports)
    caller = await engine.open_leg(remote=caller_address, codec=caller_codec)
    agent = await engine.open_leg(remote=agent_phone.getsockname(), codec=agent_codec)
    engine.bridge(caller, agent)
    payload = bytes(160)
    pt = 0 if caller_codec == "PCMU" else 8
    results = []
    sequence = 0
    try:
        for _ in range(repeats):
            datagrams = []
            for _ in range(packets):
                sequence = (sequence + 1) & 0xFFFF
                datagrams.append(_HEADER.pack(0x80, pt, sequence, sequence * 160, 0x1234) + payload)
            receive = caller.datagram_received
            started = time.process_time()
            for index, data in enumerate(datagrams):
                receive(data, caller_address)
                if index & 0x3FF == 0x3FF:
                    await asyncio.sleep(0)  # let uvloop flush; the socket buffer drops the rest
            results.append((time.process_time() - started) / packets * 1e6)
        assert agent.packets_sent >= packets * repeats // 2, agent.packets_sent
    finally:
        caller.close()
        agent.close()
        caller_phone.close()
        agent_phone.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{'case':<14} {'best µs/pkt':>12} {'median':>8} {'pkts/CPU-s (best)':>18}")
    for caller_codec, agent_codec in (("PCMU", "PCMU"), ("PCMU", "PCMA")):
        runs = await run_case(caller_codec, agent_codec, args.packets, args.repeats)
        best = min(runs)
        print(f"{caller_codec + '->' + agent_codec:<14} {best:>12.2f} {statistics.median(runs):>8.2f} "
              f"{1e6 / best:>18,.0f}")


if __name__ == "__main__":
    uvloop.run(main())
