"""SIPp's uac_pcap against extension 100 (the demo IVR): its RFC 2833 digit 1 picks billing.

uac_pcap streams 7 s of G.711 A-law, sends telephone-event "1" at about 8 s and
hangs up a second later. In the demo flow the language question times out (3 s
after its 3.6 s prompt) well before that, so the digit lands in the main menu
(or barges into the welcome prompt, which hands it to the menu): billing.
The call's IVR record is read back through ``GET /api/v1/calls/{id}/ivr``.
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
def test_uac_pcap_digit_1_takes_the_billing_branch(shared_pbx) -> None:
    result = sipp.run(shared_pbx.sip_address, scenario="uac_pcap", service="100", calls=1,
                      timeout=60, trace_msg=True)
    assert result.returncode == 0, result.describe()
    call_id = call_id_from((result.workdir / "messages.log").read_text(errors="replace"))
    status, body = shared_pbx.http_get(f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}/ivr")
    assert status == 200, body
    record = json.loads(body)
    nodes = [step["node"] for step in record["path"]]
    assert nodes[:2] == ["lookup", "choose_language"]
    assert nodes[-2:] == ["main_menu", "billing_queue"]
    assert {"node": "main_menu", "digit": "1"}.items() <= record["digits"][-1].items()
    assert record["queue"] == "billing"
    assert record["outcome"] == "enqueued"
    assert shared_pbx.metric("centralita_ivr_enqueued_total", queue="billing") >= 1
