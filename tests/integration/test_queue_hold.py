"""An agent puts the caller on hold and resumes (re-INVITEs from the agent's softphone):
the call survives, and once resumed the two hear each other again."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from integration.test_queue_agents import (
    AGENT_TONE,
    CallerDump,
    baresip_agent,
    baresip_caller,
    baresip_dials_queue,
    cc_config,
    tone_share,
    wait_agent_state,
)

pytestmark = pytest.mark.integration


def test_agent_hold_and_resume_keep_the_call_and_the_audio(pbx_server, tmp_path, media_engine):
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}}, media=media_engine), sip_trace=True)
    with ExitStack() as stack:
        agent = baresip_agent(tmp_path / "agent", server, "1001")
        stack.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        caller = baresip_caller(tmp_path / "caller", server)
        stack.callback(caller.stop)
        dump = CallerDump(caller)

        baresip_dials_queue(caller, server, "1")
        event = agent.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
        assert event["type"] == "CALL_ESTABLISHED", event
        wait_agent_state(server, "1001", "on_call", timeout=30)

        answer = agent.command("hold")
        assert answer.get("ok", True), f"baresip refused hold: {answer}"
        time.sleep(2)
        answer = agent.command("resume")
        assert answer.get("ok", True), f"baresip refused resume: {answer}"
        time.sleep(0.5)

        # Still one call, on both sides, and audio flows both ways after the resume.
        assert not caller.seen("CALL_CLOSED") and not agent.seen("CALL_CLOSED"), \
            "hold/resume ended the call"
        wait_agent_state(server, "1001", "on_call")
        dump.set_mark()
        heard = dump.wait_after_mark(3.0)
        assert tone_share(heard, AGENT_TONE) > 0.5, \
            f"after resume the caller does not hear the agent ({tone_share(heard, AGENT_TONE):.2f})"
        trace = server.log_path.read_text()
        assert "a=sendonly" in trace, "the agent's phone never offered hold (a=sendonly)"
        assert "a=recvonly" in trace, "the server did not answer the hold offer with recvonly"
        caller.hangup()
        wait_agent_state(server, "1001", "wrap_up", "available", timeout=15)
