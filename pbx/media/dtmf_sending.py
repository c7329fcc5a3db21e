"""DTMF a leg sends: RFC 4733 telephone-events when the peer negotiated them, else
in-band tones, one packet payload per media clock tick. No socket, no clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import cache

from pbx.media.g711 import G711Codec
from pbx.media.inband_dtmf import dtmf_tone
from pbx.media.prompt import FRAME_BYTES
from pbx.media.telephone_event import dtmf_event_packets, event_for_digit

__all__ = ["DtmfSender"]


@cache
def _inband_dtmf_frames(digit: str, codec: G711Codec, duration_ms: int) -> tuple[bytes, ...]:
    """Tone then 60 ms of silence, so that repeated digits stay separate."""
    encoded = codec.encode(dtmf_tone(digit, duration_ms)) + codec.silence_frame(480)
    encoded += codec.silence_frame((-len(encoded)) % FRAME_BYTES)
    return tuple(encoded[i : i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES))


class DtmfSender:
    """Digits waiting to be sent, and the packets of the one being sent."""

    __slots__ = ("duration_ms", "volume", "inband", "busy", "_queue", "_payloads", "_index")

    def __init__(self) -> None:
        self.duration_ms = 100
        self.volume = 10
        self.inband = False
        """Whether the digit being sent goes as audio frames (no telephone-event)."""
        self.busy = False
        """A digit is being sent or waits (an attribute: read on every clock tick)."""
        self._queue: deque[str] = deque()
        self._payloads: Sequence[bytes] | None = None
        self._index = 0

    def queue(self, digits: str, duration_ms: int | None = None) -> None:
        for digit in digits:
            event_for_digit(digit)  # validate all before queueing any
        if duration_ms is not None:
            if not 40 <= duration_ms <= 5000:
                raise ValueError(f"DTMF duration {duration_ms} ms is outside 40-5000 ms")
            self.duration_ms = duration_ms
        self._queue.extend(digits)
        self.busy = bool(self._queue) or self._payloads is not None

    def clear(self) -> None:
        self._queue.clear()
        self._payloads = None
        self.busy = False

    def next_payload(self, telephone_event_payload_type: int | None,
                     codec: G711Codec) -> tuple[bytes, bool, bool]:
        """(payload, first packet of its digit, last packet of its digit); call while busy.
        The digit is sent as an event when `telephone_event_payload_type` is set."""
        if self._payloads is None:
            digit = self._queue.popleft()
            if telephone_event_payload_type is not None:
                self._payloads = dtmf_event_packets(digit, self.duration_ms, self.volume)
                self.inband = False
            else:
                self._payloads = _inband_dtmf_frames(digit.upper(), codec, self.duration_ms)
                self.inband = True
            self._index = 0
        payloads = self._payloads
        index = self._index
        index += 1
        if index < len(payloads):
            self._index = index
            return payloads[index - 1], index == 1, False
        self._payloads = None
        self.busy = bool(self._queue)
        return payloads[index - 1], index == 1, True
