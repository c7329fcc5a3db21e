"""asyncio SIP transports: UDP and TCP on the same address.

Each transport hands raw messages to one receiver callback and sends what the
core asks it to. Responses always go back to where the request came from
(the packet's source, or the same TCP connection), which is RFC 3581's
behaviour applied to every client: it keeps NATed phones reachable and never
sends anything to a host named only in a header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from pbx.sip.errors import SipParseError
from pbx.sip.message import StreamFramer

Address = tuple[str, int]
Receiver = Callable[[bytes, Address, str], None]

log = logging.getLogger("pbx.transport")
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


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: Transports, peer: Address | None = None) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport: no isinstance here.
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        name = stream.get_extra_info("peername")
        self.peer = (name[0], name[1])
        self.owner.connections[self.peer] = self
        for data in self.pending:
            stream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.warning("closing TCP connection from %s: %s", self.peer, exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        assert self.peer is not None
        for message in messages:
            if message is None:
                if self.transport is not None:
                    self.transport.write(b"\r\n")  # RFC 5626 pong
            else:
                self.owner.deliver(message, self.peer, "TCP")

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]


class Transports:
    """The listening sockets and open TCP connections of one server."""

    def __init__(self, receiver: Receiver, *, trace: bool = False) -> None:
        self.receiver = receiver
        self.trace = trace
        self.local: dict[str, LocalAddress] = {}
        self.connections: dict[Address, _TcpConnection] = {}
        self._udp: _UdpProtocol | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._connecting: dict[Address, _TcpConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, transport: str, host: str, port: int) -> LocalAddress:
        loop = asyncio.get_running_loop()
        if transport == "udp":
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
            self._udp = protocol
            assert protocol.transport is not None
            bound = protocol.transport.get_extra_info("sockname")
        else:
            server = await loop.create_server(lambda: _TcpConnection(self), host, port,
                                              reuse_address=True)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
        local = LocalAddress(transport.upper(), host, bound[1])
        self.local.setdefault(local.transport, local)
        log.info("listening for SIP on %s %s:%d", local.transport, host, local.port)
        return local

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
        connection = self.connections.get(destination) or self._connecting.get(destination)
        if connection is None:
            connection = self._open(destination)
        connection.write(data)

    def _open(self, destination: Address) -> _TcpConnection:
        connection = _TcpConnection(self, destination)
        self._connecting[destination] = connection
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: connection, destination[0], destination[1])
            except OSError as exc:
                log.warning("cannot connect to %s:%d over TCP: %s", destination[0], destination[1], exc)
            finally:
                self._connecting.pop(destination, None)

        task = loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for server in self._servers:
            await server.wait_closed()
