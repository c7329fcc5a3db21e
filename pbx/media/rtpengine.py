"""The media door on rtpengine: bridged talk flows through rtpengine, not through Python.

How a caller's leg maps onto rtpengine (one rtpengine call per caller, driven over ng):

- The caller's side (tag ``caller``) faces the phone. The other side (tag ``inside``)
  faces whoever the caller talks to: first an embedded leg in this process (prompts,
  music on hold, DTMF detection: the IVR and the queue stay here), then, once bridged,
  the agent's or the called phone itself. Moving the inside from one to the other is
  one re-negotiation (offer from the caller's side, answer from the inside) with
  ``port-latching``, so rtpengine's ports never change and no phone is re-INVITEd.
- The leg of the phone that is dialled for this caller (:meth:`open_leg` with
  ``partner``) is that inside: its port is rtpengine's inside port, known at once.

Legs opened with no caller to pair with (no offer yet: late-offer INVITEs and calls
dialled out) and bridges between legs that are not each other's halves stay embedded,
or are relayed by the embedded engine between the inside legs: correct, not faster.

When rtpengine stops answering (its ``ping``, every ``ping_interval`` seconds, or any
command runs out of retransmissions), every leg it carried is reported lost through
``on_lost`` (the calls end with BYE on both legs) and new legs raise
:class:`MediaUnavailable` (the caller gets 503) until it answers again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pbx.media.engine import EmbeddedMediaEngine, MediaLeg, MediaUnavailable
from pbx.media.g711 import G711Codec
from pbx.media.ng import NgClient, NgError, NgTimeout
from pbx.media.prompt import Prompt
from pbx.media.stream import RtpSession

__all__ = ["RtpengineMediaEngine", "WebRtcMediaBridge"]

log = logging.getLogger(__name__)

_CALLER, _INSIDE = "caller", "inside"
# trust-address: the SDP's address is the peer's (the ng request comes from us, not from
# the phone); port-latching: rtpengine keeps its ports when the inside moves.
_FLAGS = ["trust-address", "port-latching"]
_G711 = ("PCMU", "PCMA")
_MEDIA_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)
_CONNECTION = re.compile(r"^c=IN IP[46] (\S+)", re.MULTILINE)


def _codec_name(codec: G711Codec | str) -> str:
    return (codec if isinstance(codec, str) else codec.name).upper()


class _Peer:
    """Where one side of an rtpengine call sends, as SDP."""

    __slots__ = ("address", "codec", "payload_type", "telephone_event_payload_type")

    def __init__(self, address: tuple[str, int], codec: G711Codec | str, payload_type: int | None,
                 telephone_event_payload_type: int | None) -> None:
        self.address = address
        self.codec = _codec_name(codec)
        self.payload_type = payload_type if payload_type is not None else (0 if self.codec == "PCMU" else 8)
        self.telephone_event_payload_type = telephone_event_payload_type

    def sdp(self) -> str:
        host, port = self.address
        family = "IP6" if ipaddress.ip_address(host).version == 6 else "IP4"
        payloads = [str(self.payload_type)]
        lines = [f"a=rtpmap:{self.payload_type} {self.codec}/8000"]
        if self.telephone_event_payload_type is not None:
            payloads.append(str(self.telephone_event_payload_type))
            lines += [f"a=rtpmap:{self.telephone_event_payload_type} telephone-event/8000",
                      f"a=fmtp:{self.telephone_event_payload_type} 0-16"]
        return "\r\n".join([
            "v=0", f"o=- 1 1 IN {family} {host}", "s=-", f"c=IN {family} {host}", "t=0 0",
            f"m=audio {port} RTP/AVP {' '.join(payloads)}", *lines, "a=sendrecv", "",
        ])


def _local_address(reply: dict[str, Any]) -> tuple[str, int]:
    """rtpengine's address and port in the SDP of its reply."""
    sdp = reply.get("sdp")
    port = _MEDIA_PORT.search(sdp) if isinstance(sdp, str) else None
    host = _CONNECTION.search(sdp) if isinstance(sdp, str) else None
    if port is None or host is None:
        raise NgError("rtpengine's reply carries no usable SDP (c= and m=audio)")
    return host.group(1), int(port.group(1))


class RtpengineLeg:
    """A caller's leg: rtpengine faces the phone; prompts and DTMF come from `inside`."""

    def __init__(self, engine: RtpengineMediaEngine, call_id: str, inside: RtpSession,
                 caller: _Peer) -> None:
        self._engine = engine
        self.call_id = call_id
        self.inside = inside
        self._caller = caller
        self.local_host = ""
        self.local_port = 0
        self._inside_address: tuple[str, int] = ("", 0)
        self.bridged_to: RtpenginePartnerLeg | None = None
        self.closed = False
        self.lost = False
        self.heard_at: float | None = None  # the caller, heard by rtpengine (polled)
        self._commands: asyncio.Task[None] | None = None

    # -- what the door shows
    @property
    def on_dtmf(self) -> Callable[[str], None] | None:
        return self.inside.on_dtmf

    @on_dtmf.setter
    def on_dtmf(self, handler: Callable[[str], None] | None) -> None:
        self.inside.on_dtmf = handler

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._caller.address

    @property
    def playing(self) -> bool:
        return self.inside.playing

    @property
    def last_received_at(self) -> float | None:
        heard = [t for t in (self.inside.last_received_at, self.heard_at) if t is not None]
        return max(heard) if heard else None

    def play(self, prompts: Prompt | Sequence[Prompt], on_done: Callable[[bool], None] | None = None,
             *, repeat: bool = False) -> None:
        self.inside.play(prompts, on_done, repeat=repeat)

    def stop_playback(self) -> None:
        self.inside.stop_playback()

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None:
        # Towards the caller from the inside leg, through rtpengine. Once bridged, the
        # inside is the other phone: see RtpenginePartnerLeg.send_dtmf.
        if self.bridged_to is None:
            self.inside.send_dtmf(digits, duration_ms)
        else:
            _digits_not_converted(self, digits)

    def configure(self, remote: tuple[str, int] | None, *, codec: G711Codec | str = "PCMU",
                  payload_type: int | None = None,
                  telephone_event_payload_type: int | None = None) -> None:
        """The caller's new SDP (a re-INVITE: hold, resume, a new address)."""
        if remote is None or self.closed:
            return
        self._caller = _Peer(remote, codec, payload_type, telephone_event_payload_type)
        self.inside.configure(self._inside_address, codec=codec, payload_type=payload_type,
                              telephone_event_payload_type=telephone_event_payload_type)
        self.submit(self._renegotiate())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.inside.close()
        self._engine.forget(self)

    # -- rtpengine
    async def set_up(self) -> None:
        """Create the rtpengine call: its caller side faces the phone, its inside the
        embedded leg."""
        inside_peer = self._inside_peer()
        offer = await self._engine.command("offer", **{
            "call-id": self.call_id, "from-tag": _INSIDE, "sdp": inside_peer.sdp(), "flags": _FLAGS})
        self.local_host, self.local_port = _local_address(offer)
        answer = await self._engine.command("answer", **{
            "call-id": self.call_id, "from-tag": _INSIDE, "to-tag": _CALLER,
            "sdp": self._caller.sdp(), "flags": _FLAGS})
        self._inside_address = _local_address(answer)
        self.inside.configure(self._inside_address, codec=self._caller.codec,
                              payload_type=self._caller.payload_type,
                              telephone_event_payload_type=self._caller.telephone_event_payload_type)

    def _inside_peer(self) -> _Peer:
        return _Peer((self.inside.local_host, self.inside.local_port), self._caller.codec,
                     self._caller.payload_type, self._caller.telephone_event_payload_type)

    async def _renegotiate(self) -> None:
        """Point the inside at the partner bridged to (or back at the embedded leg)."""
        partner = self.bridged_to
        inside = partner.peer if partner is not None and partner.peer is not None else self._inside_peer()
        # The phone bridged to may have chosen the other G.711 law (it was offered both):
        # rtpengine then translates, as the embedded relay would.
        translate = {"codec": {"transcode": list(_G711)}} if partner is not None else {}
        await self._engine.command("offer", **{
            "call-id": self.call_id, "from-tag": _CALLER, "to-tag": _INSIDE,
            "sdp": self._caller.sdp(), "flags": _FLAGS, **translate})
        await self._engine.command("answer", **{
            "call-id": self.call_id, "from-tag": _CALLER, "to-tag": _INSIDE,
            "sdp": inside.sdp(), "flags": _FLAGS})

    def submit(self, command: Coroutine[Any, Any, None]) -> None:
        """Run `command` after the ones submitted before it (the door's calls are not async)."""
        previous = self._commands

        async def in_turn() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            if self.lost:
                command.close()
                return
            try:
                await command
            except NgError as exc:
                log.warning("rtpengine call %s: %s", self.call_id, exc)

        self._commands = self._engine.run(in_turn())

    def connect(self, partner: RtpenginePartnerLeg) -> None:
        self.bridged_to = partner
        self.submit(self._renegotiate())

    def disconnect(self) -> None:
        if self.bridged_to is None:
            return
        self.bridged_to = None
        if not self.closed:
            self.submit(self._renegotiate())

    def __repr__(self) -> str:
        return f"<RtpengineLeg {self.call_id} {self.local_host}:{self.local_port}>"


def _digits_not_converted(leg: object, digits: str) -> None:
    # rtpengine injects DTMF ('play DTMF') only into media it decodes (its "inject DTMF"
    # flag: transcoding every packet of the call). RFC 4733 digits cross a bridge untouched;
    # only digits a phone sends by SIP INFO are not turned into RTP for the other phone.
    log.info("%r: %d DTMF digit(s) sent by SIP INFO not passed on (rtpengine bridge)", leg, len(digits))


class RtpenginePartnerLeg:
    """The leg of a phone dialled for a caller: the inside of the caller's rtpengine call."""

    on_dtmf: Callable[[str], None] | None = None
    playing = False

    def __init__(self, owner: RtpengineLeg) -> None:
        self.owner = owner
        self.local_host = owner._inside_address[0]
        self.local_port = owner._inside_address[1]
        self.peer: _Peer | None = None
        self.closed = False

    @property
    def remote(self) -> tuple[str, int] | None:
        return self.peer.address if self.peer is not None else None

    @property
    def last_received_at(self) -> float | None:
        return self.owner._engine.inside_heard.get(self.owner.call_id)

    def configure(self, remote: tuple[str, int] | None, *, codec: G711Codec | str = "PCMU",
                  payload_type: int | None = None,
                  telephone_event_payload_type: int | None = None) -> None:
        if remote is None:
            return
        self.peer = _Peer(remote, codec, payload_type, telephone_event_payload_type)
        if self.owner.bridged_to is self and not self.owner.closed:
            self.owner.submit(self.owner._renegotiate())  # a re-INVITE from this phone

    def play(self, prompts: Prompt | Sequence[Prompt], on_done: Callable[[bool], None] | None = None,
             *, repeat: bool = False) -> None:
        # Nothing is played to a bridged phone here; say so at once, as a stopped prompt.
        if on_done is not None:
            on_done(False)

    def stop_playback(self) -> None:
        pass

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None:
        _digits_not_converted(self, digits)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owner.bridged_to is self:
            self.owner.disconnect()

    def __repr__(self) -> str:
        return f"<RtpenginePartnerLeg of {self.owner.call_id} :{self.local_port}>"


class RtpengineMediaEngine:
    """Bridged media through rtpengine; prompts and DTMF on the embedded engine's legs."""

    def __init__(self, address: tuple[str, int], embedded: EmbeddedMediaEngine, *,
                 ping_interval: float = 1.0, heard_poll_interval: float = 5.0,
                 command_timeout: float = 2.0) -> None:
        self.address = address
        self.embedded = embedded
        self.ping_interval = ping_interval
        self.heard_poll_interval = heard_poll_interval
        self.command_timeout = command_timeout
        self.on_lost: Callable[[list[MediaLeg]], None] | None = None
        """Called with the legs rtpengine carried when it stops answering."""
        self.available = False
        self.unavailable_reason = "rtpengine not started"
        self.legs: dict[str, RtpengineLeg] = {}
        self.inside_heard: dict[str, float] = {}
        self._client: NgClient | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    # -- lifetime
    async def start(self) -> None:
        self._client = await NgClient.connect(self.address, timeout=self.command_timeout)
        try:
            await self._client.command("ping")
            self._set_available(True)
        except NgError as exc:
            self._set_available(False, str(exc))
        self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        for leg in list(self.legs.values()):
            leg.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.command_timeout)
        if self._client is not None:
            self._client.close()

    async def command(self, name: str, **arguments: Any) -> dict[str, Any]:
        if self._client is None:
            raise NgError("the rtpengine media engine is not started")
        try:
            return await self._client.command(name, **arguments)
        except NgTimeout as exc:
            self._lose_everything(str(exc))
            raise

    def run(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the door
    async def open_leg(self, *, remote: tuple[str, int] | None = None,
                       codec: G711Codec | str = "PCMU", payload_type: int | None = None,
                       telephone_event_payload_type: int | None = None,
                       partner: MediaLeg | None = None) -> MediaLeg:
        if isinstance(partner, RtpengineLeg) and not partner.closed and not partner.lost:
            return RtpenginePartnerLeg(partner)
        if remote is None or partner is not None:
            return await self.embedded.open_leg(remote=remote, codec=codec, payload_type=payload_type,
                                                telephone_event_payload_type=telephone_event_payload_type)
        if not self.available:
            raise MediaUnavailable(f"media engine unavailable: {self.unavailable_reason}")
        inside = await self.embedded.open_leg(codec=codec, payload_type=payload_type,
                                              telephone_event_payload_type=telephone_event_payload_type)
        call_id = f"centralita-{self._prefix}-{next(self._ids)}"
        leg = RtpengineLeg(self, call_id, inside,
                           _Peer(remote, codec, payload_type, telephone_event_payload_type))
        self.legs[call_id] = leg
        try:
            await leg.set_up()
        except NgError as exc:
            self.forget(leg)
            leg.closed = True
            inside.close()
            raise MediaUnavailable(f"media engine unavailable: {exc}") from exc
        except BaseException:
            leg.close()
            raise
        return leg

    def bridge(self, a: MediaLeg, b: MediaLeg) -> None:
        for caller, partner in ((a, b), (b, a)):
            if isinstance(caller, RtpengineLeg) and isinstance(partner, RtpenginePartnerLeg) \
                    and partner.owner is caller:
                caller.connect(partner)
                return
        self.embedded.bridge(self._embedded_half(a), self._embedded_half(b))

    def unbridge(self, leg: MediaLeg) -> None:
        if isinstance(leg, RtpengineLeg):
            if leg.bridged_to is not None:
                leg.disconnect()
                return
        elif isinstance(leg, RtpenginePartnerLeg):
            if leg.owner.bridged_to is leg:
                leg.owner.disconnect()
            return
        self.embedded.unbridge(self._embedded_half(leg))

    def resources(self) -> dict[str, int]:
        return {**self.embedded.resources(), "rtpengine_calls": len(self.legs)}

    @staticmethod
    def _embedded_half(leg: MediaLeg) -> MediaLeg:
        if isinstance(leg, RtpengineLeg):
            return leg.inside
        if isinstance(leg, RtpenginePartnerLeg):
            raise TypeError(f"{leg!r} can only be bridged to its own caller")
        return leg

    def forget(self, leg: RtpengineLeg) -> None:
        """The caller's leg closed: its rtpengine call is deleted."""
        if self.legs.pop(leg.call_id, None) is None:
            return
        self.inside_heard.pop(leg.call_id, None)
        if not leg.lost and self.available:
            leg.submit(self._delete(leg.call_id))

    async def _delete(self, call_id: str) -> None:
        # At once: rtpengine otherwise keeps a deleted call (and its ports) for 30 s.
        await self.command("delete", **{"call-id": call_id, "delete-delay": 0})

    # -- health
    async def _watch(self) -> None:
        next_poll = time.monotonic() + self.heard_poll_interval
        while True:
            await asyncio.sleep(self.ping_interval)
            assert self._client is not None
            try:
                await self._client.command("ping")
            except NgError as exc:
                self._lose_everything(str(exc))
                continue
            if not self.available:
                self._set_available(True)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.heard_poll_interval
                try:
                    await self._poll_heard()
                except Exception:  # an odd reply must not stop the pings
                    log.exception("rtpengine: reading when calls were last heard failed")

    async def _poll_heard(self) -> None:
        """When rtpengine last heard each side (for dead-leg timeouts), converted to loop time."""
        loop = asyncio.get_running_loop()
        for call_id, leg in list(self.legs.items()):
            try:
                reply = await self.command("query", **{"call-id": call_id})
            except NgError:
                continue
            offset = loop.time() - time.time()
            for tag, side in (reply.get("tags") or {}).items():
                heard = _last_heard(side)
                if heard is None:
                    continue
                if tag == _CALLER:
                    leg.heard_at = heard + offset
                elif leg.bridged_to is not None:
                    self.inside_heard[call_id] = heard + offset

    def _set_available(self, available: bool, reason: str = "") -> None:
        if available and not self.available:
            log.warning("rtpengine at %s:%d answers: media through it again", *self.address)
        self.available = available
        self.unavailable_reason = reason

    def _lose_everything(self, reason: str) -> None:
        if self.available:
            log.error("rtpengine at %s:%d lost (%s): ending the %d calls it carried, refusing new "
                      "ones (503) until it answers", self.address[0], self.address[1], reason, len(self.legs))
        self._set_available(False, reason)
        lost: list[MediaLeg] = []
        for leg in self.legs.values():
            leg.lost = True
            lost.append(leg)
        self.legs.clear()
        self.inside_heard.clear()
        if lost and self.on_lost is not None:
            self.on_lost(lost)


def _last_heard(side: Any) -> float | None:
    """The latest 'last packet' (Unix seconds) of a side's RTP streams that received any."""
    latest: float | None = None
    for media in side.get("medias") or () if isinstance(side, dict) else ():
        for stream in media.get("streams") or ():
            stats = stream.get("stats") or {}
            if stats.get("packets", 0) > 0 and "RTP" in (stream.get("flags") or ()):
                packet = stream.get("last packet")
                if isinstance(packet, int) and (latest is None or packet > latest):
                    latest = float(packet)
    return latest


# What rtpengine writes for a browser (RFC 8827/8829: ICE, DTLS-SRTP, RTCP multiplexed,
# a=mid) and for the plain side (RTP/AVP, no ICE, RTCP on its own port, as the core
# and SIP phones expect). rtpengine answers the browser's DTLS as passive, so the
# browser connects (a=setup:active), which works through any NAT in front of it.
_WEBRTC_SIDE: dict[str, Any] = {
    "transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force", "DTLS": "passive",
    "SDES": ["off"], "rtcp-mux": ["require"], "flags": ["trust-address", "generate-mid"],
}
_PLAIN_SIDE: dict[str, Any] = {
    "transport-protocol": "RTP/AVP", "ICE": "remove", "rtcp-mux": ["demux"],
    "flags": ["trust-address"],
}


class WebRtcMediaBridge:
    """Rewrites SDP between a browser (WebRTC) and the core (plain RTP) through rtpengine.

    One rtpengine call per SIP dialog with a browser, named by its Call-ID and tags, as
    a SIP proxy in front of the core would do it. ``webrtc`` says which side the
    rewritten SDP is for: True towards the browser.
    """

    def __init__(self, engine: RtpengineMediaEngine) -> None:
        self.engine = engine

    async def offer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, webrtc: bool) -> bytes:
        return await self._rewrite("offer", call_id, from_tag, to_tag, sdp, webrtc)

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, webrtc: bool) -> bytes:
        return await self._rewrite("answer", call_id, from_tag, to_tag, sdp, webrtc)

    async def _rewrite(self, command: str, call_id: str, from_tag: str, to_tag: str, sdp: bytes,
                       webrtc: bool) -> bytes:
        if not self.engine.available:
            raise MediaUnavailable(f"media engine unavailable: {self.engine.unavailable_reason}")
        tags = {"from-tag": from_tag, **({"to-tag": to_tag} if to_tag else {})}
        try:
            reply = await self.engine.command(command, **{
                "call-id": call_id, **tags, "sdp": sdp.decode("utf-8", "replace"),
                **(_WEBRTC_SIDE if webrtc else _PLAIN_SIDE)})
        except NgError as exc:
            raise MediaUnavailable(f"rtpengine refused the {command}: {exc}") from exc
        rewritten = reply.get("sdp")
        if not isinstance(rewritten, str):
            raise MediaUnavailable(f"rtpengine's {command} reply carries no SDP")
        return rewritten.encode()

    async def delete(self, call_id: str) -> None:
        try:
            await self.engine.command("delete", **{"call-id": call_id, "delete-delay": 0})
        except NgError as exc:
            log.info("rtpengine call %s of a browser not deleted: %s", call_id, exc)
