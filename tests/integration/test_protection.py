"""Per-source protection against floods and password guessing, driven by SIPp.

SIPp floods REGISTER and INVITE and guesses passwords (``-au/-ap``) from 127.0.0.1;
a second client on 127.0.0.2 is the legitimate user the server must keep serving.
"""

from __future__ import annotations

import re

import pytest

from integration.server_fixture import REPO_ROOT, default_config_yaml
from peers import raw, sipp

pytestmark = pytest.mark.integration

FAIL2BAN_FILTER = REPO_ROOT / "deploy" / "fail2ban" / "filter.d" / "centralita.conf"

OTHER_HOST = "127.0.0.2"

REGISTER_WITH_DIGEST = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send>
    <![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 120
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true" timeout="5000"/>
  <send>
    <![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
[authentication]
Max-Forwards: 70
Expires: 120
Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="5000"/>
</scenario>
"""

# One request per call, answered with a challenge (REGISTER 401, INVITE 407) while the
# source is within its limits; a dropped one times out on SIPp's side.
FLOOD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="flood">
  <send>
    <![CDATA[
{method} sip:{target}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:flood@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:{target}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 {method}
Contact: <sip:flood@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="{status}" timeout="3000"/>
</scenario>
"""


def _fail2ban_patterns() -> list[re.Pattern[str]]:
    """The filter's failregex lines, <HOST> as an address group (fail2ban's own is wider)."""
    text = FAIL2BAN_FILTER.read_text()
    block = re.search(r"^failregex = (.*?)^ignoreregex", text, re.M | re.S)
    assert block is not None, "no failregex in the fail2ban filter"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    return [re.compile(line.replace("<HOST>", r"(?P<host>[0-9A-Fa-f:.]+)")) for line in lines]


def _banned_hosts(log: str) -> set[str]:
    found = set()
    for line in log.splitlines():
        for pattern in _fail2ban_patterns():
            match = pattern.search(line)
            if match:
                found.add(match.group("host"))
    return found


def _options_answered(server, host: str) -> bool:
    with raw.UdpPeer((server.host, server.sip_port), host=host) as peer:
        peer.send(raw.options(peer, (server.host, server.sip_port)))
        return raw.final_response(peer, 3.0, cseq_method="OPTIONS") is not None


def test_password_guessing_ends_in_a_block_that_the_right_password_cannot_pass(pbx_server, tmp_path) -> None:
    server = pbx_server(default_config_yaml(sip={
        "digest_algorithms": ["MD5"],
        "protection": {"auth_failures": 20, "auth_window": 60, "block_seconds": 300}}))
    target = server.sip_address
    guessing = sipp.run(target, scenario=REGISTER_WITH_DIGEST, workdir=tmp_path / "guess",
                        service="1001", auth=("1001", "guess-123"), auth_uri=f"sip:{target}",
                        calls=300, rate=200, timeout=60)
    assert guessing.successful == 0, guessing.describe()
    assert server.metric("centralita_sip_auth_failures_total", 0, method="REGISTER") >= 20
    assert server.metric("centralita_sip_source_blocks_total", 0, reason="auth-failures") == 1
    # Once blocked, guesses are answered 403 without being checked.
    assert server.metric("centralita_sip_auth_failures_total", 0) < 300
    assert server.metric("centralita_sip_messages_throttled_total", 0, reason="forbidden") > 0

    # The failed-login line names the source IP:port, the user and the Call-ID (fail2ban).
    log = server.log_text()
    line = re.search(r'security event=auth-failed source=127\.0\.0\.1:(\d+) user="1001" '
                     r'call_id="([^"]+)" reason="[^"]+"', log)
    assert line is not None, server.log_tail()
    assert re.search(r'security event=blocked source=127\.0\.0\.1:\d+ reason="auth-failures"', log)
    assert _banned_hosts(log) == {"127.0.0.1"}, "the fail2ban filter misses the failed logins"

    # The right password from the blocked source does not register...
    right = sipp.run(target, scenario=REGISTER_WITH_DIGEST, workdir=tmp_path / "right",
                     service="1001", auth=("1001", "demo1001"), auth_uri=f"sip:{target}",
                     calls=3, rate=3, timeout=30)
    assert right.successful == 0, right.describe()
    with raw.UdpPeer((server.host, server.sip_port)) as peer:
        refused = raw.register(peer, "1001", "demo1001", expires=120)
    assert refused.final is not None and refused.final.status == 403, refused
    # ... while another source registers the same account and sees only its own binding.
    with raw.UdpPeer((server.host, server.sip_port), host=OTHER_HOST) as peer:
        accepted = raw.register(peer, "1001", "demo1001", expires=120)
        assert accepted.final is not None and accepted.final.status == 200, accepted
        contacts = accepted.final.values("contact")
    assert contacts and all(OTHER_HOST in c for c in contacts), contacts


@pytest.mark.parametrize(("method", "target", "status", "limit"), [
    ("REGISTER", "1001", 401, "rate"),
    ("INVITE", "999", 407, "invite_rate"),
])
def test_a_flood_is_dropped_then_blocked_and_others_are_still_served(
        pbx_server, tmp_path, method: str, target: str, status: int, limit: str) -> None:
    server = pbx_server(default_config_yaml(sip={"protection": {
        "trusted": [], "requests_per_second": 20, "request_burst": 40,
        "invites_per_second": 5, "invite_burst": 10, "flood_block_after": 100,
        "block_seconds": 120}}))
    flood = sipp.run(server.sip_address, scenario=FLOOD.format(method=method, target=target, status=status),
                     workdir=tmp_path / "flood", calls=600, rate=300, timeout=40,
                     extra=("-nr",))
    answered = flood.successful
    assert 0 < answered < 600, flood.describe()
    assert server.metric("centralita_sip_messages_throttled_total", 0, reason=limit) > 0
    assert server.metric("centralita_sip_source_blocks_total", 0, reason="flood") == 1
    assert server.metric("centralita_sip_messages_throttled_total", 0, reason="blocked") > 0
    assert re.search(r"security event=flood source=127\.0\.0\.1:\d+", server.log_text())
    assert re.search(r'security event=blocked source=127\.0\.0\.1:\d+ reason="flood"', server.log_text())
    assert _banned_hosts(server.log_text()) == {"127.0.0.1"}
    # The flooding source gets nothing now; another one is served as usual.
    assert not _options_answered(server, "127.0.0.1")
    assert _options_answered(server, OTHER_HOST)
    assert server.alive()


def test_invite_challenges_before_telling_whether_the_target_exists(pbx_server) -> None:
    server = pbx_server(default_config_yaml(sip={"digest_algorithms": ["MD5"]}))
    address = (server.host, server.sip_port)
    answers = {}
    for target in ("1002", "4711"):
        with raw.UdpPeer(address) as peer:
            uri = f"sip:{target}@{server.sip_address}"
            peer.send(raw.build_request("INVITE", uri, peer, from_uri=f"sip:1003@{server.sip_address}",
                                        to_uri=uri, contact=f"<sip:1003@{peer.local[0]}:{peer.local[1]}>"))
            answers[target] = raw.final_response(peer, 5.0, cseq_method="INVITE")
    account, unknown = answers["1002"], answers["4711"]
    assert account is not None and unknown is not None
    assert account.status == unknown.status == 407, (account.start_line, unknown.start_line)
    assert account.reason == unknown.reason
    assert bool(account.get("proxy-authenticate")) and bool(unknown.get("proxy-authenticate"))
    # Authenticated, the caller learns that the number does not exist.
    with raw.UdpPeer(address) as peer:
        uri = f"sip:4711@{server.sip_address}"
        state = raw.Dialogish()
        common = {"from_uri": f"sip:1003@{server.sip_address}", "to_uri": uri, "state": state,
                  "contact": f"<sip:1003@{peer.local[0]}:{peer.local[1]}>"}
        peer.send(raw.build_request("INVITE", uri, peer, **common))
        challenge = raw.final_response(peer, 5.0, cseq_method="INVITE")
        assert challenge is not None and challenge.status == 407
        authorization = raw.digest_authorize(challenge.get("proxy-authenticate"), "INVITE", uri,
                                             "1003", "demo1003")
        peer.send(raw.build_request("INVITE", uri, peer, headers=[("Proxy-Authorization", authorization)],
                                    **common))
        final = raw.final_response(peer, 5.0, cseq_method="INVITE")
    assert final is not None and final.status == 404, final and final.start_line
