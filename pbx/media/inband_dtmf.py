"""In-band DTMF: detect key presses in 8 kHz linear audio, and generate the tones.

Detection evaluates the eight DTMF frequencies (a Goertzel-style single-bin DFT)
over 20 ms windows advanced every 10 ms: each 10 ms half-block is transformed once
and a window is the phase-aligned sum of two halves, so the time resolution of
10 ms costs no more than non-overlapping 20 ms blocks. A window holds a digit when

* the strongest row and column tones both clear an absolute level,
* their ratio is within the twist limits (ITU-T Q.24 allows several dB),
* each is clearly stronger than the other tones of its group (relative peak), and
* together they carry most of the window's energy, which is what rejects speech
  and music (talk-off).

A digit is reported once when two consecutive windows agree (about 30 ms of tone)
and may be reported again only after two consecutive windows without it, so short
pauses between repeated digits are honoured and a single bad window during a
long press neither splits nor repeats it.

The per-frequency dot products use ``math.dist`` (C speed on Python 3.11, which
has no ``math.sumprod``) through the polarization identity
``x.c = (|x|^2 + |c|^2 - |x - c|^2) / 2``; an energy gate skips silent half-blocks.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from pbx.media.g711 import linear_to_samples, samples_to_linear

__all__ = [
    "DTMF_COLUMN_FREQUENCIES",
    "DTMF_ROW_FREQUENCIES",
    "InbandDtmfDetector",
    "dtmf_tone",
]

SAMPLE_RATE = 8000
DTMF_ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
DTMF_COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_DIGIT_FREQUENCIES = {
    digit: (DTMF_ROW_FREQUENCIES[row], DTMF_COLUMN_FREQUENCIES[column])
    for row, keys in enumerate(_KEYPAD)
    for column, digit in enumerate(keys)
}

_HALF_BLOCK = 80  # 10 ms at 8 kHz
_WINDOW = 2 * _HALF_BLOCK
_FREQUENCIES = DTMF_ROW_FREQUENCIES + DTMF_COLUMN_FREQUENCIES
_ZEROS = [0.0] * _HALF_BLOCK

# A full-scale sine (+3.17 dBm0) has amplitude 32124 after G.711, so 0 dBm0 is ~22400.
_ZERO_DBM0_AMPLITUDE = 22400.0


def _db(ratio_db: float) -> float:
    return 10.0 ** (ratio_db / 10.0)


def _basis(frequency: float) -> tuple[list[float], list[float], float, float]:
    """cos and sin of one frequency over a half-block, with their squared norms."""
    omega = 2.0 * math.pi * frequency / SAMPLE_RATE
    cosine = [math.cos(omega * n) for n in range(_HALF_BLOCK)]
    sine = [math.sin(omega * n) for n in range(_HALF_BLOCK)]
    return cosine, sine, math.fsum(c * c for c in cosine), math.fsum(s * s for s in sine)


_BASES = tuple(_basis(f) for f in _FREQUENCIES)
# The second half of a window starts 80 samples later, so its DFT term is rotated.
# Spectra are kept conjugated (x.cos + j x.sin), hence the positive angle.
_HALF_BLOCK_SHIFTS = tuple(
    complex(
        math.cos(2.0 * math.pi * f * _HALF_BLOCK / SAMPLE_RATE),
        math.sin(2.0 * math.pi * f * _HALF_BLOCK / SAMPLE_RATE),
    )
    for f in _FREQUENCIES
)
_NO_SPECTRUM = (0j,) * len(_FREQUENCIES)


class InbandDtmfDetector:
    """DTMF detector for one 8 kHz audio stream; feed it 20 ms frames (or any size)."""

    __slots__ = (
        "_min_tone_energy",
        "_gate_energy",
        "_max_row_over_column",
        "_max_column_over_row",
        "_relative_peak",
        "_min_tone_fraction",
        "_pending",
        "_previous_spectrum",
        "_previous_energy",
        "_window_digit",
        "_window_hits",
        "_pressed",
        "_misses",
    )

    def __init__(
        self,
        *,
        min_level_dbm0: float = -33.0,
        reverse_twist_db: float = 8.0,
        normal_twist_db: float = 4.0,
        relative_peak_db: float = 8.0,
        min_tone_fraction: float = 0.7,
    ) -> None:
        """
        ``min_level_dbm0``: weakest tone (each of the pair) that is detected.
        ``reverse_twist_db``: how much louder the row (low) tone may be than the column tone.
        ``normal_twist_db``: how much louder the column (high) tone may be than the row tone.
        ``relative_peak_db``: margin of the chosen tone over the others of its group.
        ``min_tone_fraction``: share of the window energy the two tones must carry.
        """
        amplitude = _ZERO_DBM0_AMPLITUDE * 10.0 ** (min_level_dbm0 / 20.0)
        # Energy of such a sine over one window: N * A^2 / 2.
        self._min_tone_energy = _WINDOW * amplitude * amplitude / 2.0
        # A half-block quieter than this cannot lift a window over the threshold.
        self._gate_energy = self._min_tone_energy / 8.0
        self._max_row_over_column = _db(reverse_twist_db)
        self._max_column_over_row = _db(normal_twist_db)
        self._relative_peak = _db(relative_peak_db)
        self._min_tone_fraction = min_tone_fraction
        self._pending: list[int] = []
        self.reset()

    def reset(self) -> None:
        """Forget all state (e.g. after a gap in the stream)."""
        self._pending.clear()
        self._previous_spectrum: Sequence[complex] = _NO_SPECTRUM
        self._previous_energy = 0.0
        self._window_digit: str | None = None
        self._window_hits = 0
        self._pressed: str | None = None
        self._misses = 0

    def feed(
        self, samples: bytes | bytearray | memoryview | array[int] | Sequence[int]
    ) -> list[str]:
        """Signed 16-bit samples (or little-endian PCM bytes); returns digits newly pressed."""
        if isinstance(samples, bytes | bytearray | memoryview):
            samples = linear_to_samples(samples)
        pending = self._pending
        pending.extend(samples)
        digits: list[str] = []
        start = 0
        available = len(pending)
        while available - start >= _HALF_BLOCK:
            digit = self._half_block(pending[start : start + _HALF_BLOCK])
            if digit is not None:
                digits.append(digit)
            start += _HALF_BLOCK
        if start:
            del pending[:start]
        return digits

    def _half_block(self, block: list[int]) -> str | None:
        dist = math.dist
        energy = dist(block, _ZEROS) ** 2
        spectrum: Sequence[complex]
        if energy < self._gate_energy:
            spectrum = _NO_SPECTRUM
        else:
            # Twice the conjugate DFT term: 2 x.c = |x|^2 + |c|^2 - |x - c|^2.
            spectrum = [
                complex(
                    energy + cosine_energy - dist(block, cosine) ** 2,
                    energy + sine_energy - dist(block, sine) ** 2,
                )
                for cosine, sine, cosine_energy, sine_energy in _BASES
            ]
        window_energy = energy + self._previous_energy
        digit = None
        if window_energy >= 2.0 * self._min_tone_energy:
            digit = self._classify(
                [
                    abs(first + shift * second) ** 2
                    for first, second, shift in zip(
                        self._previous_spectrum, spectrum, _HALF_BLOCK_SHIFTS, strict=True
                    )
                ],
                window_energy,
            )
        self._previous_spectrum = spectrum
        self._previous_energy = energy
        return self._debounce(digit)

    def _classify(self, powers: list[float], window_energy: float) -> str | None:
        """The digit a window holds, from the squared magnitudes of twice the DFT terms."""
        rows = powers[:4]
        columns = powers[4:]
        row_power = max(rows)
        column_power = max(columns)
        # A sine of amplitude A gives |X|^2 = (A N / 2)^2 and energy N A^2 / 2 = 2 |X|^2 / N;
        # the powers here are |2X|^2.
        row_energy = row_power * (0.5 / _WINDOW)
        column_energy = column_power * (0.5 / _WINDOW)
        if row_energy < self._min_tone_energy or column_energy < self._min_tone_energy:
            return None
        if row_energy > column_energy * self._max_row_over_column:
            return None
        if column_energy > row_energy * self._max_column_over_row:
            return None
        if row_energy + column_energy < self._min_tone_fraction * window_energy:
            return None
        best_row = rows.index(row_power)
        best_column = columns.index(column_power)
        peak = self._relative_peak
        for index, power in enumerate(rows):
            if index != best_row and power * peak > row_power:
                return None
        for index, power in enumerate(columns):
            if index != best_column and power * peak > column_power:
                return None
        return _KEYPAD[best_row][best_column]

    def _debounce(self, digit: str | None) -> str | None:
        if digit is not None and digit == self._window_digit:
            self._window_hits += 1
        else:
            self._window_digit = digit
            self._window_hits = 1 if digit is not None else 0
        if self._pressed is not None:
            if digit == self._pressed:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < 2:
                return None
            self._pressed = None
        if digit is not None and self._window_hits >= 2:
            self._pressed = digit
            self._misses = 0
            return digit
        return None


def dtmf_tone(
    digit: str,
    duration_ms: int = 100,
    *,
    row_level_dbm0: float = -7.0,
    column_level_dbm0: float = -5.0,
) -> bytes:
    """The dual tone of ``digit`` as 8 kHz 16-bit little-endian PCM.

    Default levels are the usual transmit levels (the high group 2 dB above the
    low group, to offset line loss at higher frequencies).
    """
    try:
        row_frequency, column_frequency = _DIGIT_FREQUENCIES[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None
    row_amplitude = _ZERO_DBM0_AMPLITUDE * 10.0 ** (row_level_dbm0 / 20.0)
    column_amplitude = _ZERO_DBM0_AMPLITUDE * 10.0 ** (column_level_dbm0 / 20.0)
    row_omega = 2.0 * math.pi * row_frequency / SAMPLE_RATE
    column_omega = 2.0 * math.pi * column_frequency / SAMPLE_RATE
    count = SAMPLE_RATE * duration_ms // 1000
    return samples_to_linear(
        round(
            row_amplitude * math.sin(row_omega * n) + column_amplitude * math.sin(column_omega * n)
        )
        for n in range(count)
    )
