"""Audio prompts: WAV files turned once into ready-to-send 20 ms G.711 frames.

Accepted files: mono 16-bit PCM at 8 kHz or 16 kHz, or mono 8 kHz G.711 µ-law /
A-law (WAVE format tags 1, 7, 6, also inside WAVE_FORMAT_EXTENSIBLE). 16 kHz audio
is low-pass filtered (a windowed-sinc FIR) and decimated to 8 kHz. The frames of
both laws are built at load time, so playback is a tuple index per packet.
The ``wave`` module is not used: it rejects the G.711 format tags.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

from pbx.media.g711 import (
    PCMA,
    PCMU,
    G711Codec,
    alaw_to_ulaw,
    linear_to_alaw,
    linear_to_samples,
    linear_to_ulaw,
    samples_to_linear,
    ulaw_to_alaw,
)

__all__ = [
    "FRAME_BYTES",
    "SHIPPED_PROMPTS",
    "Prompt",
    "PromptError",
    "PromptLibrary",
    "decimate_16k_to_8k",
]

SHIPPED_PROMPTS = Path(__file__).resolve().parent / "prompts"
FRAME_BYTES = 160
"""One 20 ms G.711 frame at 8 kHz."""

_FORMAT_PCM = 0x0001
_FORMAT_ALAW = 0x0006
_FORMAT_ULAW = 0x0007
_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {_FORMAT_PCM: "PCM", _FORMAT_ALAW: "A-law", _FORMAT_ULAW: "µ-law"}


class PromptError(Exception):
    """A prompt file that is missing, unreadable or in an unsupported format."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _lowpass_taps(
    count: int = 31, cutoff_hz: float = 3700.0, rate_hz: float = 16000.0
) -> tuple[float, ...]:
    """A linear-phase Blackman-windowed sinc low-pass, normalised to unity gain at DC."""
    middle = (count - 1) / 2
    fc = cutoff_hz / rate_hz
    taps = []
    for n in range(count):
        x = n - middle
        ideal = 2 * fc if x == 0 else math.sin(2 * math.pi * fc * x) / (math.pi * x)
        window = (
            0.42
            - 0.5 * math.cos(2 * math.pi * n / (count - 1))
            + 0.08 * math.cos(4 * math.pi * n / (count - 1))
        )
        taps.append(ideal * window)
    total = math.fsum(taps)
    return tuple(t / total for t in taps)


_DECIMATION_TAPS = _lowpass_taps()


def decimate_16k_to_8k(samples: Sequence[int]) -> list[int]:
    """Low-pass (below 4 kHz) and keep every other sample: 16 kHz -> 8 kHz."""
    taps = _DECIMATION_TAPS
    half = len(taps) // 2
    padded = [0] * half + list(samples) + [0] * half
    out = []
    span = len(taps)
    for start in range(0, len(samples), 2):
        value = sum(map(float.__mul__, taps, padded[start : start + span]))
        out.append(round(value))
    return out


def _frames(data: bytes, silence: int) -> tuple[bytes, ...]:
    remainder = len(data) % FRAME_BYTES
    if remainder:
        data += bytes((silence,)) * (FRAME_BYTES - remainder)
    return tuple(data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES))


class Prompt:
    """One prompt: its 20 ms frames in µ-law and A-law, 160 bytes each."""

    __slots__ = ("path", "_frames_by_codec")

    def __init__(self, path: Path, ulaw: bytes, alaw: bytes) -> None:
        self.path = path
        self._frames_by_codec = {
            PCMU.name: _frames(ulaw, PCMU.silence),
            PCMA.name: _frames(alaw, PCMA.silence),
        }

    @classmethod
    def from_linear(cls, path: Path, pcm_8k: bytes) -> Prompt:
        """A prompt from 8 kHz 16-bit little-endian PCM (``path`` only names it)."""
        return cls(path, linear_to_ulaw(pcm_8k), linear_to_alaw(pcm_8k))

    @classmethod
    def load(cls, path: Path | str) -> Prompt:
        """Read and convert a WAV file; raises :class:`PromptError` naming the file."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PromptError(path, "no such prompt file") from None
        except OSError as error:
            raise PromptError(path, f"cannot read: {error.strerror or error}") from None
        format_tag, rate, bits, audio = _parse_wav(path, data)
        if format_tag == _FORMAT_PCM:
            if rate == 16000:
                pcm = samples_to_linear(decimate_16k_to_8k(linear_to_samples(audio)))
            else:
                pcm = audio
            return cls.from_linear(path, pcm)
        if format_tag == _FORMAT_ULAW:
            return cls(path, audio, ulaw_to_alaw(audio))
        return cls(path, alaw_to_ulaw(audio), audio)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def frame_count(self) -> int:
        return len(self._frames_by_codec[PCMU.name])

    @property
    def duration(self) -> float:
        """Length in seconds (whole frames, the last one padded with silence)."""
        return self.frame_count * 0.020

    def frames(self, codec: G711Codec | str) -> tuple[bytes, ...]:
        """The frames encoded for ``codec`` (a :class:`G711Codec` or ``"PCMU"``/``"PCMA"``)."""
        name = codec if isinstance(codec, str) else codec.name
        try:
            return self._frames_by_codec[name.upper()]
        except KeyError:
            raise ValueError(f"no frames for codec {name!r}: only PCMU and PCMA") from None

    def __repr__(self) -> str:
        return f"Prompt({str(self.path)!r}, {self.duration:.2f} s)"


def _parse_wav(path: Path, data: bytes) -> tuple[int, int, int, bytes]:
    """(format tag, sample rate, bits per sample, audio bytes) of a supported WAV file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError(path, "not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    audio: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise PromptError(path, "truncated fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _FORMAT_EXTENSIBLE:
                if len(body) < 26:
                    raise PromptError(path, "truncated WAVE_FORMAT_EXTENSIBLE fmt chunk")
                (tag,) = struct.unpack_from("<H", body, 24)  # first 2 bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            audio = body
            break
        offset += 8 + size + (size & 1)  # chunks are word aligned
    if fmt is None:
        raise PromptError(path, "no fmt chunk")
    if audio is None:
        raise PromptError(path, "no data chunk")
    tag, channels, rate, bits = fmt
    if tag not in _FORMAT_NAMES:
        raise PromptError(
            path, f"unsupported WAVE format tag 0x{tag:04x} (need PCM, µ-law or A-law)"
        )
    if channels != 1:
        raise PromptError(path, f"{channels} channels: prompts must be mono")
    if tag == _FORMAT_PCM:
        if bits != 16:
            raise PromptError(path, f"{bits}-bit PCM: prompts must be 16-bit")
        if rate not in (8000, 16000):
            raise PromptError(path, f"PCM at {rate} Hz: prompts must be 8000 or 16000 Hz")
        audio = audio[: len(audio) - len(audio) % 2]
    else:
        if bits != 8 or rate != 8000:
            raise PromptError(
                path,
                f"{_FORMAT_NAMES[tag]} at {rate} Hz/{bits} bits: G.711 prompts must be 8000 Hz, 8-bit",
            )
    if not audio:
        raise PromptError(path, "no audio samples")
    return tag, rate, bits, audio


class PromptLibrary:
    """Loads prompts on first use and keeps them, keyed by resolved path.

    Relative paths are taken under ``root`` (the shipped prompts by default) and
    ``.wav`` is added when there is no suffix, so ``library.get("en/welcome")``
    works. Loading reads the file synchronously: warm the library at start-up
    (``preload``) so no call waits on the disk.
    """

    __slots__ = ("root", "_cache", "_by_name")

    def __init__(self, root: Path | str = SHIPPED_PROMPTS) -> None:
        self.root = Path(root)
        self._cache: dict[Path, Prompt] = {}
        # As asked for ("en/welcome"): resolving a path costs filesystem calls on every use.
        self._by_name: dict[Path | str, Prompt] = {}

    def resolve(self, path: Path | str) -> Path:
        resolved = Path(path)
        if not resolved.is_absolute():
            resolved = self.root / resolved
        if not resolved.suffix:
            resolved = resolved.with_suffix(".wav")
        return resolved.resolve()

    def get(self, path: Path | str) -> Prompt:
        prompt = self._by_name.get(path)
        if prompt is not None:
            return prompt
        resolved = self.resolve(path)
        prompt = self._cache.get(resolved)
        if prompt is None:
            prompt = Prompt.load(resolved)
            self._cache[resolved] = prompt
        self._by_name[path] = prompt
        return prompt

    def preload(self, pattern: str = "**/*.wav") -> int:
        """Load every file under ``root`` matching ``pattern``; returns how many."""
        paths = sorted(self.root.glob(pattern))
        for path in paths:
            self.get(path)
        return len(paths)

    def __len__(self) -> int:
        return len(self._cache)
