"""Hang-up races over the wire: SIPp callers hang up a few milliseconds after the answer,
swept over the window where the IVR's first prompt starts and where the queue opens the
agent's leg (a flow that queues at once, SIPp agents answering). Whatever the timing: no
traceback, no IVR failure, no reservation failure charged to an agent, every call recorded
as abandoned (or answered, when the agent was quicker), and nothing left held.

test_hangup_races.py hits each race exactly, in process; this one checks the real thing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from integration import sipp_agents as sa
from integration.call_peers import QUEUE_FLOW, assert_all_given_back
from peers import sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed"),
]

SCENARIO = Path(__file__).parent / "scenarios" / "caller_hangs_up_after_answer.xml"
DELAYS_MS = (0, 1, 2, 5, 10, 20, 40)
CALLS_PER_DELAY = 4


def _records(server) -> list[dict]:
    status, body = server.http_get("/api/v1/calls?limit=500")
    assert status == 200, body
    data = json.loads(body)
    return data["items"] if isinstance(data, dict) else data


def test_callers_hanging_up_around_the_first_prompt_and_the_agent_leg(pbx_server, tmp_path: Path) -> None:
    accounts = sa.agent_accounts(2)
    config = yaml.safe_load(sa.contact_center_config(accounts, wrap_up_seconds=0,
                                                      ring_timeout_seconds=30))
    flow = yaml.safe_load(QUEUE_FLOW.read_text())
    flow["nodes"]["queue"]["queue"] = sa.QUEUE
    queue_flow = tmp_path / "queue_at_once.yaml"
    queue_flow.write_text(yaml.safe_dump(flow))
    config["extensions"]["102"] = {"application": "ivr", "flow": str(queue_flow)}
    server = pbx_server(yaml.safe_dump(config, sort_keys=False))
    placed = 0
    with sa.SippAgents(server.sip_address, accounts, tmp_path / "agents") as agents:
        states = sa.wait_for_agents(server, agents.users, "available", timeout=30)
        assert all(state == "available" for state in states.values()), states
        for service in ("100", "102"):
            for delay in DELAYS_MS:
                result = sipp.run(server.sip_address, scenario=SCENARIO, service=service,
                                  calls=CALLS_PER_DELAY, rate=CALLS_PER_DELAY, duration_ms=delay,
                                  workdir=tmp_path / f"callers-{service}-{delay}", timeout=60)
                assert result.returncode == 0 and result.successful == CALLS_PER_DELAY, result.describe()
                placed += CALLS_PER_DELAY
        assert_all_given_back(server, "the callers' hang-ups")
        states = sa.wait_for_agents(server, agents.users, "available", timeout=30)
        assert all(state == "available" for state in states.values()), states

    log = server.log_text()
    for sign in ("Traceback", "IVR flow", "unknown or finished reservation", "did not take it (503",
                 "router refused a step"):
        assert sign not in log, f"server log has {sign!r}:\n{server.log_tail(60)}"
    records = []
    for _ in range(50):
        records = _records(server)
        if len(records) >= placed:
            break
        time.sleep(0.2)  # the recorder writes in batches
    dispositions = {record["call_id"]: record["disposition"] for record in records}
    assert len(dispositions) == placed
    unexpected = {call: d for call, d in dispositions.items() if d not in ("abandoned", "answered")}
    assert not unexpected, unexpected
