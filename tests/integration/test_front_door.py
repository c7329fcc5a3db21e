"""Two real sites behind the shipped Kamailio front door, driven by SIPp callers and phones.

What is checked: calls are spread over both sites and each BYE reaches the site that took
its call (record-route); a site killed with -9 under 10 calls/s costs no new call (the
dispatcher fails over on the silent site and its probes take it out of rotation); a site
answering 503 is failed over, a busy agent's 486 is the caller's answer and never tried
at another site; an agent's phone registers through the front door at its home site
(Path) and is called through it, and registers at the backup site when its home dies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.front_door_calls import (
    DELAYED_SETUP_S,
    FailoverSummary,
    read_call_traces,
    start_callers,
)
from integration.kamailio_fixture import FrontDoor, KamailioMissing, start_front_door
from integration.server_fixture import PbxServer
from peers import sipp
from peers.procs import LOOPBACK, free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ACCOUNT_CALLER = SCENARIOS / "front_door_account_caller.xml"
REGISTER = SCENARIOS / "front_door_register.xml"
AGENT = SCENARIOS / "front_door_agent.xml"
BUSY_AGENT = SCENARIOS / "front_door_agent_busy.xml"
OVERLOADED_SITE = SCENARIOS / "front_door_site_overloaded.xml"
RECOVERY_LIMIT_S = 3.0


def site_call_ids(site: PbxServer, disposition: str | None = None) -> set[str]:
    status, body = site.http_get("/api/v1/calls?limit=1000")
    assert status == 200, body[:300]
    return {record["call_id"] for record in json.loads(body)
            if disposition is None or record["disposition"] == disposition}


def wait_for(condition, timeout: float = 10.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def front_door_factory(tmp_path: Path) -> Iterator:
    started: list[FrontDoor] = []

    def start(sites: dict[str, PbxServer | str], homes: dict[str, str] | None = None) -> FrontDoor:
        addresses = {name: site if isinstance(site, str) else site.sip_address
                     for name, site in sites.items()}
        try:
            door = start_front_door(addresses, homes, folder=tmp_path / f"kamailio{len(started)}")
        except KamailioMissing as missing:
            pytest.fail(str(missing), pytrace=False)
        started.append(door)
        return door

    yield start
    for door in started:
        door.stop()
        # Captured output: pytest shows it when the test failed.
        print(f"--- kamailio log tail ({door.log_path}) ---\n{door.log_tail(40)}")


@pytest.fixture
def two_sites(pbx_server) -> dict[str, PbxServer]:
    return {"madrid": pbx_server(), "bogota": pbx_server()}


@pytest.fixture
def two_traced_sites(pbx_server) -> dict[str, PbxServer]:
    """Sites logging every SIP message they send and receive (--sip-trace)."""
    return {"madrid": pbx_server(sip_trace=True), "bogota": pbx_server(sip_trace=True)}


def sent_invites(site: PbxServer) -> list[str]:
    """The INVITE requests ``site`` sent, as its SIP trace logged them."""
    invites = []
    for block in site.log_text().split("pbx.sip.trace: ")[1:]:
        head, _, message = block.partition("\n")
        if head.startswith("send ") and message.startswith("INVITE "):
            invites.append(message.split("\n\n", 1)[0])
    return invites


def test_calls_are_spread_over_both_sites_and_each_bye_reaches_its_site(
        two_sites, front_door_factory, tmp_path):
    door = front_door_factory(two_sites)
    callers, log_path = start_callers(door.address, tmp_path / "callers", calls=20, rate=10, talk_ms=500)
    result = callers.wait(60)
    traces = read_call_traces(log_path)
    assert result.returncode == 0, result.describe()
    assert len(traces) == 20 and all(t.answered_at is not None for t in traces), traces
    assert all(t.bye_status == 200 for t in traces), [t for t in traces if t.bye_status != 200]

    for name, site in two_sites.items():
        answered_here = {t.call_id for t in traces if t.site_port == site.sip_port}
        assert answered_here, f"{name} took no call: the dispatcher did not spread them"
        # Each site recorded exactly the calls it answered, ended by the caller's BYE
        # (a BYE routed to the other site would have been refused 481 there).
        assert wait_for(lambda s=site, a=answered_here: site_call_ids(s, "completed") == a), (
            name, site_call_ids(site, "completed") ^ answered_here)


def test_new_calls_survive_a_site_killed_with_minus_9(two_sites, front_door_factory, tmp_path):
    madrid, bogota = two_sites["madrid"], two_sites["bogota"]
    door = front_door_factory(two_sites)
    callers, log_path = start_callers(door.address, tmp_path / "callers", calls=100, rate=10,
                                      talk_ms=1000)
    time.sleep(3.0)
    killed_at = time.time()
    madrid.process.kill()
    madrid.process.wait(5)
    result = callers.wait(60)
    traces = read_call_traces(log_path)
    assert len(traces) == 100, result.describe()

    summary = FailoverSummary.of(traces, killed_at, madrid.sip_port)
    after = [t for t in traces if t.invited_at > killed_at]
    assert summary.placed_after >= 60 and summary.placed_after < 100, summary
    # No call placed after the death fails, and only the survivor answers them.
    assert summary.failed_after == 0, [t for t in after if t.answered_at is None]
    assert {t.site_port for t in after} == {bogota.sip_port}
    assert all(t.bye_status == 200 for t in after)
    # Calls hashed to the dead site wait for the front door's answer timeout and are
    # answered by the survivor; once its probes took the site out, none waits at all.
    assert summary.failed_over > 0, "no call was failed over: was the dead site in rotation?"
    assert summary.recovered_s < RECOVERY_LIMIT_S, summary
    late = [t for t in after if t.invited_at - killed_at > RECOVERY_LIMIT_S]
    assert late and all(t.setup_seconds < DELAYED_SETUP_S for t in late), late
    # What is lost: calls the dead site had answered and still held (their BYE times out).
    print(f"front door failover: {summary}")


def test_a_site_answering_503_is_failed_over_to_the_next(pbx_server, front_door_factory,
                                                         tmp_path):
    bogota = pbx_server()
    overloaded_log = tmp_path / "overloaded" / "site.log"
    overloaded = sipp.start(None, workdir=tmp_path / "overloaded", scenario=OVERLOADED_SITE,
                            extra=["-trace_logs", "-log_file", str(overloaded_log)])
    try:
        door = front_door_factory({"madrid": overloaded.address, "bogota": bogota})
        callers, log_path = start_callers(door.address, tmp_path / "callers", calls=10,
                                          rate=10, talk_ms=200)
        result = callers.wait(40)
    finally:
        overloaded.stop()
    traces = read_call_traces(log_path)
    assert result.returncode == 0, result.describe()
    # The calls hashed to the overloaded site were refused there, tried at bogota and
    # answered: every call was answered by bogota.
    refused = overloaded_log.read_text().count("invite")
    assert refused > 0, "no call reached the overloaded site: it was not in the rotation"
    assert [t.site_port for t in traces] == [bogota.sip_port] * 10, traces
    assert door.log_text().count("answered 503") == refused


def register_agent(door: FrontDoor, workdir: Path, user: str, password: str, port: int) -> str:
    """Register ``user`` through the front door from ``port``; the Path the 200 returned."""
    log_path = workdir / "register.log"
    result = sipp.run(door.address, workdir=workdir, scenario=REGISTER, calls=1,
                      inject=[f"{user};[authentication username={user} password={password}]"],
                      auth_uri=door.address, local_port=port, timeout=20,
                      extra=["-trace_logs", "-log_file", str(log_path)])
    assert result.returncode == 0, result.describe()
    [path] = [line.split(" ", 1)[1] for line in log_path.read_text().splitlines()
              if line.startswith("path ")]
    return path


def call_account(door: FrontDoor, workdir: Path, callee: str, caller: tuple[str, str]) -> str:
    """An account calling ``callee`` through the front door; the final status it logged."""
    log_path = workdir / "caller.log"
    result = sipp.run(door.address, workdir=workdir, scenario=ACCOUNT_CALLER, service=callee,
                      calls=1, duration_ms=500, auth=caller,
                      auth_uri=f"sip:{callee}@{door.address}", timeout=30,
                      extra=["-key", "caller", caller[0],
                             "-trace_logs", "-log_file", str(log_path)])
    assert result.returncode == 0, result.describe()
    finals = [line.split()[1] for line in log_path.read_text().splitlines()
              if line.startswith("final ")]
    assert len(finals) == 1, finals
    return finals[0]


def test_agent_registers_at_its_home_site_through_path_and_is_called_through_it(
        two_traced_sites, front_door_factory, tmp_path):
    madrid, bogota = two_traced_sites["madrid"], two_traced_sites["bogota"]
    door = front_door_factory(two_traced_sites, homes={"1001": "madrid", "1002": "madrid"})
    phone_port = free_port(udp=True, tcp=False)
    path = register_agent(door, tmp_path / "register", "1001", "demo1001", phone_port)
    assert f"sip:{door.address};lr" in path and f"received=sip:{LOOPBACK}:{phone_port}" in path

    agent_log = tmp_path / "agent" / "agent.log"
    (tmp_path / "agent").mkdir()
    phone = sipp.start(None, workdir=tmp_path / "agent", scenario=AGENT, port=phone_port,
                       calls=1, extra=["-trace_logs", "-log_file", str(agent_log)])
    try:
        assert call_account(door, tmp_path / "caller", "1001", ("1002", "demo1002")) == "200"
        assert wait_for(lambda: "bye-received" in agent_log.read_text(errors="replace"))
    finally:
        phone.stop()
    # The home site rang the phone through the front door: the phone saw the front
    # door's Via on top, not the site's.
    [via] = [line.split(" ", 1)[1] for line in agent_log.read_text().splitlines()
             if line.startswith("invite-via ")]
    assert f"SIP/2.0/UDP {door.address}" in via, via
    # ...because its INVITE named the Path the phone registered with as its Route.
    [invite] = sent_invites(madrid)
    assert f"Route: <{path}>" in invite.splitlines(), invite
    assert wait_for(lambda: len(site_call_ids(madrid)) == 1)
    assert site_call_ids(bogota) == set()


def reachable_at(site: PbxServer, user: str) -> bool:
    status, body = site.http_get(f"/api/v1/agents/{user}")
    assert status == 200, body[:300]
    live = json.loads(body).get("live") or {}
    return bool(live.get("reachable"))


def test_agent_of_a_dead_site_registers_again_at_the_backup_and_takes_calls_there(
        two_sites, front_door_factory, tmp_path):
    madrid, bogota = two_sites["madrid"], two_sites["bogota"]
    door = front_door_factory(two_sites, homes={"1001": "madrid", "1002": "madrid"})
    phone_port = free_port(udp=True, tcp=False)
    register_agent(door, tmp_path / "register1", "1001", "demo1001", phone_port)
    assert wait_for(lambda: reachable_at(madrid, "1001"))
    assert not reachable_at(bogota, "1001")

    madrid.process.kill()
    madrid.process.wait(5)
    # The phone's next REGISTER (its refresh) goes to the backup once madrid is marked
    # down (a probe unanswered: within the probe interval plus the answer timeout).
    time.sleep(2.5)
    register_agent(door, tmp_path / "register2", "1001", "demo1001", phone_port)
    assert reachable_at(bogota, "1001")

    agent_log = tmp_path / "agent" / "agent.log"
    (tmp_path / "agent").mkdir()
    phone = sipp.start(None, workdir=tmp_path / "agent", scenario=AGENT, port=phone_port,
                       calls=1, extra=["-trace_logs", "-log_file", str(agent_log)])
    try:
        # 1002's calls go to its home site, madrid, and on to the backup, bogota.
        assert call_account(door, tmp_path / "caller", "1001", ("1002", "demo1002")) == "200"
        assert wait_for(lambda: "bye-received" in agent_log.read_text(errors="replace"))
    finally:
        phone.stop()
    assert wait_for(lambda: len(site_call_ids(bogota)) == 1)


def test_busy_agent_refusal_is_the_answer_and_is_not_tried_at_another_site(
        two_sites, front_door_factory, tmp_path):
    madrid, bogota = two_sites["madrid"], two_sites["bogota"]
    door = front_door_factory(two_sites, homes={"1001": "madrid", "1002": "madrid"})
    phone_port = free_port(udp=True, tcp=False)
    register_agent(door, tmp_path / "register", "1001", "demo1001", phone_port)
    phone = sipp.start(None, workdir=tmp_path / "agent", scenario=BUSY_AGENT, port=phone_port,
                       calls=1)
    try:
        assert call_account(door, tmp_path / "caller", "1001", ("1002", "demo1002")) == "486"
    finally:
        phone.stop()
    assert wait_for(lambda: len(site_call_ids(madrid)) == 1)
    # Bogota never saw the call: a 486 is not a site failure.
    time.sleep(0.5)
    assert site_call_ids(bogota) == set()
    assert "next site" not in door.log_text()
