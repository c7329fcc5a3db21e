"""DTMF a leg receives: RFC 4733 telephone-events when negotiated, else tones detected
in the decoded audio.

An event whose end packets were lost is reported after 250 ms without event packets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pbx.media.inband_dtmf import InbandDtmfDetector
from pbx.media.telephone_event import TelephoneEventReceiver

__all__ = ["DtmfDetection"]

# Without packets for this long, a telephone-event whose end packets were lost is reported.
TELEPHONE_EVENT_TIMEOUT = 0.25


class DtmfDetection:
    """Turns received telephone-event payloads and audio samples into digits.

    ``on_event_digit(digit)`` gets each digit of a telephone-event (the leg reports it,
    and a bridge may regenerate it in-band on the other leg); in-band digits are
    returned by :meth:`feed_samples`.
    """

    __slots__ = ("_loop", "_on_event_digit", "_events", "_timer", "_last_event_at", "_inband")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_event_digit: Callable[[str], None]) -> None:
        self._loop = loop
        self._on_event_digit: Callable[[str], None] | None = on_event_digit
        self._events = TelephoneEventReceiver()
        self._timer: asyncio.TimerHandle | None = None
        self._last_event_at = 0.0
        self._inband: InbandDtmfDetector | None = None

    def feed_event(self, timestamp: int, payload: bytes) -> None:
        digit = self._events.feed(timestamp, payload)
        if digit is not None and self._on_event_digit is not None:
            self._on_event_digit(digit)
        self._last_event_at = self._loop.time()
        if self._events.pending and self._timer is None:
            self._timer = self._loop.call_later(TELEPHONE_EVENT_TIMEOUT, self._timeout)

    def feed_samples(self, samples: list[int]) -> list[str]:
        detector = self._inband
        if detector is None:
            detector = self._inband = InbandDtmfDetector()
        return detector.feed(samples)

    def close(self) -> None:
        # The callback is the leg's own method: dropping it frees the leg by reference
        # counting, without a pass of the garbage collector.
        self._on_event_digit = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self) -> None:
        self._timer = None
        if not self._events.pending:
            return
        quiet = self._loop.time() - self._last_event_at
        if quiet < TELEPHONE_EVENT_TIMEOUT:
            self._timer = self._loop.call_later(TELEPHONE_EVENT_TIMEOUT - quiet, self._timeout)
            return
        digit = self._events.flush()
        if digit is not None and self._on_event_digit is not None:
            self._on_event_digit(digit)
