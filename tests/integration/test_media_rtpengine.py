"""The server with media.engine: rtpengine, when rtpengine comes and goes.

A call that ends deletes its rtpengine call; when rtpengine dies mid-call the calls it
carried end with a BYE to both phones, new calls get ``503 Media engine unavailable``,
nothing hangs; once rtpengine is back, calls work again.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from integration.call_peers import reply
from integration.rtpengine_fixture import assert_bridged_through_rtpengine
from integration.server_fixture import default_config_yaml
from integration.test_queue_agents import (
    AGENT_TONE,
    CALLER_TONE,
    CallerDump,
    baresip_caller,
    baresip_dials_queue,
    cc_config,
    pjsua_agent,
    read_pcm16,
    tone_share,
    wait_agent_state,
)
from peers import raw
from peers.baresip import Account, Baresip

pytestmark = pytest.mark.integration

DIALOGS = "centralita_sip_dialogs_active"
RTP_TIMEOUT = 6
STRAIGHT_TO_QUEUE = Path(__file__).parent / "flows" / "straight_to_general.yaml"
STRAIGHT_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _phone(folder, server, user: str) -> Baresip:
    return Baresip(folder / f"baresip-{user}", Account(user, f"demo{user}", (server.host, server.sip_port)))


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(0.2)
        value = predicate()
    return value


def _call(caller: Baresip, callee: Baresip, server) -> None:
    caller.dial(f"sip:1002@{server.sip_address}")
    event = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
    assert event["type"] == "CALL_ESTABLISHED", f"{event}\n{caller.log_tail()}"
    answered = callee.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=10)
    assert answered["type"] == "CALL_ESTABLISHED", answered


def _frames_grow(phone: Baresip, more: int = 4000, timeout: float = 10.0) -> bool:
    start = phone.received_audio_frames()
    return bool(_wait(lambda: phone.received_audio_frames() >= start + more, timeout))


def test_rtpengine_dying_ends_its_calls_and_refuses_new_ones_until_it_is_back(
        pbx_server, tmp_path, private_rtpengine) -> None:
    server = pbx_server(default_config_yaml(media=private_rtpengine.media_settings), sip_trace=True)
    with ExitStack() as stack:
        callee = stack.enter_context(_phone(tmp_path, server, "1002"))
        caller = stack.enter_context(_phone(tmp_path, server, "1001"))
        callee.wait_registered()
        caller.wait_registered()

        # A call that ends normally leaves nothing in rtpengine.
        _call(caller, callee, server)
        assert _frames_grow(caller) and _frames_grow(callee), "no audio through rtpengine"
        assert_bridged_through_rtpengine(server, private_rtpengine)
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        callee.wait_event("CALL_CLOSED", timeout=10)
        assert _wait(lambda: not private_rtpengine.call_ids(), 10), private_rtpengine.call_ids()

        # rtpengine dies mid-call: both phones get a BYE, no dialog stays up.
        _call(caller, callee, server)
        assert _frames_grow(caller), "no audio before rtpengine died"
        private_rtpengine.kill()
        for phone in (caller, callee):
            closed = phone.wait_event("CALL_CLOSED", timeout=20)
            assert closed["type"] == "CALL_CLOSED", closed
        assert _wait(lambda: server.metric(DIALOGS) == 0.0, 15), "a leg stayed up after rtpengine died"
        assert "rtpengine at" in server.log_text() and "lost" in server.log_text()

        # New calls are refused with the reason, at once.
        caller.dial(f"sip:1002@{server.sip_address}")
        closed = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert closed["type"] == "CALL_CLOSED", closed
        assert "SIP/2.0 503 Media engine unavailable" in server.log_text()
        assert server.alive()

        # rtpengine back on the same port: calls work again, through it.
        back = server.log_text().count("media through it again")
        private_rtpengine.start()
        assert _wait(lambda: server.log_text().count("media through it again") > back, 15)
        _call(caller, callee, server)
        assert _frames_grow(caller) and _frames_grow(callee), "no audio once rtpengine was back"
        assert private_rtpengine.call_ids(), "the call after the restart does not run through rtpengine"
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        callee.wait_event("CALL_CLOSED", timeout=10)
    assert _wait(lambda: server.metric(DIALOGS) == 0.0, 15)


def test_phones_on_different_g711_laws_hear_each_other(pbx_server, tmp_path, media_engine) -> None:
    """The caller talks PCMU (the server's first choice), the agent's phone accepts only
    PCMA: the media engine translates between them (rtpengine as the embedded relay does)."""
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}}, media=media_engine), sip_trace=True)
    with ExitStack() as stack:
        agent = pjsua_agent(tmp_path / "agent", server, "1001", codecs=("PCMA",))
        stack.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        caller = baresip_caller(tmp_path / "caller", server)
        stack.callback(caller.stop)
        dump = CallerDump(caller)
        baresip_dials_queue(caller, server, "1")
        agent.wait_event("answered", timeout=30)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        dump.set_mark()
        heard = dump.wait_after_mark(4.0)
        laws = re.findall(r"m=audio \d+ RTP/AVP (\d+)", server.log_text())
        assert "8" in laws and "0" in laws, f"the two phones did not choose different laws: {laws}"
        share = tone_share(heard, AGENT_TONE)
        assert share > 0.6, f"the caller did not hear the PCMA agent's tone (share {share:.2f})"
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        agent.wait_event("ended", timeout=15)
        recording = Path(agent.wait_event("recorded", timeout=10)["path"])
        agent_heard = read_pcm16(recording)
        share = tone_share(agent_heard, CALLER_TONE)
        assert share > 0.5, f"the PCMA agent did not hear the caller's tone (share {share:.2f})"


def _rtp_sender(sock: socket.socket, target: tuple[str, int], stop: threading.Event) -> threading.Thread:
    def run() -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            sock.sendto(struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, sequence * 160, 0x1234)
                        + b"\xff" * 160, target)
            time.sleep(0.02)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _media_address(message: raw.SipMessage) -> tuple[str, int]:
    body = message.body.decode() if isinstance(message.body, bytes) else str(message.body)
    host = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", body, re.MULTILINE)
    assert host and port, body
    return host.group(1), int(port.group(1))


def test_phones_that_fall_silent_after_talking_are_hung_up(pbx_server, media_engine) -> None:
    """Both phones talk through the bridge for longer than media.rtp_timeout (the call
    stays up), then go silent without a BYE: the server hangs both up (rtpengine: from when
    it last heard them, which the server asks it)."""
    config = default_config_yaml(
        media={"rtp_timeout": RTP_TIMEOUT, **media_engine},
        extensions={"100": {"application": "ivr", "flow": str(STRAIGHT_TO_QUEUE)}},
        queues=[{"name": "general", "wrap_up_seconds": 0}])
    server = pbx_server(config)
    target = (server.host, server.sip_port)
    caller_rtp, agent_rtp = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    stop = threading.Event()
    try:
        for sock in (caller_rtp, agent_rtp):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
        with raw.UdpPeer(target) as agent, raw.UdpPeer(target) as caller:
            registered = raw.register(agent, "1001", "demo1001", expires=300,
                                      contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>")
            assert registered.final is not None and registered.final.status == 200
            dialog = raw.Dialogish()
            aor = f"sip:100@{server.sip_address}"
            caller.send(raw.build_request(
                "INVITE", aor, caller, from_uri=f"sip:5550001@{caller.local[0]}", to_uri=aor,
                state=dialog, contact=f"<sip:5550001@{caller.local[0]}:{caller.local[1]}>",
                headers=[("Content-Type", "application/sdp")],
                body=STRAIGHT_SDP.format(port=caller_rtp.getsockname()[1]).encode()))
            answer = raw.final_response(caller, 5.0, cseq_method="INVITE")
            assert answer is not None and answer.status == 200, answer and answer.start_line
            caller.send(raw.build_request("ACK", aor, caller, from_uri=f"sip:5550001@{caller.local[0]}",
                                          to_uri=aor, state=dialog, cseq=1, to_tag=answer.to_tag))
            _rtp_sender(caller_rtp, _media_address(answer), stop)

            invite = None
            deadline = time.monotonic() + 10
            while invite is None and time.monotonic() < deadline:
                message = agent.recv(0.5)
                if message is not None and not message.is_response and message.method == "INVITE":
                    invite = message
            assert invite is not None, "the queued caller was never offered to the agent"
            agent.send(reply(invite, 200, "OK", tag="agent",
                             body=STRAIGHT_SDP.format(port=agent_rtp.getsockname()[1]).encode(),
                             contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>"))
            _rtp_sender(agent_rtp, _media_address(invite), stop)

            # The caller's packets reach the agent through the bridge: the call is talking.
            heard = 0
            deadline = time.monotonic() + 5
            while heard < 50 and time.monotonic() < deadline:
                try:
                    agent_rtp.recv(2048)
                    heard += 1
                except TimeoutError:
                    pass
            assert heard >= 50, f"the agent's phone got {heard} packets through the bridge"
            talking = [m.method for m in caller.collect(RTP_TIMEOUT + 4) + agent.collect(0.5)
                       if not m.is_response]
            assert "BYE" not in talking, f"a talking call was hung up: {talking}"
            stop.set()  # both fall silent, no BYE

            requests: list[raw.SipMessage] = []
            deadline = time.monotonic() + 25
            while sum(m.method == "BYE" for m in requests) < 2 and time.monotonic() < deadline:
                requests += [m for m in caller.collect(0.5) + agent.collect(0.5) if not m.is_response]
            methods = [m.method for m in requests]
            assert methods.count("BYE") >= 2, f"both silent phones should have been sent a BYE: {methods}"
            # Hung up for the silence of a talking call, not after probing a silent leg (OPTIONS).
            assert "OPTIONS" not in methods, methods
        metrics = server.metrics()
        assert metrics.get('centralita_stale_calls_repaired_total{found_by="media_timeout"}', 0) >= 1
    finally:
        stop.set()
        caller_rtp.close()
        agent_rtp.close()
