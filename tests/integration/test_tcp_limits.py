"""TCP limits against real half-open and greedy peers (raw sockets as the attacker).

The server is configured with short timeouts and small caps so that the tests run in
seconds; the defaults (30 s to complete a message, 600 s idle) are the same code.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from integration.server_fixture import default_config_yaml
from peers import raw

pytestmark = pytest.mark.integration

OTHER_HOST = "127.0.0.2"
HALF_A_MESSAGE = (b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKhalf\r\n"
                  b"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n")


def _server(pbx_server, **tcp: object):
    limits = {"message_timeout": 2, "idle_timeout": 30, "max_connections": 200,
              "max_connections_per_source": 100}
    limits.update(tcp)
    return pbx_server(default_config_yaml(sip={"tcp": limits, "protection": {"trusted": []}}))


def _connect(server, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    sock.connect((server.host, server.sip_port))
    return sock


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server closed (FIN or RST) within ``timeout``; anything it sends is skipped."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _descriptors(server) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _served_over_tcp(server, host: str = OTHER_HOST) -> bool:
    with raw.TcpPeer((server.host, server.sip_port), host=host) as peer:
        peer.send(raw.options(peer, peer.server))
        answer = raw.final_response(peer, 5.0, cseq_method="OPTIONS")
        return answer is not None and answer.status == 200


def test_half_open_peers_are_closed_and_their_descriptors_freed(pbx_server) -> None:
    server = _server(pbx_server)
    assert _served_over_tcp(server)
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 0, 10,
              "the first connection to go")
    baseline = _descriptors(server)
    attackers = [_connect(server) for _ in range(40)]
    for sock in attackers:
        sock.sendall(HALF_A_MESSAGE)
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 40, 10,
              "the server to accept the attackers")
    assert _descriptors(server) >= baseline + 39  # give or take the HTTP scrape's own socket
    # While they hang, others are served.
    assert _served_over_tcp(server)
    assert all(_closed_by_server(sock, 20) for sock in attackers)
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 0
              and _descriptors(server) <= baseline + 1, 10, "descriptors to be freed")
    assert server.metric("centralita_sip_connections_closed_total", 0, reason="incomplete_message") == 40
    assert "security event=connection-closed source=127.0.0.1:" in server.log_text()
    for sock in attackers:
        sock.close()
    assert _served_over_tcp(server)


def test_a_trickled_message_is_closed_despite_the_traffic(pbx_server) -> None:
    """Slowloris: a byte now and then never completes a message; the deadline counts from its first byte."""
    server = _server(pbx_server)
    sock = _connect(server)
    started = time.monotonic()
    closed = False
    for byte in HALF_A_MESSAGE * 4:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if _closed_by_server(sock, 0.25):
            closed = True
            break
        if time.monotonic() - started > 30:
            break
    sock.close()
    assert closed, "a connection trickling one byte at a time was kept open"
    assert server.metric("centralita_sip_connections_closed_total", 0, reason="incomplete_message") == 1


def test_idle_connections_are_closed(pbx_server) -> None:
    server = _server(pbx_server, idle_timeout=2)
    sock = _connect(server)
    assert _closed_by_server(sock, 20)
    sock.close()
    assert server.metric("centralita_sip_connections_closed_total", 0, reason="idle") >= 1


def test_connection_caps_per_source_and_in_all(pbx_server) -> None:
    server = _server(pbx_server, max_connections=8, max_connections_per_source=5)
    mine = [_connect(server) for _ in range(5)]
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 5, 10,
              "five connections")
    extra = _connect(server)
    assert _closed_by_server(extra, 10), "a sixth connection from one source was kept"
    others = [_connect(server, OTHER_HOST) for _ in range(3)]
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 8, 10,
              "eight connections")
    over_total = _connect(server, "127.0.0.3")
    assert _closed_by_server(over_total, 10), "a connection over the total cap was kept"
    assert server.metric("centralita_sip_connections_refused_total", 0, reason="source_limit") == 1
    assert server.metric("centralita_sip_connections_refused_total", 0, reason="total_limit") == 1
    for sock in [*mine, *others, extra, over_total]:
        sock.close()
    _wait_for(lambda: server.metric("centralita_sip_connections", 0, transport="TCP") == 0, 10,
              "the connections to go")
    assert _served_over_tcp(server, "127.0.0.1")


def test_an_oversized_message_is_answered_513_and_the_connection_closed(pbx_server) -> None:
    server = _server(pbx_server)
    sock = _connect(server)
    body_length = 70_000
    head = (f"OPTIONS sip:{server.sip_address} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {sock.getsockname()[0]}:{sock.getsockname()[1]};branch=z9hG4bKbig\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=big\r\nTo: <sip:b@127.0.0.1>\r\n"
            "Call-ID: big@test\r\nCSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {body_length}\r\n\r\n").encode()
    sock.sendall(head + b"x" * 1000)
    buffer = bytearray()
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    answer = raw.parse_message(bytes(buffer))
    assert answer.status == 513, answer.start_line
    assert answer.call_id == "big@test"
    assert _closed_by_server(sock, 10)
    sock.close()
    assert server.metric("centralita_sip_connections_closed_total", 0, reason="too_large") == 1
    assert _served_over_tcp(server)
