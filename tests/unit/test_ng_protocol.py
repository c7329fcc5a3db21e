"""rtpengine's ng protocol: bencode, and the client against a UDP peer on loopback that
answers as told (late, twice, malformed, with an error, never)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pbx.media.ng import BencodeError, NgClient, NgError, NgRefused, NgTimeout, bdecode, bencode


def test_bencode_round_trip_with_sorted_keys():
    value = {"sdp": "v=0\r\n", "command": "offer", "flags": ["trust-address", "port-latching"],
             "nested": {"b": 2, "a": -1}, "raw": b"\xff\x00"}
    encoded = bencode(value)
    assert encoded.startswith(b"d7:command5:offer5:flagsl13:trust-address13:port-latchinge")
    assert bdecode(encoded) == value


def test_bencode_refuses_what_it_cannot_say():
    with pytest.raises(TypeError):
        bencode(True)
    with pytest.raises(TypeError):
        bencode(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("malformed", [
    b"", b"d", b"i12", b"i-0e", b"i012e", b"ie", b"5:abc", b"x", b"d3:keye",
    b"di1ei2ee",                 # a key that is not a string
    b"d6:result2:oke trailing",  # more after the value
    b"l" * 100 + b"e" * 100,     # nested beyond reason
])
def test_malformed_bencode_is_an_error_not_a_crash(malformed: bytes):
    with pytest.raises(BencodeError):
        bdecode(malformed)


class Peer(asyncio.DatagramProtocol):
    """A UDP peer that answers each request with what `reply(cookie, request)` returns."""

    def __init__(self, reply: Callable[[bytes, dict], list[bytes]]) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append(data)
        cookie, _, body = data.partition(b" ")
        for answer in self.reply(cookie, bdecode(body)):
            self.transport.sendto(answer, addr)


async def peer_and_client(reply, **options) -> tuple[Peer, NgClient]:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(lambda: Peer(reply), local_addr=("127.0.0.1", 0))
    address = peer.transport.get_extra_info("sockname")
    client = await NgClient.connect(address, **options)
    return peer, client


async def test_a_command_gets_its_reply_by_cookie():
    peer, client = await peer_and_client(lambda cookie, request: [
        b"other_1 " + bencode({"result": "pong"}),  # someone else's cookie: ignored
        cookie + b" " + bencode({"result": "ok", "echo": request["command"]})])
    try:
        assert await client.command("ping") == {"result": "ok", "echo": "ping"}
    finally:
        client.close()
        peer.transport.close()


async def test_lost_requests_are_retransmitted_with_the_same_cookie():
    seen: list[bytes] = []

    def answer_the_third(cookie, request):
        seen.append(cookie)
        return [cookie + b" " + bencode({"result": "pong"})] if len(seen) == 3 else []

    peer, client = await peer_and_client(answer_the_third, timeout=2.0, retransmit_interval=0.02)
    try:
        assert await client.command("ping") == {"result": "pong"}
        assert len(peer.received) == 3 and len(set(peer.received)) == 1  # byte for byte the same
    finally:
        client.close()
        peer.transport.close()


async def test_no_reply_times_out():
    peer, client = await peer_and_client(lambda cookie, request: [], timeout=0.2,
                                         retransmit_interval=0.05)
    try:
        with pytest.raises(NgTimeout, match="did not answer 'offer'"):
            await client.command("offer", sdp="v=0")
        assert len(peer.received) >= 2  # retransmitted before giving up
    finally:
        client.close()
        peer.transport.close()


async def test_nobody_listening_times_out():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    address = transport.get_extra_info("sockname")
    transport.close()  # the port is closed: ICMP unreachable, then silence
    client = await NgClient.connect(address, timeout=0.2, retransmit_interval=0.05)
    try:
        with pytest.raises(NgTimeout):
            await client.command("ping")
    finally:
        client.close()


@pytest.mark.parametrize("body", [b"d6:result", b"l4:pinge", b"i3e", b"\xff\xfe"])
async def test_a_malformed_reply_is_an_error(body: bytes):
    peer, client = await peer_and_client(lambda cookie, request: [cookie + b" " + body])
    try:
        with pytest.raises(NgError, match="malformed reply|not a dictionary"):
            await client.command("ping")
    finally:
        client.close()
        peer.transport.close()


async def test_a_refusal_carries_the_engines_reason():
    peer, client = await peer_and_client(lambda cookie, request: [
        cookie + b" " + bencode({"result": "error", "error-reason": "Unknown call-id"})])
    try:
        with pytest.raises(NgRefused, match="refused 'delete': Unknown call-id"):
            await client.command("delete", **{"call-id": "nope"})
    finally:
        client.close()
        peer.transport.close()


async def test_a_late_or_repeated_reply_is_dropped():
    peer, client = await peer_and_client(lambda cookie, request: [
        cookie + b" " + bencode({"result": "pong"})] * 2)  # answered twice
    try:
        assert await client.command("ping") == {"result": "pong"}
        assert await client.command("ping") == {"result": "pong"}  # the duplicate did not leak in
    finally:
        client.close()
        peer.transport.close()
