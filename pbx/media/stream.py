"""RTP sessions: one UDP socket per call leg, paced by the shared media clock.

(Over 500 lines because the packet paths, receive and send, stay in one class: they run
per packet, and each hop to another object costs time on the hottest path.)

An :class:`RtpSession` is the embedded media engine's leg: it owns the socket, the
outgoing stream's header state (SSRC, sequence, timestamp) and the peer's address, and
composes the parts that each do one job: :mod:`~pbx.media.playback` (prompts and idle
audio), :mod:`~pbx.media.dtmf_sending`, :mod:`~pbx.media.dtmf_detection`, and a
:mod:`~pbx.media.relay` path given to it by the engine's bridge. It sends one packet per
clock tick while it has something to send, and hands what it receives to detection
and to its relay path.

Addressing follows the usual practice for phones behind NAT (symmetric RTP,
RFC 4961): packets are sent to the address from SDP until the peer's own packets
show where it really is. Latching is strict, to avoid hijacking the stream ("RTP
bleed"): a source equal to the signalled address is accepted at once, any other
only after two packets in sequence from it; once latched, packets from other
addresses are dropped until :meth:`RtpSession.configure` is called again (a
re-INVITE), except from the signalled address, which always wins the latch back.
Packets are not processed before a source is latched.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Callable, Sequence
from typing import cast

from pbx.media.clock import MediaClock, shared_media_clock
from pbx.media.dtmf_detection import DtmfDetection
from pbx.media.dtmf_sending import DtmfSender
from pbx.media.g711 import G711Codec, codec_by_name
from pbx.media.playback import IdleAudio, Playback, PlaybackDone, idle_frames
from pbx.media.ports import MediaPortsExhausted, PortAllocator, bind_rtp_socket, ip_literal
from pbx.media.prompt import FRAME_BYTES, Prompt
from pbx.media.relay import RelayPath
from pbx.media.rtp import RTP_HEADER_SIZE, RtpError, parse_rtp

__all__ = ["RtpSession"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_SAMPLES_PER_FRAME = FRAME_BYTES


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
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.idle_audio = idle_audio
        self.inband_dtmf = inband_dtmf
        self.symmetric = symmetric
        self.on_dtmf = on_dtmf
        self.on_audio = on_audio

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

        # The outgoing stream (RFC 3550: random SSRC, sequence and timestamp origins);
        # the clock's packets and relayed ones continue one another.
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.last_sent_at: float | None = None
        self._ticking = False
        self.closed = False
        self.sending_own = False
        """Playing or sending DTMF (kept by _update_ticking): relayed audio is dropped then.
        An attribute, not a property: the relay reads it for every packet."""

        # What the clock sends: DTMF first, then prompts, then idle audio.
        self.playback = Playback(self.codec)
        self.dtmf = DtmfSender()
        self._event_timestamp = 0
        self._idle_index = 0

        # Receiving.
        self._detection = DtmfDetection(self.loop, self._received_event_digit)
        self.last_received_at: float | None = None
        """``loop.time()`` of the last accepted packet, for dead-leg detection."""
        self.packets_sent = 0
        self.packets_received = 0
        self.packets_rejected = 0
        """Malformed packets and packets from an unexpected source."""

        # The relay: where this leg's packets go (set by the engine's bridge), and how a
        # relayed source's counters map onto this leg's outgoing stream.
        self.relay: RelayPath | None = None
        self.last_relayed_at = float("-inf")
        self.relayed_ssrc = -1
        self.relay_sequence_offset = 0
        self.relay_timestamp_offset = 0

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
        host = ip_literal(ports.host)
        for _ in range(ports.capacity):
            port = ports.reserve()
            try:
                sock = bind_rtp_socket(host, port)
            except OSError:
                ports.release(port)  # taken by another process; try the next one
                continue
            try:
                await session.loop.create_datagram_endpoint(lambda: session, sock=sock)
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
            remote = (ip_literal(remote[0]), int(remote[1]))
        self._signalled_remote = remote
        self.remote = remote
        self._latched = False
        self._probation_source = None
        self.playback.recode(self.codec)
        self._update_ticking()

    @property
    def local_address(self) -> tuple[str, int]:
        return self._ports.host, self.local_port

    @property
    def dtmf_duration_ms(self) -> int:
        return self.dtmf.duration_ms

    # --------------------------------------------------------------- playback

    @property
    def playing(self) -> bool:
        return self.playback.playing

    def play(
        self,
        prompts: Prompt | Sequence[Prompt],
        on_done: PlaybackDone | None = None,
        *,
        repeat: bool = False,
    ) -> None:
        """Play one prompt or several back to back, replacing any playback.

        ``on_done(finished)`` is called once: True when the last prompt played to
        its end, False when the playback was stopped, replaced or the session
        closed. With ``repeat`` (music on hold) the prompts loop until stopped.
        """
        if self.closed:
            # The peer hung up as the prompt was about to start: nothing to play to, which
            # is what a stopped playback reports (no error for the application to trip on).
            if on_done is not None:
                self._call(on_done, False)
            return
        playlist = (prompts,) if isinstance(prompts, Prompt) else tuple(prompts)
        replaced = self._take_playback()
        if playlist:
            self.playback.start(playlist, on_done, repeat)
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

    def _take_playback(self) -> PlaybackDone | None:
        # A relay into this leg resumes on fresh sequence/timestamp mappings.
        self.relayed_ssrc = -1
        return self.playback.take()

    # ------------------------------------------------------------ DTMF sending

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None:
        """Queue DTMF digits: RFC 4733 events if negotiated, else in-band tones.

        Events go out one packet per tick in place of audio; a playing prompt
        pauses meanwhile and resumes where it was.
        """
        if self.closed:
            raise RuntimeError("RTP session is closed")
        self.dtmf.queue(digits, duration_ms)
        self._update_ticking()

    # ------------------------------------------------------------ clock side

    def busy(self) -> bool:
        """Playing or sending DTMF: relayed audio into this leg is dropped meanwhile."""
        return self.playback.frames is not None or self.dtmf.busy

    def _update_ticking(self) -> None:
        busy = self.sending_own = self.busy()
        wanted = not self.closed and (busy or self.idle_audio is not IdleAudio.NONE)
        if wanted != self._ticking:
            self._ticking = wanted
            if wanted:
                self._clock.register(self)
            else:
                self._clock.unregister(self)

    def tick(self) -> None:
        """Send this tick's packet: DTMF first, then prompt audio, then idle audio."""
        if self.dtmf.busy:
            self._tick_dtmf()
            return
        playback = self.playback
        frames = playback.frames
        if frames is not None:
            index = playback.frame_index
            self._send_audio(frames[index])
            index += 1
            if index < len(frames):
                playback.frame_index = index
            elif not playback.next_prompt():
                finished = self._take_playback()
                self._update_ticking()
                if finished is not None:
                    self._call(finished, True)
            return
        if self.idle_audio is not IdleAudio.NONE:
            if self._clock.now - self.last_relayed_at < 1.5 * self._clock.interval:
                return  # a relay is feeding this leg
            idle = idle_frames(self.idle_audio, self.codec)
            self._idle_index = (self._idle_index + 1) % len(idle)
            self._send_audio(idle[self._idle_index])
            return
        self._update_ticking()

    def _tick_dtmf(self) -> None:
        payload, first, last = self.dtmf.next_payload(self.telephone_event_payload_type, self.codec)
        if self.dtmf.inband:
            self._send_audio(payload)
        else:
            self._send_event(payload, first)
        if last and not self.busy():
            self.relayed_ssrc = -1
            self._update_ticking()

    def advance_for_gap(self, now: float) -> bool:
        """Before sending at ``now``: if the stream paused, move the timestamp on by
        the pause and return True (the packet starts a talkspurt, marker set)."""
        last = self.last_sent_at
        self.last_sent_at = now
        if last is None:
            return True
        interval = self._clock.interval
        gap = now - last
        if gap < 1.5 * interval:
            return False
        self.timestamp = (
            self.timestamp + _SAMPLES_PER_FRAME * (round(gap / interval) - 1)
        ) & 0xFFFFFFFF
        return True

    def _send_audio(self, payload: bytes) -> None:
        marker = self.advance_for_gap(self._clock.now)
        sequence = self.sequence
        timestamp = self.timestamp
        self.sequence = (sequence + 1) & 0xFFFF
        self.timestamp = (timestamp + len(payload)) & 0xFFFFFFFF
        remote = self.remote
        transport = self.transport
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
        gap_marker = self.advance_for_gap(self._clock.now)
        if first:
            self._event_timestamp = self.timestamp
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFF
        # The media clock runs on during the event; audio after it continues from here.
        self.timestamp = (self.timestamp + _SAMPLES_PER_FRAME) & 0xFFFFFFFF
        remote = self.remote
        transport = self.transport
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
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.local_port:
            self._ports.release(self.local_port)
        if not self.closed:
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
        self.last_received_at = self.loop.time()
        payload_type = data[1] & 0x7F
        if payload_type == self.payload_type:
            relay = self.relay
            if relay is not None:
                relay.forward(data, False)
            if self.on_audio is not None or (  # _detects_inband_dtmf(), inline: every packet
                    self.on_dtmf is not None and self.inband_dtmf
                    and self.telephone_event_payload_type is None):
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
            for digit in self._detection.feed_samples(self.codec.decode_samples(payload)):
                self._emit_dtmf(digit)

    def _receive_telephone_event(self, data: bytes) -> None:
        try:
            timestamp, payload = self._payload_of(data)
        except RtpError:
            self.packets_rejected += 1
            return
        relay = self.relay
        if relay is not None and relay.carries_events:
            relay.forward(data, True)
        self._detection.feed_event(timestamp, payload)

    def _received_event_digit(self, digit: str) -> None:
        self._emit_dtmf(digit)
        # Relaying to a leg without telephone-events: the bridge regenerates it in-band there.
        relay = self.relay
        if relay is not None:
            relay.forward_digit(digit)

    def _emit_dtmf(self, digit: str) -> None:
        if self.on_dtmf is not None:
            self._call(self.on_dtmf, digit)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("RTP session callback %r failed", callback)

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Stop everything, close the socket and give the port back. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.local_port:
            self._ports.sessions_open -= 1
        self.dtmf.clear()
        interrupted = self._take_playback()
        self._update_ticking()
        self.relay = None
        self._detection.close()
        if self.transport is not None:
            self.transport.close()
        if interrupted is not None:
            self._call(interrupted, False)

    @property
    def local_host(self) -> str:
        """The address this leg's port is bound on (what SDP names)."""
        return self._ports.host

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.codec.name} -> {self.remote}"
        return f"<RtpSession :{self.local_port} {state}>"
