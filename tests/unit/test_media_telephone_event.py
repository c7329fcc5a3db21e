"""RFC 4733 telephone-events: encoding one event, decoding streams with loss and repeats."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.media.telephone_event import (
    DTMF_DIGITS,
    TelephoneEventReceiver,
    digit_for_event,
    dtmf_event_packets,
    event_for_digit,
)


def fields(payload: bytes) -> tuple[int, bool, int, int]:
    code, flags, duration = struct.unpack("!BBH", payload)
    return code, bool(flags & 0x80), flags & 0x3F, duration


def test_event_packets_grow_duration_then_end_three_times() -> None:
    packets = [fields(p) for p in dtmf_event_packets("5", duration_ms=100, volume=10)]
    assert packets == [
        (5, False, 10, 160),
        (5, False, 10, 320),
        (5, False, 10, 480),
        (5, False, 10, 640),
        (5, True, 10, 800),
        (5, True, 10, 800),
        (5, True, 10, 800),
    ]


def test_event_shorter_than_a_whole_number_of_packets() -> None:
    packets = [fields(p) for p in dtmf_event_packets("#", duration_ms=50)]
    assert [p[3] for p in packets] == [160, 320, 400, 400, 400]
    assert [p[1] for p in packets] == [False, False, True, True, True]
    assert {p[0] for p in packets} == {11}


def test_single_packet_event_is_just_the_end_packets() -> None:
    assert [fields(p) for p in dtmf_event_packets("D", duration_ms=20, volume=0)] == [
        (15, True, 0, 160)
    ] * 3


def test_event_codes() -> None:
    assert [event_for_digit(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_for_digit("a") == 12
    assert digit_for_event(11) == "#" and digit_for_event(16) is None


@pytest.mark.parametrize(
    ("digit", "duration", "volume"),
    [("E", 100, 10), ("1", 10, 10), ("1", 9000, 10), ("1", 100, 64)],
)
def test_invalid_event_arguments(digit: str, duration: int, volume: int) -> None:
    with pytest.raises(ValueError):
        dtmf_event_packets(digit, duration, volume)


def feed_all(receiver: TelephoneEventReceiver, packets: list[tuple[int, bytes]]) -> list[str]:
    reported = [receiver.feed(ts, payload) for ts, payload in packets]
    return [d for d in reported if d is not None]


def event(digit: str, timestamp: int, duration_ms: int = 100) -> list[tuple[int, bytes]]:
    return [(timestamp, p) for p in dtmf_event_packets(digit, duration_ms)]


def test_each_event_reported_once_on_its_first_end_packet() -> None:
    receiver = TelephoneEventReceiver()
    packets = event("7", 1000)
    reports = [receiver.feed(ts, p) for ts, p in packets]
    assert reports == [None, None, None, None, "7", None, None]
    assert receiver.flush() is None


def test_redundant_updates_and_retransmitted_ends_count_once() -> None:
    receiver = TelephoneEventReceiver()
    packets = event("1", 500)
    doubled = [p for p in packets for _ in range(2)] + packets[-1:] * 4
    assert feed_all(receiver, doubled) == ["1"]


def test_same_digit_twice_is_two_events() -> None:
    receiver = TelephoneEventReceiver()
    assert feed_all(receiver, event("3", 100) + event("3", 1700)) == ["3", "3"]


def test_lost_end_packets_reported_when_the_next_event_starts() -> None:
    receiver = TelephoneEventReceiver()
    first = event("4", 100)[:-3]  # all three ends lost
    second = event("5", 2000)
    reports = [receiver.feed(ts, p) for ts, p in first + second]
    assert reports[len(first)] == "4"  # on the first packet of the next event
    assert [r for r in reports if r] == ["4", "5"]


def test_lost_end_packets_reported_by_flush() -> None:
    receiver = TelephoneEventReceiver()
    assert feed_all(receiver, event("9", 100)[:-3]) == []
    assert receiver.pending
    assert receiver.flush() == "9"
    assert receiver.flush() is None
    # Straggling packets of that event are not reported again.
    assert feed_all(receiver, event("9", 100)) == []


def test_late_end_of_a_superseded_event_is_ignored() -> None:
    receiver = TelephoneEventReceiver()
    first = event("2", 100)
    second = event("8", 2000)
    assert feed_all(receiver, first[:4] + second[:2] + first[4:] + second[2:]) == ["2", "8"]


def test_end_arriving_before_the_updates() -> None:
    receiver = TelephoneEventReceiver()
    packets = event("*", 300)
    assert feed_all(receiver, packets[4:] + packets[:4]) == ["*"]


def test_only_an_end_packet_after_an_unfinished_event() -> None:
    # Both events are due on one packet: the older is returned, the newer on flush.
    receiver = TelephoneEventReceiver()
    assert feed_all(receiver, event("1", 100)[:2] + event("2", 900)[-1:]) == ["1"]
    assert receiver.flush() == "2"


def test_non_dtmf_events_and_short_payloads_are_ignored() -> None:
    receiver = TelephoneEventReceiver()
    flash = struct.pack("!BBH", 16, 0x80 | 10, 800)
    tone = struct.pack("!BBH", 200, 10, 160)
    assert receiver.feed(50, flash) is None
    assert receiver.feed(60, tone) is None
    assert receiver.feed(70, b"\x01\x80") is None
    assert not receiver.pending
    assert feed_all(receiver, event("0", 80)) == ["0"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DTMF_DIGITS),
            st.integers(40, 400),
            st.lists(st.integers(0, 3), min_size=30, max_size=30),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_loss_or_duplication_reports_the_sequence(
    presses: list[tuple[str, int, list[int]]],
) -> None:
    """Each packet is lost (0), sent once (1) or repeated (2, 3); at least one per event survives."""
    receiver = TelephoneEventReceiver()
    reported: list[str] = []
    timestamp = 12345
    for digit, duration_ms, copies in presses:
        packets = dtmf_event_packets(digit, duration_ms)
        sent = [p for p, n in zip(packets, copies, strict=False) for _ in range(n)]
        if not sent:
            sent = packets[:1]
        for payload in sent:
            result = receiver.feed(timestamp, payload)
            if result is not None:
                reported.append(result)
        timestamp = (timestamp + 8 * duration_ms + 800) & 0xFFFFFFFF
    final = receiver.flush()
    if final is not None:
        reported.append(final)
    assert reported == [digit for digit, _, _ in presses]
