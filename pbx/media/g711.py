"""G.711 µ-law (PCMU) and A-law (PCMA), table driven.

The companding follows the ITU-T G.191 reference implementation (STL ``g711.c``):
µ-law looks at the 14 most significant bits of a 16-bit sample, A-law at the 13
most significant, and negative samples use the one's complement, so -1 encodes
as "negative zero" exactly as the reference does.

Linear audio is 16-bit signed little-endian PCM (``bytes``), the WAV and wire
convention. Decoding is two ``bytes.translate`` calls; encoding is one lookup per sample in
a 64 KiB table built on first use (about 40 ms, once per process); µ-law <-> A-law
transcoding is a single ``bytes.translate`` call.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

__all__ = [
    "PCMA",
    "PCMU",
    "G711Codec",
    "alaw_to_linear",
    "alaw_to_samples",
    "alaw_to_ulaw",
    "codec_by_name",
    "decode_alaw_sample",
    "decode_ulaw_sample",
    "encode_alaw_sample",
    "encode_ulaw_sample",
    "linear_to_alaw",
    "linear_to_ulaw",
    "samples_to_linear",
    "linear_to_samples",
    "ulaw_to_alaw",
    "ulaw_to_linear",
    "ulaw_to_samples",
]

_BIG_ENDIAN_HOST = sys.byteorder == "big"


def encode_ulaw_sample(sample: int) -> int:
    """One 16-bit signed sample to a µ-law code (G.191 ``ulaw_compress``)."""
    magnitude = ((~sample if sample < 0 else sample) >> 2) + 33
    if magnitude > 0x1FFF:
        magnitude = 0x1FFF
    segment = (magnitude >> 6).bit_length() + 1
    code = ((8 - segment) << 4) | (0x0F - ((magnitude >> segment) & 0x0F))
    return code | 0x80 if sample >= 0 else code


def decode_ulaw_sample(code: int) -> int:
    """One µ-law code to a 16-bit signed sample (G.191 ``ulaw_expand``)."""
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return magnitude if code & 0x80 else -magnitude


def encode_alaw_sample(sample: int) -> int:
    """One 16-bit signed sample to an A-law code (G.191 ``alaw_compress``)."""
    magnitude = (~sample if sample < 0 else sample) >> 4
    if magnitude > 15:
        exponent = 1
        while magnitude > 16 + 15:
            magnitude >>= 1
            exponent += 1
        magnitude = magnitude - 16 + (exponent << 4)
    if sample >= 0:
        magnitude |= 0x80
    return magnitude ^ 0x55


def decode_alaw_sample(code: int) -> int:
    """One A-law code to a 16-bit signed sample (G.191 ``alaw_expand``)."""
    unmasked = code ^ 0x55
    exponent = (unmasked & 0x7F) >> 4
    mantissa = unmasked & 0x0F
    if exponent > 0:
        mantissa += 16
    magnitude = (mantissa << 4) + 8
    if exponent > 1:
        magnitude <<= exponent - 1
    return magnitude if unmasked > 127 else -magnitude


# Decode tables: code -> signed sample.
_ULAW_SAMPLES: tuple[int, ...] = tuple(decode_ulaw_sample(code) for code in range(256))
_ALAW_SAMPLES: tuple[int, ...] = tuple(decode_alaw_sample(code) for code in range(256))
# Decoding to PCM is two translates (low and high byte) interleaved: all C loops.
_ULAW_LOW_BYTES = bytes(s & 0xFF for s in _ULAW_SAMPLES)
_ULAW_HIGH_BYTES = bytes((s >> 8) & 0xFF for s in _ULAW_SAMPLES)
_ALAW_LOW_BYTES = bytes(s & 0xFF for s in _ALAW_SAMPLES)
_ALAW_HIGH_BYTES = bytes((s >> 8) & 0xFF for s in _ALAW_SAMPLES)

# Transcoding by decode-then-encode; each code maps to the nearest code of the other law.
_ULAW_TO_ALAW = bytes(encode_alaw_sample(s) for s in _ULAW_SAMPLES)
_ALAW_TO_ULAW = bytes(encode_ulaw_sample(s) for s in _ALAW_SAMPLES)


@cache
def _ulaw_encode_table() -> bytes:
    """µ-law code for every 16-bit sample, indexed by the sample as unsigned."""
    return bytes(encode_ulaw_sample(u - 0x10000 if u & 0x8000 else u) for u in range(0x10000))


@cache
def _alaw_encode_table() -> bytes:
    """A-law code for every 16-bit sample, indexed by the sample as unsigned."""
    return bytes(encode_alaw_sample(u - 0x10000 if u & 0x8000 else u) for u in range(0x10000))


def _unsigned_samples(pcm: bytes | bytearray | memoryview) -> Iterable[int]:
    """The samples of little-endian 16-bit PCM as unsigned ints, without copying."""
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    if _BIG_ENDIAN_HOST:
        swapped = array("H", bytes(pcm))
        swapped.byteswap()
        return swapped
    return memoryview(pcm).cast("B").cast("H")


def _expand(data: bytes, low: bytes, high: bytes) -> bytes:
    pcm = bytearray(2 * len(data))
    pcm[0::2] = data.translate(low)
    pcm[1::2] = data.translate(high)
    return bytes(pcm)


def ulaw_to_linear(data: bytes) -> bytes:
    """µ-law bytes to 16-bit little-endian PCM."""
    return _expand(data, _ULAW_LOW_BYTES, _ULAW_HIGH_BYTES)


def alaw_to_linear(data: bytes) -> bytes:
    """A-law bytes to 16-bit little-endian PCM."""
    return _expand(data, _ALAW_LOW_BYTES, _ALAW_HIGH_BYTES)


def ulaw_to_samples(data: bytes) -> list[int]:
    """µ-law bytes to a list of signed sample values (for analysis, no PCM round trip)."""
    return list(map(_ULAW_SAMPLES.__getitem__, data))


def alaw_to_samples(data: bytes) -> list[int]:
    """A-law bytes to a list of signed sample values."""
    return list(map(_ALAW_SAMPLES.__getitem__, data))


def linear_to_ulaw(pcm: bytes | bytearray | memoryview) -> bytes:
    """16-bit little-endian PCM to µ-law bytes."""
    return bytes(map(_ulaw_encode_table().__getitem__, _unsigned_samples(pcm)))


def linear_to_alaw(pcm: bytes | bytearray | memoryview) -> bytes:
    """16-bit little-endian PCM to A-law bytes."""
    return bytes(map(_alaw_encode_table().__getitem__, _unsigned_samples(pcm)))


def ulaw_to_alaw(data: bytes) -> bytes:
    """Transcode µ-law to A-law without going through linear PCM."""
    return data.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """Transcode A-law to µ-law without going through linear PCM."""
    return data.translate(_ALAW_TO_ULAW)


def linear_to_samples(pcm: bytes | bytearray | memoryview) -> array[int]:
    """16-bit little-endian PCM to an ``array('h')`` of samples."""
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    samples = array("h", bytes(pcm))
    if _BIG_ENDIAN_HOST:
        samples.byteswap()
    return samples


def samples_to_linear(samples: Iterable[int]) -> bytes:
    """Signed sample values (clipped to 16 bits) to 16-bit little-endian PCM."""
    clipped = array("h", (-32768 if s < -32768 else 32767 if s > 32767 else s for s in samples))
    if _BIG_ENDIAN_HOST:
        clipped.byteswap()
    return clipped.tobytes()


@dataclass(frozen=True, slots=True, eq=False)
class G711Codec:
    """One G.711 law as negotiated in SDP: its name, static payload type and converters."""

    name: str
    static_payload_type: int
    silence: int
    """The code of digital silence (a positive zero sample)."""
    encode: Callable[[bytes | bytearray | memoryview], bytes]
    decode: Callable[[bytes], bytes]
    decode_samples: Callable[[bytes], list[int]]
    transcode_table: bytes
    """``bytes.translate`` table from this law to the other one."""

    def silence_frame(self, samples: int = 160) -> bytes:
        return bytes((self.silence,)) * samples

    def __repr__(self) -> str:
        return f"G711Codec({self.name})"


PCMU = G711Codec("PCMU", 0, 0xFF, linear_to_ulaw, ulaw_to_linear, ulaw_to_samples, _ULAW_TO_ALAW)
PCMA = G711Codec("PCMA", 8, 0xD5, linear_to_alaw, alaw_to_linear, alaw_to_samples, _ALAW_TO_ULAW)

_CODECS_BY_NAME = {"PCMU": PCMU, "PCMA": PCMA}


def codec_by_name(name: str) -> G711Codec:
    """The codec for an SDP encoding name (``PCMU``/``PCMA``, case-insensitive)."""
    try:
        return _CODECS_BY_NAME[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported audio codec {name!r}: only PCMU and PCMA") from None
