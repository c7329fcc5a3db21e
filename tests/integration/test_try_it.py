"""The README's "Try it" SIPp commands, and how their calls are recorded.

A caller who stays on the line hears the greeting; one who hangs up during a greeting
(before the IVR asked anything) completed the call, while one who leaves a menu
abandoned it. Each call's CDR is read back through ``GET /api/v1/calls/{id}``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from integration.server_fixture import default_config_yaml
from integration.test_queue_agents import call_record, need_sipp
from peers import sipp

pytestmark = pytest.mark.integration

# A greeting, then a menu: like an IVR that opens with "Welcome to ...".
GREETING_THEN_MENU = """\
    name: greeting_then_menu
    start: welcome
    language: en
    languages: [en]
    nodes:
      welcome:
        type: play
        prompt: en/welcome
        next: menu
      menu:
        type: menu
        prompt: en/main_menu
        timeout: 10
        options: {1: goodbye}
        fallback: goodbye
      goodbye:
        type: hangup
        prompt: en/goodbye
"""


def _call_id(result: sipp.SippResult) -> str:
    found = re.search(r"^Call-ID:\s*(\S+)", result.messages_log, re.MULTILINE | re.IGNORECASE)
    assert found, f"no Call-ID in SIPp's trace\n{result.describe()}"
    return found.group(1)


def _uac(server, tmp_path: Path, extension: str, pause_ms: int) -> dict:
    """SIPp's built-in uac: INVITE, ACK, a pause of ``pause_ms`` (-d), BYE; its CDR."""
    result = sipp.run(server.sip_address, scenario="uac", service=extension, calls=1,
                      duration_ms=pause_ms, trace_msg=True, timeout=60,
                      workdir=tmp_path / f"uac-{extension}-{pause_ms}")
    assert result.returncode == 0 and result.successful == 1, result.describe()
    return call_record(server, _call_id(result))


@pytest.fixture
def server(pbx_server, tmp_path):
    need_sipp()
    flow = tmp_path / "greeting_then_menu.yaml"
    flow.write_text(textwrap.dedent(GREETING_THEN_MENU))
    return pbx_server(default_config_yaml(extensions={
        "102": {"application": "ivr", "flow": str(flow)}}))


def test_readme_greeting_command_stays_for_the_greeting_and_completes(server, tmp_path) -> None:
    # README: sipp -sn uac -s 101 127.0.0.1:5060 -m 1 -d 6000
    record = _uac(server, tmp_path, "101", 6000)
    assert record["callee"] == "101"
    assert record["answered"] is not None and record["ended"] is not None
    assert record["disposition"] == "completed", record


def test_hanging_up_during_an_ivr_greeting_completes_but_leaving_its_menu_abandons(
        server, tmp_path) -> None:
    at_once = _uac(server, tmp_path, "102", 0)
    assert at_once["ivr_path"] == ["welcome"], at_once
    assert at_once["disposition"] == "completed", at_once

    in_menu = _uac(server, tmp_path, "102", 4000)
    assert in_menu["ivr_path"] == ["welcome", "menu"], in_menu
    assert in_menu["disposition"] == "abandoned", in_menu
