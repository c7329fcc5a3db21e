"""Screen-pop: when an agent's phone rings, the caller's context reaches the CRM webhook and
the API, and the INVITE to the agent names the queue and the caller."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integration.call_peers import reply, ring_agent_through_ivr
from integration.server_fixture import default_config_yaml
from integration.test_stuck_states import FLOW, SDP, _wait_for
from peers import raw
from peers.procs import silent_rtp_port

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
        dialog = raw.Dialogish()
        invite = ring_agent_through_ivr(server, agent, caller, "+34910000002",
                                        SDP.format(port=silent_rtp_port(10)).encode(), dialog)
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
