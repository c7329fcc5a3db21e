"""SIP over TLS (RFC 3261 §26) with real TLS peers: baresip and PJSIP register and call.

Debian's SIPp is built without TLS, so baresip (libre with OpenSSL) and pjsua2 are the peers.
They trust the server's self-signed certificate, created under the var dir at start (baresip
through ``sip_cafile``, PJSIP with server verification on). Media stays RTP (no SRTP, see
the README).
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest

from integration.server_fixture import default_config_yaml
from peers.baresip import Account, Baresip
from peers.pjsua_phone import PjsuaPhone
from peers.procs import LOOPBACK, free_port

pytestmark = pytest.mark.integration

MD5_ONLY = default_config_yaml(sip={"digest_algorithms": ["MD5"]})  # baresip 1.0.0 digest quirk


def _tls_server(pbx_server):
    tls_port = free_port(udp=False, tcp=True)
    server = pbx_server(MD5_ONLY, extra_args=("--sip-listen", f"tls:{LOOPBACK}:{tls_port}"),
                        sip_trace=True)
    return server, tls_port


def _phone(tmp_path, server, user: str, port: int, transport: str) -> Baresip:
    extra = (f"sip_cafile {server.var_dir / 'tls' / 'sip-cert.pem'}",) if transport == "tls" else ()
    return Baresip(tmp_path / f"baresip-{user}-{transport}",
                   Account(user, f"demo{user}", (server.host, port), transport=transport),
                   extra_config=extra)


def _wait_frames(phone: Baresip, minimum: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    frames = phone.received_audio_frames()
    while frames < minimum and time.monotonic() < deadline:
        time.sleep(0.2)
        frames = phone.received_audio_frames()
    return frames


def test_the_self_signed_certificate_is_created_and_served(pbx_server) -> None:
    server, tls_port = _tls_server(pbx_server)
    certificate = server.var_dir / "tls" / "sip-cert.pem"
    assert certificate.is_file() and (server.var_dir / "tls" / "sip-key.pem").stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(certificate))
    with socket.create_connection((server.host, tls_port), timeout=5) as plain, \
            context.wrap_socket(plain, server_hostname=LOOPBACK) as secure:
        assert secure.version() in ("TLSv1.2", "TLSv1.3")


def test_baresip_registers_and_calls_the_greeting_over_tls(pbx_server, tmp_path) -> None:
    server, tls_port = _tls_server(pbx_server)
    with _phone(tmp_path, server, "1001", tls_port, "tls") as phone:
        phone.wait_registered(timeout=20)
        assert server.metric("centralita_sip_requests_received_total", 0, method="REGISTER",
                             transport="TLS") >= 1
        assert server.metric("centralita_sip_connections", 0, transport="TLS") == 1
        phone.dial(f"sip:101@{LOOPBACK}:{tls_port}")
        established = phone.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert established["type"] == "CALL_ESTABLISHED", f"{established}\n{phone.log_tail()}"
        assert _wait_frames(phone, 4000) >= 4000, f"no greeting audio\n{phone.log_tail()}"
        phone.hangup()
        phone.wait_event("CALL_CLOSED", timeout=10)
    log = server.log_text()
    # Our answers went back over TLS and their Contact says TLS.
    assert re.search(r"send \d+ bytes to TLS 127\.0\.0\.1:\d+\nSIP/2\.0 200 OK", log), "no 200 sent over TLS"
    assert re.search(r"Contact: <sip:127\.0\.0\.1:" + str(tls_port) + ";transport=tls>", log), log[-3000:]


def test_a_call_reaches_a_tls_phone_over_its_connection(pbx_server, tmp_path) -> None:
    server, tls_port = _tls_server(pbx_server)
    with _phone(tmp_path, server, "1002", tls_port, "tls") as callee, \
            _phone(tmp_path, server, "1001", server.sip_port, "udp") as caller:
        callee.wait_registered(timeout=20)
        caller.wait_registered(timeout=20)
        caller.dial(f"sip:1002@{server.sip_address}")
        established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert established["type"] == "CALL_ESTABLISHED", f"{established}\n{caller.log_tail()}"
        answered = callee.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=10)
        assert answered["type"] == "CALL_ESTABLISHED", answered
        assert _wait_frames(callee, 8000) >= 8000, f"callee decoded too little\n{callee.log_tail()}"
        # The TLS phone hangs up: its BYE comes over TLS, the UDP phone gets its own BYE.
        callee.hangup()
        callee.wait_event("CALL_CLOSED", timeout=10)
        assert caller.wait_event("CALL_CLOSED", timeout=10)["type"] == "CALL_CLOSED"
    log = server.log_text()
    invite = re.search(r"send \d+ bytes to TLS 127\.0\.0\.1:\d+\nINVITE (\S+) SIP/2\.0\r?\n(.*?)\r?\n\r?\n",
                       log, re.S)
    assert invite is not None, "the INVITE to the TLS phone was not sent over TLS"
    assert "Via: SIP/2.0/TLS" in invite.group(2)
    assert re.search(r"Contact: <sip:127\.0\.0\.1:\d+;transport=tls>", invite.group(2)), invite.group(2)
    assert server.metric("centralita_sip_requests_received_total", 0, method="BYE", transport="TLS") >= 1


def test_a_sips_request_gets_a_sips_contact(pbx_server) -> None:
    """RFC 3261 §12.1.1: a dialog started with a sips: Request-URI gets a sips: Contact."""
    server, tls_port = _tls_server(pbx_server)
    context = ssl.create_default_context(cafile=str(server.var_dir / "tls" / "sip-cert.pem"))
    with socket.create_connection((server.host, tls_port), timeout=5) as plain, \
            context.wrap_socket(plain, server_hostname=LOOPBACK) as secure:
        host, port = secure.getsockname()[:2]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
               f"m=audio {free_port(udp=True, tcp=False)} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        uri = f"sips:101@{LOOPBACK}:{tls_port}"
        head = (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {host}:{port};branch=z9hG4bKsips1;rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sips:tester@{host}>;tag=sips\r\nTo: <{uri}>\r\n"
                f"Call-ID: sips-contact@test\r\nCSeq: 1 INVITE\r\nContact: <sips:tester@{host}:{port}>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode()
        secure.sendall(head + sdp)
        received = b""
        deadline = time.monotonic() + 15
        while b"SIP/2.0 200" not in received and time.monotonic() < deadline:
            chunk = secure.recv(65536)
            if not chunk:
                break
            received += chunk
        answer = received[received.find(b"SIP/2.0 200"):].decode(errors="replace")
        assert answer.startswith("SIP/2.0 200"), received.decode(errors="replace")
        assert f"Contact: <sips:{LOOPBACK}:{tls_port}>" in answer, answer
        to = re.search(r"^To: (.*)$", answer, re.M)
        assert to is not None
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            secure.sendall((f"{method} sips:{LOOPBACK}:{tls_port} SIP/2.0\r\n"
                            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bKsips{method};rport\r\n"
                            f"Max-Forwards: 70\r\nFrom: <sips:tester@{host}>;tag=sips\r\nTo: {to.group(1).strip()}\r\n"
                            f"Call-ID: sips-contact@test\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode())
        received = b""
        while b"CSeq: 2 BYE" not in received and time.monotonic() < deadline:
            chunk = secure.recv(65536)
            if not chunk:
                break
            received += chunk
        assert b"SIP/2.0 200" in received and b"CSeq: 2 BYE" in received, received


def test_silent_tls_peers_count_against_the_caps_and_are_closed(pbx_server) -> None:
    """A connection that never starts its handshake is half-open too: it counts against the
    per-source cap from its first moment and is closed after the message timeout."""
    tls_port = free_port(udp=False, tcp=True)
    server = pbx_server(default_config_yaml(sip={"tcp": {"message_timeout": 2, "max_connections_per_source": 5},
                                                 "protection": {"trusted": []}}),
                        extra_args=("--sip-listen", f"tls:{LOOPBACK}:{tls_port}"))
    silent = [socket.create_connection((server.host, tls_port), timeout=5) for _ in range(5)]
    deadline = time.monotonic() + 10
    while server.metric("centralita_sip_connections", 0, transport="TLS") != 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.metric("centralita_sip_connections", 0, transport="TLS") == 5
    with socket.create_connection((server.host, tls_port), timeout=5) as sixth:
        try:
            assert sixth.recv(1024) == b"", "a sixth connection from one source was served"
        except ConnectionResetError:
            pass
    assert server.metric("centralita_sip_connections_refused_total", 0, reason="source_limit") == 1
    context = ssl.create_default_context(cafile=str(server.var_dir / "tls" / "sip-cert.pem"))
    with socket.create_connection((server.host, tls_port), timeout=5, source_address=("127.0.0.2", 0)) as plain, \
            context.wrap_socket(plain, server_hostname=LOOPBACK) as secure:
        assert secure.version() is not None  # another source is served while they wait
    for sock in silent:
        sock.settimeout(20)
        try:
            assert sock.recv(1024) == b"", "the server sent something to a silent TLS peer"
        except ConnectionResetError:
            pass
        sock.close()
    assert server.metric("centralita_sip_connections_closed_total", 0, reason="incomplete_message") == 5


def test_a_pjsua_phone_registered_over_tls_answers_a_call(pbx_server, tmp_path) -> None:
    """A second TLS stack (PJSIP, verifying the server's certificate) takes a call over TLS."""
    server, tls_port = _tls_server(pbx_server)
    certificate = server.var_dir / "tls" / "sip-cert.pem"
    with PjsuaPhone(tmp_path / "pjsua-1003", (server.host, tls_port), "1003", "demo1003",
                    transport="tls", ca_file=certificate) as callee, \
            _phone(tmp_path, server, "1001", server.sip_port, "udp") as caller:
        callee.wait_event("registered", timeout=20)
        caller.wait_registered(timeout=20)
        assert server.metric("centralita_sip_requests_received_total", 0, method="REGISTER",
                             transport="TLS") >= 1
        caller.dial(f"sip:1003@{server.sip_address}")
        callee.wait_event("incoming", timeout=20)
        callee.wait_event("answered", timeout=20)
        established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert established["type"] == "CALL_ESTABLISHED", f"{established}\n{caller.log_tail()}"
        if callee.last("media") is None:
            callee.wait_event("media", timeout=20)
        assert _wait_frames(caller, 8000) >= 8000, f"no audio from the TLS phone\n{caller.log_tail()}"
        caller.hangup()
        ended = callee.wait_event("ended", timeout=20)
        assert ended["status"] == 200, ended
