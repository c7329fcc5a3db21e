"""Unparsable messages: answered 400 when they name a Via (bare-LF ones too), otherwise
dropped with a rate-limited log line and counted as rejected."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from events import EventBus, SipMessageRejected
from pbx.edge import endpoint as endpoint_module
from pbx.edge.endpoint import SipEndpoint
from pbx.edge.transport import Transports
from pbx.sip.transaction import TimerConfig

BROKEN_CSEQ_BARE_LF = (
    b"OPTIONS sip:100@127.0.0.1 SIP/2.0\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbarelf\n"
    b"From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:100@127.0.0.1>\nCall-ID: bare-lf@test\n"
    b"CSeq: x OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n"
)
RTP_LIKE = bytes([0x80, 0x00, 0x12, 0x34]) + b"\x00" * 168


async def started_endpoint() -> tuple[SipEndpoint, list[SipMessageRejected]]:
    transports = Transports(lambda data, source, transport: endpoint.receive(data, source, transport))
    events = EventBus()
    rejected: list[SipMessageRejected] = []
    events.subscribe(rejected.append, SipMessageRejected)
    endpoint = SipEndpoint(transports, events, timers=TimerConfig(), user_agent="test")
    await transports.listen("udp", "127.0.0.1", 0)
    return endpoint, rejected


async def test_a_bare_lf_request_that_fails_to_parse_is_answered_400() -> None:
    endpoint, rejected = await started_endpoint()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        endpoint.receive(BROKEN_CSEQ_BARE_LF, peer.getsockname(), "UDP")
        loop = asyncio.get_running_loop()
        answer = await asyncio.wait_for(loop.sock_recv(peer, 4096), 5)
    finally:
        peer.close()
        await endpoint.transports.close()
    assert answer.startswith(b"SIP/2.0 400 ")
    assert b"Call-ID: bare-lf@test\r\n" in answer and b"branch=z9hG4bKbarelf" in answer
    assert [r.answered for r in rejected] == [True]


async def test_dropped_messages_are_logged_once_per_source_then_summed_up(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "DROP_SUMMARY_PERIOD", 0.2)
    endpoint, rejected = await started_endpoint()
    caplog.set_level(logging.INFO, logger="pbx.edge.endpoint")
    try:
        for _ in range(500):
            endpoint.receive(RTP_LIKE, ("127.0.0.9", 40000), "UDP")
        endpoint.receive(RTP_LIKE, ("127.0.0.10", 40002), "UDP")
        lines = [r.getMessage() for r in caplog.records if "unparsable" in r.getMessage()]
        assert len(lines) == 2
        assert "from 127.0.0.9:40000" in lines[0] and "from 127.0.0.10:40002" in lines[1]
        for _ in range(100):  # wait for the period's summary
            if any("dropped from 127.0.0.9" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        summaries = [r.getMessage() for r in caplog.records if "messages dropped from" in r.getMessage()]
        assert summaries == ["499 unparsable messages dropped from 127.0.0.9 in the last 0 s"]
    finally:
        await endpoint.transports.close()
        await endpoint.close()
    assert len(rejected) == 501 and not any(r.answered for r in rejected)


async def test_a_source_quiet_for_a_period_is_logged_in_full_again(
        caplog: pytest.LogCaptureFixture) -> None:
    endpoint, _ = await started_endpoint()
    caplog.set_level(logging.INFO, logger="pbx.edge.endpoint")
    try:
        endpoint.receive(RTP_LIKE, ("127.0.0.9", 40000), "UDP")
        endpoint.dropped.flush()  # a period with nothing more from it
        endpoint.dropped.flush()
        endpoint.receive(RTP_LIKE, ("127.0.0.9", 40000), "UDP")
    finally:
        await endpoint.transports.close()
        await endpoint.close()
    full = [r for r in caplog.records if r.getMessage().startswith("dropped unparsable message")]
    assert len(full) == 2
