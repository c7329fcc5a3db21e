"""RTP sessions: one UDP socket per call leg, paced by the shared media clock.

An :class:`RtpSession` sends prompts, DTMF and (optionally) idle audio one packet
per clock tick, receives RTP, reports DTMF (RFC 4733 when negotiated, otherwise
detected in-band) and can relay what it receives into another session, which is
how a B2BUA bridges two legs.

Addressing follows the usual practice for phones behind NAT (symmetric RTP,
RFC 4961): packets are sent to the address from SDP until the peer's own packets
show where it really is. Latching is strict, to avoid hijacking the stream ("RTP
bleed"): a source equal to the signalled address is accepted at once, any other
only after two packets in sequence from it; once latched, packets from other
addresses are dropped until :meth:`RtpSession.configure` is called again (a
re-INVITE), except from the signalled address, which always wins the latch back.
Packets are not processed before a source is latched.

No RTCP socket is opened: RTP ports are even and the odd port above stays unused.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
import secrets
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from functools import cache
from typing import cast

from pbx.media.clock import MediaClock, shared_media_clock
from pbx.media.g711 import G711Codec, codec_by_name
from pbx.media.inband_dtmf import InbandDtmfDetector, dtmf_tone
from pbx.media.prompt import FRAME_BYTES, Prompt
from pbx.media.rtp import RTP_HEADER_SIZE, RtpError, parse_rtp
from pbx.media.telephone_event import TelephoneEventReceiver, dtmf_event_packets, event_for_digit

__all__ = [
    "IdleAudio",
    "MediaPortsExhausted",
    "PortAllocator",
    "RtpSession",
]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_SAMPLES_PER_FRAME = FRAME_BYTES
# Without packets for this long, a telephone-event whose end packets were lost is reported.
_TELEPHONE_EVENT_TIMEOUT = 0.25
_DSCP_EXPEDITED_FORWARDING = 46 << 2


class MediaPortsExhausted(OSError):
    """Every RTP port of the range is in use."""


class PortAllocator:
    """Hands out the even ports of ``[first, last]`` on one local address.

    Ports rotate rather than being reused at once, so late packets of an ended
    call do not land in a new one.
    """

    __slots__ = ("host", "first", "last", "sessions_open", "_ports", "_next", "_in_use")

    def __init__(self, host: str, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"invalid RTP port range {first}-{last}")
        start = first + (first & 1)
        self._ports = range(start, last + 1, 2)
        if not self._ports:
            raise ValueError(f"RTP port range {first}-{last} holds no even port")
        self.host = host
        self.first = first
        self.last = last
        self._next = 0
        self._in_use: set[int] = set()
        # RtpSessions opened on these ports and not yet closed (a port is released a loop
        # turn after its session closes, when the socket is gone).
        self.sessions_open = 0

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def reserve(self) -> int:
        """The next free even port, marked in use until :meth:`release`."""
        ports = self._ports
        for _ in range(len(ports)):
            port = ports[self._next]
            self._next = (self._next + 1) % len(ports)
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise MediaPortsExhausted(f"all {len(ports)} RTP ports {self.first}-{self.last} are in use")

    def release(self, port: int) -> None:
        self._in_use.discard(port)


class IdleAudio(enum.Enum):
    """What a session sends when it has nothing to play."""

    NONE = "none"
    SILENCE = "silence"
    COMFORT_NOISE = "comfort-noise"
    """Very low-level noise (about -70 dBm0): some peers take digital silence for a dead line."""


@cache
def _idle_frames(idle: IdleAudio, codec: G711Codec) -> tuple[bytes, ...]:
    if idle is IdleAudio.SILENCE:
        return (codec.silence_frame(),)
    noise = random.Random(0x5EED)
    pcm = b"".join(
        round(noise.gauss(0.0, 8.0)).to_bytes(2, "little", signed=True) for _ in range(50 * 160)
    )
    encoded = codec.encode(pcm)
    return tuple(encoded[i : i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES))


@cache
def _inband_dtmf_frames(digit: str, codec: G711Codec, duration_ms: int) -> tuple[bytes, ...]:
    """Tone then 60 ms of silence, so that repeated digits stay separate."""
    encoded = codec.encode(dtmf_tone(digit, duration_ms)) + codec.silence_frame(480)
    encoded += codec.silence_frame((-len(encoded)) % FRAME_BYTES)
    return tuple(encoded[i : i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES))


def _ip_literal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"RTP address must be an IP literal, got {host!r}") from None


def _bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _DSCP_EXPEDITED_FORWARDING)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _DSCP_EXPEDITED_FORWARDING)
    except OSError:
        pass  # marking is best effort
    return sock


class RtpSession(asyncio.DatagramProtocol):
    """The media of one call leg: one RTP socket, one SSRC, one negotiated codec.

    Create with :meth:`open` (binds a port), then :meth:`configure` with the
    negotiated remote address and payload types (or pass them to ``open`` when
    the offer is already known). Callbacks run on the event loop and must not
    block; exceptions they raise are logged, not propagated into the transport.
    """

    on_dtmf: Callable[[str], None] | None
    """Called with each DTMF digit the peer presses."""
    on_audio: Callable[[bytes], None] | None
    """Called with each received audio frame decoded to 8 kHz 16-bit little-endian PCM."""

    def __init__(
        self,
        ports: PortAllocator,
        *,
        clock: MediaClock | None = None,
        idle_audio: IdleAudio = IdleAudio.NONE,
        inband_dtmf: bool = True,
        symmetric: bool = True,
        on_dtmf: Callable[[str], None] | None = None,
        on_audio: Callable[[bytes], None] | None = None,
    ) -> None:
        """Prefer :meth:`open`; a session made here has no socket until bound."""
        self._ports = ports
        self._clock = clock if clock is not None else shared_media_clock()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.idle_audio = idle_audio
        self.inband_dtmf = inband_dtmf
        self.symmetric = symmetric
        self.on_dtmf = on_dtmf
        self.on_audio = on_audio
        self.dtmf_duration_ms = 100
        self.dtmf_volume = 10

        # Negotiated media (configure()).
        self.codec: G711Codec = codec_by_name("PCMU")
        self.payload_type = self.codec.static_payload_type
        self.telephone_event_payload_type: int | None = None
        self._signalled_remote: tuple[str, int] | None = None
        self.remote: tuple[str, int] | None = None
        """Where packets go: the SDP address, or the latched source address."""
        self._latched = False
        self._probation_source: tuple[str, int] | None = None
        self._probation_sequence = 0

        # Sending state (RFC 3550: random SSRC, sequence and timestamp origins).
        self.ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._last_sent_at: float | None = None
        self._ticking = False
        self._closed = False

        # Playback.
        self._playlist: deque[Prompt] = deque()
        self._prompt: Prompt | None = None
        self._frames: tuple[bytes, ...] | None = None
        self._frame_index = 0
        self._repeat: tuple[Prompt, ...] = ()
        self._on_done: Callable[[bool], None] | None = None
        self._idle_index = 0

        # DTMF sending.
        self._dtmf_queue: deque[str] = deque()
        self._event_payloads: Sequence[bytes] | None = None
        self._event_inband = False
        self._event_index = 0
        self._event_timestamp = 0

        # Receiving.
        self._telephone_events = TelephoneEventReceiver()
        self._telephone_event_timer: asyncio.TimerHandle | None = None
        self._last_telephone_event_at = 0.0
        self._inband_detector: InbandDtmfDetector | None = None
        self.last_received_at: float | None = None
        """``loop.time()`` of the last accepted packet, for dead-leg detection."""
        self.packets_sent = 0
        self.packets_received = 0
        self.packets_rejected = 0
        """Malformed packets and packets from an unexpected source."""

        # Relay.
        self._relay_target: RtpSession | None = None
        self._last_relayed_at = float("-inf")
        self._relay_source_ssrc = -1
        self._relay_sequence_offset = 0
        self._relay_timestamp_offset = 0

    # ------------------------------------------------------------------ setup

    @classmethod
    async def open(
        cls,
        ports: PortAllocator,
        *,
        remote: tuple[str, int] | None = None,
        codec: G711Codec | str = "PCMU",
        payload_type: int | None = None,
        telephone_event_payload_type: int | None = None,
        clock: MediaClock | None = None,
        idle_audio: IdleAudio = IdleAudio.NONE,
        inband_dtmf: bool = True,
        symmetric: bool = True,
        on_dtmf: Callable[[str], None] | None = None,
        on_audio: Callable[[bytes], None] | None = None,
    ) -> RtpSession:
        """Bind a socket on the next free port of ``ports`` and return the session.

        ``remote``, ``codec``, ``payload_type`` and ``telephone_event_payload_type``
        are as for :meth:`configure`; leave ``remote`` None when the peer's SDP is
        not known yet (an outgoing offer) and call :meth:`configure` later.
        """
        session = cls(
            ports,
            clock=clock,
            idle_audio=idle_audio,
            inband_dtmf=inband_dtmf,
            symmetric=symmetric,
            on_dtmf=on_dtmf,
            on_audio=on_audio,
        )
        host = _ip_literal(ports.host)
        for _ in range(ports.capacity):
            port = ports.reserve()
            try:
                sock = _bind_socket(host, port)
            except OSError:
                ports.release(port)  # taken by another process; try the next one
                continue
            try:
                await session._loop.create_datagram_endpoint(lambda: session, sock=sock)
            except BaseException:
                sock.close()
                ports.release(port)
                raise
            session.local_port = port
            break
        else:
            raise MediaPortsExhausted(
                f"no RTP port could be bound on {host} in {ports.first}-{ports.last}"
            )
        ports.sessions_open += 1
        try:
            session.configure(
                remote,
                codec=codec,
                payload_type=payload_type,
                telephone_event_payload_type=telephone_event_payload_type,
            )
        except BaseException:
            session.close()  # a bad remote address must not keep the socket and port
            raise
        return session

    def configure(
        self,
        remote: tuple[str, int] | None,
        *,
        codec: G711Codec | str = "PCMU",
        payload_type: int | None = None,
        telephone_event_payload_type: int | None = None,
    ) -> None:
        """Apply the negotiated media: remote RTP address (IP literal, port), codec
        (``PCMU``/``PCMA``), its payload type (the static one by default) and the
        telephone-event payload type, or None if the peer offered none (then DTMF
        is detected in-band and sent in-band). Restarts source latching."""
        self.codec = codec if isinstance(codec, G711Codec) else codec_by_name(codec)
        self.payload_type = self.codec.static_payload_type if payload_type is None else payload_type
        self.telephone_event_payload_type = telephone_event_payload_type
        if remote is not None:
            remote = (_ip_literal(remote[0]), int(remote[1]))
        self._signalled_remote = remote
        self.remote = remote
        self._latched = False
        self._probation_source = None
        if self._prompt is not None:
            self._frames = self._prompt.frames(self.codec)
        self._update_ticking()

    @property
    def local_address(self) -> tuple[str, int]:
        return self._ports.host, self.local_port

    @property
    def closed(self) -> bool:
        return self._closed

    # --------------------------------------------------------------- playback

    @property
    def playing(self) -> bool:
        return self._frames is not None

    def play(
        self,
        prompts: Prompt | Sequence[Prompt],
        on_done: Callable[[bool], None] | None = None,
        *,
        repeat: bool = False,
    ) -> None:
        """Play one prompt or several back to back, replacing any playback.

        ``on_done(finished)`` is called once: True when the last prompt played to
        its end, False when the playback was stopped, replaced or the session
        closed. With ``repeat`` (music on hold) the prompts loop until stopped.
        """
        if self._closed:
            # The peer hung up as the prompt was about to start: nothing to play to, which
            # is what a stopped playback reports (no error for the application to trip on).
            if on_done is not None:
                self._call(on_done, False)
            return
        playlist = (prompts,) if isinstance(prompts, Prompt) else tuple(prompts)
        replaced = self._take_playback()
        if playlist:
            self._playlist.extend(playlist)
            self._repeat = playlist if repeat else ()
            self._on_done = on_done
            self._start_next_prompt()
        self._update_ticking()
        # Callbacks last: they may start another playback.
        if replaced is not None:
            self._call(replaced, False)
        if not playlist and on_done is not None:
            self._call(on_done, True)

    def stop_playback(self) -> None:
        """Stop the current playback (its ``on_done`` gets False)."""
        stopped = self._take_playback()
        self._update_ticking()
        if stopped is not None:
            self._call(stopped, False)

    def _start_next_prompt(self) -> bool:
        if not self._playlist and self._repeat:
            self._playlist.extend(self._repeat)
        if not self._playlist:
            return False
        prompt = self._playlist.popleft()
        self._prompt = prompt
        self._frames = prompt.frames(self.codec)
        self._frame_index = 0
        return True

    def _take_playback(self) -> Callable[[bool], None] | None:
        """End the playback state; returns its ``on_done`` for the caller to call."""
        on_done = self._on_done
        self._on_done = None
        self._playlist.clear()
        self._repeat = ()
        self._prompt = None
        self._frames = None
        # A relay into this leg resumes on fresh sequence/timestamp mappings.
        self._relay_source_ssrc = -1
        return on_done

    # ------------------------------------------------------------ DTMF sending

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None:
        """Queue DTMF digits: RFC 4733 events if negotiated, else in-band tones.

        Events go out one packet per tick in place of audio; a playing prompt
        pauses meanwhile and resumes where it was.
        """
        if self._closed:
            raise RuntimeError("RTP session is closed")
        for digit in digits:
            event_for_digit(digit)  # validate all before queueing any
        if duration_ms is not None:
            if not 40 <= duration_ms <= 5000:
                raise ValueError(f"DTMF duration {duration_ms} ms is outside 40-5000 ms")
            self.dtmf_duration_ms = duration_ms
        self._dtmf_queue.extend(digits)
        self._update_ticking()

    def _start_next_digit(self) -> None:
        digit = self._dtmf_queue.popleft()
        if self.telephone_event_payload_type is not None:
            self._event_payloads = dtmf_event_packets(
                digit, self.dtmf_duration_ms, self.dtmf_volume
            )
            self._event_inband = False
        else:
            self._event_payloads = _inband_dtmf_frames(
                digit.upper(), self.codec, self.dtmf_duration_ms
            )
            self._event_inband = True
        self._event_index = 0

    # ------------------------------------------------------------ clock side

    def _busy(self) -> bool:
        return (
            self._frames is not None or self._event_payloads is not None or bool(self._dtmf_queue)
        )

    def _update_ticking(self) -> None:
        wanted = not self._closed and (self._busy() or self.idle_audio is not IdleAudio.NONE)
        if wanted != self._ticking:
            self._ticking = wanted
            if wanted:
                self._clock.register(self)
            else:
                self._clock.unregister(self)

    def tick(self) -> None:
        """Send this tick's packet: DTMF first, then prompt audio, then idle audio."""
        if self._event_payloads is not None or self._dtmf_queue:
            self._tick_dtmf()
            return
        frames = self._frames
        if frames is not None:
            index = self._frame_index
            self._send_audio(frames[index])
            index += 1
            if index < len(frames):
                self._frame_index = index
            elif not self._start_next_prompt():
                finished = self._take_playback()
                self._update_ticking()
                if finished is not None:
                    self._call(finished, True)
            return
        if self.idle_audio is not IdleAudio.NONE:
            if self._clock.now - self._last_relayed_at < 1.5 * self._clock.interval:
                return  # a relay is feeding this leg
            idle = _idle_frames(self.idle_audio, self.codec)
            self._idle_index = (self._idle_index + 1) % len(idle)
            self._send_audio(idle[self._idle_index])
            return
        self._update_ticking()

    def _tick_dtmf(self) -> None:
        if self._event_payloads is None:
            self._start_next_digit()
        payloads = self._event_payloads
        assert payloads is not None
        index = self._event_index
        if self._event_inband:
            self._send_audio(payloads[index])
        else:
            self._send_event(payloads[index], index == 0)
        index += 1
        if index < len(payloads):
            self._event_index = index
        else:
            self._event_payloads = None
            if not self._busy():
                self._relay_source_ssrc = -1
                self._update_ticking()

    def _advance_for_gap(self, now: float) -> bool:
        """Before sending at ``now``: if the stream paused, move the timestamp on by
        the pause and return True (the packet starts a talkspurt, marker set)."""
        last = self._last_sent_at
        self._last_sent_at = now
        if last is None:
            return True
        interval = self._clock.interval
        gap = now - last
        if gap < 1.5 * interval:
            return False
        self._timestamp = (
            self._timestamp + _SAMPLES_PER_FRAME * (round(gap / interval) - 1)
        ) & 0xFFFFFFFF
        return True

    def _send_audio(self, payload: bytes) -> None:
        marker = self._advance_for_gap(self._clock.now)
        sequence = self._sequence
        timestamp = self._timestamp
        self._sequence = (sequence + 1) & 0xFFFF
        self._timestamp = (timestamp + len(payload)) & 0xFFFFFFFF
        remote = self.remote
        transport = self._transport
        if remote is None or transport is None:
            return
        pt = self.payload_type
        transport.sendto(
            _HEADER.pack(0x80, pt | 0x80 if marker else pt, sequence, timestamp, self.ssrc)
            + payload,
            remote,
        )
        self.packets_sent += 1

    def _send_event(self, payload: bytes, first: bool) -> None:
        gap_marker = self._advance_for_gap(self._clock.now)
        if first:
            self._event_timestamp = self._timestamp
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        # The media clock runs on during the event; audio after it continues from here.
        self._timestamp = (self._timestamp + _SAMPLES_PER_FRAME) & 0xFFFFFFFF
        remote = self.remote
        transport = self._transport
        pt = self.telephone_event_payload_type
        if remote is None or transport is None or pt is None:
            return
        marker = first or gap_marker
        transport.sendto(
            _HEADER.pack(
                0x80, pt | 0x80 if marker else pt, sequence, self._event_timestamp, self.ssrc
            )
            + payload,
            remote,
        )
        self.packets_sent += 1

    # -------------------------------------------------------------- receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport (3.11's does not).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.local_port:
            self._ports.release(self.local_port)
        if not self._closed:
            self.close()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is not listening (yet).
        log.debug("RTP socket %s: %s", self.local_port, exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < RTP_HEADER_SIZE or data[0] & 0xC0 != 0x80:
            self.packets_rejected += 1
            return
        remote = self.remote
        if not self._latched or remote is None or addr[1] != remote[1] or addr[0] != remote[0]:
            if not self._accept_source(data, addr):
                return
        self.packets_received += 1
        self.last_received_at = self._loop.time()
        payload_type = data[1] & 0x7F
        if payload_type == self.payload_type:
            relay = self._relay_target
            if relay is not None:
                relay._relay_in(data, self, False)
            if self.on_audio is not None or self._detects_inband_dtmf():
                self._decode_audio(data)
        elif payload_type == self.telephone_event_payload_type:
            self._receive_telephone_event(data)

    def _accept_source(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Whether a packet from ``addr`` is processed; latches the peer's address."""
        source = (addr[0], addr[1])
        if not self.symmetric:
            return True
        if source == self._signalled_remote:
            # The signalled address outranks a source learnt on probation: a stale stream (a
            # phone still sending to a port a crashed server had given it) may latch first.
            self._latch(source)
            return True
        if self._latched:
            self.packets_rejected += 1
            return False
        sequence = (data[2] << 8) | data[3]
        if source == self._probation_source and sequence == (self._probation_sequence + 1) & 0xFFFF:
            self._latch(source)
            return True
        self._probation_source = source
        self._probation_sequence = sequence
        self.packets_rejected += 1
        return False

    def _latch(self, source: tuple[str, int]) -> None:
        if source != self.remote:
            log.info(
                "RTP port %s latched on %s:%s (SDP said %s)",
                self.local_port,
                *source,
                self._signalled_remote,
            )
        self.remote = source
        self._latched = True
        self._probation_source = None

    def _payload_of(self, data: bytes) -> tuple[int, bytes]:
        """(timestamp, payload) of a packet, taking the fast path for a plain header."""
        if data[0] == 0x80:
            return int.from_bytes(data[4:8], "big"), data[RTP_HEADER_SIZE:]
        packet = parse_rtp(data)
        return packet.timestamp, packet.payload

    def _detects_inband_dtmf(self) -> bool:
        return (
            self.on_dtmf is not None
            and self.inband_dtmf
            and self.telephone_event_payload_type is None
        )

    def _decode_audio(self, data: bytes) -> None:
        try:
            _, payload = self._payload_of(data)
        except RtpError:
            self.packets_rejected += 1
            return
        on_audio = self.on_audio
        if on_audio is not None:
            self._call(on_audio, self.codec.decode(payload))
        if self._detects_inband_dtmf():
            detector = self._inband_detector
            if detector is None:
                detector = self._inband_detector = InbandDtmfDetector()
            for digit in detector.feed(self.codec.decode_samples(payload)):
                self._emit_dtmf(digit)

    def _receive_telephone_event(self, data: bytes) -> None:
        try:
            timestamp, payload = self._payload_of(data)
        except RtpError:
            self.packets_rejected += 1
            return
        relay = self._relay_target
        if relay is not None and relay.telephone_event_payload_type is not None:
            relay._relay_in(data, self, True)
        digit = self._telephone_events.feed(timestamp, payload)
        if digit is not None:
            self._received_telephone_event_digit(digit)
        self._last_telephone_event_at = self._loop.time()
        if self._telephone_events.pending and self._telephone_event_timer is None:
            self._telephone_event_timer = self._loop.call_later(
                _TELEPHONE_EVENT_TIMEOUT, self._telephone_event_timeout
            )

    def _telephone_event_timeout(self) -> None:
        self._telephone_event_timer = None
        if not self._telephone_events.pending:
            return
        quiet = self._loop.time() - self._last_telephone_event_at
        if quiet < _TELEPHONE_EVENT_TIMEOUT:
            self._telephone_event_timer = self._loop.call_later(
                _TELEPHONE_EVENT_TIMEOUT - quiet, self._telephone_event_timeout
            )
            return
        digit = self._telephone_events.flush()
        if digit is not None:
            self._received_telephone_event_digit(digit)

    def _received_telephone_event_digit(self, digit: str) -> None:
        self._emit_dtmf(digit)
        # Relaying to a leg without telephone-events: regenerate the digit in-band there.
        relay = self._relay_target
        if relay is not None and relay.telephone_event_payload_type is None and not relay._closed:
            relay.send_dtmf(digit)

    def _emit_dtmf(self, digit: str) -> None:
        if self.on_dtmf is not None:
            self._call(self.on_dtmf, digit)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("RTP session callback %r failed", callback)

    # ------------------------------------------------------------------ relay

    def forward_to(self, other: RtpSession | None) -> None:
        """Relay the audio (and telephone-events) received here out of ``other``.

        Call it on both legs to bridge them. Payloads are copied untouched when
        the codecs match and transcoded PCMU<->PCMA by table otherwise; SSRC,
        sequence and timestamp are mapped onto ``other``'s own, so its peer sees one
        continuous stream across prompts and relay. While ``other`` plays a prompt
        or sends DTMF, relayed audio into it is dropped. ``None`` stops relaying.
        """
        if other is self:
            raise ValueError("an RTP session cannot relay to itself")
        self._relay_target = other
        if other is not None:
            other._relay_source_ssrc = -1

    def _relay_in(self, data: bytes, source: RtpSession, event: bool) -> None:
        """Send a packet received by ``source`` out of this session."""
        remote = self.remote
        transport = self._transport
        if remote is None or transport is None or self._closed or self._busy():
            return
        if data[0] == 0x80:
            _, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
            payload = data[RTP_HEADER_SIZE:]
        else:
            try:
                packet = parse_rtp(data)
            except RtpError:
                return
            second = packet.payload_type | (0x80 if packet.marker else 0)
            sequence, timestamp, ssrc, payload = (
                packet.sequence,
                packet.timestamp,
                packet.ssrc,
                packet.payload,
            )
        marker = second & 0x80
        if ssrc != self._relay_source_ssrc:
            # New source (or this leg just played something): map its counters onto ours.
            now = self._loop.time()
            self._advance_for_gap(now)
            self._relay_source_ssrc = ssrc
            self._relay_sequence_offset = (self._sequence - sequence) & 0xFFFF
            self._relay_timestamp_offset = (self._timestamp - timestamp) & 0xFFFFFFFF
            marker = 0x80
        out_sequence = (sequence + self._relay_sequence_offset) & 0xFFFF
        out_timestamp = (timestamp + self._relay_timestamp_offset) & 0xFFFFFFFF
        if event:
            pt = self.telephone_event_payload_type
            assert pt is not None
        else:
            pt = self.payload_type
            if source.codec is not self.codec:
                payload = payload.translate(source.codec.transcode_table)
        transport.sendto(
            _HEADER.pack(0x80, pt | marker, out_sequence, out_timestamp, self.ssrc) + payload,
            remote,
        )
        self.packets_sent += 1
        if (out_sequence - self._sequence) & 0xFFFF < 0x8000:  # newer (RFC 1982 order)
            self._sequence = (out_sequence + 1) & 0xFFFF
            if not event:
                self._timestamp = (out_timestamp + len(payload)) & 0xFFFFFFFF
            self._last_sent_at = self._last_relayed_at = self._loop.time()

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Stop everything, close the socket and give the port back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.local_port:
            self._ports.sessions_open -= 1
        self._dtmf_queue.clear()
        self._event_payloads = None
        interrupted = self._take_playback()
        self._update_ticking()
        self._relay_target = None
        if self._telephone_event_timer is not None:
            self._telephone_event_timer.cancel()
            self._telephone_event_timer = None
        if self._transport is not None:
            self._transport.close()
        if interrupted is not None:
            self._call(interrupted, False)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.codec.name} -> {self.remote}"
        return f"<RtpSession :{self.local_port} {state}>"
