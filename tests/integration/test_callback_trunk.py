"""Callbacks dialled out through a SIP trunk: SIPp plays the trunk (UAS) and the real
`pbx serve` calls the customer back; each trunk answer becomes the request's outcome.

A request is made through the API; it waits in billing's line until an agent is free:
agent 1001 (baresip, answering at once) is rung first, then the server INVITEs the
trunk (answering a digest challenge), and the outcome is read back from the API:
answered, busy (486), invalid number (404), trunk failure (503, a refused password,
nobody listening), no answer (ringing past the queue's time: CANCEL). How agent and
customer are connected is tested in test_callback_connect.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from integration import postgres_fixture
from integration.call_peers import wait_for
from integration.postgres_fixture import create_database, drop_database
from integration.server_fixture import PbxServer, default_config_yaml
from integration.test_queue_agents import baresip_agent, wait_agent_state
from peers import sipp
from peers.procs import LOOPBACK, free_port

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server

USER, PASSWORD = "centralita", "s3cret"
NUMBER = "+34600111222"

_REPLY_HEAD = """\
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]trunk[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""


def _reply(status: str, extra: str = "") -> str:
    lines = f"SIP/2.0 {status}\n{_REPLY_HEAD}\n"
    if extra:
        lines += extra + "\n"
    return f"""  <send><![CDATA[
      {lines}      Content-Length: 0

    ]]></send>
"""


CHALLENGE = _reply("401 Unauthorized",
                   '      WWW-Authenticate: Digest realm="trunk.example", nonce="n[pid][call_number]", '
                   'algorithm=MD5')

def answer(media_ip: str = "[media_ip]", media_port: str = "[media_port]") -> str:
    """The trunk's 200 OK with an SDP whose audio goes to ``media_ip``:``media_port`` (SIPp's
    own media socket by default)."""
    return f"""  <send><![CDATA[
      SIP/2.0 200 OK
{_REPLY_HEAD}
      Contact: <sip:customer@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=customer 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 {media_ip}
      t=0 0
      m=audio {media_port} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
    ]]></send>
"""


ANSWER = answer()


def _scenario(body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callback trunk">
{body}</scenario>
"""


# The trunk challenges, checks the password, rings, answers; the call ends with the server's
# BYE once the agent hangs up.
ANSWERS_AFTER_CHALLENGE = _scenario(f"""  <recv request="INVITE"/>
{CHALLENGE}  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authorized" username="{USER}" password="{PASSWORD}"/>
      <ereg regexp="^INVITE sip:([^@]+)@" search_in="msg" assign_to="whole,dialled"/>
      <log message="dialled [$dialled] (request line: [$whole])"/>
    </action>
  </recv>
  <nop test="authorized" next="answer"/>
{_reply("403 Forbidden")}  <recv request="ACK" next="end"/>
  <label id="answer"/>
{_reply("180 Ringing")}{ANSWER}  <recv request="ACK"/>
  <recv request="BYE"/>
{_reply("200 OK")}  <label id="end"/>
""")


def _refuses(status: str) -> str:
    return _scenario(f"""  <recv request="INVITE"/>
{_reply("100 Trying")}{_reply(status)}  <recv request="ACK"/>
""")


# Rings until the server gives up: CANCEL answered 200, the INVITE 487.
RINGS_OUT = _scenario(f"""  <recv request="INVITE"/>
{_reply("180 Ringing")}  <recv request="CANCEL"/>
{_reply("200 OK")}  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]trunk[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0

    ]]></send>
  <recv request="ACK"/>
""")

# A wrong password: challenged again, the server stops there.
REFUSES_THE_PASSWORD = _scenario(f"""  <recv request="INVITE"/>
{CHALLENGE}  <recv request="ACK"/>
  <recv request="INVITE"/>
{CHALLENGE}  <recv request="ACK"/>
""")


# Answers at once, no challenge; the server hangs up when the agent does.
ANSWERS = _scenario(f"""  <recv request="INVITE"/>
{_reply("180 Ringing")}{ANSWER}  <recv request="ACK"/>
  <recv request="BYE"/>
{_reply("200 OK")}""")


def _config(trunk_port: int, *, password: str = PASSWORD, ring_seconds: float = 2,
            lease_seconds: float = 5, transport: str = "udp", site: str = "madrid",
            **sections: object) -> str:
    """The demo with a trunk; every agent belongs to ``site``, so each server is a contact
    center of its own (the sites here share only the callback requests' store)."""
    demo = yaml.safe_load(default_config_yaml())
    agents = [{**agent, "site": site} for agent in demo["agents"]]
    return default_config_yaml(
        agents=agents,
        trunks=[{"name": "carrier", "address": f"{LOOPBACK}:{trunk_port}", "transport": transport,
                 "username": USER, "password": password, "caller_id": "+34910000000"}],
        callbacks={"poll_seconds": 0.2, "lease_seconds": lease_seconds,
                   "queues": {"billing": {"no_answer_seconds": ring_seconds,
                                          "retry_delay_seconds": 600}}},
        **sections)


def _agent(server: PbxServer, workdir, user: str = "1001"):
    """An agent who answers at once: a callback's turn rings the agent, then the customer."""
    phone = baresip_agent(workdir, server, user)
    # A callback waiting in line may take the agent at once.
    wait_agent_state(server, user, "available", "reserved", "ringing", "on_call")
    return phone


def _hang_up(*agents) -> None:
    """The agents hang up (the server then hangs the customer up)."""
    for agent in agents:
        if agent.seen("CALL_ESTABLISHED"):
            agent.hangup()


def _api(server: PbxServer, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.http_url}/api/v1{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _first_outcome(server: PbxServer, callback_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _api(server, "GET", f"/callbacks/{callback_id}")
        assert status == 200, body
        if body["history"]:
            return body
        time.sleep(0.1)
    raise AssertionError(f"no outcome recorded for {callback_id} within {timeout} s; log:\n"
                         f"{server.log_tail()}")


def _request_callback(server: PbxServer) -> str:
    status, created = _api(server, "POST", "/callbacks", {"number": NUMBER, "queue": "billing"})
    assert status == 201, created
    return created["id"]


@pytest.mark.parametrize(("scenario", "outcome", "state", "detail"), [
    (ANSWERS_AFTER_CHALLENGE, "answered", "completed", "answered through trunk carrier"),
    (_refuses("486 Busy Here"), "busy", "pending", "486 Busy Here from trunk carrier"),
    (_refuses("404 Not Found"), "invalid_number", "failed", "404 Not Found from trunk carrier"),
    (_refuses("503 Service Unavailable"), "trunk_failure", "pending", "503 Service Unavailable"),
    (RINGS_OUT, "no_answer", "pending", "no answer within 2 s"),
], ids=["answered", "busy", "invalid_number", "trunk_503", "no_answer"])
def test_the_trunks_answer_is_the_outcome_of_the_try(pbx_server, tmp_path, scenario: str,
                                                     outcome: str, state: str, detail: str) -> None:
    trunk = sipp.start(None, scenario=scenario, workdir=tmp_path / "trunk", calls=1,
                       trace_msg=True, extra=("-trace_logs", "-log_file", str(tmp_path / "trunk" / "log.txt")))
    try:
        server = pbx_server(_config(trunk.port), extra_args=("--site", "madrid"))
        agent = _agent(server, tmp_path / "agent")
        callback_id = _request_callback(server)
        body = _first_outcome(server, callback_id)
        _hang_up(agent)
        result = trunk.wait(15)
    finally:
        trunk.stop()
    [record] = body["history"]
    assert (record["outcome"], body["state"]) == (outcome, state), body
    assert detail in record["detail"]
    assert record["site"] == "madrid"
    assert result.returncode == 0, result.describe()
    assert body["attempts"] == (0 if outcome == "trunk_failure" else 1)
    if outcome == "answered":
        assert f"dialled {NUMBER} " in (tmp_path / "trunk" / "log.txt").read_text()
        metric = server.metric("centralita_callbacks_connected_total", queue="billing")
        assert metric == 1
    else:
        assert server.metric("centralita_callback_attempts_failed_total", queue="billing",
                             cause=outcome) == 1
    # The try's media, dialog and task were given back.
    given_back = ("rtp_sessions", "outbound_calls", "callback_tries", "callback_conversations")
    assert wait_for(lambda: not any(server.healthz()["resources"][n] for n in given_back), 10), \
        server.healthz()["resources"]
    agent.stop()


def test_a_refused_password_is_a_trunk_failure(pbx_server, tmp_path) -> None:
    trunk = sipp.start(None, scenario=REFUSES_THE_PASSWORD, workdir=tmp_path / "trunk", calls=1)
    try:
        server = pbx_server(_config(trunk.port, password="wrong"))
        agent = _agent(server, tmp_path / "agent")
        body = _first_outcome(server, _request_callback(server))
        result = trunk.wait(15)
    finally:
        trunk.stop()
    agent.stop()
    [record] = body["history"]
    assert record["outcome"] == "trunk_failure" and body["state"] == "pending"
    assert "401 Unauthorized from trunk carrier" in record["detail"]
    assert result.returncode == 0, result.describe()


def test_a_trunk_nobody_answers_is_a_trunk_failure(pbx_server, tmp_path) -> None:
    server = pbx_server(_config(free_port(udp=True, tcp=False)))
    with _agent(server, tmp_path / "agent"):
        body = _first_outcome(server, _request_callback(server))
    [record] = body["history"]
    assert record["outcome"] == "trunk_failure" and body["state"] == "pending"
    assert "did not answer the INVITE within 2 s" in record["detail"]


def _wait_for_state(server: PbxServer, callback_id: str, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = _api(server, "GET", f"/callbacks/{callback_id}")
        if body["state"] == state:
            return body
        time.sleep(0.05)
    raise AssertionError(f"callback {callback_id} not {state} within {timeout} s: {body}")


def test_cancelling_a_request_while_the_customer_rings_cancels_the_call(pbx_server, tmp_path) -> None:
    trunk = sipp.start(None, scenario=RINGS_OUT, workdir=tmp_path / "trunk", calls=1)
    try:
        server = pbx_server(_config(trunk.port, ring_seconds=60))
        agent = _agent(server, tmp_path / "agent")
        callback_id = _request_callback(server)
        _wait_for_state(server, callback_id, "dialing")
        time.sleep(0.3)  # ringing
        status, cancelled = _api(server, "DELETE", f"/callbacks/{callback_id}")
        result = trunk.wait(10)  # the trunk got the CANCEL and ended the INVITE with 487
    finally:
        trunk.stop()
    assert status == 200 and cancelled["state"] == "cancelled"
    assert result.returncode == 0, result.describe()
    assert [record["outcome"] for record in cancelled["history"]] == ["cancelled"]
    time.sleep(0.5)
    _, body = _api(server, "GET", f"/callbacks/{callback_id}")
    assert [record["outcome"] for record in body["history"]] == ["cancelled"]  # nothing after
    # The agent's call was hung up with the try.
    assert wait_for(lambda: server.healthz()["resources"]["rtp_sessions"] == 0, 10)
    agent.wait_event("CALL_CLOSED", timeout=10)
    agent.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A store two server processes share: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = asyncio.run(create_database(server))
    try:
        yield server.url(name)
    finally:
        asyncio.run(drop_database(server, name))


@pytest.mark.parametrize("survivor", ["bogota", "madrid"], ids=["other_site_adopts", "restart"])
def test_a_killed_owner_during_the_try_is_called_back_once_by_the_survivor(
        pbx_server, tmp_path, shared_store_url: str, survivor: str) -> None:
    """madrid dies (SIGKILL) while the customer's phone rings; the survivor (another site
    sharing the store after madrid's lease ran out, or madrid restarted) calls back once."""
    store = {"url": shared_store_url}
    ringing = sipp.start(None, scenario=RINGS_OUT, workdir=tmp_path / "dead-trunk", calls=1)
    answering = sipp.start(None, scenario=ANSWERS, workdir=tmp_path / "live-trunk", calls=1)
    try:
        madrid = pbx_server(_config(ringing.port, ring_seconds=60, lease_seconds=3, store=store),
                            extra_args=("--site", "madrid"))
        agents = [_agent(madrid, tmp_path / "agent-madrid")]
        callback_id = _request_callback(madrid)
        _wait_for_state(madrid, callback_id, "dialing")
        time.sleep(0.3)
        os.killpg(madrid.pid, signal.SIGKILL)
        madrid.process.wait(5)
        killed_at = time.monotonic()
        survivor_server = pbx_server(_config(answering.port, lease_seconds=3, store=store,
                                             site=survivor),
                                     extra_args=("--site", survivor))
        # madrid's agent went with it; another agent registers with the survivor (a binding
        # of 1001 restored from the store rings out: 1001 goes not-ready, 1005 takes it).
        agents[0].stop()
        agents.append(_agent(survivor_server, tmp_path / "agent-survivor", "1005"))
        body = _wait_for_state(survivor_server, callback_id, "completed", timeout=60)
        waited = time.monotonic() - killed_at
        _hang_up(agents[-1])
        result = answering.wait(10)
    finally:
        ringing.stop()
        answering.stop()
        for agent in agents:
            agent.stop()
    assert result.returncode == 0 and result.successful == 1, result.describe()
    assert body["site"] == survivor
    outcomes = [(record["outcome"], record["site"]) for record in body["history"]]
    # Between them, madrid's agent may have been rung by the survivor and not answered.
    assert outcomes[0] == ("interrupted", survivor) and outcomes[-1] == ("answered", survivor), body
    assert {outcome for outcome, _ in outcomes[1:-1]} <= {"agent_rejected"}, body
    assert body["attempts"] == 1
    if survivor == "bogota":
        assert "site madrid stopped" in body["history"][0]["detail"]
        assert waited >= 2.0  # not before madrid's lease (3 s from its last renewal) ran out
    else:
        assert "restarted" in body["history"][0]["detail"]
    time.sleep(1.0)  # and no second call
    _, after = _api(survivor_server, "GET", f"/callbacks/{callback_id}")
    assert after["history"] == body["history"]


def test_a_tcp_trunk_is_called_over_tcp(pbx_server, tmp_path) -> None:
    trunk = sipp.start(None, scenario=ANSWERS_AFTER_CHALLENGE, workdir=tmp_path / "trunk", calls=1,
                       transport="t1", trace_msg=True)
    try:
        server = pbx_server(_config(trunk.port, transport="tcp"))
        agent = _agent(server, tmp_path / "agent")
        body = _first_outcome(server, _request_callback(server))
        _hang_up(agent)
        result = trunk.wait(15)
    finally:
        trunk.stop()
    agent.stop()
    assert [record["outcome"] for record in body["history"]] == ["answered"], body
    assert result.returncode == 0, result.describe()
    messages = (tmp_path / "trunk" / "messages.log").read_text()
    assert "Via: SIP/2.0/TCP" in messages and "Via: SIP/2.0/UDP" not in messages
