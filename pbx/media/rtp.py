"""RTP fixed header (RFC 3550 section 5.1): parse and build.

Parsing validates what a receiver must (version 2, lengths of the CSRC list,
header extension and padding) and hands back the payload; building is one
``struct.pack`` plus the payload, the cheapest form in CPython. CSRCs and header
extensions are accepted on input and never produced: Centralita is an endpoint
and a relay that rewrites SSRCs, not a mixer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "build_rtp",
    "parse_rtp",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet."""


@dataclass(slots=True)
class RtpPacket:
    """One parsed RTP packet. Mutable only because frozen dataclasses are slow to build."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    """The 16-bit "defined by profile" field when the X bit was set."""
    extension: bytes = b""
    padding: int = 0
    """How many padding octets followed the payload (they are not part of it)."""


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP datagram, raising :class:`RtpError` on anything malformed."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"datagram of {size} bytes is shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version}, expected 2")
    offset = RTP_HEADER_SIZE
    csrc_count = first & 0x0F
    csrcs: tuple[int, ...] = ()
    if csrc_count:
        offset += 4 * csrc_count
        if size < offset:
            raise RtpError(f"datagram of {size} bytes is too short for {csrc_count} CSRCs")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE)
    extension_profile: int | None = None
    extension = b""
    if first & 0x10:
        if size < offset + 4:
            raise RtpError("datagram too short for the RTP header extension")
        extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        offset += 4
        end = offset + 4 * words
        if size < end:
            raise RtpError(f"RTP header extension of {words} words overruns the datagram")
        extension = bytes(data[offset:end])
        offset = end
    end = size
    padding = 0
    if first & 0x20:
        padding = data[size - 1]
        if padding == 0 or offset + padding > size:
            raise RtpError(f"invalid RTP padding count {padding}")
        end -= padding
    return RtpPacket(
        second & 0x7F,
        sequence,
        timestamp,
        ssrc,
        bytes(data[offset:end]),
        second >= 0x80,
        csrcs,
        extension_profile,
        extension,
        padding,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    """One RTP datagram with a 12-byte header; counters are wrapped to their field width."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"RTP payload type {payload_type} is outside 0-127")
    return (
        _FIXED_HEADER.pack(
            0x80,
            payload_type | 0x80 if marker else payload_type,
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        + payload
    )
