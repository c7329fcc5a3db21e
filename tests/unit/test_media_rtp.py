"""RTP header parse/build (RFC 3550 section 5.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.media.rtp import RtpError, build_rtp, parse_rtp


@given(
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
)
def test_build_then_parse_round_trip(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool
) -> None:
    packet = parse_rtp(build_rtp(payload_type, sequence, timestamp, ssrc, payload, marker))
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        payload_type,
        sequence,
        timestamp,
        ssrc,
    )
    assert packet.payload == payload
    assert packet.marker is marker
    assert packet.csrcs == () and packet.extension_profile is None and packet.padding == 0


def test_header_layout() -> None:
    data = build_rtp(8, 0x1234, 0x89ABCDEF, 0xDEADBEEF, b"\xd5" * 3, marker=True)
    assert data == bytes.fromhex("80 88 1234 89abcdef deadbeef d5d5d5")


def test_counters_wrap_to_field_width() -> None:
    packet = parse_rtp(build_rtp(0, 0x10000, 0x100000000 + 5, 1, b""))
    assert (packet.sequence, packet.timestamp) == (0, 5)


def test_parse_with_csrcs_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 101, 7, 1000, 42)
    csrcs = struct.pack("!II", 11, 22)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    payload = b"\x05\x0a\x00\xa0"
    padding = b"\x00\x00\x03"
    packet = parse_rtp(header + csrcs + extension + payload + padding)
    assert packet.csrcs == (11, 22)
    assert packet.extension_profile == 0xBEDE
    assert packet.extension == b"\x10\xaa\x00\x00"
    assert packet.payload == payload
    assert packet.padding == 3
    assert packet.marker and packet.payload_type == 101


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter than"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x00" + bytes(11), "version 0"),
        (b"\x83" + bytes(11) + bytes(8), "3 CSRCs"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x05" + bytes(4), "overruns"),
        (b"\x90" + bytes(11) + b"\xbe", "header extension"),
        (b"\xa0" + bytes(11) + b"\x01\x00", "padding count 0"),
        (b"\xa0" + bytes(11) + b"\x01\x09", "padding count 9"),
    ],
)
def test_malformed_packets_raise(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


@given(st.binary(max_size=64))
def test_parse_never_fails_other_than_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert len(packet.payload) <= len(data) - 12


def test_build_rejects_payload_type_out_of_range() -> None:
    with pytest.raises(ValueError):
        build_rtp(128, 0, 0, 0, b"")
