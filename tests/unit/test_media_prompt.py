"""Prompt loading: WAV formats, resampling, framing, the library cache and errors."""

from __future__ import annotations

import math
import struct
import wave
from array import array
from collections.abc import Callable
from pathlib import Path

import pytest

from pbx.media.g711 import (
    PCMA,
    PCMU,
    alaw_to_ulaw,
    linear_to_alaw,
    linear_to_samples,
    linear_to_ulaw,
    ulaw_to_alaw,
)
from pbx.media.prompt import (
    FRAME_BYTES,
    SHIPPED_PROMPTS,
    Prompt,
    PromptError,
    PromptLibrary,
    decimate_16k_to_8k,
)


def sine(frequency: float, rate: int, seconds: float, amplitude: float = 8000.0) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * frequency * n / rate))
        for n in range(int(rate * seconds))
    ]


def write_pcm_wav(
    path: Path, samples: list[int], rate: int = 8000, channels: int = 1, width: int = 2
) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        if width == 2:
            out.writeframes(array("h", samples).tobytes())
        else:
            out.writeframes(bytes((s >> 8) + 128 for s in samples))
    return path


def riff(fmt_body: bytes, data: bytes, extra_chunks: bytes = b"") -> bytes:
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + extra_chunks
    chunks += b"data" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def g711_fmt(tag: int, rate: int = 8000, channels: int = 1) -> bytes:
    return struct.pack("<HHIIHHH", tag, channels, rate, rate * channels, channels, 8, 0)


def rms(samples: list[int] | array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def test_8k_pcm_is_framed_in_both_laws(tmp_path: Path) -> None:
    samples = sine(440, 8000, 0.5)[:3999]  # not a whole number of frames
    prompt = Prompt.load(write_pcm_wav(tmp_path / "tone.wav", samples))
    pcm = array("h", samples).tobytes()
    ulaw = prompt.frames(PCMU)
    alaw = prompt.frames("pcma")
    assert len(ulaw) == len(alaw) == 25 == prompt.frame_count
    assert all(len(f) == FRAME_BYTES for f in ulaw + alaw)
    assert b"".join(ulaw)[:3999] == linear_to_ulaw(pcm)
    assert b"".join(alaw)[:3999] == linear_to_alaw(pcm)
    assert ulaw[-1][-1:] == b"\xff" and alaw[-1][-1:] == b"\xd5"  # padded with silence
    assert prompt.duration == pytest.approx(0.5)
    assert prompt.name == "tone"


def test_16k_pcm_is_low_passed_and_decimated(tmp_path: Path) -> None:
    in_band = Prompt.load(write_pcm_wav(tmp_path / "a.wav", sine(1000, 16000, 1.0), rate=16000))
    assert in_band.frame_count == 50
    decoded = PCMU.decode_samples(b"".join(in_band.frames(PCMU)))
    # Still a 1 kHz tone at the same level (steady part, away from the filter edges).
    steady = decoded[100:-100]
    assert rms(steady) == pytest.approx(8000 / math.sqrt(2), rel=0.05)
    expected = sine(1000, 8000, 1.0)[100:-100]
    correlation = sum(a * b for a, b in zip(steady, expected, strict=True))
    assert correlation / (rms(steady) * rms(expected) * len(steady)) > 0.99


def test_decimation_rejects_what_would_alias() -> None:
    # 6 kHz at 16 kHz would fold to 2 kHz at 8 kHz without the low-pass.
    out = decimate_16k_to_8k(sine(6000, 16000, 0.5, amplitude=20000))
    assert 20 * math.log10(rms(out[50:-50]) / (20000 / math.sqrt(2))) < -50
    passband = decimate_16k_to_8k(sine(3000, 16000, 0.5, amplitude=20000))
    assert 20 * math.log10(rms(passband[50:-50]) / (20000 / math.sqrt(2))) > -1.0


def test_ulaw_and_alaw_wavs(tmp_path: Path) -> None:
    audio = linear_to_ulaw(array("h", sine(700, 8000, 0.1)).tobytes())
    ulaw_path = tmp_path / "mu.wav"
    ulaw_path.write_bytes(riff(g711_fmt(7), audio))
    prompt = Prompt.load(ulaw_path)
    assert b"".join(prompt.frames(PCMU))[: len(audio)] == audio
    assert b"".join(prompt.frames(PCMA))[: len(audio)] == ulaw_to_alaw(audio)

    alaw = ulaw_to_alaw(audio)
    alaw_path = tmp_path / "a.wav"
    alaw_path.write_bytes(riff(g711_fmt(6), alaw, extra_chunks=b"LIST\x03\x00\x00\x00abc\x00"))
    prompt = Prompt.load(alaw_path)
    assert b"".join(prompt.frames(PCMA))[: len(alaw)] == alaw
    assert b"".join(prompt.frames(PCMU))[: len(alaw)] == alaw_to_ulaw(alaw)


def test_wave_format_extensible_pcm(tmp_path: Path) -> None:
    samples = sine(500, 8000, 0.04)
    guid_pcm = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    body = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4) + guid_pcm
    path = tmp_path / "ext.wav"
    path.write_bytes(riff(body, array("h", samples).tobytes()))
    assert b"".join(Prompt.load(path).frames(PCMU)) == linear_to_ulaw(array("h", samples).tobytes())


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"not a wave file at all"), "not a RIFF/WAVE"),
        (lambda p: write_pcm_wav(p, [0] * 100, channels=2), "must be mono"),
        (lambda p: write_pcm_wav(p, [0] * 100, width=1), "must be 16-bit"),
        (lambda p: write_pcm_wav(p, [0] * 100, rate=44100), "44100 Hz"),
        (lambda p: write_pcm_wav(p, []), "no audio"),
        (lambda p: p.write_bytes(riff(g711_fmt(7, rate=16000), b"\xff" * 10)), "µ-law at 16000"),
        (lambda p: p.write_bytes(riff(g711_fmt(0x55), b"\xff" * 10)), "format tag 0x0055"),
        (lambda p: p.write_bytes(b"RIFF\x04\x00\x00\x00WAVE"), "no fmt chunk"),
        (
            lambda p: p.write_bytes(
                b"RIFF\x1c\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + g711_fmt(7)[:16]
            ),
            "no data chunk",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_problem(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(PromptError, match=reason) as raised:
        Prompt.load(path)
    assert raised.value.path == path
    assert str(path) in str(raised.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no such prompt file") as raised:
        PromptLibrary(tmp_path).get("en/nothing")
    assert raised.value.path == tmp_path / "en" / "nothing.wav"


def test_library_caches_and_resolves_names() -> None:
    library = PromptLibrary()
    welcome = library.get("en/welcome")
    assert library.get(SHIPPED_PROMPTS / "en" / "welcome.wav") is welcome
    assert library.get("en/welcome.wav") is welcome
    assert len(library) == 1
    assert welcome.path == (SHIPPED_PROMPTS / "en" / "welcome.wav").resolve()


def test_shipped_prompt_set_is_complete() -> None:
    names = [
        "welcome", "main_menu", "faq_menu", "faq_password_reset", "faq_opening_hours",
        "faq_order_status", "press_0_for_agent", "invalid_option", "no_input", "goodbye",
        "please_hold", "you_are_next", "your_position_is", "minutes", "one_minute", "estimated_wait",
        "callback_offer", "callback_confirmed", "survey", "thank_you", "closed",
        "callback_wait_about", "callback_wait_unknown", "callback_number_is",
        "callback_confirm_menu", "callback_enter_number", "callback_number_too_short",
        "callback_number_too_long", "callback_number_digits_only", "callback_already_pending",
        "callback_not_booked", "star", "pound",
    ] + [f"number_{n}" for n in range(0, 21)]  # fmt: skip
    library = PromptLibrary()
    for language in ("en", "es"):
        for name in names:
            prompt = library.get(f"{language}/{name}")
            assert 0.2 < prompt.duration < 15, prompt
            # Real speech, not silence: a reasonable level somewhere in the prompt.
            loudest = max(rms(PCMU.decode_samples(frame)) for frame in prompt.frames(PCMU))
            assert loudest > 1000, prompt
    assert library.get("common/choose_language").duration > 2
    hold = library.get("common/hold_music")
    assert 25 <= hold.duration <= 35
    # Loops without a click: both ends fade to (near) silence.
    first, last = hold.frames(PCMU)[0], hold.frames(PCMU)[-1]
    assert rms(PCMU.decode_samples(first)) < 300 and rms(PCMU.decode_samples(last)) < 300


def test_frames_for_an_unknown_codec(tmp_path: Path) -> None:
    prompt = Prompt.from_linear(tmp_path / "x.wav", bytes(320))
    with pytest.raises(ValueError, match="G729"):
        prompt.frames("G729")
    assert list(linear_to_samples(PCMU.decode(prompt.frames(PCMU)[0]))) == [0] * 160
