"""asyncio SIP transports: UDP, TCP, TLS (RFC 3261 §18, §26) and WebSocket (RFC 7118,
in websocket.py).

Each transport hands raw messages to one receiver callback and sends what the
core asks it to. Responses always go back to where the request came from
(the packet's source, or the same TCP/TLS connection), which is RFC 3581's
behaviour applied to every client: it keeps NATed phones reachable and never
sends anything to a host named only in a header.

Stream connections are bounded (`StreamSettings`): a message must be complete
within `message_timeout` of its first byte, a silent connection is closed after
`idle_timeout`, and there are caps on connections per source and in all, so
that one host cannot hold every file descriptor. A message over the size limit
is answered 513 on its connection, which is then closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from events import EventBus, SipConnectionClosed, SipConnectionRefused
from pbx.configuration.server import StreamSettings
from pbx.edge.protection import security_event
from pbx.edge.websocket import WebSocketConnection, WebSocketListener
from pbx.media.engine import WebRtcBridge
from pbx.sip.errors import SipParseError
from pbx.sip.message import StreamFramer

Address = tuple[str, int]
WEBSOCKET_TRANSPORTS = ("WS", "WSS")
Receiver = Callable[[bytes, Address, str], None]
StreamErrorHandler = Callable[[bytes, SipParseError, Address, str], None]
SWEEP_INTERVAL = 1.0  # seconds between checks of stream connections' deadlines

log = logging.getLogger("pbx.edge.transport")
trace_log = logging.getLogger("pbx.sip.trace")


@dataclass(frozen=True)
class LocalAddress:
    transport: str
    host: str
    port: int


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.owner.deliver(data, (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that went away: nothing to do here,
        # the transaction layer times out and cleans up.
        log.debug("UDP error: %s", exc)


class _StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or opened by us.

    TLS runs here over memory BIOs rather than in the event loop's SSL transport, so a
    connection counts against the caps and its deadline from its first byte, handshake
    included: a peer that connects and never completes a handshake is closed like one
    that never completes a message.
    """

    def __init__(self, owner: Transports, name: str, peer: Address | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.owner = owner
        self.name = name  # "TCP" or "TLS"
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.pending: list[bytes] = []
        self.partial_since: float | None = None  # when the first byte of an incomplete message came
        self.last_activity = 0.0
        self.counted = False
        self.tls: ssl.SSLObject | None = None
        self.handshaking = False
        if tls is not None:
            self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self._tls_in, self._tls_out, server_side=True)
            self.handshaking = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport: no isinstance here.
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        name = stream.get_extra_info("peername")
        self.peer = (name[0], name[1])
        self.last_activity = self.owner.now()
        refusal = self.owner.admit_connection(self)
        if refusal is not None:
            stream.abort()
            return
        if self.handshaking:
            self.partial_since = self.last_activity
            return
        for data in self.pending:
            stream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.now()
        if self.tls is None:
            self._frame(data)
            return
        self._tls_in.write(data)
        if self.handshaking and not self._handshake():
            return
        plain = bytearray()
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:  # close_notify, a bad record
                self._send_tls()
                if not isinstance(exc, ssl.SSLZeroReturnError):
                    log.info("closing TLS connection from %s:%d: %s", *self._peer(), exc.reason or exc)
                self.close()
                return
            if not chunk:
                break
            plain += chunk
        self._send_tls()  # TLS 1.3 session tickets and the like
        if plain:
            self._frame(bytes(plain))

    def _handshake(self) -> bool:
        """Advance the TLS handshake; True once it is done."""
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_tls()
            return False
        except ssl.SSLError as exc:
            self._send_tls()  # the alert, when there is one
            log.info(security_event("tls-handshake-failed", self._peer(), reason=str(exc.reason or exc)))
            self.close()
            return False
        self.handshaking = False
        self.partial_since = None
        self._send_tls()
        for data in self.pending:
            self.write(data)
        self.pending.clear()
        return True

    def _send_tls(self) -> None:
        data = self._tls_out.read()
        if data and self.transport is not None:
            self.transport.write(data)

    def _peer(self) -> Address:
        assert self.peer is not None
        return self.peer

    def _frame(self, data: bytes) -> None:
        now = self.last_activity
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            self.owner.stream_error(self, self.framer.buffered(), exc)
            return
        peer = self._peer()
        for message in messages:
            if message is None:
                self.write(b"\r\n")  # RFC 5626 pong
            else:
                self.owner.deliver(message, peer, self.name)
        if self.framer.pending_bytes():
            if self.partial_since is None or messages:
                self.partial_since = now
        else:
            self.partial_since = None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.handshaking:
            self.pending.append(data)
        elif self.tls is not None:
            view = memoryview(data)
            while view:
                written = self.tls.write(view)
                view = view[written:]
            self._send_tls()
        else:
            self.transport.write(data)

    def close(self, *, abort: bool = False) -> None:
        if self.transport is None:
            return
        if abort:
            self.transport.abort()
            return
        if self.tls is not None and not self.handshaking:
            try:
                self.tls.unwrap()  # our close_notify
            except ssl.SSLError:
                pass
            self._send_tls()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.forget_connection(self)


class Transports:
    """The listening sockets and open TCP/TLS connections of one server."""

    def __init__(self, receiver: Receiver, *, trace: bool = False,
                 limits: StreamSettings | None = None,
                 is_trusted: Callable[[str], bool] = lambda host: False,
                 events: EventBus | None = None, webrtc: WebRtcBridge | None = None) -> None:
        self.receiver = receiver
        self.webrtc = webrtc  # rewrites the SDP crossing WebSockets (None: WebRTC refused)
        self.trace = trace
        self.limits = limits or StreamSettings()
        self.is_trusted = is_trusted
        self.events = events or EventBus()
        self.on_stream_error: StreamErrorHandler | None = None
        # Told when a connection that cannot be opened again from our side closes (WS, WSS).
        self.on_connection_closed: Callable[[str, Address], None] | None = None
        self.local: dict[str, LocalAddress] = {}
        self.connections: dict[tuple[str, Address], _StreamConnection | WebSocketConnection] = {}
        self._per_source: dict[str, int] = {}
        self._udp: _UdpProtocol | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._websocket_listeners: list[WebSocketListener] = []
        self._connecting: dict[tuple[str, Address], _StreamConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    async def listen(self, transport: str, host: str, port: int,
                     tls: ssl.SSLContext | None = None) -> LocalAddress:
        loop = asyncio.get_running_loop()
        if transport == "udp":
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
            self._udp = protocol
            assert protocol.transport is not None
            bound = protocol.transport.get_extra_info("sockname")
        elif transport.upper() in WEBSOCKET_TRANSPORTS:
            name = transport.upper()
            if name == "WSS" and tls is None:
                raise ValueError("a WSS listener needs a certificate")
            listener = WebSocketListener(self, name, tls if name == "WSS" else None)
            bound = (host, await listener.start(host, port))
            self._websocket_listeners.append(listener)
            if self._sweeper is None:
                self._sweeper = loop.create_task(self._sweep())
        else:
            name = transport.upper()
            if name == "TLS" and tls is None:
                raise ValueError("a TLS listener needs a certificate")
            context = tls if name == "TLS" else None
            server = await loop.create_server(lambda: _StreamConnection(self, name, tls=context),
                                              host, port, reuse_address=True)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            if self._sweeper is None:
                self._sweeper = loop.create_task(self._sweep())
        local = LocalAddress(transport.upper(), host, bound[1])
        self.local.setdefault(local.transport, local)
        log.info("listening for SIP on %s %s:%d", local.transport, host, local.port)
        return local

    # -- stream connections --------------------------------------------------------
    def admit_connection(self, connection: _StreamConnection | WebSocketConnection) -> str | None:
        """Register a new connection, or say why it must be closed at once."""
        assert connection.peer is not None
        host = connection.peer[0]
        reason = None
        if len(self.connections) >= self.limits.max_connections:
            reason = "total_limit"
        elif (self._per_source.get(host, 0) >= self.limits.max_connections_per_source
              and not self.is_trusted(host)):
            reason = "source_limit"
        if reason is not None:
            log.warning(security_event("connection-refused", connection.peer, transport=connection.name,
                                       reason=reason))
            self.events.publish(SipConnectionRefused(reason, connection.name))
            return reason
        self.connections[(connection.name, connection.peer)] = connection
        self._per_source[host] = self._per_source.get(host, 0) + 1
        connection.counted = True
        return None

    def forget_connection(self, connection: _StreamConnection | WebSocketConnection) -> None:
        if not connection.counted or connection.peer is None:
            return
        connection.counted = False
        key = (connection.name, connection.peer)
        if self.connections.get(key) is connection:
            del self.connections[key]
        host = connection.peer[0]
        left = self._per_source.get(host, 1) - 1
        if left > 0:
            self._per_source[host] = left
        else:
            self._per_source.pop(host, None)

    def stream_error(self, connection: _StreamConnection, data: bytes, error: SipParseError) -> None:
        """A stream that cannot be framed: answer when possible (513, 400), then close it."""
        assert connection.peer is not None
        log.warning(security_event("connection-closed", connection.peer, transport=connection.name,
                                   reason=error.reason))
        if self.on_stream_error is not None:
            self.on_stream_error(data, error, connection.peer, connection.name)
        self.events.publish(SipConnectionClosed("too_large" if error.status == 513 else "malformed",
                                                connection.name))
        connection.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.close_overdue(self.now())
            except Exception:
                log.exception("closing overdue connections failed")

    def close_overdue(self, now: float) -> int:
        """Close connections whose message is overdue or that stayed silent too long."""
        closed = 0
        for connection in list(self.connections.values()):
            if (connection.partial_since is not None
                    and now - connection.partial_since > self.limits.message_timeout):
                reason = "incomplete_message"
            elif now - connection.last_activity > self.limits.idle_timeout:
                reason = "idle"
            else:
                continue
            assert connection.peer is not None
            if reason == "incomplete_message":
                log.warning(security_event("connection-closed", connection.peer, transport=connection.name,
                                           reason="message incomplete after"
                                                  f" {self.limits.message_timeout:g} s"))
            else:
                log.info("closing idle %s connection from %s:%d", connection.name, *connection.peer)
            self.events.publish(SipConnectionClosed(reason, connection.name))
            # Forget it now: the descriptor is freed even if the peer never reads.
            self.forget_connection(connection)
            connection.close(abort=True)
            closed += 1
        return closed

    def connection_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, _ in self.connections:
            counts[name] = counts.get(name, 0) + 1
        return counts

    # -- messages ------------------------------------------------------------------
    def deliver(self, data: bytes, source: Address, transport: str) -> None:
        if self.trace:
            trace_log.info("recv %d bytes from %s %s:%d\n%s", len(data), transport, source[0],
                           source[1], data.decode("utf-8", "replace"))
        self.receiver(data, source, transport)

    def send(self, data: bytes, destination: Address, transport: str) -> None:
        if self.trace:
            trace_log.info("send %d bytes to %s %s:%d\n%s", len(data), transport, destination[0],
                           destination[1], data.decode("utf-8", "replace"))
        if transport == "UDP":
            if self._udp is not None and self._udp.transport is not None:
                self._udp.transport.sendto(data, destination)
            return
        key = (transport, destination)
        connection = self.connections.get(key) or self._connecting.get(key)
        if connection is None:
            if transport != "TCP":
                # A TLS phone is reached over the connection it opened (RFC 5626 §5):
                # we have no trust anchors to open one towards a phone's own certificate;
                # a browser listens nowhere (RFC 7118 §5).
                log.warning("no %s connection to %s:%d any more: message not sent", transport, *destination)
                return
            connection = self._open(destination)
        connection.write(data)

    def _open(self, destination: Address) -> _StreamConnection:
        connection = _StreamConnection(self, "TCP", destination)
        key = ("TCP", destination)
        self._connecting[key] = connection
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: connection, destination[0], destination[1])
            except OSError as exc:
                log.warning("cannot connect to %s:%d over TCP: %s", destination[0], destination[1], exc)
            finally:
                self._connecting.pop(key, None)

        task = loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    def run(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background, kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self.connections.values()):
            connection.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for server in self._servers:
            await server.wait_closed()
        for listener in self._websocket_listeners:
            await listener.close()
