"""Qualify: a registered phone that stops answering OPTIONS stops being offered calls."""

from __future__ import annotations

import json
import time

import pytest

from integration.server_fixture import default_config_yaml
from peers import raw

pytestmark = pytest.mark.integration


def _agent_reachable(server, extension: str) -> bool:
    status, body = server.http_get(f"/api/v1/agents/{extension}")
    assert status == 200, body
    return bool(json.loads(body)["live"]["reachable"])


def _ok(request: raw.SipMessage) -> str:
    lines = ["SIP/2.0 200 OK"]
    lines += [f"Via: {via}" for via in request.values("via")]
    lines += [f"From: {request.get('from')}", f"To: {request.get('to')};tag=phone",
              f"Call-ID: {request.get('call-id')}", f"CSeq: {request.get('cseq')}",
              "Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_phone_that_stops_answering_options_becomes_unreachable_until_it_answers(pbx_server):
    # Short timers: an unanswered OPTIONS times out after 64*T1 = 3.2 s.
    server = pbx_server(default_config_yaml(sip={"qualify_interval": 1, "timers": {"t1": 0.05}}))
    with raw.UdpPeer((server.host, server.sip_port)) as phone:
        result = raw.register(phone, "1003", "demo1003", expires=300,
                              contact=f"<sip:1003@{phone.local[0]}:{phone.local[1]}>")
        assert result.final is not None and result.final.status == 200
        assert _agent_reachable(server, "1003")

        # Answer the server's OPTIONS for a while: the phone stays reachable.
        answered = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            message = phone.recv(0.5)
            if message is not None and not message.is_response and message.method == "OPTIONS":
                phone.send(_ok(message))
                answered += 1
        assert answered >= 2, "the server did not qualify the registered phone"
        assert _agent_reachable(server, "1003")

        # Go silent: after the OPTIONS transaction times out the agent is unreachable.
        assert _wait_for(lambda: not _agent_reachable(server, "1003"), 15), \
            "an agent whose phone stopped answering is still reachable"

        # Answer again: reachable again, without registering anew.
        def answer_all() -> bool:
            # Everything queued while silent too: old retransmissions arrive first.
            for message in phone.collect(0.5):
                if not message.is_response and message.method == "OPTIONS":
                    phone.send(_ok(message))
            return _agent_reachable(server, "1003")

        assert _wait_for(answer_all, 15), "the phone answers again but stays unreachable"
