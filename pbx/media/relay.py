"""The relay: one direction of a bridge between two legs of the embedded media engine.

A :class:`RelayPath` is made by the engine's bridge, never by a leg: the receiving leg
hands each packet to the path it was given, and the path sends it out of the other
leg. Payloads are copied untouched when the codecs match and transcoded PCMU<->PCMA by
table otherwise; SSRC, sequence and timestamp are mapped onto the sending leg's own, so
its peer sees one continuous stream across prompts and relay. While the sending leg plays
a prompt or sends DTMF, relayed audio into it is dropped.

This is the hottest path of the server (50 packets a second per talking leg): keep it
free of allocations beyond the outgoing datagram, and measure changes with
``bench/bench_relay.py``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pbx.media.rtp import RTP_HEADER_SIZE, RtpError, parse_rtp

if TYPE_CHECKING:
    from pbx.media.stream import RtpSession

__all__ = ["RelayPath"]

_HEADER = struct.Struct("!BBHII")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class RelayPath:
    """Packets received on ``source`` go out of ``target``."""

    __slots__ = ("source", "target")

    def __init__(self, source: RtpSession, target: RtpSession) -> None:
        if source is target:
            raise ValueError("an RTP session cannot relay to itself")
        self.source = source
        self.target = target

    def forward(self, data: bytes, event: bool) -> None:
        """Send one RTP packet (audio, or a telephone-event when `event`) out of the target."""
        out = self.target
        remote = out.remote
        transport = out.transport
        if remote is None or transport is None or out.closed or out.sending_own:
            return
        if data[0] == 0x80:
            _, second, sequence, timestamp, ssrc = _unpack_header(data)
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
        if ssrc != out.relayed_ssrc:
            # New source (or the target just played something): map its counters onto ours.
            out.advance_for_gap(out.loop.time())
            out.relayed_ssrc = ssrc
            out.relay_sequence_offset = (out.sequence - sequence) & 0xFFFF
            out.relay_timestamp_offset = (out.timestamp - timestamp) & 0xFFFFFFFF
            marker = 0x80
        out_sequence = (sequence + out.relay_sequence_offset) & 0xFFFF
        out_timestamp = (timestamp + out.relay_timestamp_offset) & 0xFFFFFFFF
        if event:
            pt = out.telephone_event_payload_type
            assert pt is not None
        else:
            pt = out.payload_type
            source_codec = self.source.codec
            if source_codec is not out.codec:
                payload = payload.translate(source_codec.transcode_table)
        transport.sendto(
            _pack_header(0x80, pt | marker, out_sequence, out_timestamp, out.ssrc) + payload,
            remote,
        )
        out.packets_sent += 1
        if (out_sequence - out.sequence) & 0xFFFF < 0x8000:  # newer (RFC 1982 order)
            out.sequence = (out_sequence + 1) & 0xFFFF
            if not event:
                out.timestamp = (out_timestamp + len(payload)) & 0xFFFFFFFF
            out.last_sent_at = out.last_relayed_at = out.loop.time()

    @property
    def carries_events(self) -> bool:
        """Whether telephone-events can go through as they are (the target negotiated them)."""
        return self.target.telephone_event_payload_type is not None

    def forward_digit(self, digit: str) -> None:
        """A digit received as a telephone-event, for a target without them: played in-band."""
        out = self.target
        if out.telephone_event_payload_type is None and not out.closed:
            out.send_dtmf(digit)
