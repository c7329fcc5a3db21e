"""Garbage on the wire must cost the sender, never the server or other peers."""

from __future__ import annotations

import random
import socket
import time

import pytest

from peers import raw, sipp

pytestmark = pytest.mark.integration

VALID_INVITE = (
    "INVITE sip:100@{host}:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:fuzz@127.0.0.1>;tag={branch}\r\n"
    "To: <sip:100@{host}:{port}>\r\nCall-ID: fuzz-{branch}@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:fuzz@127.0.0.1:5999>\r\n"
    "Content-Type: application/sdp\r\nContent-Length: 129\r\n\r\n"
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _garbage(rng: random.Random, host: str, port: int, index: int) -> bytes:
    kind = index % 8
    invite = VALID_INVITE.format(host=host, port=port, branch=f"{index:08x}").encode()
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randint(1, 1400))
    if kind == 1:  # truncated SIP
        return invite[: rng.randint(1, len(invite) - 1)]
    if kind == 2:  # a huge header
        return invite.replace(b"Max-Forwards: 70\r\n",
                              b"X-Huge: " + b"A" * rng.randint(8_000, 60_000) + b"\r\n")
    if kind == 3:  # thousands of headers
        return invite.replace(b"Max-Forwards: 70\r\n", b"X-H: v\r\n" * rng.randint(500, 5000))
    if kind == 4:  # lying Content-Length
        return invite.replace(b"Content-Length: 129", b"Content-Length: " +
                              rng.choice([b"-1", b"99999999999999999999", b"abc", b"9999"]))
    if kind == 5:  # bytes flipped inside a valid message
        data = bytearray(invite)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 6:  # NULs, lone CRs, a response with no transaction, bad start lines
        return rng.choice([b"\x00" * 200, b"\r\r\r\n\n\n", b"SIP/2.0 200 OK\r\n\r\n",
                           b"INVITE\r\n\r\n", b"SIP/2.0 99999999999 X\r\nVia: x\r\n\r\n",
                           b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP ;branch=\r\n\r\n",
                           "OPTIONS sip:\u00e9 SIP/2.0\r\n\r\n".encode("latin-1")])
    # well-formed start line, every header broken
    return (f"REGISTER sip:{host} SIP/2.0\r\nVia: \r\nFrom: <<<\r\nTo: >\r\nCall-ID:\r\n"
            f"CSeq: x y z\r\nContact: *,*,<\r\nExpires: -5\r\nContent-Length: 0\r\n\r\n").encode()


def _options_ok(server, transport: str = "udp") -> raw.SipMessage | None:
    address = (server.host, server.sip_port)
    for _ in range(3):
        with raw.connect(transport, address) as peer:
            peer.send(raw.options(peer, address))
            answer = raw.final_response(peer, 2.0, cseq_method="OPTIONS")
        if answer is not None:
            return answer
    return None


def test_udp_garbage_burst_then_calls_still_work(pbx_server) -> None:
    server = pbx_server()
    rng = random.Random(4475)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sender.bind(("127.0.0.1", 0))
    sent = 0
    try:
        for index in range(2000):
            try:
                sender.sendto(_garbage(rng, server.host, server.sip_port, index),
                              (server.host, server.sip_port))
                sent += 1
            except OSError:  # e.g. a datagram over the size limit
                pass
            if index % 200 == 199:
                time.sleep(0.01)  # let loopback breathe: the point is the content
    finally:
        sender.close()
    assert sent >= 1900
    time.sleep(1.0)
    assert server.alive(), "the server died on garbage"
    answer = _options_ok(server)
    assert answer is not None and answer.status == 200, answer
    result = sipp.run(server.sip_address, scenario="uac", service="100", calls=10, rate=10,
                      timeout=60)
    assert result.returncode == 0 and result.successful == 10, result.describe()
    health = server.healthz()
    assert health.get("status") == "ok", health


def test_tcp_garbage_costs_only_its_own_connection(pbx_server) -> None:
    server = pbx_server()
    address = (server.host, server.sip_port)
    with raw.TcpPeer(address) as bystander, raw.TcpPeer(address) as vandal:
        # The bystander is a working client before, during and after.
        bystander.send(raw.options(bystander, address))
        first = raw.final_response(bystander, 5.0, cseq_method="OPTIONS")
        assert first is not None and first.status == 200, first

        # Bytes that can never frame a SIP message: no header end, far past any sane size.
        rng = random.Random(3261)
        chunk = bytes(b for b in rng.randbytes(65536) if b not in (10, 13))
        try:
            for _ in range(16):  # ~1 MB
                vandal.send(chunk)
        except OSError:
            pass  # the server already hung up on us: that is the point
        vandal.collect(5.0)
        assert vandal.closed_by_peer, "the server kept a connection that sent 1 MB of garbage"

        bystander.send(raw.options(bystander, address))
        again = raw.final_response(bystander, 5.0, cseq_method="OPTIONS")
        assert again is not None and again.status == 200, (
            "another TCP client's connection was harmed by the garbage")
    assert server.alive()
    fresh = _options_ok(server, "tcp")
    assert fresh is not None and fresh.status == 200, fresh


def test_tcp_malformed_message_gets_400_and_connection_survives(pbx_server) -> None:
    """A well-framed but malformed request is answered 400 on the same connection."""
    server = pbx_server()
    address = (server.host, server.sip_port)
    with raw.TcpPeer(address) as peer:
        host, port = peer.local
        peer.send(f"OPTIONS sip:{server.sip_address} SIP/2.0\r\n"
                  f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bKbad1\r\n"
                  f"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad-1\r\n"
                  f"CSeq: notanumber OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        answer = raw.final_response(peer, 5.0)
        assert answer is not None and answer.status == 400, answer
        assert answer.reason.strip(), "a 400 must say what was wrong"
        peer.send(raw.options(peer, address))
        after = raw.final_response(peer, 5.0, cseq_method="OPTIONS")
        assert after is not None and after.status == 200, after
