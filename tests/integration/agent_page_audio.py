"""Audio checks for the agent page's tests: what a caller hears and what a browser plays.

SIPp cannot record what it receives, so the SIPp caller's SDP names the media port of a
:class:`CallerMedia` instead: a UDP socket in this process that plays the caller's side of
the call (a tone, and RFC 4733 digits for the IVR) and keeps every RTP packet that reaches
the caller. The browser's microphone is a WAV file of another tone
(``--use-file-for-fake-audio-capture``), so a Goertzel filter tells each side's audio apart
from prompts, music on hold and silence. The G.711 decoding here is the tests' own, not the
server's (pbx.media.g711): a second opinion.
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from peers.procs import LOOPBACK

RATE = 8000
SAMPLES_PER_PACKET = 160  # 20 ms
PCMU, PCMA = 0, 8
TELEPHONE_EVENT = 101  # what the caller's SDP offers


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


DECODE = {PCMA: [_alaw_to_linear(code) for code in range(256)],
          PCMU: [_ulaw_to_linear(code) for code in range(256)]}


def _alaw_of(sample: float) -> int:
    """The A-law code nearest a linear sample (a search of the decode table: tests only)."""
    table = DECODE[PCMA]
    return min(range(256), key=lambda code: abs(table[code] - sample))


def tone_share(samples: list[int], frequency: float, rate: int = RATE) -> float:
    """How much of the samples' energy is at `frequency` (Goertzel): about 1.0 for a pure
    tone there, near 0 for silence, another tone or speech."""
    if len(samples) < rate // 10:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    energy = sum(sample * sample for sample in samples)
    return 0.0 if energy == 0 else 2 * power / (len(samples) * energy)


def write_tone_wav(path: Path, frequency: float, seconds: int = 1, rate: int = 48000) -> Path:
    """A mono 16-bit WAV of a whole number of cycles (Chromium loops it without a click)."""
    count = rate * seconds
    samples = (int(12000 * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return path


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    payload_type: int
    timestamp: int
    payload: bytes


class CallerMedia:
    """The caller's media port: sends a tone (PCMA) and the IVR digit, keeps what arrives.

    It answers to whoever sends to it first (symmetric RTP, as rtpengine expects): the
    server's menu prompt comes from rtpengine's port for the caller, and the tone, the
    digit and everything after go back there.
    """

    def __init__(self, frequency: float, digit: str) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((LOOPBACK, 0))
        self.socket.settimeout(0.02)
        self.port: int = self.socket.getsockname()[1]
        self.digit = digit
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        cycle = [_alaw_of(12000 * math.sin(2 * math.pi * frequency * n / RATE)) for n in range(RATE)]
        # One second is a whole number of cycles of a whole frequency; twice, to slice across.
        self._tone = bytes(cycle) * 2
        self._thread = threading.Thread(target=self._run, name="caller-media", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        remote: tuple[str, int] | None = None
        sequence, timestamp, ssrc = 1, 0, 0x5EED
        digit_at: float | None = None
        next_send = time.monotonic()
        while not self._stop.is_set():
            try:
                data, source = self.socket.recvfrom(2048)
                if len(data) > 12 and data[0] >> 6 == 2:
                    with self._lock:
                        self.received.append(Received(time.monotonic(), data[1] & 0x7F,
                                                      struct.unpack_from("!I", data, 4)[0], data[12:]))
                    if remote is None:
                        remote, digit_at = source, time.monotonic() + 0.5
            except TimeoutError:
                pass
            if remote is None:
                continue
            now = time.monotonic()
            if digit_at is not None and now >= digit_at:
                for packet in self._digit_packets(sequence, timestamp, ssrc):
                    self.socket.sendto(packet, remote)
                sequence += 6
                timestamp += SAMPLES_PER_PACKET * 5
                digit_at = None
            while next_send <= now:
                start = timestamp % RATE
                chunk = self._tone[start:start + SAMPLES_PER_PACKET]
                header = struct.pack("!BBHII", 0x80, PCMA, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
                self.socket.sendto(header + chunk, remote)
                sequence += 1
                timestamp += SAMPLES_PER_PACKET
                next_send += SAMPLES_PER_PACKET / RATE

    def _digit_packets(self, sequence: int, timestamp: int, ssrc: int) -> list[bytes]:
        """RFC 4733: the digit for 100 ms, then its end three times, one timestamp."""
        event = "0123456789*#".index(self.digit)
        packets = []
        for n in range(6):
            end = n >= 3
            duration = SAMPLES_PER_PACKET * min(n + 1, 5)
            header = struct.pack("!BBHII", 0x80, (0x80 if n == 0 else 0) | TELEPHONE_EVENT,
                                 (sequence + n) & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
            packets.append(header + struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration))
        return packets

    def audio_since(self, since: float, until: float | None = None) -> list[int]:
        """The G.711 audio that reached the caller in [since, until), as linear samples."""
        with self._lock:
            packets = [p for p in self.received if p.at >= since and (until is None or p.at < until)]
        return [DECODE[p.payload_type][code] for p in packets if p.payload_type in DECODE for code in p.payload]

    def digits_since(self, since: float) -> str:
        """RFC 4733 digits that reached the caller, in order: an event is its RTP timestamp,
        whatever the number of its packets (the end is sent three times)."""
        with self._lock:
            packets = [p for p in self.received if p.at >= since and p.payload_type not in DECODE]
        events: dict[int, str] = {}
        for packet in packets:
            if len(packet.payload) >= 4 and packet.payload[0] < 12:
                events.setdefault(packet.timestamp, "0123456789*#"[packet.payload[0]])
        return "".join(events.values())

    def payload_types_since(self, since: float) -> set[int]:
        with self._lock:
            return {p.payload_type for p in self.received if p.at >= since}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()


# Run in the page: how much of the browser's received audio is at each frequency (an
# AnalyserNode on the remote stream, one FFT of ~0.34 s at 48 kHz).
BROWSER_TONE_SHARES = """async (frequencies) => {
  const stream = document.getElementById("remote-audio").srcObject;
  if (!stream) return null;
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 16384;
  analyser.smoothingTimeConstant = 0;
  context.createMediaStreamSource(stream).connect(analyser);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const decibels = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(decibels);
  await context.close();
  const power = Array.from(decibels, (db) => Math.pow(10, db / 10));
  const total = power.reduce((sum, value) => sum + value, 0);
  const binHz = context.sampleRate / analyser.fftSize;
  const near = (hz) => power.slice(Math.round(hz / binHz) - 3, Math.round(hz / binHz) + 4).reduce((s, v) => s + v, 0);
  return total > 0 ? Object.fromEntries(frequencies.map((hz) => [hz, near(hz) / total])) : null;
}"""
