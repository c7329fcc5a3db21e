"""RFC 4733 telephone-events (DTMF over RTP): encode one event, decode a stream.

Payload format (RFC 4733 section 2.3)::

    0                   1                   2                   3
    |     event     |E|R| volume    |          duration             |

All packets of one event share the RTP timestamp of its start; ``duration``
grows in every update and the final value is repeated in (normally three) end
packets with the E bit set. The receiver therefore keys events by timestamp:
a key press is reported once, when its end arrives, or when a later event or a
timeout shows the end packets were lost.
"""

from __future__ import annotations

import struct
from collections import deque

__all__ = [
    "DTMF_DIGITS",
    "TelephoneEventReceiver",
    "digit_for_event",
    "dtmf_event_packets",
    "event_for_digit",
]

_PAYLOAD = struct.Struct("!BBH")

DTMF_DIGITS = "0123456789*#ABCD"
"""Event codes 0-15 in order (RFC 4733 section 3.2)."""

_EVENT_BY_DIGIT = {digit: code for code, digit in enumerate(DTMF_DIGITS)}
_EVENT_BY_DIGIT.update({digit.lower(): code for digit, code in tuple(_EVENT_BY_DIGIT.items())})

_MAX_DURATION = 0xFFFF
_END_REPETITIONS = 3


def event_for_digit(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (``0-9 * # A-D``)."""
    try:
        return _EVENT_BY_DIGIT[digit]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None


def digit_for_event(code: int) -> str | None:
    """The DTMF digit of an event code, or None for codes that are not DTMF."""
    return DTMF_DIGITS[code] if 0 <= code < 16 else None


def dtmf_event_packets(
    digit: str,
    duration_ms: int = 100,
    volume: int = 10,
    *,
    sample_rate: int = 8000,
    packet_ms: int = 20,
) -> list[bytes]:
    """The payloads of one DTMF event, to be sent one per packet interval.

    All share the RTP timestamp of the event start; the first one goes with the
    marker bit. Each update reports the duration so far; the last update has the E
    bit and is sent three times in all (RFC 4733 section 2.5.1.4). ``volume`` is
    the power level in -dBm0 (0-63).
    """
    code = event_for_digit(digit)
    if not 0 <= volume <= 63:
        raise ValueError(f"telephone-event volume {volume} is outside 0-63 (-dBm0)")
    step = sample_rate * packet_ms // 1000
    total = sample_rate * duration_ms // 1000
    if total < step:
        raise ValueError(f"a DTMF event must last at least one packet ({packet_ms} ms)")
    if total > _MAX_DURATION:
        raise ValueError(f"a DTMF event of {duration_ms} ms overflows the 16-bit duration field")
    updates = -(-total // step)
    payloads = [_PAYLOAD.pack(code, volume, min(step * n, total)) for n in range(1, updates)]
    end = _PAYLOAD.pack(code, 0x80 | volume, total)
    payloads.extend((end,) * _END_REPETITIONS)
    return payloads


class TelephoneEventReceiver:
    """Turns the telephone-event packets of one RTP stream into DTMF digits.

    ``feed`` returns a digit once per event: when an end packet arrives, or, if
    every end packet was lost, when the first packet of the next event arrives.
    ``flush`` reports an event whose end never came (call it when no
    telephone-event packet has arrived for a while, e.g. 250 ms). Retransmitted or
    late packets of an event already reported are ignored. Event codes that are
    not DTMF (flash, tones) are ignored.
    """

    __slots__ = ("_current_timestamp", "_current_code", "_current_reported", "_reported_timestamps")

    def __init__(self) -> None:
        self._current_timestamp: int | None = None
        self._current_code = 0
        self._current_reported = True
        # A few recent events, so a late end packet of an event already superseded
        # by the next one is not reported again.
        self._reported_timestamps: deque[int] = deque(maxlen=8)

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """One telephone-event payload with the RTP timestamp of its packet."""
        if len(payload) < 4:
            return None
        code = payload[0]
        if code >= 16 or timestamp in self._reported_timestamps:
            return None
        ended = payload[1] >= 0x80
        if timestamp == self._current_timestamp:
            if ended and not self._current_reported:
                return self._report_current()
            return None
        superseded = None if self._current_reported else self._report_current()
        self._current_timestamp = timestamp
        self._current_code = code
        self._current_reported = False
        if ended and superseded is None:
            return self._report_current()
        # If both are due, the new event is reported by its next end packet or flush().
        return superseded

    def flush(self) -> str | None:
        """Report the event in progress, if any, as if its end had arrived."""
        if self._current_reported:
            return None
        return self._report_current()

    @property
    def pending(self) -> bool:
        """Whether an event has started and not yet been reported."""
        return not self._current_reported

    def _report_current(self) -> str:
        self._current_reported = True
        assert self._current_timestamp is not None
        self._reported_timestamps.append(self._current_timestamp)
        return DTMF_DIGITS[self._current_code]
