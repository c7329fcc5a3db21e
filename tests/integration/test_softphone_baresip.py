"""Real softphones through the server: baresip registers with digest, calls, hangs up.

Audio is judged from what each baresip decoded (its ``sndfile`` dump of received audio),
so "audio flows" means RTP crossed the server in that direction.

Quirk: baresip 1.0.0 (Debian 12's libre) gives up on authentication (ENOSYS) as soon as any
challenge in the 401/407 uses an algorithm other than MD5. The demo's default digest
settings challenge with MD5 alone, and these tests run the demo's defaults untouched (the
point: baresip works out of the box); test_softphone_interop covers SHA-256 opt-in.
"""

from __future__ import annotations

import time

import pytest

from integration.rtpengine_fixture import assert_bridged_through_rtpengine
from integration.server_fixture import default_config_yaml
from peers.baresip import Account, Baresip

pytestmark = pytest.mark.integration

DIALOGS = "centralita_sip_dialogs_active"


def _phone(tmp_path, server, user: str, transport: str = "udp") -> Baresip:
    return Baresip(tmp_path / f"baresip-{user}-{transport}",
                   Account(user, f"demo{user}", (server.host, server.sip_port),
                           transport=transport))


def _wait_frames(phone: Baresip, minimum: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    frames = phone.received_audio_frames()
    while frames < minimum and time.monotonic() < deadline:
        time.sleep(0.2)
        frames = phone.received_audio_frames()
    return frames


def _wait_metric(server, name: str, value: float, timeout: float = 15.0) -> float | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = server.metric(name)
        if seen == value:
            return seen
        time.sleep(0.2)
    return seen


@pytest.mark.parametrize("transport,hangup_by,engine", [
    ("udp", "caller", "embedded"), ("udp", "callee", "embedded"),
    ("tcp", "caller", "embedded"), ("tcp", "callee", "embedded"),
    ("udp", "caller", "rtpengine"), ("tcp", "callee", "rtpengine")])
def test_baresip_calls_baresip_through_server(pbx_server, tmp_path, request, transport: str,
                                              hangup_by: str, engine: str) -> None:
    """A direct call between two phones, through the media `engine`."""
    rtpengine = request.getfixturevalue("rtpengine") if engine == "rtpengine" else None
    if rtpengine is None:
        server = pbx_server()
    else:
        server = pbx_server(default_config_yaml(media=rtpengine.media_settings), sip_trace=True)
    with _phone(tmp_path, server, "1002", transport) as callee, \
            _phone(tmp_path, server, "1001", transport) as caller:
        callee.wait_registered()
        caller.wait_registered()
        caller.dial(f"sip:1002@{server.sip_address}")
        established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert established["type"] == "CALL_ESTABLISHED", (
            f"caller's call ended before it was answered: {established}\n{caller.log_tail()}")
        answered = callee.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=10)
        assert answered["type"] == "CALL_ESTABLISHED", answered
        assert answered["direction"] == "incoming"
        assert "1001" in answered.get("peeruri", "") or "1001" in str(answered), answered

        # Each side plays a tone; each must decode audio that came through the server.
        assert _wait_frames(callee, 8000) >= 8000, (
            f"callee decoded too little audio\n{callee.log_tail()}")
        assert _wait_frames(caller, 8000) >= 8000, (
            f"caller decoded too little audio\n{caller.log_tail()}")
        assert server.metric(DIALOGS) >= 2, "a bridged call is two dialogs (B2BUA)"
        if rtpengine is not None:
            assert_bridged_through_rtpengine(server, rtpengine)

        ender, other = (caller, callee) if hangup_by == "caller" else (callee, caller)
        ender.hangup()
        ender.wait_event("CALL_CLOSED", timeout=10)
        closed = other.wait_event("CALL_CLOSED", timeout=10)
        assert closed["type"] == "CALL_CLOSED"
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "a leg stayed up after the hangup"


def test_baresip_wrong_password_is_refused(pbx_server, tmp_path) -> None:
    server = pbx_server()
    with Baresip(tmp_path / "bad", Account("1003", "wrong", (server.host, server.sip_port))) \
            as phone:
        event = phone.wait_event("REGISTER_OK", "REGISTER_FAIL", timeout=15)
        assert event["type"] == "REGISTER_FAIL", f"registered with a wrong password: {event}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_calls_extension_100_and_hears_the_greeting(pbx_server, tmp_path,
                                                            transport: str) -> None:
    server = pbx_server()
    with _phone(tmp_path, server, "1004", transport) as phone:
        phone.wait_registered()
        phone.dial(f"sip:100@{server.sip_address}")
        event = phone.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert event["type"] == "CALL_ESTABLISHED", f"{event}\n{phone.log_tail()}"
        assert _wait_frames(phone, 8000) >= 8000, f"no greeting audio\n{phone.log_tail()}"
        phone.hangup()
        phone.wait_event("CALL_CLOSED", timeout=10)
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0
