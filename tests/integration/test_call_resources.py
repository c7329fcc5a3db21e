"""Everything a call takes (RTP ports and sockets, tasks, dialogs, router entries) is given
back on every way a call can fail or end early; the counts on /healthz return to zero.
Unusable offers get 488 with a Warning, port exhaustion and one source's flood get 503 with
Retry-After, and one source hammering never keeps another from being answered."""

from __future__ import annotations

import time

import pytest

from integration.call_peers import (
    QUEUE_FLOW,
    Agent,
    Caller,
    assert_all_given_back,
    offer,
    random_port_range,
    reply,
    wait_for,
)
from integration.server_fixture import default_config_yaml
from peers import raw
from peers.procs import silent_rtp_port

pytestmark = pytest.mark.integration

def _server(pbx_server, **media):
    first, last = random_port_range(200)
    config = default_config_yaml(
        media={"port_min": first, "port_max": last, **media},
        extensions={"100": {"application": "ivr", "flow": "demo"},
                    "102": {"application": "ivr", "flow": str(QUEUE_FLOW)}},
        queues=[{"name": "general", "wrap_up_seconds": 0, "ring_timeout_seconds": 30}],
    )
    return pbx_server(config)


@pytest.mark.parametrize(("connection", "warn_code"), [
    ("IN IP4 localhost", "301"), ("AF IP4 127.0.0.1", "300"), ("IN IP7 127.0.0.1", "301"),
    ("IN IP4 224.0.1.1/16", "301"),
])
def test_unusable_connection_data_gets_488_with_a_warning_and_keeps_nothing(
        shared_pbx, connection: str, warn_code: str) -> None:
    caller = Caller(shared_pbx, "100")
    try:
        caller.invite(offer(connection=connection))
        answer = caller.final()
    finally:
        caller.close()
    assert answer.status == 488, answer.start_line
    warning = answer.get("warning") or ""
    assert warning.startswith(f"{warn_code} "), warning
    assert 'centralita "' in warning, warning


def test_a_flood_of_host_name_offers_leaks_no_port(pbx_server) -> None:
    server = _server(pbx_server)  # 100 RTP ports: the flood is larger than the range
    caller = Caller(server, "100")
    try:
        for _ in range(150):
            caller.dialog = raw.Dialogish()
            caller.invite_branch = raw.new_branch()
            caller.invite(offer(connection="IN IP4 localhost"))
            assert caller.final().status == 488
        assert_all_given_back(server, "150 offers naming a host")
        caller.dialog = raw.Dialogish()
        caller.invite_branch = raw.new_branch()
        caller.answered()  # and a good call is still answered
        caller.bye()
    finally:
        caller.close()
    assert_all_given_back(server, "a call after the flood")


def test_every_failure_path_gives_back_what_the_call_took(pbx_server) -> None:
    server = _server(pbx_server)

    # The IVR: hang up after the answer; CANCEL at once (crossing the answer or not).
    caller = Caller(server, "100")
    caller.answered()
    caller.bye()
    caller.close()
    assert_all_given_back(server, "a BYE in the IVR")

    caller = Caller(server, "100")
    caller.invite(offer())
    caller.cancel()
    answer = caller.final()
    assert answer.status in (200, 487), answer.start_line
    if answer.status == 200:
        caller.ack()
        caller.bye()
    caller.close()
    assert_all_given_back(server, "a CANCEL to the IVR")

    # Waiting in line with no agent, then hanging up.
    caller = Caller(server, "102")
    caller.answered()
    assert wait_for(lambda: server.healthz()["resources"]["router_calls"] == 1, 10)
    caller.bye()
    caller.close()
    assert_all_given_back(server, "hanging up while waiting in line")

    agent = Agent(server)
    try:
        # The agent's phone rings; the caller hangs up: the agent's INVITE is cancelled.
        caller = Caller(server, "102")
        caller.answered()
        invite = agent.next_request("INVITE")
        agent.reply(invite, 180, "Ringing")
        caller.bye()
        cancel = agent.next_request("CANCEL")
        agent.reply(cancel, 200, "OK")
        agent.reply(invite, 487, "Request Terminated")
        caller.close()
        assert_all_given_back(server, "hanging up while the agent's phone rang")

        # The agent's phone refuses (busy), then the caller gives up.
        caller = Caller(server, "102")
        caller.answered()
        invite = agent.next_request("INVITE")
        agent.reply(invite, 486, "Busy Here")
        caller.bye()
        caller.close()
        assert_all_given_back(server, "an agent's busy phone and a caller giving up")
        assert wait_for(lambda: _agent_available(server), 10)

        # Connected to the agent, then the caller hangs up: the agent gets a BYE.
        caller = Caller(server, "102")
        caller.answered()
        invite = agent.next_request("INVITE")
        agent.reply(invite, 200, "OK", body=offer(silent_rtp_port(10)))
        caller.bye()
        agent.reply(agent.next_request("BYE"), 200, "OK")
        caller.close()
        assert_all_given_back(server, "hanging up while talking to the agent")
    finally:
        agent.close()


def test_every_failure_path_of_a_call_to_an_account_gives_back_what_it_took(pbx_server) -> None:
    server = _server(pbx_server)
    agent = Agent(server)  # account 1001's phone
    try:
        # CANCEL while the account's phone rings: 487 to the caller, CANCEL to the phone.
        caller = Caller(server, "1001")
        caller.invite_as("1002", "demo1002", offer())
        invite = agent.next_request("INVITE")
        agent.reply(invite, 180, "Ringing")
        caller.cancel()
        assert caller.final().status == 487
        caller.ack()
        cancel = agent.next_request("CANCEL")
        agent.reply(cancel, 200, "OK")
        agent.reply(invite, 487, "Request Terminated")
        caller.close()
        assert_all_given_back(server, "a CANCEL while the account's phone rang")

        # The phone is busy: the caller hears busy.
        caller = Caller(server, "1001")
        caller.invite_as("1002", "demo1002", offer())
        agent.reply(agent.next_request("INVITE"), 486, "Busy Here")
        assert caller.final().status == 486
        caller.ack()
        caller.close()
        assert_all_given_back(server, "a busy phone")

        # The phone fails: the caller is told it is unreachable.
        caller = Caller(server, "1001")
        caller.invite_as("1002", "demo1002", offer())
        agent.reply(agent.next_request("INVITE"), 500, "Server Internal Error")
        assert caller.final().status == 480
        caller.ack()
        caller.close()
        assert_all_given_back(server, "a failing phone")

        # The phone answers with an unusable SDP (a host name): it is hung up, and the caller
        # hears that the account cannot be reached (as for any failure of the phone).
        caller = Caller(server, "1001")
        caller.invite_as("1002", "demo1002", offer())
        invite = agent.next_request("INVITE")
        agent.reply(invite, 200, "OK", body=offer(40030, connection="IN IP4 phone.example.com"))
        agent.reply(agent.next_request("BYE"), 200, "OK")
        assert caller.final().status == 480
        caller.ack()
        caller.close()
        assert_all_given_back(server, "an unusable answer from the phone")

        # Connected; the called phone hangs up first.
        caller = Caller(server, "1001")
        caller.invite_as("1002", "demo1002", offer())
        invite = agent.next_request("INVITE")
        agent.reply(invite, 200, "OK", body=offer(silent_rtp_port(32)))
        assert caller.final().status == 200
        caller.ack()
        agent.next_request("ACK")
        agent.peer.send(_bye_from_the_phone(agent, invite))
        bye = caller.peer.recv(10)
        assert bye is not None and bye.method == "BYE"
        caller.peer.send(reply(bye, 200, "OK", tag="caller"))
        caller.close()
        assert_all_given_back(server, "the called phone hanging up")
    finally:
        agent.close()


def _bye_from_the_phone(agent: Agent, invite: raw.SipMessage) -> bytes:
    """The called phone's BYE: its dialog is the server's INVITE with the roles swapped."""
    host, port = agent.peer.local
    server_contact = (invite.get("contact") or "").strip().lstrip("<").split(">")[0]
    lines = [
        f"BYE {server_contact} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={raw.new_branch()};rport",
        "Max-Forwards: 70",
        f"From: {invite.get('to')};tag=agent",
        f"To: {invite.get('from')}",
        f"Call-ID: {invite.get('call-id')}",
        "CSeq: 1 BYE",
        "Content-Length: 0", "", "",
    ]
    return "\r\n".join(lines).encode()


def _agent_available(server) -> bool:
    status, body = server.http_get("/api/v1/agents/1001")
    return status == 200 and '"available"' in body


def test_port_exhaustion_is_503_with_retry_after_and_recovers(pbx_server) -> None:
    first, last = random_port_range(8)  # 4 even ports
    server = pbx_server(default_config_yaml(media={"port_min": first, "port_max": last}))
    callers: list[Caller] = []
    try:
        refused = None
        for index in range(6):
            caller = Caller(server, "100", host=f"127.0.0.{10 + index}")
            callers.append(caller)
            caller.invite(offer(silent_rtp_port(2 * index)))
            answer = caller.final()
            if answer.status == 503:
                refused = answer
                break
            assert answer.status == 200, answer.start_line
            caller.ack()
        assert refused is not None, "more calls were answered than the port range holds"
        assert (refused.get("retry-after") or "").strip().isdigit(), refused.get("retry-after")
        for _ in range(3):  # more refusals: logged once for the episode, not once per INVITE
            callers[-1].dialog = raw.Dialogish()
            callers[-1].invite_branch = raw.new_branch()
            callers[-1].invite(offer())
            assert callers[-1].final().status == 503
        assert server.log_text().count("refused (503) until a call ends") == 1, server.log_tail(20)
        for caller in callers[:-1]:
            caller.bye()
        assert_all_given_back(server, "port exhaustion")
        again = Caller(server, "100")
        callers.append(again)
        again.answered()
        again.bye()
    finally:
        for caller in callers:
            caller.close()
    assert_all_given_back(server, "a call after port exhaustion")


def test_one_source_is_capped_while_another_is_still_answered(pbx_server) -> None:
    server = _server(pbx_server, unauthenticated_calls_per_source=3)
    hammering = [Caller(server, "100", host="127.0.0.21") for _ in range(3)]
    other = Caller(server, "100", host="127.0.0.22")
    extra = Caller(server, "100", host="127.0.0.21")
    try:
        for caller in hammering:
            caller.answered()
        for _ in range(3):
            extra.dialog = raw.Dialogish()
            extra.invite_branch = raw.new_branch()
            extra.invite(offer())
            refused = extra.final()
            assert refused.status == 503, refused.start_line
            assert (refused.get("retry-after") or "").strip().isdigit()
        # Logged once for the episode, not once per INVITE.
        assert server.log_text().count("calls from 127.0.0.21 refused") == 1, server.log_tail(20)
        other.answered()  # another address still gets its calls answered
        other.bye()
        hammering[0].bye()  # a call of the capped source ends: it may call again
        extra.dialog = raw.Dialogish()
        extra.invite_branch = raw.new_branch()
        extra.answered()
        extra.bye()
        for caller in hammering[1:]:
            caller.bye()
    finally:
        for caller in (*hammering, other, extra):
            caller.close()
    assert_all_given_back(server, "the capped source's calls")


def test_no_port_for_the_agents_leg_keeps_the_caller_waiting_and_the_agent_free(pbx_server) -> None:
    first, _ = random_port_range(2)
    server = pbx_server(default_config_yaml(
        media={"port_min": first, "port_max": first + 1},  # one RTP port: the caller's
        extensions={"102": {"application": "ivr", "flow": str(QUEUE_FLOW)}},
        queues=[{"name": "general", "wrap_up_seconds": 0, "ring_timeout_seconds": 30}],
    ))
    agent = Agent(server)
    caller = Caller(server, "102")
    try:
        assert wait_for(lambda: _agent_available(server), 10)
        caller.answered()
        assert wait_for(lambda: "cannot ring agent 1001" in server.log_text(), 10), server.log_tail(30)
        time.sleep(1.0)
        assert server.healthz()["resources"]["router_calls"] == 1  # still in line
        caller.bye()
    finally:
        caller.close()
        agent.close()
    assert_all_given_back(server, "a queued call whose agent leg found no port")
    assert wait_for(lambda: _agent_available(server), 10)
