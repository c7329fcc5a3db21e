"""rtpengine's ng control protocol: bencoded commands over UDP.

Each request is one datagram ``COOKIE SPACE bencoded-dictionary``; the reply carries the
same cookie. rtpengine remembers the replies it sent by cookie, so a request is
retransmitted with the *same* cookie and datagram until a reply comes or the time is
up: a retransmitted offer is answered from that memory, never applied twice.

:func:`bencode` / :func:`bdecode` are the encoding (strings come back as ``str`` when
they are UTF-8, else ``bytes``); :class:`NgClient` is the asyncio client.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, cast

__all__ = ["BencodeError", "NgClient", "NgError", "NgRefused", "NgTimeout", "bdecode", "bencode"]

log = logging.getLogger(__name__)

Bencodable = str | bytes | int | list[Any] | dict[str, Any]


class BencodeError(ValueError):
    """Bytes that are not one well-formed bencoded value."""


class NgError(Exception):
    """A command that did not succeed: no reply in time, an unusable reply, or a refusal."""


class NgTimeout(NgError):
    """No reply came in time, retransmissions included: the engine is down or unreachable."""


class NgRefused(NgError):
    """The engine answered ``result: error`` (its ``error-reason`` is the message)."""


def bencode(value: Bencodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):  # bool is an int; bencode has no booleans
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (str, bytes)):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value, key=lambda k: k.encode()):  # keys in raw byte order
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Bencodable:
    """The one value `data` holds; BencodeError when it is malformed or followed by more."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


_MAX_DEPTH = 32


def _decode(data: bytes, at: int, depth: int) -> tuple[Bencodable, int]:
    if depth > _MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if at >= len(data):
        raise BencodeError("truncated")
    lead = data[at:at + 1]
    if lead == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise BencodeError("unterminated integer")
        digits = data[at + 1:end]
        if not digits or not digits.lstrip(b"-").isdigit() or digits.startswith(b"-0") \
                or (digits.startswith(b"0") and digits != b"0"):
            raise BencodeError(f"bad integer {digits[:20]!r}")
        return int(digits), end + 1
    if lead.isdigit():
        colon = data.find(b":", at)
        if colon < 0 or not data[at:colon].isdigit():
            raise BencodeError("bad string length")
        length = int(data[at:colon])
        start, end = colon + 1, colon + 1 + length
        if end > len(data):
            raise BencodeError("truncated string")
        raw = data[start:end]
        try:
            return raw.decode(), end
        except UnicodeDecodeError:
            return raw, end
    if lead == b"l":
        items: list[Any] = []
        at += 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if lead == b"d":
        result: dict[str, Any] = {}
        at += 1
        while data[at:at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, str):
                raise BencodeError("dictionary key is not a text string")
            result[key], at = _decode(data, at, depth + 1)
        return result, at + 1
    raise BencodeError(f"unexpected byte {lead!r} at {at}")


class NgClient(asyncio.DatagramProtocol):
    """Sends ng commands to one rtpengine and awaits their replies.

    ``command()`` retransmits every `retransmit_interval` seconds until `timeout`, then
    raises :class:`NgTimeout`. Replies with an unknown cookie (late ones, after a
    timeout) and malformed datagrams are dropped with one log line.
    """

    def __init__(self, address: tuple[str, int], *, timeout: float = 2.0,
                 retransmit_interval: float = 0.25) -> None:
        self.address = address
        self.timeout = timeout
        self.retransmit_interval = retransmit_interval
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._prefix = secrets.token_hex(4).encode()
        self._counter = 0

    @classmethod
    async def connect(cls, address: tuple[str, int], **options: float) -> NgClient:
        loop = asyncio.get_running_loop()
        client = cls(address, **options)
        await loop.create_datagram_endpoint(lambda: client, remote_addr=address)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, space, body = data.partition(b" ")
        waiter = self._pending.get(cookie) if space else None
        if waiter is None or waiter.done():
            log.debug("ng: reply with no request waiting (%d bytes) dropped", len(data))
            return
        try:
            reply = bdecode(body)
            if not isinstance(reply, dict):
                raise BencodeError("reply is not a dictionary")
        except BencodeError as exc:
            waiter.set_exception(NgError(f"malformed reply from rtpengine: {exc}"))
            return
        waiter.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nobody listens; the retransmissions run out to NgTimeout.
        log.debug("ng: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(NgError("ng client closed"))

    async def command(self, name: str, **arguments: Bencodable) -> dict[str, Any]:
        """Run one command (``offer``, ``answer``, ``delete``, ``ping``...): its reply
        dictionary when ``result`` is not ``error``."""
        if self.transport is None or self.transport.is_closing():
            raise NgError("ng client is closed")
        self._counter += 1
        cookie = b"%s_%d" % (self._prefix, self._counter)
        datagram = cookie + b" " + bencode({"command": name, **arguments})
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[cookie] = waiter
        deadline = loop.time() + self.timeout
        try:
            while True:
                self.transport.sendto(datagram)
                wait = min(self.retransmit_interval, deadline - loop.time())
                if wait <= 0:
                    raise NgTimeout(f"rtpengine at {self.address[0]}:{self.address[1]} did not answer "
                                    f"'{name}' within {self.timeout:g} s")
                try:
                    reply = await asyncio.wait_for(asyncio.shield(waiter), wait)
                    break
                except TimeoutError:
                    continue
        finally:
            self._pending.pop(cookie, None)
            if not waiter.done():
                waiter.cancel()
        if reply.get("result") == "error":
            raise NgRefused(f"rtpengine refused '{name}': {reply.get('error-reason', 'no reason given')}")
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
