"""Screen-pop: when an agent's phone rings, the caller's context reaches the CRM webhook and
the API, and the INVITE to the agent names the queue and the caller."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integration.call_peers import reply
from integration.server_fixture import default_config_yaml
from integration.test_stuck_states import FLOW, SDP, _agent_state, _wait_for
from peers import raw

pytestmark = pytest.mark.integration


class _Crm(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length", "0"))
        _Crm.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def crm():
    _Crm.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/screen-pop", _Crm.received
    server.shutdown()
    server.server_close()


def test_ringing_agent_gets_the_callers_context(pbx_server, crm):
    url, received = crm
    server = pbx_server(default_config_yaml(
        extensions={"100": {"application": "ivr", "flow": str(FLOW)}},
        routing={"auto_login": True, "screen_pop_url": url},
    ))
    target = (server.host, server.sip_port)
    with raw.UdpPeer(target) as agent, raw.UdpPeer(target) as caller:
        registered = raw.register(agent, "1001", "demo1001", expires=300,
                                  contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>")
        assert registered.final is not None and registered.final.status == 200
        assert _wait_for(lambda: _agent_state(server, "1001") == "available", 5)

        dialog = raw.Dialogish()
        aor = f"sip:100@{server.sip_address}"
        caller.send(raw.build_request(
            "INVITE", aor, caller, from_uri=f"sip:+34910000002@{caller.local[0]}", to_uri=aor,
            state=dialog, contact=f"<sip:caller@{caller.local[0]}:{caller.local[1]}>",
            headers=[("Content-Type", "application/sdp")], body=SDP.format(port=40010).encode()))
        answer = raw.final_response(caller, 5.0, cseq_method="INVITE")
        assert answer is not None and answer.status == 200

        invite = None
        deadline = time.monotonic() + 10
        while invite is None and time.monotonic() < deadline:
            message = agent.recv(0.5)
            if message is not None and not message.is_response and message.method == "INVITE":
                invite = message
        assert invite is not None, "the agent's phone never rang"
        assert invite.get("x-centralita-queue") == "general"
        assert invite.get("x-centralita-caller") == "+34910000002"
        agent.send(reply(invite, 486, "Busy Here", tag="agent"))

        assert _wait_for(lambda: bool(received), 5), "the CRM webhook was never called"
        pop = received[0]
        assert (pop["call_id"], pop["agent"], pop["queue"], pop["caller"]) == \
            (dialog.call_id, "1001", "general", "+34910000002")
        assert pop["ivr"]["outcome"] in ("in_progress", "enqueued")
        status, body = server.http_get(f"/api/v1/calls/{dialog.call_id}/context")
        assert status == 200 and json.loads(body)["agent"] == "1001", body
