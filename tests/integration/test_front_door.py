"""Two real sites behind the shipped Kamailio front door, driven by SIPp callers and phones.

What is checked: calls are spread over both sites and each BYE reaches the site that took
its call (record-route); a site killed with -9 under 10 calls/s costs no new call (the
dispatcher fails over on the silent site and its probes take it out of rotation); a busy
agent's 486 is the caller's answer, never retried at another site; an agent's phone
registers through the front door at its home site (Path) and is called through it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.kamailio_fixture import FrontDoor, KamailioMissing, start_front_door
from integration.server_fixture import PbxServer
from peers import sipp
from peers.procs import LOOPBACK, free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLER = SCENARIOS / "front_door_caller.xml"
ACCOUNT_CALLER = SCENARIOS / "front_door_account_caller.xml"
REGISTER = SCENARIOS / "front_door_register.xml"
AGENT = SCENARIOS / "front_door_agent.xml"
BUSY_AGENT = SCENARIOS / "front_door_agent_busy.xml"
GREETING = "101"  # the demo's extension that answers and plays a greeting
RECOVERY_LIMIT_S = 3.0


@dataclass
class CallTrace:
    """One caller's call as its SIPp logged it (front_door_caller.xml)."""

    number: int
    call_id: str
    invited_at: float
    answered_at: float | None = None
    site_port: int | None = None
    bye_status: int | None = None

    @property
    def setup_seconds(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.invited_at


def read_call_traces(log_path: Path) -> list[CallTrace]:
    """Lines are `EVENT NUMBER CALL-ID DATE TIME EPOCH [extra...]` (SIPp's [timestamp])."""
    calls: dict[int, CallTrace] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] not in ("invite", "answered", "bye"):
            continue
        number, call_id, epoch = int(fields[1]), fields[2], float(fields[5])
        if fields[0] == "invite":
            calls[number] = CallTrace(number, call_id, epoch)
        elif fields[0] == "answered" and number in calls:
            calls[number].answered_at = epoch
            calls[number].site_port = int(fields[6])
        elif fields[0] == "bye" and number in calls:
            calls[number].bye_status = int(fields[6])
    return [calls[n] for n in sorted(calls)]


def start_callers(front_door: FrontDoor, workdir: Path, *, calls: int, rate: float,
                  talk_ms: int) -> tuple[sipp.SippProcess, Path]:
    log_path = workdir / "calls.log"
    process = sipp.start(front_door.address, workdir=workdir, scenario=CALLER, service=GREETING,
                         calls=calls, rate=rate, duration_ms=talk_ms,
                         global_timeout_s=calls / rate + 30,
                         extra=["-trace_logs", "-log_file", str(log_path)])
    return process, log_path


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
def front_door_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    started: list[FrontDoor] = []

    def start(sites: dict[str, PbxServer], homes: dict[str, str] | None = None) -> FrontDoor:
        try:
            door = start_front_door({name: site.sip_address for name, site in sites.items()},
                                    homes, folder=tmp_path / f"kamailio{len(started)}")
        except KamailioMissing as missing:
            pytest.fail(str(missing), pytrace=False)
        started.append(door)
        return door

    yield start
    failed = getattr(request.node, "rep_call", None)
    for door in started:
        if failed is not None and failed.failed:
            print(f"--- kamailio log tail ({door.log_path}) ---\n{door.log_tail(40)}")
        door.stop()


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
    callers, log_path = start_callers(door, tmp_path / "callers", calls=20, rate=10, talk_ms=500)
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
    callers, log_path = start_callers(door, tmp_path / "callers", calls=100, rate=10,
                                      talk_ms=1000)
    time.sleep(3.0)
    killed_at = time.time()
    madrid.process.kill()
    madrid.process.wait(5)
    result = callers.wait(60)
    traces = read_call_traces(log_path)
    assert len(traces) == 100, result.describe()

    after = [t for t in traces if t.invited_at > killed_at]
    before = [t for t in traces if t.invited_at <= killed_at]
    assert len(after) >= 60 and before, (len(before), len(after))
    # No call placed after the death fails, and only the survivor answers them.
    unanswered = [t for t in after if t.answered_at is None]
    assert not unanswered, unanswered
    assert {t.site_port for t in after} == {bogota.sip_port}
    assert all(t.bye_status == 200 for t in after)
    # Calls hashed to the dead site wait for the front door's answer timeout and are
    # answered by the survivor; once its probes took the site out, none waits at all.
    failed_over = [t for t in after if t.setup_seconds > 0.5]
    assert failed_over, "no call was failed over: was the dead site still in rotation?"
    recovered_at = max(t.answered_at for t in failed_over) - killed_at
    assert recovered_at < RECOVERY_LIMIT_S, recovered_at
    late = [t for t in after if t.invited_at - killed_at > RECOVERY_LIMIT_S]
    assert late and all(t.setup_seconds < 0.5 for t in late), late
    # What is lost: calls the dead site had answered and still held (their BYE times out).
    lost = [t for t in before if t.site_port == madrid.sip_port and t.bye_status != 200]
    print(f"front door failover: {len(failed_over)} call(s) failed over, last answered "
          f"{recovered_at:.2f} s after the kill; {len(lost)} call(s) held by the dead site lost")


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
