"""Interop: late offers (INVITE without SDP, RFC 3261 §13.2.1 and §14) and multipart bodies
(RFC 5621), with SIPp callers against the IVR, a queue's agent and an account."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from integration.call_peers import QUEUE_FLOW, Agent, Caller, assert_all_given_back, offer
from integration.server_fixture import default_config_yaml
from peers import raw, sipp
from peers.procs import silent_rtp_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed"),
]

SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.fixture
def server(pbx_server):
    return pbx_server(default_config_yaml(
        extensions={"100": {"application": "ivr", "flow": "demo"},
                    "102": {"application": "ivr", "flow": str(QUEUE_FLOW)}},
        queues=[{"name": "general", "wrap_up_seconds": 0, "ring_timeout_seconds": 30}],
    ))


def test_late_offer_to_the_ivr_is_offered_in_the_200_and_answered_in_the_ack(server, tmp_path) -> None:
    result = sipp.run(server.sip_address, scenario=SCENARIOS / "late_offer_uac.xml", service="100",
                      calls=3, rate=3, timeout=60, workdir=tmp_path)
    assert result.returncode == 0 and result.successful == 3, result.describe()
    assert_all_given_back(server, "late-offer calls to the IVR")


def test_late_offer_whose_ack_has_no_answer_is_hung_up(server, tmp_path) -> None:
    result = sipp.run(server.sip_address, scenario=SCENARIOS / "late_offer_ack_without_answer.xml",
                      service="100", calls=1, timeout=60, workdir=tmp_path)
    assert result.returncode == 0 and result.successful == 1, result.describe()
    assert_all_given_back(server, "an ACK without an answer")


def test_multipart_offer_is_answered(server, tmp_path) -> None:
    result = sipp.run(server.sip_address, scenario=SCENARIOS / "multipart_offer_uac.xml", service="100",
                      calls=2, rate=2, timeout=60, workdir=tmp_path)
    assert result.returncode == 0 and result.successful == 2, result.describe()
    assert_all_given_back(server, "multipart offers")


def test_late_offer_media_goes_where_the_ack_said(server) -> None:
    """The IVR's prompt reaches the RTP address that only the ACK's answer named."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    caller = Caller(server, "100")
    try:
        caller.invite()
        answer = caller.final()
        assert answer.status == 200 and b"m=audio " in answer.body, answer.start_line
        host, port = caller.peer.local
        caller.peer.send(raw.build_request(
            "ACK", caller.aor, caller.peer, from_uri=f"sip:5550100@{host}", to_uri=caller.aor,
            state=caller.dialog, cseq=1, to_tag=caller.to_tag, headers=(("Content-Type", "application/sdp"),),
            body=offer(rtp.getsockname()[1])))
        rtp.settimeout(5.0)
        packet, _ = rtp.recvfrom(2048)
        assert packet[0] & 0xC0 == 0x80 and packet[1] & 0x7F == 0  # RTP, PCMU as answered
        caller.bye()
    finally:
        rtp.close()
        caller.close()
    assert_all_given_back(server, "a late-offer call with media")


def _agent_answers_until_bye(agent: Agent) -> None:
    invite = agent.next_request("INVITE", timeout=20)
    agent.reply(invite, 180, "Ringing")
    agent.reply(invite, 200, "OK", body=offer(silent_rtp_port(20)))
    bye = agent.next_request("BYE", timeout=20)
    agent.reply(bye, 200, "OK")


def test_late_offer_bridged_to_a_queue_agent(server, tmp_path) -> None:
    agent = Agent(server)
    try:
        caller = sipp.start(server.sip_address, scenario=SCENARIOS / "late_offer_uac.xml",
                            service="102", calls=1, workdir=tmp_path, global_timeout_s=60)
        _agent_answers_until_bye(agent)
        result = caller.wait(60)
    finally:
        agent.close()
    assert result.returncode == 0 and result.successful == 1, result.describe()
    assert_all_given_back(server, "a late offer bridged to an agent")


def test_late_offer_bridged_to_an_account(server, tmp_path) -> None:
    agent = Agent(server)
    try:
        caller = sipp.start(server.sip_address, scenario=SCENARIOS / "late_offer_auth_uac.xml",
                            service="1001", calls=1, workdir=tmp_path, global_timeout_s=60,
                            auth=("1002", "demo1002"), auth_uri=f"sip:{server.sip_address}")
        _agent_answers_until_bye(agent)
        result = caller.wait(60)
    finally:
        agent.close()
    assert result.returncode == 0 and result.successful == 1, result.describe()
    assert_all_given_back(server, "a late offer bridged to an account")
