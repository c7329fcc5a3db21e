"""Calls to extension 100 (the server's own application) with SIPp and by hand.

SIPp's built-in ``uac`` is the load: every call is INVITE, 100/180/183, 200, ACK, BYE,
200. A hand-driven INVITE checks that retransmissions make exactly one dialog.
"""

from __future__ import annotations

import socket
import time

import pytest

from peers import raw, sipp

pytestmark = pytest.mark.integration

DIALOGS = "centralita_sip_dialogs_active"


def _wait_metric(server, name: str, value: float, timeout: float = 60.0) -> float | None:
    """Poll /metrics until ``name`` equals ``value``; returns the last value seen."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = server.metric(name)
        if seen == value:
            return seen
        time.sleep(0.2)
    return seen


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
def test_sipp_uac_500_calls_udp(pbx_server) -> None:
    server = pbx_server()
    result = sipp.run(server.sip_address, scenario="uac", service="100", calls=500, rate=50,
                      transport="u1", timeout=180)
    assert result.returncode == 0, result.describe()
    assert result.successful == 500, result.describe()
    assert result.failed == 0, result.describe()
    assert server.alive()
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "dialogs left active after all BYEs"


def test_sipp_uac_calls_tcp(pbx_server) -> None:
    server = pbx_server()
    result = sipp.run(server.sip_address, scenario="uac", service="100", calls=100, rate=20,
                      transport="t1", timeout=120)
    assert result.returncode == 0, result.describe()
    assert result.successful == 100, result.describe()
    assert result.failed == 0, result.describe()
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "dialogs left active after all BYEs"


def test_sipp_uac_calls_on_one_tcp_connection(pbx_server) -> None:
    """``-t t1``: every call shares one TCP connection (how phones behind a proxy look)."""
    server = pbx_server()
    result = sipp.run(server.sip_address, scenario="uac", service="100", calls=50, rate=25,
                      transport="t1", timeout=120)
    assert result.returncode == 0 and result.failed == 0, result.describe()


def _sdp(rtp_port: int) -> bytes:
    return ("v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\na=sendrecv\r\n").encode()


def _in_dialog(method: str, peer, state: raw.Dialogish, ok: raw.SipMessage,
               cseq: int, branch: str | None = None) -> bytes:
    contact = ok.values("contact")[0]
    target = contact[contact.find("<") + 1: contact.find(">")] if "<" in contact else contact
    return raw.build_request(method, target, peer, from_uri="sip:retrans@127.0.0.1",
                             to_uri=f"sip:100@{peer.server[0]}:{peer.server[1]}", state=state,
                             cseq=cseq, to_tag=ok.to_tag, branch=branch)


def test_invite_retransmissions_make_one_dialog(pbx_server) -> None:
    server = pbx_server(sip_trace=True)
    assert server.metric(DIALOGS) == 0.0
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    try:
        with raw.UdpPeer((server.host, server.sip_port)) as peer:
            state = raw.Dialogish()
            target = f"sip:100@{server.sip_address}"
            invite = raw.build_request(
                "INVITE", target, peer, from_uri="sip:retrans@127.0.0.1", to_uri=target,
                state=state, contact=f"<sip:retrans@{peer.local[0]}:{peer.local[1]}>",
                headers=[("Content-Type", "application/sdp")], body=_sdp(rtp.getsockname()[1]))
            # The same INVITE three times before any answer could be acted on, as a phone
            # retransmitting on a lossy link would.
            for _ in range(3):
                peer.send(invite)
                time.sleep(0.02)
            responses = peer.collect(1.5)
            oks = [r for r in responses if r.is_response and r.status == 200]
            assert oks, f"no 200 to the INVITE: {[r.start_line for r in responses]}"
            # A retransmission after the 200 (our ACK "lost") must not make a new dialog.
            peer.send(invite)
            responses += peer.collect(1.0)
            statuses = [r.status for r in responses if r.is_response]
            assert all(s in (100, 180, 183, 200) for s in statuses), statuses
            oks = [r for r in responses if r.is_response and r.status == 200]
            tags = {r.to_tag for r in oks}
            assert len(tags) == 1 and None not in tags, f"200s with To tags {tags}: >1 dialog"
            ok = oks[0]
            assert ok.cseq == (1, "INVITE")

            peer.send(_in_dialog("ACK", peer, state, ok, cseq=1))
            assert _wait_metric(server, DIALOGS, 1.0, timeout=5) == 1.0, (
                "retransmitted INVITEs did not end up as exactly one active dialog")

            # The greeting flows as RTP to the port our SDP named.
            rtp.settimeout(3.0)
            packet, _ = rtp.recvfrom(2048)
            assert len(packet) >= 12 and packet[0] >> 6 == 2, "not an RTP packet"
            assert packet[1] & 0x7F in (0, 8), f"payload type {packet[1] & 0x7F}"

            # BYE, retransmitted once: both copies answered 200, the dialog ends once.
            bye = _in_dialog("BYE", peer, state, ok, cseq=2, branch=raw.new_branch())
            peer.send(bye)
            first = raw.final_response(peer, 5.0, call_id=state.call_id, cseq_method="BYE")
            assert first is not None and first.status == 200, first
            peer.send(bye)
            second = raw.final_response(peer, 5.0, call_id=state.call_id, cseq_method="BYE")
            assert second is not None and second.status == 200, (
                f"a retransmitted BYE must get the same 200 again, got {second}")
    finally:
        rtp.close()
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "the dialog stayed active after BYE"
    assert server.alive()
