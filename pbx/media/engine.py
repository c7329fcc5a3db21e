"""The media engine: the one door through which calls use media.

Signalling (``pbx.calls.manager``) and the applications (the IVR, the queue) never touch
sockets or another leg's media: they open a leg, play prompts on it, stop them, send
and hear DTMF, bridge two legs, and ask when a leg last heard its peer (dead-leg
timeouts). Everything else (ports, the media clock, latching, relaying, transcoding)
stays behind this door, so the media plane can move to another process or to a
dedicated engine (rtpengine over its ng protocol) by adding an implementation of
:class:`MediaEngine`, not by changing the calls.

:class:`EmbeddedMediaEngine` is the default: every leg an
:class:`~pbx.media.stream.RtpSession` in this process, all paced by the one shared
20 ms media clock, bridges relayed by :class:`~pbx.media.relay.RelayPath`.
:class:`~pbx.media.rtpengine.RtpengineMediaEngine` is the other: callers' media and
bridges through rtpengine, prompts and DTMF on embedded legs it composes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pbx.media.clock import MediaClock
from pbx.media.g711 import G711Codec
from pbx.media.ports import MediaPortsExhausted, PortAllocator
from pbx.media.prompt import Prompt
from pbx.media.relay import RelayPath
from pbx.media.stream import RtpSession

__all__ = ["EmbeddedMediaEngine", "MediaEngine", "MediaLeg", "MediaPortsExhausted", "MediaUnavailable",
           "WebRtcBridge"]


class MediaUnavailable(Exception):
    """The media engine cannot take a leg now (an external engine is down); says why."""


class WebRtcBridge(Protocol):
    """Rewrites the SDP of a dialog with a browser: WebRTC (ICE, DTLS-SRTP) on its side,
    plain RTP on the core's (`webrtc`: True for SDP going to the browser). Raises
    :class:`MediaUnavailable` when the engine cannot do it now."""

    async def offer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, webrtc: bool) -> bytes: ...

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, webrtc: bool) -> bytes: ...

    async def delete(self, call_id: str) -> None: ...


class MediaLeg(Protocol):
    """One leg's media as the calls and applications see it."""

    on_dtmf: Callable[[str], None] | None
    """Called with each digit the peer presses (RFC 4733 or in-band); None: not listening."""

    @property
    def local_host(self) -> str:
        """The address the peer sends to (what our SDP names)."""
        ...

    @property
    def local_port(self) -> int: ...

    @property
    def remote(self) -> tuple[str, int] | None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def playing(self) -> bool: ...

    @property
    def last_received_at(self) -> float | None:
        """``loop.time()`` the peer was last heard (None: never), for dead-leg timeouts."""
        ...

    def configure(self, remote: tuple[str, int] | None, *, codec: G711Codec | str = "PCMU",
                  payload_type: int | None = None,
                  telephone_event_payload_type: int | None = None) -> None: ...

    def play(self, prompts: Prompt | Sequence[Prompt], on_done: Callable[[bool], None] | None = None,
             *, repeat: bool = False) -> None: ...

    def stop_playback(self) -> None: ...

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None: ...

    def close(self) -> None: ...


class MediaEngine(Protocol):
    """Opens legs and bridges them; raises MediaPortsExhausted when it has no room, and
    MediaUnavailable when it cannot take legs at all (an external engine down)."""

    async def open_leg(self, *, remote: tuple[str, int] | None = None,
                       codec: G711Codec | str = "PCMU", payload_type: int | None = None,
                       telephone_event_payload_type: int | None = None,
                       partner: MediaLeg | None = None) -> MediaLeg:
        """A new leg; `remote` None when the peer's SDP is not known yet (our offer).
        `partner`: the leg this one is opened to be bridged with (a phone dialled for a
        caller), so that an engine can place the two halves of the bridge together."""
        ...

    def bridge(self, a: MediaLeg, b: MediaLeg) -> None:
        """Relay what each of `a` and `b` hears to the other (replacing any bridge either was in)."""
        ...

    def unbridge(self, leg: MediaLeg) -> None:
        """Stop relaying what `leg` hears (the other direction is left as it is)."""
        ...

    def resources(self) -> dict[str, int]:
        """What legs hold right now: ``rtp_sessions`` open and ``rtp_ports_in_use``."""
        ...


class EmbeddedMediaEngine:
    """Media in this process: an RtpSession per leg on the shared media clock."""

    def __init__(self, ports: PortAllocator, *, clock: MediaClock | None = None) -> None:
        self.ports = ports
        self.clock = clock

    async def open_leg(self, *, remote: tuple[str, int] | None = None,
                       codec: G711Codec | str = "PCMU", payload_type: int | None = None,
                       telephone_event_payload_type: int | None = None,
                       partner: MediaLeg | None = None) -> RtpSession:
        return await RtpSession.open(self.ports, remote=remote, codec=codec, payload_type=payload_type,
                                     telephone_event_payload_type=telephone_event_payload_type,
                                     clock=self.clock)

    def bridge(self, a: MediaLeg, b: MediaLeg) -> None:
        first, second = _own(a), _own(b)
        first.relay = RelayPath(first, second)
        second.relay = RelayPath(second, first)
        # Each side's outgoing stream maps the new source onto its own counters.
        first.relayed_ssrc = second.relayed_ssrc = -1

    def unbridge(self, leg: MediaLeg) -> None:
        _own(leg).relay = None

    def resources(self) -> dict[str, int]:
        return {"rtp_sessions": self.ports.sessions_open, "rtp_ports_in_use": self.ports.in_use}


def _own(leg: MediaLeg) -> RtpSession:
    if not isinstance(leg, RtpSession):
        raise TypeError(f"{leg!r} is not a leg of the embedded media engine")
    return leg
