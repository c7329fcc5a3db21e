"""A callback's turn in the waiting line connects a real agent and the customer.

The real `pbx serve`; agent 1001 is baresip; SIPp plays the trunk (UAS) behind which the
customer answers, the customer's audio being a UDP socket here (the SDP SIPp answers
with points at it) that sends a 600 Hz µ-law tone back to whoever sends it RTP; a live
caller is SIPp dialling the IVR (digit 1: billing).

The callback is requested through the API while no agent is free (1001 not registered);
a live caller who arrives later waits behind it; 1001 registers and is rung first, for
the callback; then (agent-first) the customer is dialled and connected, audio both ways;
only after that call does the live caller reach the agent. Customer-first dials the
customer before ringing the agent; a customer who does not answer sends the request
back to pending with backoff and the agent wraps up.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from integration.test_callback_trunk import RINGS_OUT, _reply, _scenario, answer
from integration.test_queue_agents import (
    AGENT_TONE,
    CALLER_TONE,
    baresip_agent,
    caller_xml,
    cc_config,
    need_sipp,
    queue_stats,
    read_pcm16,
    tone_share,
    wait_agent_state,
    wait_until,
)
from pbx.media.g711 import linear_to_ulaw, ulaw_to_samples
from peers import sipp
from peers.procs import LOOPBACK

pytestmark = pytest.mark.integration

NUMBER = "+34600111222"
LIVE_CALLER = "+34915550001"


def _answers_with_media_at(port: int) -> str:
    """The trunk rings, answers with an SDP whose audio goes to ``port`` (the customer's
    socket here), and waits for the server's BYE."""
    trunk_answers = answer(LOOPBACK, str(port))
    return _scenario(f"""  <recv request="INVITE"/>
{_reply("180 Ringing")}{trunk_answers}  <recv request="ACK"/>
  <recv request="BYE"/>
{_reply("200 OK")}""")


class CustomerAudio:
    """The customer's phone media: keeps the µ-law it receives and answers whoever sends it
    RTP with a 600 Hz tone, one 20 ms packet at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.first_received_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _frame(self, index: int) -> bytes:
        samples = [int(8000 * math.sin(2 * math.pi * CALLER_TONE * (index * 160 + n) / 8000))
                   for n in range(160)]
        return linear_to_ulaw(struct.pack("<160h", *samples))

    def _run(self) -> None:
        peer = None
        sequence = 0
        next_send = 0.0
        while not self._stop.is_set():
            try:
                packet, source = self.sock.recvfrom(2048)
                if len(packet) > 12 and packet[1] & 0x7F == 0:
                    self.received.append(packet[12:])
                    if self.first_received_at is None:
                        self.first_received_at = time.monotonic()
                    peer = source
            except (TimeoutError, OSError):
                pass
            if peer is not None and time.monotonic() >= next_send:
                header = struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, sequence * 160, 0x5EED)
                self.sock.sendto(header + self._frame(sequence), peer)
                sequence += 1
                next_send = time.monotonic() + 0.02

    def heard(self, last: int = 100) -> list[int]:
        return ulaw_to_samples(b"".join(self.received[-last:]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _config(trunk_port: int, *, connect: str = "agent_first", ring_seconds: float = 10) -> str:
    config = yaml.safe_load(cc_config(agents={"1001": {"billing": 8}}, wrap_up=1))
    config["trunks"] = [{"name": "carrier", "address": f"{LOOPBACK}:{trunk_port}",
                         "caller_id": "+34910000000"}]
    config["callbacks"] = {"poll_seconds": 0.2, "queues": {"billing": {
        "connect": connect, "no_answer_seconds": ring_seconds, "retry_delay_seconds": 600}}}
    return yaml.safe_dump(config, sort_keys=False)


def _api(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.http_url}/api/v1{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _request_callback(server) -> str:
    status, created = _api(server, "POST", "/callbacks", {"number": NUMBER, "queue": "billing"})
    assert status == 201, created
    return created["id"]


def _callback(server, callback_id: str) -> dict:
    status, body = _api(server, "GET", f"/callbacks/{callback_id}")
    assert status == 200, body
    return body


def _waiting(server) -> int:
    return queue_stats(server, "billing")["waiting"]


def _trunk_messages(workdir: Path) -> str:
    path = workdir / "messages.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _incoming_from(event: dict) -> str:
    return str(event.get("peeruri") or event.get("param") or event)


def test_agent_first_the_callback_is_served_before_a_later_caller_with_audio_both_ways(
        pbx_server, tmp_path) -> None:
    need_sipp()
    customer = CustomerAudio()
    with ExitStack() as stack:
        stack.callback(customer.close)
        trunk_dir = tmp_path / "trunk"
        trunk = sipp.start(None, scenario=_answers_with_media_at(customer.port), workdir=trunk_dir,
                           calls=1, trace_msg=True)
        stack.callback(trunk.stop)
        server = pbx_server(_config(trunk.port))
        # No agent is free (1001 is not registered): the callback waits in billing's line.
        callback_id = _request_callback(server)
        assert wait_until(lambda: _waiting(server) == 1, 10), queue_stats(server, "billing")
        # A live caller arrives later and waits behind it.
        caller = sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=120_000),
                            service="100", calls=1, workdir=tmp_path / "caller")
        stack.callback(caller.stop)
        assert wait_until(lambda: _waiting(server) == 2, 20), queue_stats(server, "billing")

        agent = baresip_agent(tmp_path / "agent", server, "1001", answermode="manual")
        stack.callback(agent.stop)
        incoming = agent.wait_event("CALL_INCOMING", timeout=20)
        # Agent first: the agent's phone rings for the callback before the customer is dialled.
        assert NUMBER in _incoming_from(incoming), incoming
        assert "INVITE sip:" not in _trunk_messages(trunk_dir)
        status, context = _api(server, "GET", f"/calls/callback-{callback_id}/context")
        assert status == 200, context
        assert (context["kind"], context["callback_id"], context["caller"], context["queue"]) == \
            ("callback", callback_id, NUMBER, "billing")
        requested_at = _callback(server, callback_id)["requested_at"]
        assert datetime.fromisoformat(context["enqueued_at"]) == datetime.fromisoformat(requested_at)
        agent.command("accept")
        agent.wait_event("CALL_ESTABLISHED", timeout=10)

        # The customer answers and is bridged: audio both ways.
        assert wait_until(lambda: _callback(server, callback_id)["state"] == "completed", 20), \
            _callback(server, callback_id)
        assert wait_until(lambda: len(customer.received) >= 100, 10), len(customer.received)
        agent_tone = tone_share(customer.heard(), AGENT_TONE)
        assert agent_tone > 0.5, f"the customer did not hear the agent's tone ({agent_tone:.2f})"
        assert wait_until(lambda: tone_share(read_pcm16(agent.dumps("dec")[-1])[-8000:],
                                             CALLER_TONE) > 0.5, 10), \
            "the agent did not hear the customer's tone"
        [record] = _callback(server, callback_id)["history"]
        assert record["outcome"] == "answered"

        # The live caller still waits: the callback came first.
        assert _waiting(server) == 1
        wait_agent_state(server, "1001", "on_call")
        agent.hangup()
        result = trunk.wait(15)  # the server hung the customer up when the agent did
        assert result.returncode == 0, result.describe()

        # After wrap-up the agent gets the live caller.
        incoming = agent.wait_event("CALL_INCOMING", timeout=30)
        assert LIVE_CALLER in _incoming_from(incoming), incoming
        agent.command("accept")
        agent.wait_event("CALL_ESTABLISHED", timeout=10)
        assert _waiting(server) == 0
        agent.hangup()
        caller_result = caller.wait(20)
        assert caller_result.returncode == 0 and caller_result.successful == 1, caller_result.describe()
        wait_agent_state(server, "1001", "wrap_up", "available")
    assert server.metric("centralita_callbacks_connected_total", queue="billing") == 1
    health = server.healthz()["resources"]
    assert (health["outbound_calls"], health["callback_tries"], health["callbacks_in_line"],
            health["callback_conversations"]) == (0, 0, 0, 0), health


def test_customer_first_dials_the_customer_before_ringing_the_agent(pbx_server, tmp_path) -> None:
    need_sipp()
    customer = CustomerAudio()
    with ExitStack() as stack:
        stack.callback(customer.close)
        trunk_dir = tmp_path / "trunk"
        trunk = sipp.start(None, scenario=_answers_with_media_at(customer.port), workdir=trunk_dir,
                           calls=1, trace_msg=True)
        stack.callback(trunk.stop)
        server = pbx_server(_config(trunk.port, connect="customer_first"))
        callback_id = _request_callback(server)
        assert wait_until(lambda: _waiting(server) == 1, 10)
        agent = baresip_agent(tmp_path / "agent", server, "1001", answermode="manual")
        stack.callback(agent.stop)
        incoming = agent.wait_event("CALL_INCOMING", timeout=30)
        assert NUMBER in _incoming_from(incoming), incoming
        # The customer answered first and is on hold (music) while the agent's phone rings.
        # SIPp writes its message trace as it gets to it: the ACK went out before the ringing.
        assert wait_until(lambda: "ACK sip:" in _trunk_messages(trunk_dir), 5), \
            _trunk_messages(trunk_dir)
        assert wait_until(lambda: customer.received, 5), "the customer heard nothing on hold"
        agent.command("accept")
        agent.wait_event("CALL_ESTABLISHED", timeout=10)
        assert wait_until(lambda: _callback(server, callback_id)["state"] == "completed", 10)
        customer.received.clear()
        assert wait_until(lambda: len(customer.received) >= 100, 10), len(customer.received)
        assert tone_share(customer.heard(), AGENT_TONE) > 0.5, "the customer did not hear the agent"
        assert wait_until(lambda: tone_share(read_pcm16(agent.dumps("dec")[-1])[-8000:],
                                             CALLER_TONE) > 0.5, 10), \
            "the agent did not hear the customer"
        agent.hangup()
        result = trunk.wait(15)
        assert result.returncode == 0, result.describe()
        wait_agent_state(server, "1001", "wrap_up", "available")


def test_a_customer_who_does_not_answer_goes_back_with_backoff_and_the_agent_is_told(
        pbx_server, tmp_path) -> None:
    need_sipp()
    with ExitStack() as stack:
        trunk = sipp.start(None, scenario=RINGS_OUT, workdir=tmp_path / "trunk", calls=1)
        stack.callback(trunk.stop)
        server = pbx_server(_config(trunk.port, ring_seconds=2))
        callback_id = _request_callback(server)
        agent = baresip_agent(tmp_path / "agent", server, "1001")  # answers at once
        stack.callback(agent.stop)
        agent.wait_event("CALL_ESTABLISHED", timeout=20)
        # The customer's phone rings out: the agent's call is hung up by the server.
        agent.wait_event("CALL_CLOSED", timeout=20)
        result = trunk.wait(15)
        assert result.returncode == 0, result.describe()
        assert wait_until(lambda: _callback(server, callback_id)["history"], 10)
        body = _callback(server, callback_id)
        [record] = body["history"]
        assert (record["outcome"], body["state"], body["attempts"]) == ("no_answer", "pending", 1), body
        retry_at = datetime.fromisoformat(body["earliest_at"])
        assert (retry_at - datetime.fromisoformat(record["at"])).total_seconds() >= 590
        wait_agent_state(server, "1001", "wrap_up", "available")
        wait_agent_state(server, "1001", "available")
        assert _waiting(server) == 0  # not due before its retry: out of the line
    health = server.healthz()["resources"]
    assert (health["outbound_calls"], health["callback_tries"], health["callbacks_in_line"]) == \
        (0, 0, 0), health


def test_an_agent_who_rejects_the_preview_goes_not_ready_and_the_request_keeps_its_place(
        pbx_server, tmp_path) -> None:
    need_sipp()
    with ExitStack() as stack:
        trunk = sipp.start(None, scenario=RINGS_OUT, workdir=tmp_path / "trunk", calls=1,
                           trace_msg=True)
        stack.callback(trunk.stop)
        server = pbx_server(_config(trunk.port))
        callback_id = _request_callback(server)
        agent = baresip_agent(tmp_path / "agent", server, "1001", answermode="manual")
        stack.callback(agent.stop)
        agent.wait_event("CALL_INCOMING", timeout=20)
        agent.hangup()  # declines the callback's preview
        rona = wait_agent_state(server, "1001", "break")
        assert rona.get("reason") == "rona", rona
        assert wait_until(lambda: _callback(server, callback_id)["history"], 10)
        body = _callback(server, callback_id)
        [record] = body["history"]
        assert (record["outcome"], body["state"], body["attempts"]) == \
            ("agent_rejected", "pending", 0), body
        assert _waiting(server) == 1  # back in line at its place, for the next agent
        assert "INVITE sip:" not in _trunk_messages(tmp_path / "trunk")  # the customer was never dialled
