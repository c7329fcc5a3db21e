"""A real softphone (baresip) finds its own answer in the IVR: it navigates the demo menu
with RFC 2833 DTMF to the password-reset answer, hangs up, and the call counts as deflected."""

from __future__ import annotations

import json
import time

import pytest

from integration.server_fixture import parse_prometheus
from peers.baresip import Account, Baresip, write_tone_wav

pytestmark = pytest.mark.integration


def _ivr_record(server, call_id: str) -> dict | None:
    status, body = server.http_get(f"/api/v1/calls/{call_id}/ivr")
    return json.loads(body) if status == 200 else None


def _wait_for_node(server, call_id: str, node: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = _ivr_record(server, call_id)
        if record and any(step["node"] == node for step in record["path"]):
            return record
        time.sleep(0.2)
    raise AssertionError(f"the IVR never reached {node!r}: {record}")


def test_baresip_navigates_to_a_self_service_answer_and_is_counted_as_deflected(pbx_server, tmp_path):
    server = pbx_server()  # the demo's defaults: baresip 1.0.0 answers its MD5 challenge
    tone = write_tone_wav(tmp_path / "caller-tone.wav", seconds=60, frequency=600)
    with Baresip(tmp_path / "caller", Account("1009", "demo1009", (server.host, server.sip_port)),
                 source_wav=tone) as caller:
        caller.wait_registered()
        caller.dial(f"sip:100@{server.sip_address}")
        established = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
        assert established["type"] == "CALL_ESTABLISHED", established
        call_id = established["id"]

        _wait_for_node(server, call_id, "choose_language")
        caller.command("sndcode", "1")  # English
        _wait_for_node(server, call_id, "main_menu")
        caller.command("sndcode", "3")  # self-service answers
        _wait_for_node(server, call_id, "faq_menu")
        caller.command("sndcode", "1")  # password reset
        record = _wait_for_node(server, call_id, "faq_password_reset")
        assert record["language"] == "en"
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = _ivr_record(server, call_id)
        if record and record["outcome"] != "in_progress":
            break
        time.sleep(0.2)
    assert record is not None and record["outcome"] == "deflected", record
    assert record["self_service_topics"] == ["password_reset"]
    assert [d["digit"] for d in record["digits"]] == ["1", "3", "1"]
    metrics = parse_prometheus(server.http_get("/metrics")[1])
    assert metrics.get('centralita_ivr_deflections_total{topic="password_reset"}') == 1, \
        {k: v for k, v in metrics.items() if "ivr" in k}
