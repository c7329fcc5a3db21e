"""A call that crosses sites: it arrives at madrid, goes through madrid's IVR into billing,
and is answered by an agent registered only at bogota.

Two real `pbx serve --site` processes (the shared PostgreSQL, the local Mosquitto), two
real softphones (baresip): the caller registered with madrid, agent 1006 with bogota;
madrid has no agent logged in, and its billing queue allows bogota's agents
(`sites: [bogota]`). Madrid asks bogota over the bus, bogota's router reserves 1006,
madrid calls bogota's server, bogota rings 1006 and both servers relay the audio. Audio
is judged on what the phones decoded: the agent hears the caller's 600 Hz tone and the
caller the agent's 1500 Hz one.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration.call_peers import agent_state, assert_all_given_back, wait_for
from integration.test_queue_agents import (
    AGENT_TONE,
    CALLER_TONE,
    CallerDump,
    baresip_agent,
    baresip_caller,
    baresip_dials_queue,
    read_pcm16,
    tone_share,
)
from integration.test_sites import (
    bus_view,
    shared_database,  # noqa: F401 - a fixture
    site_up,
    sites_config,
    start_site,
)

mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix
postgres_server = postgres_fixture.postgres_server

FLOW = Path(__file__).resolve().parent / "flows" / "queue_menu.yaml"  # 1 -> billing


def cross_site_config(broker: str, prefix: str, database: str) -> str:
    config = yaml.safe_load(sites_config(broker, prefix, database))
    config["extensions"]["100"] = {"application": "ivr", "flow": str(FLOW)}
    billing = next(q for q in config["queues"] if q["name"] == "billing")
    billing["sites"] = ["bogota"]
    fernando = next(a for a in config["agents"] if a["extension"] == "1006")
    fernando["languages"] = ["es", "en"]  # the flow speaks English
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture
def madrid_and_bogota(shared_database, mqtt_url, bus_prefix, pbx_server):  # noqa: F811
    config = cross_site_config(mqtt_url, bus_prefix, shared_database)
    madrid = start_site(pbx_server, config, "madrid")
    bogota = start_site(pbx_server, config, "bogota")
    assert wait_for(lambda: site_up(madrid, "bogota") and site_up(bogota, "madrid"), 10), \
        (bus_view(madrid), bus_view(bogota))
    return madrid, bogota


def test_a_bogota_agent_answers_a_call_that_arrived_at_madrid_and_both_hear_each_other(
        madrid_and_bogota, tmp_path) -> None:
    madrid, bogota = madrid_and_bogota
    with ExitStack() as stack:
        agent = baresip_agent(tmp_path / "agent", bogota, "1006")
        stack.callback(agent.stop)
        assert wait_for(lambda: agent_state(bogota, "1006") == "available", 10)
        assert wait_for(lambda: bus_view(madrid)["remote_agents"].get("1006") == "available", 10)
        assert agent_state(madrid, "1001") == "offline"  # nobody at madrid takes billing
        caller = baresip_caller(tmp_path / "caller", madrid)
        stack.callback(caller.stop)
        dump = CallerDump(caller)

        baresip_dials_queue(caller, madrid, "1")
        ivr_audio = dump.samples()
        event = agent.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
        assert event["type"] == "CALL_ESTABLISHED", event
        answered_at = time.monotonic()
        assert wait_for(lambda: agent_state(bogota, "1006") == "on_call", 10)
        dump.set_mark()
        heard = dump.wait_after_mark(4.0)
        assert len(ivr_audio) >= 2400, "the caller decoded no IVR audio before the digit"
        for tone in (CALLER_TONE, AGENT_TONE):
            assert tone_share(ivr_audio, tone) < 0.1, f"the IVR audio already holds {tone:g} Hz"
        agent_heard = read_pcm16(agent.dumps("dec")[-1]) if agent.dumps("dec") else []
        assert tone_share(agent_heard, CALLER_TONE) > 0.5, (
            f"the bogota agent did not hear the madrid caller's tone ({len(agent_heard)} samples)")
        share = tone_share(heard, AGENT_TONE)
        assert share > 0.6, f"the caller did not hear the bogota agent (share {share:.2f})"

        # A reconciliation at bogota (every 10 s) finds the call live: the agent stays on it.
        time.sleep(max(0.0, 11.0 - (time.monotonic() - answered_at)))
        assert agent_state(bogota, "1006") == "on_call"
        caller.command("hangup")
        assert wait_for(lambda: agent_state(bogota, "1006") in ("wrap_up", "available"), 10)
        # Madrid counted the call answered in its billing queue; bogota's agent is free again.
        status, body = madrid.http_get("/api/v1/queues/billing/stats")
        assert status == 200 and json.loads(body)["answered"] == 1, body
        assert wait_for(lambda: agent_state(bogota, "1006") == "available", 10)
        # Both servers hold nothing of the call any more (ports, dialogs, tasks, router).
        assert_all_given_back(madrid, "the cross-site call, at madrid")
        assert_all_given_back(bogota, "the cross-site call, at bogota")
    assert madrid.alive and bogota.alive
