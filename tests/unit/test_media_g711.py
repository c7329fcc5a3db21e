"""G.711 against the ITU-T G.191 reference behaviour."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.media import g711
from pbx.media.g711 import (
    PCMA,
    PCMU,
    alaw_to_linear,
    alaw_to_samples,
    alaw_to_ulaw,
    codec_by_name,
    decode_alaw_sample,
    decode_ulaw_sample,
    encode_alaw_sample,
    encode_ulaw_sample,
    linear_to_alaw,
    linear_to_samples,
    linear_to_ulaw,
    samples_to_linear,
    ulaw_to_alaw,
    ulaw_to_linear,
    ulaw_to_samples,
)

ALL_SAMPLES = range(-32768, 32768)
ALL_CODES = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        (0xFF, 0),  # positive zero
        (0x7F, 0),  # negative zero
        (0x80, 32124),  # largest positive
        (0x00, -32124),  # largest negative
        (0x01, -31100),
        (0x0F, -16764),
        (0x10, -15996),
        (0xEF, 132),
        (0xFE, 8),
    ],
)
def test_ulaw_decoder_code_points(code: int, sample: int) -> None:
    assert decode_ulaw_sample(code) == sample
    assert ulaw_to_samples(bytes([code])) == [sample]


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        (0xD5, 8),  # smallest positive
        (0x55, -8),  # smallest negative
        (0xAA, 32256),  # largest positive
        (0x2A, -32256),  # largest negative
        (0x00, -5504),
        (0x01, -5248),
        (0x02, -6016),
        (0x80, 5504),
    ],
)
def test_alaw_decoder_code_points(code: int, sample: int) -> None:
    assert decode_alaw_sample(code) == sample
    assert alaw_to_samples(bytes([code])) == [sample]


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-1, 0x7F, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (7, 0xFE, 0xD5)],
)
def test_encoder_code_points(sample: int, ulaw: int, alaw: int) -> None:
    assert encode_ulaw_sample(sample) == ulaw
    assert encode_alaw_sample(sample) == alaw


def test_every_code_survives_decode_then_encode() -> None:
    # µ-law's negative zero (0x7F) decodes to 0, which encodes as positive zero.
    assert [c for c in range(256) if encode_ulaw_sample(decode_ulaw_sample(c)) != c] == [0x7F]
    assert [c for c in range(256) if encode_alaw_sample(decode_alaw_sample(c)) != c] == []


def test_quantisation_is_monotonic_and_picks_a_neighbouring_level() -> None:
    every_sample = pcm(*ALL_SAMPLES)
    for encode, decode in ((linear_to_ulaw, ulaw_to_samples), (linear_to_alaw, alaw_to_samples)):
        decoded = decode(encode(every_sample))
        assert all(a <= b for a, b in zip(decoded, decoded[1:], strict=False))
        levels = sorted(set(decode(ALL_CODES)))
        for x, y in zip(ALL_SAMPLES, decoded, strict=True):
            # y is the level of x's decision interval: within half the wider adjacent
            # step (+1 for the reference's one's complement of negatives), or the end
            # level when x is beyond the largest one.
            i = levels.index(y)
            step = max(levels[min(i + 1, len(levels) - 1)] - y, y - levels[max(i - 1, 0)])
            if levels[0] <= x <= levels[-1]:
                assert abs(x - y) <= step / 2 + 1, (x, y)
            else:
                assert y in (levels[0], levels[-1]), (x, y)


def test_bulk_codecs_match_sample_functions() -> None:
    every_sample = pcm(*ALL_SAMPLES)
    assert linear_to_ulaw(every_sample) == bytes(encode_ulaw_sample(s) for s in ALL_SAMPLES)
    assert linear_to_alaw(every_sample) == bytes(encode_alaw_sample(s) for s in ALL_SAMPLES)
    assert ulaw_to_linear(ALL_CODES) == pcm(*(decode_ulaw_sample(c) for c in ALL_CODES))
    assert alaw_to_linear(ALL_CODES) == pcm(*(decode_alaw_sample(c) for c in ALL_CODES))


@pytest.mark.parametrize(
    "encode,decode", [(linear_to_ulaw, ulaw_to_linear), (linear_to_alaw, alaw_to_linear)]
)
def test_sine_signal_to_quantisation_noise(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]
) -> None:
    # A 1004 Hz tone at -10 dBm0: G.711 gives well over 33 dB SQNR (G.712 mask).
    amplitude = 22400 * 10 ** (-10 / 20)
    samples = [round(amplitude * math.sin(2 * math.pi * 1004 * n / 8000)) for n in range(8000)]
    decoded = linear_to_samples(decode(encode(pcm(*samples))))
    signal = sum(s * s for s in samples)
    noise = sum((s - d) ** 2 for s, d in zip(samples, decoded, strict=True))
    assert 10 * math.log10(signal / noise) > 33


def test_transcoding_tables_are_decode_then_encode() -> None:
    assert ulaw_to_alaw(ALL_CODES) == linear_to_alaw(ulaw_to_linear(ALL_CODES))
    assert alaw_to_ulaw(ALL_CODES) == linear_to_ulaw(alaw_to_linear(ALL_CODES))


def test_tandem_transcoding_stays_close() -> None:
    # µ-law -> A-law -> µ-law must not drift by more than one quantisation step.
    for code in range(256):
        original = decode_ulaw_sample(code)
        back = ulaw_to_samples(alaw_to_ulaw(ulaw_to_alaw(bytes([code]))))[0]
        assert abs(original - back) <= max(16, abs(original) / 16), code


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_samples_linear_round_trip(samples: list[int]) -> None:
    assert list(linear_to_samples(samples_to_linear(samples))) == samples


def test_samples_to_linear_clips() -> None:
    assert list(linear_to_samples(samples_to_linear([40000, -40000]))) == [32767, -32768]


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        linear_to_ulaw(b"\x00\x01\x02")


def test_codec_lookup() -> None:
    assert codec_by_name("pcmu") is PCMU
    assert codec_by_name("PCMA") is PCMA
    assert PCMU.static_payload_type == 0 and PCMA.static_payload_type == 8
    assert PCMU.silence_frame() == b"\xff" * 160
    assert PCMA.decode_samples(PCMA.silence_frame(4)) == [8, 8, 8, 8]
    assert PCMU.transcode_table == g711._ULAW_TO_ALAW
    with pytest.raises(ValueError, match="G722"):
        codec_by_name("G722")
