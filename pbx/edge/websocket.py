"""SIP over WebSocket (RFC 7118): the `ws` and `wss` listeners, for phones in web pages.

Each WebSocket message carries one whole SIP message. A browser cannot be reached by a
connection we open (it listens nowhere), so requests to a phone registered over a
WebSocket go down the connection it registered on (RFC 7118 §5): the registrar keeps the
source address and transport, and the connection is found by them. Connections count
against the same caps as TCP and TLS ones (`sip.tcp`); instead of the idle timeout, a
WebSocket ping every 30 s finds a browser that went away (no pong: the connection closes).

A browser's media is WebRTC (ICE, DTLS-SRTP). The SIP core speaks plain RTP/AVP only, so
every SDP body crossing a WebSocket is rewritten by rtpengine (a `WebRtcBridge`) on the
way: WebRTC towards the browser, plain RTP towards the core, the way a Kamailio
WebSocket front end calls rtpengine. With the embedded media engine there is no bridge,
and a browser's WebRTC offer is refused with 488 and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from pbx.media.engine import MediaUnavailable, WebRtcBridge
from pbx.sip.errors import SipParseError
from pbx.sip.message import MAX_MESSAGE_SIZE, Request, Response, make_response, parse_message

if TYPE_CHECKING:
    from pbx.edge.transport import Address, Transports

log = logging.getLogger("pbx.edge.websocket")

SUBPROTOCOL = "sip"  # RFC 7118 §4.1
HEARTBEAT_SECONDS = 30.0  # WebSocket pings; a browser that misses the pong is gone
WEBRTC_PROFILE = b"UDP/TLS/RTP/SAVPF"
NO_WEBRTC_REASON = "WebRTC media needs media.engine: rtpengine"
_OFFERING_METHODS = ("INVITE", "UPDATE")


def offers_webrtc(message: Request | Response) -> bool:
    return WEBRTC_PROFILE in message.body and (message.content_type or "") == "application/sdp"


class WebSocketConnection:
    """One browser's WebSocket; its messages are handled in order, each way."""

    def __init__(self, owner: Transports, name: str, socket: web.WebSocketResponse, peer: Address) -> None:
        self.owner = owner
        self.name = name  # "WS" or "WSS"
        self.socket = socket
        self.peer: Address | None = peer
        self.counted = False
        self.partial_since: float | None = None  # a WebSocket message is always whole
        # Never idle for the sweep: a page with no call is silent for long, and the
        # WebSocket heartbeat closes the connection of a browser that stopped answering.
        self.last_activity = math.inf
        self.media_calls: set[str] = set()  # rtpengine calls (SIP Call-IDs) made for this browser
        self._answered: set[str] = set()  # of those, the dialogs that were answered
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_in_turn())
        try:
            async for frame in self.socket:
                if frame.type == WSMsgType.TEXT:
                    data = frame.data.encode("utf-8", "surrogateescape")
                elif frame.type == WSMsgType.BINARY:
                    data = frame.data
                else:
                    break  # closing or an error: aiohttp has said why to the peer
                if data.strip():  # a bare CRLF is a keep-alive
                    await self._received(data)
        finally:
            self._outbox.put_nowait(None)
            await asyncio.gather(self._writer, return_exceptions=True)
            self.owner.forget_connection(self)
            if self.owner.on_connection_closed is not None:
                self.owner.on_connection_closed(self.name, self._peer())
            await self._end_media()

    async def _received(self, data: bytes) -> None:
        bridge = self.owner.webrtc
        try:
            message = parse_message(data, datagram=True)
            if message.body and isinstance(message, Request) and message.method in _OFFERING_METHODS \
                    and bridge is None and offers_webrtc(message):
                refusal = make_response(message, 488, "Not Acceptable Here")
                refusal.add_header("Warning", f'399 centralita "{NO_WEBRTC_REASON}"')
                self.write(refusal.to_bytes())
                return
        except SipParseError:
            self.owner.deliver(data, self._peer(), self.name)  # the endpoint answers 400
            return
        if bridge is not None and message.body:
            try:
                rewritten = await self._bridge_media(bridge, message, towards_browser=False)
            except SipParseError:
                self.owner.deliver(data, self._peer(), self.name)  # a header it needs is malformed
                return
            except MediaUnavailable as exc:
                log.warning("browser %s:%d: rtpengine could not take its SDP: %s", *self._peer(), exc)
                if isinstance(message, Request) and message.method != "ACK":
                    self.write(make_response(message, 503, "Media engine unavailable").to_bytes())
                return
            if rewritten is not None:
                data = rewritten
        self.owner.deliver(data, self._peer(), self.name)
        self._track(message)

    async def _bridge_media(self, bridge: WebRtcBridge, message: Request | Response, *,
                            towards_browser: bool) -> bytes | None:
        """The message with its SDP rewritten for the other side, or None to pass it as it is."""
        if (message.content_type or "") != "application/sdp":
            return None
        call_id = message.call_id
        from_tag, to_tag = message.from_.tag or "", message.to.tag or ""
        if isinstance(message, Request):
            if message.method in _OFFERING_METHODS:
                sdp = await bridge.offer(call_id, from_tag, to_tag, message.body, webrtc=towards_browser)
            elif message.method == "ACK":
                sdp = await bridge.answer(call_id, from_tag, to_tag, message.body, webrtc=towards_browser)
            else:
                return None
        elif message.cseq[1] in _OFFERING_METHODS and message.status < 300:
            sdp = await bridge.answer(call_id, from_tag, to_tag, message.body, webrtc=towards_browser)
        else:
            return None
        self.media_calls.add(call_id)
        message.body = sdp
        return message.to_bytes()

    def write(self, data: bytes) -> None:
        self._outbox.put_nowait(data)

    async def _write_in_turn(self) -> None:
        while (data := await self._outbox.get()) is not None:
            try:
                data = await self._outgoing(data)
                if data is not None and not self.socket.closed:
                    await self.socket.send_str(data.decode("utf-8", "surrogateescape"))
            except (ConnectionError, RuntimeError) as exc:
                log.info("browser %s:%d: message not sent: %s", *self._peer(), exc)
            except Exception:
                log.exception("browser %s:%d: message not sent", *self._peer())

    async def _outgoing(self, data: bytes) -> bytes | None:
        bridge = self.owner.webrtc
        if bridge is None or b"application/sdp" not in data:
            self._after_sent(data)
            return data
        message = parse_message(data, datagram=True)
        try:
            rewritten = await self._bridge_media(bridge, message, towards_browser=True)
        except MediaUnavailable as exc:
            log.warning("browser %s:%d: rtpengine could not make WebRTC SDP; %s not sent: %s",
                        *self._peer(), message, exc)
            return None
        if rewritten is None:
            self._after_sent(data)
            return data
        self._track(message)
        return rewritten

    def _after_sent(self, data: bytes) -> None:
        if self.media_calls and (data.startswith(b"BYE ") or data.startswith(b"SIP/2.0 ")):
            try:
                self._track(parse_message(data, datagram=True))
            except SipParseError:
                return

    def _track(self, message: Request | Response) -> None:
        """Delete the rtpengine call of a dialog that ended (BYE) or never began (INVITE refused)."""
        if not self.media_calls:
            return
        try:
            call_id = message.call_id
            method = message.method if isinstance(message, Request) else message.cseq[1]
        except SipParseError:
            return
        if call_id not in self.media_calls:
            return
        if isinstance(message, Request):
            if method == "BYE":
                self._forget_media(call_id)
        elif method == "INVITE":
            if 200 <= message.status < 300:
                self._answered.add(call_id)
            elif message.status >= 300 and call_id not in self._answered:
                self._forget_media(call_id)

    def _forget_media(self, call_id: str) -> None:
        bridge = self.owner.webrtc
        self._answered.discard(call_id)
        if bridge is not None and call_id in self.media_calls:
            self.media_calls.discard(call_id)
            self.owner.run(bridge.delete(call_id))

    async def _end_media(self) -> None:
        bridge = self.owner.webrtc
        if bridge is None:
            return
        for call_id in list(self.media_calls):
            await bridge.delete(call_id)
        self.media_calls.clear()

    def _peer(self) -> Address:
        assert self.peer is not None
        return self.peer

    def close(self, *, abort: bool = False) -> None:
        self.owner.run(self.socket.close(code=1001, message=b"closed by the server"))


class WebSocketListener:
    """One `ws:` or `wss:` listening address: an aiohttp server that accepts SIP WebSockets."""

    def __init__(self, owner: Transports, name: str, tls: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.name = name
        self.tls = tls
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._accept)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.tls, reuse_address=True)
        await site.start()
        bound: int = self._runner.addresses[-1][1]
        return bound

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if SUBPROTOCOL not in offered:
            return web.Response(status=400, text="SIP over WebSocket needs the 'sip' subprotocol (RFC 7118)\n")
        socket = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=MAX_MESSAGE_SIZE,
                                       autoping=True, heartbeat=HEARTBEAT_SECONDS)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        if peername is None:
            return web.Response(status=400, text="no peer address\n")
        await socket.prepare(request)
        connection = WebSocketConnection(self.owner, self.name, socket, (peername[0], peername[1]))
        if self.owner.admit_connection(connection) is not None:
            await socket.close(code=1013, message=b"too many connections")
            return socket
        log.info("%s connection from %s:%d", self.name, *connection._peer())
        await connection.serve()
        log.info("%s connection from %s:%d closed", self.name, *connection._peer())
        return socket

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
