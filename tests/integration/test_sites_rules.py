"""When another site's agents are offered a call: follow-the-sun and overflow after N seconds,
with two real `pbx serve --site` processes (the shared PostgreSQL, the Mosquitto) and raw
UDP phones; and what the other site's agent's screen-pop shows.

Bogota's business hours say it is closed: its agent, registered and available there, is
offered no call (madrid's caller waits in line, past the queue's ``sites_after_seconds``),
and both sites say so (/healthz, the agents API, ``centralita_site_open``). Once bogota is
open the waiting caller is offered to bogota's agent, no sooner than the queue's
``sites_after_seconds``; the agent's screen-pop (the webhook) carries madrid's IVR record of
the call and the same fields as a local call's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration.call_peers import Caller, agent_state, assert_all_given_back, reply, wait_for
from integration.server_fixture import parse_prometheus
from integration.test_sites import (
    bus_view,
    shared_database,  # noqa: F401 - a fixture
    site_up,
    sites_config,
    start_site,
)
from peers import raw

mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix
postgres_server = postgres_fixture.postgres_server

FLOW = Path(__file__).resolve().parent / "flows" / "straight_to_general.yaml"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SITES_AFTER_SECONDS = 1.5
CLOSED_ALL_WEEK = {"weekly": {"mon-sun": "closed"}}


class ScreenPops:
    """The screen-pop webhook: every context the sites POST, in order."""

    def __init__(self) -> None:
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pop"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_agent(self, agent: str) -> list[dict]:
        return [pop for pop in self.received if pop["agent"] == agent]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def screen_pops() -> Iterator[ScreenPops]:
    pops = ScreenPops()
    yield pops
    pops.close()


def rules_config(broker: str, prefix: str, database: str, screen_pop_url: str) -> str:
    config = yaml.safe_load(sites_config(broker, prefix, database))
    config["extensions"]["100"] = {"application": "ivr", "flow": str(FLOW)}
    config["routing"]["screen_pop_url"] = screen_pop_url
    general = next(q for q in config["queues"] if q["name"] == "general")
    general.update(sites=["bogota"], sites_after_seconds=SITES_AFTER_SECONDS)
    bogota = next(s for s in config["sites"] if s["name"] == "bogota")
    bogota["business_hours"] = CLOSED_ALL_WEEK
    fernando = next(a for a in config["agents"] if a["extension"] == "1006")
    fernando["languages"] = ["es", "en"]  # the flow speaks English
    return yaml.safe_dump(config, sort_keys=False)


def send(server, method: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.http_url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def site_open_metric(server, site: str) -> float:
    return parse_prometheus(server.http_get("/metrics")[1])[
        f'centralita_site_open{{site="{site}"}}'
    ]


class Phone:
    """Agent 1006's phone at bogota: registers, answers what it is asked to."""

    def __init__(self, server) -> None:
        self.peer = raw.UdpPeer((server.host, server.sip_port))
        self.contact = f"<sip:1006@{self.peer.local[0]}:{self.peer.local[1]}>"
        registered = raw.register(self.peer, "1006", "demo1006", expires=300, contact=self.contact)
        assert registered.final is not None and registered.final.status == 200

    def invite(self, timeout: float) -> raw.SipMessage | None:
        """The next INVITE within ``timeout`` (answering OPTIONS, BYE and CANCEL meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.peer.recv(0.2)
            if message is None or message.is_response:
                continue
            if message.method == "INVITE":
                return message
            if message.method in ("OPTIONS", "BYE", "CANCEL"):
                self.peer.send(reply(message, 200, "OK", tag="agent"))
        return None

    def answer(self, invite: raw.SipMessage, port: int) -> None:
        self.peer.send(
            reply(
                invite,
                200,
                "OK",
                tag="agent",
                body=SDP.format(port=port).encode(),
                contact=self.contact,
            )
        )

    def drain(self, seconds: float) -> None:
        self.invite(seconds)

    def close(self) -> None:
        self.peer.close()


def test_a_closed_site_is_offered_nothing_then_takes_the_waiting_caller_once_open(
    shared_database,  # noqa: F811 - the fixture
    mqtt_url,
    bus_prefix,
    pbx_server,
    screen_pops,
) -> None:
    config = rules_config(mqtt_url, bus_prefix, shared_database, screen_pops.url)
    madrid = start_site(pbx_server, config, "madrid")
    bogota = start_site(pbx_server, config, "bogota")
    assert wait_for(lambda: site_up(madrid, "bogota") and site_up(bogota, "madrid"), 10), (
        bus_view(madrid),
        bus_view(bogota),
    )
    phone = Phone(bogota)
    caller = Caller(madrid, "100")
    local_caller = Caller(bogota, "100")
    try:
        assert wait_for(lambda: agent_state(bogota, "1006") == "available", 10)
        assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "available", 10)
        # Closed, and said so on both sites: health, the agents API, the metric.
        for server in (madrid, bogota):
            sites = bus_view(server)["sites"]
            assert sites["bogota"]["open"] is False and sites["madrid"]["open"] is True, sites
            assert site_open_metric(server, "bogota") == 0
            assert site_open_metric(server, "madrid") == 1
        _, body = bogota.http_get("/api/v1/agents/1006")
        live = json.loads(body)["live"]
        assert live["state"] == "available" and live["site_open"] is False, live

        caller.answered(SDP.format(port=41000).encode())  # the IVR answers and queues it
        queued_at = time.monotonic()
        # Waiting well past sites_after_seconds: bogota's agent is never offered the call.
        assert phone.invite(SITES_AFTER_SECONDS + 3.0) is None, "a closed site's agent was rung"
        _, stats = madrid.http_get("/api/v1/queues/general/stats")
        assert json.loads(stats)["waiting"] == 1, stats
        assert agent_state(bogota, "1006") == "available"

        # Bogota opens (the shared database, and each site's router).
        for server in (madrid, bogota):
            status, site = send(server, "PATCH", "/api/v1/sites/bogota", {"business_hours": None})
            assert status == 200 and site["business_hours"] is None, site
        assert bus_view(bogota)["sites"]["bogota"]["open"] is True
        assert site_open_metric(madrid, "bogota") == 1
        invite = phone.invite(10.0)
        assert invite is not None, "the open site's agent was never offered the waiting caller"
        assert time.monotonic() - queued_at >= SITES_AFTER_SECONDS
        assert invite.get("X-Centralita-Site") == "madrid"
        phone.answer(invite, 41010)
        assert wait_for(lambda: agent_state(bogota, "1006") == "on_call", 10)
        assert wait_for(lambda: len(screen_pops.of_agent("1006")) == 1, 5), screen_pops.received
        remote = screen_pops.of_agent("1006")[0]

        # The remote screen-pop carries madrid's IVR record of the call.
        status, ivr_body = madrid.http_get(f"/api/v1/calls/{caller.dialog.call_id}/ivr")
        assert status == 200, ivr_body
        madrid_ivr = json.loads(ivr_body)
        assert remote["site"] == "madrid" and remote["queue"] == "general"
        assert remote["caller"] == "5550100" and remote["language"] == "en"
        assert remote["ivr"]["call_id"] == caller.dialog.call_id
        assert (
            remote["ivr"]["path"] == madrid_ivr["path"]
            and remote["ivr"]["flow"] == "straight_to_general"
        )
        assert remote["ivr_path"] == [step["node"] for step in madrid_ivr["path"]] == ["queue"]
        assert remote["routing"]["chosen"] == "1006", remote["routing"]

        caller.bye()
        assert wait_for(lambda: agent_state(bogota, "1006") in ("wrap_up", "available"), 10)
        phone.drain(0.5)
        assert wait_for(lambda: agent_state(bogota, "1006") == "available", 15)

        # A local call at bogota, for comparison: the same screen-pop fields (and then some).
        local_caller.answered(SDP.format(port=41020).encode())
        invite = phone.invite(10.0)
        assert invite is not None
        phone.answer(invite, 41030)
        assert wait_for(lambda: len(screen_pops.of_agent("1006")) == 2, 5), screen_pops.received
        local = screen_pops.of_agent("1006")[1]
        assert "site" not in local
        assert set(local) <= set(remote), (sorted(local), sorted(remote))
        for key in ("queue", "caller", "language", "priority"):
            assert local[key] == remote[key], key
        assert set(local["ivr"]) == set(remote["ivr"])
        assert set(local["routing"]) == set(remote["routing"])
        local_caller.bye()
        phone.drain(0.5)
        assert_all_given_back(madrid, "the cross-site call, at madrid")
        assert_all_given_back(bogota, "the calls at bogota")
    finally:
        caller.close()
        local_caller.close()
        phone.close()
    assert madrid.alive() and bogota.alive()
