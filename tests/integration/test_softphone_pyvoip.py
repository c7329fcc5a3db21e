"""pyVoIP (a threaded Python phone with known bugs) registers and receives a call.

pyVoIP answers MD5 digest only and never retransmits; a server that copes with it copes
with real-world phones. The caller is baresip (MD5 only too, see test_softphone_baresip).
Both run against the demo's default digest settings (MD5 challenges).
"""

from __future__ import annotations

import time

import pytest

from peers.baresip import Account, Baresip
from peers.pyvoip_phone import PyVoipPhone

pytestmark = pytest.mark.integration

DIALOGS = "centralita_sip_dialogs_active"


def _wait_metric(server, name: str, value: float, timeout: float = 15.0) -> float | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = server.metric(name)
        if seen == value:
            return seen
        time.sleep(0.2)
    return seen


def test_pyvoip_registers(pbx_server, tmp_path) -> None:
    server = pbx_server()
    with PyVoipPhone(tmp_path / "pyvoip", (server.host, server.sip_port), "1003",
                     "demo1003") as phone:
        event = phone.wait_event("registered", "register_failed", timeout=20)
        assert event["event"] == "registered", f"{event}\n{server.log_tail(40)}"
        assert _wait_metric(server, "centralita_sip_registered_accounts", 1.0, 5) == 1.0


def test_pyvoip_receives_a_call_from_baresip(pbx_server, tmp_path) -> None:
    server = pbx_server()
    with PyVoipPhone(tmp_path / "pyvoip", (server.host, server.sip_port), "1003",
                     "demo1003") as callee:
        assert callee.wait_event("registered", "register_failed")["event"] == "registered"
        with Baresip(tmp_path / "caller", Account("1001", "demo1001",
                                                  (server.host, server.sip_port))) as caller:
            caller.wait_registered()
            caller.dial(f"sip:1003@{server.sip_address}")
            callee.wait_event("incoming", timeout=15)
            callee.wait_event("answered", timeout=10)
            established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=15)
            assert established["type"] == "CALL_ESTABLISHED", (
                f"{established}\n{caller.log_tail()}")

            # baresip plays a tone: pyVoIP must receive RTP with sound in it.
            deadline = time.monotonic() + 10
            audio = callee.last("audio") or {}
            while time.monotonic() < deadline and (audio.get("packets", 0) < 50
                                                   or audio.get("nonsilent_bytes", 0) < 1000):
                time.sleep(0.3)
                audio = callee.last("audio") or {}
            assert audio.get("packets", 0) >= 50, f"pyVoIP got too few RTP packets: {audio}"
            assert audio.get("nonsilent_bytes", 0) >= 1000, f"pyVoIP heard only silence: {audio}"

            caller.hangup()
            caller.wait_event("CALL_CLOSED", timeout=10)
            callee.wait_event("ended", timeout=10)
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "a leg stayed up after the hangup"


def test_pyvoip_hangs_up_a_call_from_baresip(pbx_server, tmp_path) -> None:
    """pyVoIP's BYE must end both legs."""
    server = pbx_server()
    with PyVoipPhone(tmp_path / "pyvoip", (server.host, server.sip_port), "1003", "demo1003",
                     hangup_after=2.0) as callee:
        assert callee.wait_event("registered", "register_failed")["event"] == "registered"
        with Baresip(tmp_path / "caller", Account("1001", "demo1001",
                                                  (server.host, server.sip_port))) as caller:
            caller.wait_registered()
            caller.dial(f"sip:1003@{server.sip_address}")
            established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=15)
            assert established["type"] == "CALL_ESTABLISHED", established
            callee.wait_event("hung_up", timeout=15)
            caller.wait_event("CALL_CLOSED", timeout=15)
    assert _wait_metric(server, DIALOGS, 0.0) == 0.0, "a leg stayed up after pyVoIP's BYE"
