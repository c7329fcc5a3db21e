"""SIPp's uac_pcap against extension 100 (the demo IVR): a slow caller's first digit.

uac_pcap streams 7 s of G.711 A-law, sends telephone-event "1" at about 8 s and
hangs up a second later. The demo's language question (a 3.6 s prompt, then 6 s to
answer, asked twice) is still waiting then, so that late first digit answers it
(English) instead of landing in the main menu. The call's IVR record is read back
through ``GET /api/v1/calls/{id}/ivr``.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse

import pytest

from peers import sipp

pytestmark = pytest.mark.integration


def call_id_from(messages_log: str) -> str:
    match = re.search(r"^Call-ID:\s*(\S+)", messages_log, re.MULTILINE | re.IGNORECASE)
    assert match, "no Call-ID in SIPp's message trace"
    return match.group(1)


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed")
def test_a_slow_first_digit_answers_the_language_question(shared_pbx) -> None:
    result = sipp.run(shared_pbx.sip_address, scenario="uac_pcap", service="100", calls=1,
                      timeout=60, trace_msg=True)
    assert result.returncode == 0, result.describe()
    call_id = call_id_from((result.workdir / "messages.log").read_text(errors="replace"))
    status, body = shared_pbx.http_get(f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/ivr")
    assert status == 200, body
    record = json.loads(body)
    nodes = [step["node"] for step in record["path"]]
    assert nodes[:2] == ["lookup", "choose_language"]
    assert [(d["node"], d["digit"]) for d in record["digits"]] == [("choose_language", "1")]
    assert record["language"] == "en"
    assert record["queue"] is None  # it hung up before reaching any menu choice
    assert shared_pbx.metric("centralita_ivr_language_selections_total", language="en",
                             source="digit") >= 1
