"""Two real sites behind the shipped Kamailio front door, driven by SIPp callers and phones.

What is checked: calls are spread over both sites and each BYE reaches the site that took
its call (record-route); a site killed with -9 under 10 calls/s costs no new call (the
dispatcher fails over on the silent site and its probes take it out of rotation); a site
answering 503 is failed over, a busy agent's 486 is the caller's answer and never tried
at another site; an agent's phone registers through the front door at its home site
(Path) and is called through it, and registers at the backup site when its home dies.
A site that lists the front door in sip.front_doors never takes a caller behind it for
the agent its From names, and caps unauthenticated calls per caller address, not for the
front door as a whole.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
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
from integration.server_fixture import PbxServer, default_config_yaml
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


@pytest.mark.xdist_group("heavy")  # conftest: runs alone under xdist
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


IVR = "100"  # the demo's IVR: answers and waits for digits, so the call stays up


class RawCaller:
    """One call placed by hand over UDP from ``host`` through the front door: its Via and
    From are exactly what the test writes (what a hostile caller could send)."""

    def __init__(self, door: FrontDoor, host: str, *, from_user: str, via_params: str = ""):
        self.door = (LOOPBACK, door.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(5.0)
        self.host, self.port = self.sock.getsockname()
        self.from_user, self.via_params = from_user, via_params
        self.tag, self.call_id = secrets.token_hex(4), f"{secrets.token_hex(8)}@{host}"
        self.response = ""

    def _send(self, method: str, uri: str, cseq: int, extra: str = "", body: str = "") -> None:
        via = (f"SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(6)}"
               f";rport{self.via_params}")
        to_tag = re.search(r"^To:.*?(;tag=[^;\r\n]+)", self.response, re.M | re.I)
        to = f"<sip:{IVR}@{self.door[0]}>" + (to_tag.group(1) if to_tag and method != "INVITE" else "")
        message = (f"{method} {uri} SIP/2.0\r\nVia: {via}\r\n"
                   f"From: <sip:{self.from_user}@{self.door[0]}>;tag={self.tag}\r\nTo: {to}\r\n"
                   f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
                   f"Contact: <sip:{self.from_user}@{self.host}:{self.port}>\r\n{extra}"
                   f"Content-Length: {len(body)}\r\n\r\n{body}")
        self.sock.sendto(message.encode(), self.door)

    def invite(self) -> int:
        """INVITE the IVR; the final status (a 200 is acknowledged)."""
        sdp = (f"v=0\r\no=caller 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\n"
               f"t=0 0\r\nm=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        self._send("INVITE", f"sip:{IVR}@{self.door[0]}:{self.door[1]}", 1,
                   "Content-Type: application/sdp\r\n", sdp)
        while True:
            self.response = self.sock.recv(65535).decode(errors="replace")
            status = int(self.response.split(" ", 2)[1])
            if status >= 200:
                break
        if status == 200:
            self._in_dialog("ACK", 1)
        return status

    def _in_dialog(self, method: str, cseq: int) -> None:
        contact = re.search(r"^Contact:\s*<([^>]+)>", self.response, re.M | re.I).group(1)
        routes = re.findall(r"^Record-Route:\s*(.+?)\r?$", self.response, re.M | re.I)
        route = "".join(f"Route: {value}\r\n" for value in reversed(routes))
        self._send(method, contact, cseq, route)

    def hang_up(self) -> None:
        self._in_dialog("BYE", 2)
        self.sock.close()


def personal_calls(site: PbxServer, user: str) -> int:
    status, body = site.http_get(f"/api/v1/agents/{user}")
    assert status == 200, body[:300]
    return int((json.loads(body).get("live") or {}).get("personal_calls", 0))


def site_behind_its_front_door(pbx_server, tmp_path: Path, **media) -> tuple[PbxServer, FrontDoor]:
    """One site that lists the front door in sip.front_doors, and that front door."""
    door_port = free_port(udp=True, tcp=False)
    sections: dict = {"sip": {"front_doors": [f"{LOOPBACK}:{door_port}"]}}
    if media:
        sections["media"] = media
    site = pbx_server(default_config_yaml(**sections))
    try:
        door = start_front_door({"madrid": site.sip_address}, {"1001": "madrid"},
                                folder=tmp_path / "kamailio", port=door_port)
    except KamailioMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    return site, door


def test_a_caller_naming_an_agent_through_the_front_door_does_not_pass_for_the_agent(
        pbx_server, tmp_path):
    site, door = site_behind_its_front_door(pbx_server, tmp_path)
    try:
        phone_port = free_port(udp=True, tcp=False)
        register_agent(door, tmp_path / "register", "1001", "demo1001", phone_port)
        assert wait_for(lambda: reachable_at(site, "1001"))
        # Ana's binding and this impostor both reach the site from the front door's
        # address: without sip.front_doors the site would take the impostor for Ana.
        impostor = RawCaller(door, LOOPBACK, from_user="1001")
        assert impostor.invite() == 200
        time.sleep(0.5)
        assert personal_calls(site, "1001") == 0
        impostor.hang_up()
        assert wait_for(lambda: len(site_call_ids(site)) == 1)
    finally:
        door.stop()


def test_behind_the_front_door_unauthenticated_calls_are_capped_per_caller_address(
        pbx_server, tmp_path):
    site, door = site_behind_its_front_door(pbx_server, tmp_path,
                                            unauthenticated_calls_per_source=1)
    callers: list[RawCaller] = []
    try:
        callers.append(RawCaller(door, "127.0.0.2", from_user="alice"))
        assert callers[-1].invite() == 200
        # Another caller behind the same front door has a quota of its own...
        callers.append(RawCaller(door, "127.0.0.3", from_user="bob"))
        assert callers[-1].invite() == 200
        # ...while a second call from the first one's address is over the cap, even when
        # it claims another address: the front door replaces the received= it was sent.
        # The site refuses it 503, which the front door (no other site to try) relays as
        # 500, as a proxy must (RFC 3261 16.7).
        assert RawCaller(door, "127.0.0.2", from_user="alice").invite() == 500
        assert RawCaller(door, "127.0.0.2", from_user="alice",
                         via_params=";received=127.0.0.4").invite() == 500
        assert door.log_text().count("answered 503") == 2
        for caller in callers:
            caller.hang_up()
        assert wait_for(lambda: len(site_call_ids(site)) == 2)
        time.sleep(0.3)
        assert len(site_call_ids(site)) == 2  # the refused calls were never started
    finally:
        door.stop()


def register_with_password(door: FrontDoor, host: str, user: str, password: str) -> int:
    """REGISTER ``user`` from ``host`` through the front door, answering the challenge with
    ``password``; the final status."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5.0)
    port = sock.getsockname()[1]
    call_id, tag = f"{secrets.token_hex(8)}@{host}", secrets.token_hex(4)
    uri = f"sip:{LOOPBACK}:{door.port}"

    def send(cseq: int, authorization: str = "") -> str:
        message = (f"REGISTER {uri} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                   f"From: <sip:{user}@{LOOPBACK}>;tag={tag}\r\nTo: <sip:{user}@{LOOPBACK}>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
                   f"Contact: <sip:{user}@{host}:{port}>\r\nExpires: 60\r\n{authorization}"
                   f"Content-Length: 0\r\n\r\n")
        sock.sendto(message.encode(), (LOOPBACK, door.port))
        while True:
            response = sock.recv(65535).decode(errors="replace")
            if int(response.split(" ", 2)[1]) >= 200:
                return response

    try:
        response = send(1)
        if not response.startswith("SIP/2.0 401"):
            return int(response.split(" ", 2)[1])
        challenge = re.search(r"^WWW-Authenticate:\s*Digest\s+(.+?)\r?$", response, re.M | re.I).group(1)
        realm = re.search(r'realm="([^"]*)"', challenge).group(1)
        nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)
        md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
        answer = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'REGISTER:{uri}')}")
        authorization = (f'Authorization: Digest username="{user}", realm="{realm}", '
                         f'nonce="{nonce}", uri="{uri}", response="{answer}", algorithm=MD5\r\n')
        return int(send(2, authorization).split(" ", 2)[1])
    finally:
        sock.close()


def test_behind_the_front_door_wrong_passwords_block_the_caller_not_the_front_door(
        pbx_server, tmp_path):
    door_port = free_port(udp=True, tcp=False)
    site = pbx_server(default_config_yaml(sip={
        "front_doors": [f"{LOOPBACK}:{door_port}"],
        "protection": {"auth_failures": 3, "auth_window": 60, "block_seconds": 300}}))
    try:
        door = start_front_door({"madrid": site.sip_address}, {"1001": "madrid"},
                                folder=tmp_path / "kamailio", port=door_port)
    except KamailioMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        for _ in range(3):
            assert register_with_password(door, "127.0.0.2", "1001", "guess") in (401, 403)
        # The guesser is blocked, even with the right password...
        assert register_with_password(door, "127.0.0.2", "1001", "demo1001") == 403
        # ...while a caller and the agent's phone behind the same front door are served.
        assert register_with_password(door, "127.0.0.3", "1001", "demo1001") == 200
        caller = RawCaller(door, "127.0.0.4", from_user="carol")
        assert caller.invite() == 200
        caller.hang_up()
    finally:
        door.stop()
