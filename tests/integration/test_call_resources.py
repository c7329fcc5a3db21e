"""Everything a call takes (RTP ports and sockets, tasks, dialogs, router entries) is given
back on every way a call can fail or end early; the counts on /healthz return to zero.
Unusable offers get 488 with a Warning, port exhaustion and one source's flood get 503 with
Retry-After, and one source hammering never keeps another from being answered."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from integration.server_fixture import default_config_yaml
from peers import raw

pytestmark = pytest.mark.integration

QUEUE_FLOW = Path(__file__).parent / "flows" / "straight_to_general.yaml"
OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc={connection}\r\nt=0 0\r\n"
         "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def _offer(port: int = 40000, connection: str = "IN IP4 127.0.0.1") -> bytes:
    return OFFER.format(port=port, connection=connection).encode()


def _reply(request: raw.SipMessage, status: int, reason: str, *, tag: str, body: bytes = b"",
           contact: str | None = None) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in request.values("via")]
    to = request.get("to") or ""
    lines += [f"From: {request.get('from')}", f"To: {to}" + ("" if "tag=" in to else f";tag={tag}"),
              f"Call-ID: {request.get('call-id')}", f"CSeq: {request.get('cseq')}"]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _held(server) -> dict[str, int]:
    resources = dict(server.healthz()["resources"])
    resources.pop("sip_transactions")  # completed transactions linger for timer D, by design
    return {name: count for name, count in resources.items() if count}


def _assert_all_given_back(server, what: str) -> None:
    assert _wait_for(lambda: not _held(server), 15), f"after {what}, still held: {_held(server)}"


def _random_port_range(size: int) -> tuple[int, int]:
    first = random.randrange(30000, 60000 - size, 2)
    return first, first + size - 1


class Caller:
    """A raw UDP phone calling `user` on the server."""

    def __init__(self, server, user: str, host: str = "127.0.0.1") -> None:
        self.target = (server.host, server.sip_port)
        self.peer = raw.UdpPeer(self.target, host)
        self.aor = f"sip:{user}@{server.sip_address}"
        self.dialog = raw.Dialogish()
        self.to_tag: str | None = None
        self.invite_branch = raw.new_branch()

    def _request(self, method: str, *, cseq: int | None = None, body: bytes = b"",
                 headers: tuple[tuple[str, str], ...] = (), branch: str | None = None,
                 to_tag: str | None = None) -> bytes:
        host, port = self.peer.local
        return raw.build_request(method, self.aor, self.peer, from_uri=f"sip:5550100@{host}",
                                 to_uri=self.aor, state=self.dialog, cseq=cseq, body=body,
                                 headers=headers, branch=branch, to_tag=to_tag,
                                 contact=f"<sip:5550100@{host}:{port}>")

    def invite(self, body: bytes = b"", content_type: str = "application/sdp") -> None:
        headers = (("Content-Type", content_type),) if body else ()
        self.peer.send(self._request("INVITE", body=body, headers=headers, branch=self.invite_branch))

    def final(self, timeout: float = 10.0) -> raw.SipMessage:
        answer = raw.final_response(self.peer, timeout, cseq_method="INVITE")
        assert answer is not None, "no final answer to the INVITE"
        self.to_tag = answer.to_tag
        return answer

    def answered(self, body: bytes | None = None) -> raw.SipMessage:
        self.invite(_offer() if body is None else body)
        answer = self.final()
        assert answer.status == 200, answer.start_line
        self.ack()
        return answer

    def ack(self) -> None:
        self.peer.send(self._request("ACK", cseq=1, to_tag=self.to_tag))

    def cancel(self) -> None:
        self.peer.send(self._request("CANCEL", cseq=1, branch=self.invite_branch))

    def bye(self) -> None:
        self.peer.send(self._request("BYE", to_tag=self.to_tag))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self.peer.recv(0.5)
            if message is not None and message.is_response and message.cseq[1] == "BYE":
                assert message.status == 200, message.start_line
                return
        raise AssertionError("no answer to the BYE")

    def close(self) -> None:
        self.peer.close()


class Agent:
    """Agent 1001's phone: registers, then answers each INVITE as a test says."""

    def __init__(self, server) -> None:
        self.server = server
        self.peer = raw.UdpPeer((server.host, server.sip_port))
        self.contact = f"<sip:1001@{self.peer.local[0]}:{self.peer.local[1]}>"
        registered = raw.register(self.peer, "1001", "demo1001", expires=300, contact=self.contact)
        assert registered.final is not None and registered.final.status == 200

    def next_request(self, method: str, timeout: float = 10.0) -> raw.SipMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.peer.recv(0.5)
            if message is None or message.is_response:
                continue
            if message.method == method:
                return message
            if message.method in ("OPTIONS", "BYE", "CANCEL"):
                self.peer.send(_reply(message, 200, "OK", tag="agent"))
        raise AssertionError(f"the agent's phone got no {method}")

    def reply(self, request: raw.SipMessage, status: int, reason: str, body: bytes = b"") -> None:
        self.peer.send(_reply(request, status, reason, tag="agent", body=body, contact=self.contact))

    def close(self) -> None:
        self.peer.close()


def _server(pbx_server, **media):
    first, last = _random_port_range(200)
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
        caller.invite(_offer(connection=connection))
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
            caller.invite(_offer(connection="IN IP4 localhost"))
            assert caller.final().status == 488
        _assert_all_given_back(server, "150 offers naming a host")
        caller.dialog = raw.Dialogish()
        caller.invite_branch = raw.new_branch()
        caller.answered()  # and a good call is still answered
        caller.bye()
    finally:
        caller.close()
    _assert_all_given_back(server, "a call after the flood")


def test_every_failure_path_gives_back_what_the_call_took(pbx_server) -> None:
    server = _server(pbx_server)

    # The IVR: hang up after the answer; CANCEL at once (crossing the answer or not).
    caller = Caller(server, "100")
    caller.answered()
    caller.bye()
    caller.close()
    _assert_all_given_back(server, "a BYE in the IVR")

    caller = Caller(server, "100")
    caller.invite(_offer())
    caller.cancel()
    answer = caller.final()
    assert answer.status in (200, 487), answer.start_line
    if answer.status == 200:
        caller.ack()
        caller.bye()
    caller.close()
    _assert_all_given_back(server, "a CANCEL to the IVR")

    # Waiting in line with no agent, then hanging up.
    caller = Caller(server, "102")
    caller.answered()
    assert _wait_for(lambda: server.healthz()["resources"]["router_calls"] == 1, 10)
    caller.bye()
    caller.close()
    _assert_all_given_back(server, "hanging up while waiting in line")

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
        _assert_all_given_back(server, "hanging up while the agent's phone rang")

        # The agent's phone refuses (busy), then the caller gives up.
        caller = Caller(server, "102")
        caller.answered()
        invite = agent.next_request("INVITE")
        agent.reply(invite, 486, "Busy Here")
        caller.bye()
        caller.close()
        _assert_all_given_back(server, "an agent's busy phone and a caller giving up")
        assert _wait_for(lambda: _agent_available(server), 10)

        # Connected to the agent, then the caller hangs up: the agent gets a BYE.
        caller = Caller(server, "102")
        caller.answered()
        invite = agent.next_request("INVITE")
        agent.reply(invite, 200, "OK", body=_offer(40010))
        caller.bye()
        agent.next_request("BYE")
        caller.close()
        _assert_all_given_back(server, "hanging up while talking to the agent")
    finally:
        agent.close()


def _agent_available(server) -> bool:
    status, body = server.http_get("/api/v1/agents/1001")
    return status == 200 and '"available"' in body


def test_port_exhaustion_is_503_with_retry_after_and_recovers(pbx_server) -> None:
    first, last = _random_port_range(8)  # 4 even ports
    server = pbx_server(default_config_yaml(media={"port_min": first, "port_max": last}))
    callers: list[Caller] = []
    try:
        refused = None
        for index in range(6):
            caller = Caller(server, "100", host=f"127.0.0.{10 + index}")
            callers.append(caller)
            caller.invite(_offer(40000 + 2 * index))
            answer = caller.final()
            if answer.status == 503:
                refused = answer
                break
            assert answer.status == 200, answer.start_line
            caller.ack()
        assert refused is not None, "more calls were answered than the port range holds"
        assert (refused.get("retry-after") or "").strip().isdigit(), refused.get("retry-after")
        for caller in callers[:-1]:
            caller.bye()
        _assert_all_given_back(server, "port exhaustion")
        again = Caller(server, "100")
        callers.append(again)
        again.answered()
        again.bye()
    finally:
        for caller in callers:
            caller.close()
    _assert_all_given_back(server, "a call after port exhaustion")


def test_one_source_is_capped_while_another_is_still_answered(pbx_server) -> None:
    server = _server(pbx_server, unauthenticated_calls_per_source=3)
    hammering = [Caller(server, "100", host="127.0.0.21") for _ in range(3)]
    other = Caller(server, "100", host="127.0.0.22")
    extra = Caller(server, "100", host="127.0.0.21")
    try:
        for caller in hammering:
            caller.answered()
        extra.invite(_offer())
        refused = extra.final()
        assert refused.status == 503, refused.start_line
        assert (refused.get("retry-after") or "").strip().isdigit()
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
    _assert_all_given_back(server, "the capped source's calls")
