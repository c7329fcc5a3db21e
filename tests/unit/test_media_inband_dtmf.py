"""In-band DTMF detection on generated tones, noise and the shipped prompts."""

from __future__ import annotations

import math
import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.media.g711 import PCMA, PCMU, G711Codec, linear_to_samples
from pbx.media.inband_dtmf import (
    DTMF_COLUMN_FREQUENCIES,
    DTMF_ROW_FREQUENCIES,
    InbandDtmfDetector,
    dtmf_tone,
)
from pbx.media.prompt import SHIPPED_PROMPTS, PromptLibrary

RATE = 8000
ALL_DIGITS = "123A456B789C*0#D"


def silence(ms: int) -> list[int]:
    return [0] * (RATE * ms // 1000)


def tone(digit: str, ms: int, **levels: float) -> list[int]:
    return list(linear_to_samples(dtmf_tone(digit, ms, **levels)))


def sine(frequency: float, ms: int, amplitude: float) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * frequency * n / RATE))
        for n in range(RATE * ms // 1000)
    ]


def add_noise(samples: list[int], rms: float, seed: int = 7) -> list[int]:
    noise = random.Random(seed)
    return [max(-32768, min(32767, round(s + noise.gauss(0.0, rms)))) for s in samples]


def detect(samples: list[int], frame: int = 160) -> list[str]:
    detector = InbandDtmfDetector()
    digits: list[str] = []
    for start in range(0, len(samples), frame):
        digits += detector.feed(samples[start : start + frame])
    return digits


def test_every_digit_is_detected_once() -> None:
    signal: list[int] = []
    for digit in ALL_DIGITS:
        signal += tone(digit, 80) + silence(60)
    assert "".join(detect(signal)) == ALL_DIGITS


def test_digits_in_noise_at_15_db_snr() -> None:
    signal: list[int] = silence(100)
    for digit in "0123456789*#":
        signal += tone(digit, 70) + silence(50)
    tone_power = sum(s * s for s in tone("5", 1000)) / RATE
    noisy = add_noise(signal, rms=math.sqrt(tone_power / 10 ** (15 / 10)))
    assert "".join(detect(noisy)) == "0123456789*#"


def test_repeated_digit_with_short_gaps() -> None:
    signal: list[int] = []
    for _ in range(4):
        signal += tone("5", 45) + silence(40)
    assert detect(signal) == ["5"] * 4


def test_long_press_is_one_digit() -> None:
    noisy_press = add_noise(tone("8", 1500), rms=300.0)
    assert detect(silence(30) + noisy_press + silence(30)) == ["8"]


def test_immediate_change_of_digit_is_reported() -> None:
    assert detect(tone("1", 100) + tone("9", 100)) == ["1", "9"]


@pytest.mark.parametrize("offset_ms", [0, 3, 5, 7, 10, 15])
def test_tone_shorter_than_20_ms_is_ignored(offset_ms: int) -> None:
    assert detect(silence(offset_ms) + tone("6", 15) + silence(60)) == []


@pytest.mark.parametrize("offset_ms", [0, 2, 5, 8])
def test_tone_of_40_ms_is_detected_at_any_alignment(offset_ms: int) -> None:
    assert detect(silence(offset_ms) + tone("6", 40) + silence(60)) == ["6"]


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_tones_survive_g711(codec: G711Codec) -> None:
    signal: list[int] = []
    for digit in "147*":
        signal += tone(digit, 60, row_level_dbm0=-20, column_level_dbm0=-18) + silence(60)
    pcm = array("h", signal).tobytes()
    decoded = codec.decode_samples(codec.encode(pcm))
    assert "".join(detect(decoded)) == "147*"


def test_pcm_bytes_and_odd_frame_sizes_give_the_same_digits() -> None:
    signal = silence(10) + tone("2", 60) + silence(50) + tone("C", 60) + silence(50)
    detector = InbandDtmfDetector()
    pcm = array("h", signal).tobytes()
    digits: list[str] = []
    for start in range(0, len(pcm), 74):  # 37 samples at a time
        digits += detector.feed(pcm[start : start + 74])
    assert digits == ["2", "C"]


def test_level_below_threshold_is_ignored() -> None:
    assert detect(tone("3", 200, row_level_dbm0=-45, column_level_dbm0=-45)) == []
    assert detect(tone("3", 200, row_level_dbm0=-28, column_level_dbm0=-28)) == ["3"]


def test_excessive_twist_is_rejected() -> None:
    assert detect(tone("3", 200, row_level_dbm0=-5, column_level_dbm0=-17)) == []
    assert detect(tone("3", 200, row_level_dbm0=-17, column_level_dbm0=-5)) == []
    assert detect(tone("3", 200, row_level_dbm0=-5, column_level_dbm0=-11)) == ["3"]


def test_single_tones_and_same_group_pairs_are_not_digits() -> None:
    assert detect(sine(DTMF_ROW_FREQUENCIES[0], 300, 8000)) == []
    two_rows = [
        a + b
        for a, b in zip(
            sine(DTMF_ROW_FREQUENCIES[0], 300, 8000),
            sine(DTMF_ROW_FREQUENCIES[2], 300, 8000),
            strict=True,
        )
    ]
    assert detect(two_rows) == []


def test_tone_pair_drowned_in_a_third_tone_is_rejected() -> None:
    # Speech-like: the DTMF pair carries well under half the energy.
    pair = tone("5", 300, row_level_dbm0=-20, column_level_dbm0=-20)
    other = sine(440.0, 300, 6000)
    assert detect([a + b for a, b in zip(pair, other, strict=True)]) == []


@pytest.mark.parametrize("rms", [30.0, 1000.0, 8000.0])
def test_white_noise_gives_nothing(rms: float) -> None:
    assert detect(add_noise(silence(5000), rms=rms, seed=int(rms))) == []


def test_silence_gives_nothing() -> None:
    assert detect(silence(2000)) == []


def test_shipped_prompts_give_nothing() -> None:
    library = PromptLibrary()
    count = library.preload()
    assert count >= 80
    for path in sorted(SHIPPED_PROMPTS.glob("**/*.wav")):
        frames = library.get(path).frames(PCMU)
        detector = InbandDtmfDetector()
        for frame in frames:
            assert detector.feed(PCMU.decode_samples(frame)) == [], path


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(ALL_DIGITS), min_size=1, max_size=6),
    st.integers(45, 150),
    st.integers(45, 120),
    st.integers(0, 19),
)
def test_digit_sequences(digits: list[str], on_ms: int, off_ms: int, lead_ms: int) -> None:
    signal = silence(lead_ms)
    for digit in digits:
        signal += tone(digit, on_ms) + silence(off_ms)
    assert detect(signal) == digits


def test_frequencies_are_the_standard_ones() -> None:
    assert DTMF_ROW_FREQUENCIES == (697.0, 770.0, 852.0, 941.0)
    assert DTMF_COLUMN_FREQUENCIES == (1209.0, 1336.0, 1477.0, 1633.0)
