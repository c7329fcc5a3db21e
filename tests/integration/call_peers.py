"""Raw UDP phones for call tests: a caller (INVITE, ACK, CANCEL, BYE) and agent 1001's phone,
and the check that a server holds nothing once its calls are over (/healthz resources)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from peers import raw
from peers.procs import silent_rtp_port

QUEUE_FLOW = Path(__file__).parent / "flows" / "straight_to_general.yaml"
OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc={connection}\r\nt=0 0\r\n"
         "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def offer(port: int | None = None, connection: str = "IN IP4 127.0.0.1") -> bytes:
    """An SDP offer; its RTP port is a silent one unless given."""
    port = silent_rtp_port() if port is None else port
    return OFFER.format(port=port, connection=connection).encode()


def reply(request: raw.SipMessage, status: int, reason: str, *, tag: str, body: bytes = b"",
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


def agent_state(server, extension: str) -> str:
    status, body = server.http_get(f"/api/v1/agents/{extension}")
    assert status == 200, body
    return json.loads(body)["live"]["state"]


def ring_agent_through_ivr(server, agent: raw.UdpPeer, caller: raw.UdpPeer, customer: str,
                           body: bytes, dialog: raw.Dialogish | None = None) -> raw.SipMessage:
    """Agent 1001 registers from ``agent`` and becomes available; ``customer`` calls the IVR
    on 100 from ``caller`` (its flow queues the call at once; ``dialog`` keeps the caller's
    side) and is answered; returns the INVITE that rings the agent's phone."""
    registered = raw.register(agent, "1001", "demo1001", expires=300,
                              contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>")
    assert registered.final is not None and registered.final.status == 200
    assert wait_for(lambda: agent_state(server, "1001") == "available", 5)
    aor = f"sip:100@{server.sip_address}"
    caller.send(raw.build_request(
        "INVITE", aor, caller, from_uri=f"sip:{customer}@{caller.local[0]}", to_uri=aor,
        state=dialog or raw.Dialogish(), contact=f"<sip:caller@{caller.local[0]}:{caller.local[1]}>",
        headers=[("Content-Type", "application/sdp")], body=body))
    answer = raw.final_response(caller, 5.0, cseq_method="INVITE")
    assert answer is not None and answer.status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = agent.recv(0.5)
        if message is not None and not message.is_response and message.method == "INVITE":
            return message
    raise AssertionError("the agent's phone never rang")


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def held(server) -> dict[str, int]:
    resources = dict(server.healthz()["resources"])
    resources.pop("sip_transactions")  # completed transactions linger for timer D, by design
    return {name: count for name, count in resources.items() if count}


def assert_all_given_back(server, what: str) -> None:
    assert wait_for(lambda: not held(server), 15), f"after {what}, still held: {held(server)}"


def random_port_range(size: int) -> tuple[int, int]:
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
        self.invite_cseq = 1

    def _request(self, method: str, *, cseq: int | None = None, body: bytes = b"",
                 headers: tuple[tuple[str, str], ...] = (), branch: str | None = None,
                 to_tag: str | None = None) -> bytes:
        host, port = self.peer.local
        return raw.build_request(method, self.aor, self.peer, from_uri=f"sip:5550100@{host}",
                                 to_uri=self.aor, state=self.dialog, cseq=cseq, body=body,
                                 headers=headers, branch=branch, to_tag=to_tag,
                                 contact=f"<sip:5550100@{host}:{port}>")

    def invite(self, body: bytes = b"", content_type: str = "application/sdp",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        headers = ((("Content-Type", content_type),) if body else ()) + headers
        self.peer.send(self._request("INVITE", body=body, headers=headers, branch=self.invite_branch))
        self.invite_cseq = self.dialog.cseq

    def invite_as(self, user: str, password: str, body: bytes) -> None:
        """INVITE with digest credentials: the 407 is ACKed and the INVITE sent again."""
        self.invite(body)
        challenge = self.final()
        assert challenge.status == 407, challenge.start_line
        # The ACK of a non-2xx answer is part of the INVITE transaction: same branch and CSeq.
        self.peer.send(self._request("ACK", cseq=self.invite_cseq, branch=self.invite_branch,
                                     to_tag=challenge.to_tag))
        authorization = raw.digest_authorize(raw.pick_challenge(challenge.get_all("proxy-authenticate")),
                                             "INVITE", self.aor, user, password)
        self.invite_branch = raw.new_branch()
        self.to_tag = None
        self.invite(body, headers=(("Proxy-Authorization", authorization),))

    def final(self, timeout: float = 10.0) -> raw.SipMessage:
        # This call's answer: a retransmitted answer of an earlier INVITE is not it.
        answer = raw.final_response(self.peer, timeout, call_id=self.dialog.call_id,
                                    cseq_method="INVITE")
        assert answer is not None, "no final answer to the INVITE"
        self.to_tag = answer.to_tag
        return answer

    def answered(self, body: bytes | None = None) -> raw.SipMessage:
        self.invite(offer() if body is None else body)
        answer = self.final()
        assert answer.status == 200, answer.start_line
        self.ack()
        return answer

    def ack(self) -> None:
        self.peer.send(self._request("ACK", cseq=self.invite_cseq, to_tag=self.to_tag))

    def cancel(self) -> None:
        self.peer.send(self._request("CANCEL", cseq=self.invite_cseq, branch=self.invite_branch))

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
                self.peer.send(reply(message, 200, "OK", tag="agent"))
        raise AssertionError(f"the agent's phone got no {method}")

    def reply(self, request: raw.SipMessage, status: int, reason: str, body: bytes = b"") -> None:
        self.peer.send(reply(request, status, reason, tag="agent", body=body, contact=self.contact))

    def close(self) -> None:
        self.peer.close()
