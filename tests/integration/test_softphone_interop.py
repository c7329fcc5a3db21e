"""The softphones the README names, on the demo configuration as shipped.

- Linphone (Debian's ``linphonec``): registers with the demo's default digest (MD5) and
  makes calls: to the greeting extension and to a baresip phone, which hears it; with
  SHA-256 opted in it authenticates with SHA-256.
- PJSIP (``pjsua2``): with SHA-256 opted in, registers with SHA-256 and takes a queue call.
- Zoiper and MicroSIP cannot run here (desktop apps): their REGISTER and INVITE are
  reproduced header for header from published traces (Zoiper 5.6: ``-524287-1---``
  branches, ``rinstance`` and ``transport=UDP`` in the Contact, the Request-URI and the
  digest ``uri``, compact digest parameters echoing the challenge's algorithm, its
  Supported list and an SDP offering Opus, G.722, GSM and telephone-event at 48 kHz
  and 8 kHz; MicroSIP, a PJSIP phone: ``;ob`` Contact with ``reg-id`` and
  ``+sip.instance``, ``Supported: outbound, path``), with the digest each computes
  (MD5, ``qop=auth``). The Zoiper phone calls the MicroSIP phone through the server.

baresip itself is covered by test_softphone_baresip (demo defaults too).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from integration.server_fixture import default_config_yaml
from integration.test_queue_agents import (
    caller_xml,
    cc_config,
    loud_share,
    need_sipp,
    pjsua_agent,
    read_pcm16,
    wait_agent_state,
    wait_idle,
)
from peers import raw, sipp
from peers.baresip import Account, Baresip, write_tone_wav
from peers.linphone import Linphone
from peers.procs import silent_rtp_port

pytestmark = pytest.mark.integration

SHA256_FIRST = {"digest_algorithms": ["SHA-256", "MD5"]}
ZOIPER_SUPPORTED = ("replaces, norefersub, extended-refer, timer, sec-agree, outbound, path,"
                    " X-cisco-serviceuri")


def _authorizations(server, user: str) -> list[str]:
    """The algorithm of every Authorization header ``user`` sent (from the SIP trace)."""
    found = []
    for line in server.log_text().splitlines():
        if re.match(r"\s*(Proxy-)?Authorization:", line, re.I) and f'username="{user}"' in line:
            algorithm = re.search(r"algorithm=\"?([\w-]+)", line)
            found.append(algorithm.group(1).upper() if algorithm else "MD5")
    return found


def _wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ------------------------------------------------------------------------------- Linphone

def test_linphone_registers_and_calls_the_greeting_and_a_baresip_phone(pbx_server,
                                                                        tmp_path) -> None:
    server = pbx_server(sip_trace=True)  # the demo as shipped
    with Linphone(tmp_path / "linphone", "1006", "demo1006",
                  (server.host, server.sip_port)) as phone:
        phone.wait_registered()
        assert set(_authorizations(server, "1006")) == {"MD5"}

        start = phone.dial(f"sip:101@{server.sip_address}")
        phone.wait_output(r"Call \d+ with sip:101@\S+ connected", timeout=20, start=start)
        phone.wait_output(r"Media streams established", timeout=10, start=start)
        phone.hangup()
        phone.wait_output(r"Call \d+ with sip:101@\S+ ended", timeout=10, start=start)
        assert _wait(lambda: server.metric("centralita_calls_answered_total", 0.0) >= 1, 10)

        with Baresip(tmp_path / "baresip", Account("1007", "demo1007",
                                                   (server.host, server.sip_port))) as callee:
            callee.wait_registered()
            start = phone.dial(f"sip:1007@{server.sip_address}")
            answered = callee.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
            assert answered["type"] == "CALL_ESTABLISHED", f"{answered}\n{phone.log_tail()}"
            phone.wait_output(r"Call \d+ with sip:1007@\S+ connected", timeout=10, start=start)
            phone.command(f"play {write_tone_wav(tmp_path / 'tone.wav', seconds=20)}")
            # linphone's RTP crossed the server and baresip decoded it.
            assert _wait(lambda: callee.received_audio_frames() >= 8000, 15), (
                f"baresip decoded {callee.received_audio_frames()} frames from linphone")
            phone.hangup()
            assert callee.wait_event("CALL_CLOSED", timeout=10)["type"] == "CALL_CLOSED"
    assert _wait(lambda: server.metric("centralita_sip_dialogs_active") == 0.0, 15)


def test_linphone_uses_sha256_when_opted_in(pbx_server, tmp_path) -> None:
    server = pbx_server(default_config_yaml(sip=SHA256_FIRST), sip_trace=True)
    with Linphone(tmp_path / "linphone", "1008", "demo1008",
                  (server.host, server.sip_port)) as phone:
        phone.wait_registered()
        start = phone.dial(f"sip:101@{server.sip_address}")
        phone.wait_output(r"Call \d+ with sip:101@\S+ connected", timeout=20, start=start)
        phone.hangup()
    algorithms = _authorizations(server, "1008")
    assert algorithms and set(algorithms) == {"SHA-256"}, algorithms


# ------------------------------------------------------------------------------- PJSIP

def test_pjsua_agent_registers_with_sha256_and_takes_a_queue_call(pbx_server, tmp_path) -> None:
    need_sipp()
    config = yaml.safe_load(cc_config(agents={"1001": {"billing": 8}}))
    config["sip"].update(SHA256_FIRST)
    server = pbx_server(yaml.safe_dump(config), sip_trace=True)
    with ExitStack() as stack:
        agent = pjsua_agent(tmp_path / "agent", server, "1001")
        stack.callback(agent.stop)
        algorithms = _authorizations(server, "1001")
        assert algorithms and set(algorithms) == {"SHA-256"}, algorithms
        wait_agent_state(server, "1001", "available")
        caller = sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=6000),
                            service="100", calls=1, trace_msg=True, workdir=tmp_path / "caller")
        stack.callback(caller.stop)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        result = caller.wait(60)
        assert result.returncode == 0 and result.successful == 1, result.describe()
        recording = read_pcm16(Path(agent.wait_event("recorded", timeout=15)["path"]))
        assert loud_share(recording) > 0.3, "the pjsua agent did not receive the caller's audio"
        wait_agent_state(server, "1001", "available", timeout=30)
        assert not any(wait_idle(server).values())


# ------------------------------------------------------------------------------- Zoiper / MicroSIP

def _h(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _challenge(response: raw.SipMessage, header: str) -> dict[str, str]:
    values = response.get_all(header)
    assert values, f"no {header} in:\n{response}"
    md5 = [v for v in values if re.search(r"algorithm=\"?MD5", v, re.I)] or values
    return {k.lower(): q or v for k, q, v in re.findall(
        r'(\w[\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', md5[0])}


def _digest(style: str, challenge: dict[str, str], method: str, uri: str, user: str,
            password: str) -> str:
    """The Authorization value as each phone writes it (both MD5 with qop=auth)."""
    cnonce, nc = secrets.token_hex(8), "00000001"
    ha1 = _h(f"{user}:{challenge['realm']}:{password}")
    ha2 = _h(f"{method}:{uri}")
    response = _h(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    opaque = challenge.get("opaque")
    if style == "zoiper":  # no spaces, the challenge's algorithm token echoed, opaque last
        value = (f'Digest username="{user}",realm="{challenge["realm"]}",'
                 f'nonce="{challenge["nonce"]}",uri="{uri}",response="{response}",'
                 f'cnonce="{cnonce}",nc={nc},qop=auth,algorithm={challenge["algorithm"]}')
        return value + (f',opaque="{opaque}"' if opaque else "")
    value = (f'Digest username="{user}", realm="{challenge["realm"]}", '  # PJSIP
             f'nonce="{challenge["nonce"]}", uri="{uri}", response="{response}", '
             f'algorithm=MD5, cnonce="{cnonce}"')
    return value + (f', opaque="{opaque}"' if opaque else "") + f", qop=auth, nc={nc}"


class ShapedPhone:
    """A UDP socket that writes its SIP exactly as Zoiper 5 or MicroSIP 3.21 do."""

    def __init__(self, style: str, user: str, server) -> None:
        self.style, self.user, self.server = style, user, server
        self.peer = raw.UdpPeer((server.host, server.sip_port))
        self.host, self.port = self.peer.local
        self.cseq = 1 if style == "zoiper" else 31000
        self.call_id = secrets.token_hex(11) if style == "zoiper" else secrets.token_hex(16)
        self.tag = secrets.token_hex(4)
        self.rinstance = secrets.token_hex(8)
        self.instance = f"00000000-0000-0000-0000-0000{secrets.token_hex(4)}"

    def branch(self) -> str:
        return ("z9hG4bK-524287-1---" + secrets.token_hex(8) if self.style == "zoiper"
                else "z9hG4bKPj" + secrets.token_hex(16))

    @property
    def domain(self) -> str:
        return self.server.sip_address

    @property
    def contact(self) -> str:
        if self.style == "zoiper":
            return f"<sip:{self.user}@{self.host}:{self.port};rinstance={self.rinstance};transport=UDP>"
        return (f'<sip:{self.user}@{self.host}:{self.port};ob>;reg-id=1;'
                f'+sip.instance="<urn:uuid:{self.instance}>"')

    def register_message(self, authorization: str | None, expires: int | None = None) -> str:
        if self.style == "zoiper":
            uri = f"sip:{self.domain};transport=UDP"
            lines = [f"REGISTER {uri} SIP/2.0",
                     f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={self.branch()};rport",
                     "Max-Forwards: 70", f"Contact: {self.contact}",
                     f"To: <sip:{self.user}@{self.domain};transport=UDP>",
                     f"From: <sip:{self.user}@{self.domain};transport=UDP>;tag={self.tag}",
                     f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} REGISTER",
                     f"Expires: {60 if expires is None else expires}",
                     "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO,"
                     " SUBSCRIBE", f"Supported: {ZOIPER_SUPPORTED}",
                     "User-Agent: Z 5.6.1 v2.10.19.9",
                     "Allow-Events: presence, kpml, talk, as-feature-event"]
        else:
            uri = f"sip:{self.domain}"
            lines = [f"REGISTER {uri} SIP/2.0",
                     f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch={self.branch()}",
                     "Max-Forwards: 70", f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}",
                     f"To: <sip:{self.user}@{self.domain}>", f"Call-ID: {self.call_id}",
                     f"CSeq: {self.cseq} REGISTER", "User-Agent: MicroSIP/3.21.3",
                     "Supported: outbound, path", f"Contact: {self.contact}",
                     f"Expires: {300 if expires is None else expires}",
                     "Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY,"
                     " REFER, MESSAGE, OPTIONS"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        return "\r\n".join(lines + ["Content-Length: 0", "", ""])

    def request_uri_for_register(self) -> str:
        return (f"sip:{self.domain};transport=UDP" if self.style == "zoiper"
                else f"sip:{self.domain}")

    def register(self, expires: int | None = None) -> raw.SipMessage:
        """REGISTER, 401, REGISTER with the digest: the final response."""
        self.peer.send(self.register_message(None, expires))
        first = raw.final_response(self.peer, 5.0, cseq_method="REGISTER")
        assert first is not None and first.status == 401, first and first.start_line
        self.cseq += 1
        authorization = _digest(self.style, _challenge(first, "www-authenticate"), "REGISTER",
                                self.request_uri_for_register(), self.user, f"demo{self.user}")
        self.peer.send(self.register_message(authorization, expires))
        self.cseq += 1
        final = raw.final_response(self.peer, 5.0, cseq_method="REGISTER")
        assert final is not None, "no answer to the authenticated REGISTER"
        return final

    def sdp(self, rtp_port: int) -> str:
        if self.style == "zoiper":
            return "\r\n".join([
                "v=0", f"o=Z 0 {secrets.randbelow(10**7)} IN IP4 {self.host}", "s=Z",
                f"c=IN IP4 {self.host}", "t=0 0",
                f"m=audio {rtp_port} RTP/AVP 106 9 98 101 0 8 3",
                "a=rtpmap:106 opus/48000/2",
                "a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1",
                "a=rtpmap:98 telephone-event/48000", "a=fmtp:98 0-16",
                "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=sendrecv", ""])
        return "\r\n".join([
            "v=0", f"o=- {secrets.randbelow(10**9)} 2 IN IP4 {self.host}", "s=pjmedia",
            "b=AS:84", "t=0 0", "a=X-nat:0", f"m=audio {rtp_port} RTP/AVP 8 101",
            f"c=IN IP4 {self.host}", "b=TIAS:64000", f"a=rtcp:{rtp_port + 1} IN IP4 {self.host}",
            "a=sendrecv", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16", f"a=ssrc:{secrets.randbits(31)} cname:{secrets.token_hex(8)}", ""])


def _invite(phone: ShapedPhone, callee: str, call_id: str, tag: str, cseq: int, branch: str,
            body: str, authorization: str | None) -> str:
    """Zoiper 5.6's INVITE (see the module docstring)."""
    uri = f"sip:{callee}@{phone.domain};transport=UDP"
    lines = [f"INVITE {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP {phone.host}:{phone.port};branch={branch};rport",
             "Max-Forwards: 70", f"Contact: <sip:{phone.user}@{phone.host}:{phone.port};transport=UDP>",
             f"To: <sip:{callee}@{phone.domain}>",
             f"From: <sip:{phone.user}@{phone.domain};transport=UDP>;tag={tag}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} INVITE",
             "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
             "Content-Type: application/sdp", f"Supported: {ZOIPER_SUPPORTED}",
             "User-Agent: Z 5.6.1 v2.10.19.9",
             "Allow-Events: presence, kpml, talk, as-feature-event"]
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    return "\r\n".join(lines + [f"Content-Length: {len(body)}", "", body])


def _ack_or_bye(method: str, phone: ShapedPhone, callee: str, call_id: str, tag: str, cseq: int,
                branch: str, to_tag: str | None, target: str | None = None) -> str:
    uri = target or f"sip:{callee}@{phone.domain}"
    to = f"<sip:{callee}@{phone.domain}>" + (f";tag={to_tag}" if to_tag else "")
    return "\r\n".join([
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {phone.host}:{phone.port};branch={branch};rport", "Max-Forwards: 70",
        f"To: {to}", f"From: <sip:{phone.user}@{phone.domain};transport=UDP>;tag={tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}", "Content-Length: 0", "", ""])


def _answer(request: raw.SipMessage, status: int, reason: str, to_tag: str, contact: str,
            body: str = "") -> str:
    lines = [f"SIP/2.0 {status} {reason}"]
    for name in ("via", "from", "call-id", "cseq"):
        for value in request.get_all(name):
            lines.append(f"{name.title() if name != 'call-id' else 'Call-ID'}: {value}")
    to = request.get("to") or ""
    lines.append(f"To: {to};tag={to_tag}" if "tag=" not in to else f"To: {to}")
    lines += [f"Contact: {contact}", "User-Agent: MicroSIP/3.21.3"]
    if body:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join(lines + [f"Content-Length: {len(body)}", "", body])


def _next_request(peer, method: str, timeout: float = 10.0) -> raw.SipMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = peer.recv(max(0.1, deadline - time.monotonic()))
        if message is not None and not message.is_response and message.method == method:
            return message
    raise AssertionError(f"no {method} arrived within {timeout} s")


@pytest.mark.parametrize("style", ["zoiper", "microsip"])
def test_zoiper_and_microsip_register_with_the_demo_defaults(shared_pbx, style: str) -> None:
    user = "1009" if style == "zoiper" else "1010"
    phone = ShapedPhone(style, user, shared_pbx)
    with phone.peer:
        final = phone.register()
        assert final.status == 200, f"{final.start_line}\n{final}"
        bound = raw.contact_expiries(final)
        assert any(f"{phone.host}:{phone.port}" in uri for uri in bound), bound
        # Unregister the way both do on exit: the same Contact with Expires 0.
        final = phone.register(expires=0)
        assert final.status == 200, f"{final.start_line}\n{final}"
        assert not raw.contact_expiries(final), final


def test_zoiper_calls_microsip_through_the_server(pbx_server) -> None:
    server = pbx_server()  # the demo as shipped: MD5 challenges
    zoiper, microsip = ShapedPhone("zoiper", "1004", server), ShapedPhone("microsip", "1005",
                                                                          server)
    with zoiper.peer, microsip.peer:
        assert zoiper.register().status == 200
        assert microsip.register().status == 200
        call_id, tag, rtp = secrets.token_hex(11), secrets.token_hex(4), silent_rtp_port()
        body = zoiper.sdp(rtp)
        branch = zoiper.branch()
        zoiper.peer.send(_invite(zoiper, "1005", call_id, tag, 1, branch, body, None))
        challenge = raw.final_response(zoiper.peer, 5.0, cseq_method="INVITE")
        assert challenge is not None and challenge.status == 407, challenge
        zoiper.peer.send(_ack_or_bye("ACK", zoiper, "1005", call_id, tag, 1, branch,
                                     challenge.to_tag, f"sip:1005@{zoiper.domain};transport=UDP"))
        authorization = _digest("zoiper", _challenge(challenge, "proxy-authenticate"), "INVITE",
                                f"sip:1005@{zoiper.domain};transport=UDP", "1004", "demo1004")
        zoiper.peer.send(_invite(zoiper, "1005", call_id, tag, 2, zoiper.branch(), body,
                                 authorization))

        invite = _next_request(microsip.peer, "INVITE")
        to_tag = secrets.token_hex(8)
        contact = f"<sip:1005@{microsip.host}:{microsip.port};ob>"
        microsip.peer.send(_answer(invite, 180, "Ringing", to_tag, contact))
        microsip.peer.send(_answer(invite, 200, "OK", to_tag, contact, microsip.sdp(silent_rtp_port(10))))
        answered = raw.final_response(zoiper.peer, 10.0, call_id=call_id, cseq_method="INVITE")
        assert answered is not None and answered.status == 200, answered
        # The server picked what it speaks from Zoiper's offer: G.711 and the 8 kHz events.
        media = re.search(rb"^m=audio \d+ RTP/AVP ([\d ]+)", answered.body, re.MULTILINE)
        assert media, answered
        formats = media.group(1).split()
        assert formats[0] in (b"0", b"8") and set(formats) <= {b"0", b"8", b"101"}, formats
        target = re.search(r"<([^>]+)>", answered.get("contact") or "")
        assert target, answered
        zoiper.peer.send(_ack_or_bye("ACK", zoiper, "1005", call_id, tag, 2, zoiper.branch(),
                                     answered.to_tag, target.group(1)))
        _next_request(microsip.peer, "ACK")

        zoiper.peer.send(_ack_or_bye("BYE", zoiper, "1005", call_id, tag, 3, zoiper.branch(),
                                     answered.to_tag, target.group(1)))
        bye = _next_request(microsip.peer, "BYE")
        microsip.peer.send(_answer(bye, 200, "OK", to_tag, contact))
        ended = raw.final_response(zoiper.peer, 5.0, call_id=call_id, cseq_method="BYE")
        assert ended is not None and ended.status == 200, ended
    assert _wait(lambda: server.metric("centralita_sip_dialogs_active") == 0.0, 15)
