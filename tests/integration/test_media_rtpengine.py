"""The server with media.engine: rtpengine, when rtpengine comes and goes.

A call that ends deletes its rtpengine call; when rtpengine dies mid-call the calls it
carried end with a BYE to both phones, new calls get ``503 Media engine unavailable``,
nothing hangs; once rtpengine is back, calls work again.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

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
from peers.baresip import Account, Baresip

pytestmark = pytest.mark.integration

DIALOGS = "centralita_sip_dialogs_active"


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
