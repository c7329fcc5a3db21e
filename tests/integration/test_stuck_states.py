"""No agent and no caller is left stuck: phones that vanish without a BYE are found and
cleaned up, and the agent is offered calls again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from integration.call_peers import reply
from integration.server_fixture import default_config_yaml, parse_prometheus
from peers import raw
from peers.procs import silent_rtp_port

pytestmark = pytest.mark.integration

FLOW = Path(__file__).parent / "flows" / "straight_to_general.yaml"
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _agent_state(server, extension: str) -> str:
    status, body = server.http_get(f"/api/v1/agents/{extension}")
    assert status == 200, body
    return json.loads(body)["live"]["state"]


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_caller_and_agent_that_vanish_mid_call_are_hung_up_and_the_agent_freed(pbx_server):
    config = default_config_yaml(
        media={"rtp_timeout": 2},
        extensions={"100": {"application": "ivr", "flow": str(FLOW)}},
        queues=[{"name": "general", "wrap_up_seconds": 0}],
    )
    server = pbx_server(config)
    target = (server.host, server.sip_port)
    with raw.UdpPeer(target) as agent, raw.UdpPeer(target) as caller:
        registered = raw.register(agent, "1001", "demo1001", expires=300,
                                  contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>")
        assert registered.final is not None and registered.final.status == 200
        assert _wait_for(lambda: _agent_state(server, "1001") == "available", 5)

        # The caller sends an offer, ACKs the answer, then goes silent: no RTP, no BYE.
        dialog = raw.Dialogish()
        aor = f"sip:100@{server.sip_address}"
        caller.send(raw.build_request(
            "INVITE", aor, caller, from_uri=f"sip:5550001@{caller.local[0]}", to_uri=aor, state=dialog,
            contact=f"<sip:5550001@{caller.local[0]}:{caller.local[1]}>",
            headers=[("Content-Type", "application/sdp")], body=SDP.format(port=silent_rtp_port()).encode()))
        answer = raw.final_response(caller, 5.0, cseq_method="INVITE")
        assert answer is not None and answer.status == 200, answer and answer.start_line
        caller.send(raw.build_request("ACK", aor, caller, from_uri=f"sip:5550001@{caller.local[0]}",
                                      to_uri=aor, state=dialog, cseq=1, to_tag=answer.to_tag))

        # The agent's phone answers, then vanishes the same way.
        invite = None
        deadline = time.monotonic() + 10
        while invite is None and time.monotonic() < deadline:
            message = agent.recv(0.5)
            if message is not None and not message.is_response and message.method == "INVITE":
                invite = message
        assert invite is not None, "the queued caller was never offered to the agent"
        agent.send(reply(invite, 200, "OK", tag="agent", body=SDP.format(port=silent_rtp_port(2)).encode(),
                          contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>"))
        assert _wait_for(lambda: _agent_state(server, "1001") == "on_call", 5)

        # Nobody sends media: the server hangs both up, and the agent is offered calls again.
        assert _wait_for(lambda: _agent_state(server, "1001") == "available", 15), \
            f"agent stuck in {_agent_state(server, '1001')}"
        byes = [m for m in caller.collect(1.0) + agent.collect(1.0)
                if not m.is_response and m.method == "BYE"]
        assert len(byes) >= 2, "both vanished phones should have been sent a BYE"

    status, text = server.http_get("/metrics")
    metrics = parse_prometheus(text)
    assert metrics.get('centralita_stale_calls_repaired_total{found_by="media_timeout"}', 0) >= 1
    assert metrics.get("centralita_sip_dialogs_active") == 0
