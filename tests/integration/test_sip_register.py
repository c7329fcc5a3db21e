"""REGISTER against the real server with digest auth, over UDP and TCP.

Each test uses its own account of the demo config (1001-1010, password demo<ext>) so
bindings left by one test never confuse another on the shared server.
"""

from __future__ import annotations

import re

import pytest

from integration.server_fixture import default_config_yaml, start_pbx
from peers import raw

pytestmark = pytest.mark.integration

TRANSPORTS = ["udp", "tcp"]


@pytest.fixture(scope="module")
def sha256_pbx(tmp_path_factory: pytest.TempPathFactory):
    """A server that opts into SHA-256 (preferred) next to MD5, as the README documents."""
    server = start_pbx(tmp_path_factory.mktemp("pbx-sha256"), config_yaml=default_config_yaml(
        sip={"digest_algorithms": ["SHA-256", "MD5"]}))
    yield server
    server.stop()


def _peer(server, transport: str) -> raw.UdpPeer | raw.TcpPeer:
    return raw.connect(transport, (server.host, server.sip_port))


def _algorithms(response: raw.SipMessage) -> set[str]:
    found = set()
    for challenge in response.get_all("www-authenticate"):
        match = re.search(r"algorithm\s*=\s*\"?([\w-]+)", challenge, re.I)
        found.add((match.group(1) if match else "MD5").upper())
    return found


def _clear(peer, user: str) -> None:
    result = raw.register(peer, user, f"demo{user}", contact="*", expires=0)
    assert result.final is not None and result.final.status == 200, (
        f"could not clear bindings of {user}: {result.final and result.final.start_line}")


def _first_challenge(server, transport: str) -> raw.SipMessage:
    with _peer(server, transport) as peer:
        aor = f"sip:1001@{server.sip_address}"
        peer.send(raw.build_request("REGISTER", f"sip:{server.sip_address}", peer,
                                    from_uri=aor, to_uri=aor, headers=[("Expires", "60")],
                                    contact=f"<sip:1001@{peer.local[0]}:{peer.local[1]}>"))
        answer = raw.final_response(peer, 5.0, cseq_method="REGISTER")
    assert answer is not None, "no answer to an unauthenticated REGISTER"
    assert answer.status == 401, answer.start_line
    return answer


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_demo_challenges_with_md5_only(shared_pbx, transport: str) -> None:
    # What every common phone answers; baresip 1.0.0 gives up if any SHA-256 one is listed.
    answer = _first_challenge(shared_pbx, transport)
    assert _algorithms(answer) == {"MD5"}, answer.get_all("www-authenticate")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sha256_opt_in_challenges_sha256_first_then_md5(sha256_pbx, transport: str) -> None:
    answer = _first_challenge(sha256_pbx, transport)
    challenges = answer.get_all("www-authenticate")
    assert "algorithm=SHA-256" in challenges[0] and "algorithm=MD5" in challenges[1], challenges
    for challenge in challenges:
        assert 'realm="centralita"' in challenge, challenge
        assert "nonce=" in challenge, challenge


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_right_password_binds(shared_pbx, sha256_pbx, transport: str,
                                       algorithm: str) -> None:
    server = sha256_pbx if algorithm == "SHA-256" else shared_pbx
    user = "1005"
    with _peer(server, transport) as peer:
        contact_uri = f"sip:{user}@{peer.local[0]}:{peer.local[1]}"
        if transport == "tcp":
            contact_uri += ";transport=tcp"
        result = raw.register(peer, user, f"demo{user}", expires=300, algorithm=algorithm,
                              contact=f"<{contact_uri}>")
        assert result.challenge is not None, "REGISTER was not challenged"
        assert result.final is not None, "no answer to the authenticated REGISTER"
        assert result.final.status == 200, f"{result.final.start_line}\n{result.final}"
        to_tag = result.final.to_tag
        bindings = raw.contact_expiries(result.final)
        _clear(peer, user)
        assert contact_uri in bindings, f"binding missing from the 200: {bindings}"
        assert bindings[contact_uri] is not None and 0 < bindings[contact_uri] <= 300, bindings
        # RFC 3261 8.2.6.2: a UAS (a registrar is one) tags the To of every final response.
        assert to_tag, f"the 200 to REGISTER has no To tag:\n{result.final}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_and_unknown_user_look_the_same(shared_pbx, transport: str) -> None:
    with _peer(shared_pbx, transport) as peer:
        wrong = raw.register(peer, "1006", "not-the-password", expires=300)
    with _peer(shared_pbx, transport) as peer:
        unknown = raw.register(peer, "7777", "demo7777", expires=300)
    assert wrong.final is not None and unknown.final is not None
    assert wrong.final.status in (401, 403), wrong.final.start_line
    assert unknown.final.status == wrong.final.status, (
        f"an unknown user ({unknown.final.start_line}) must not be told apart from a wrong "
        f"password ({wrong.final.start_line})")
    assert unknown.challenge is not None, "an unknown user must be challenged like any other"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_expires_zero_removes_one_binding(shared_pbx, transport: str) -> None:
    user = "1007"
    with _peer(shared_pbx, transport) as peer:
        host, port = peer.local
        keep, drop = f"sip:{user}@{host}:{port};keep=1", f"sip:{user}@{host}:{port};drop=1"
        for uri in (keep, drop):
            result = raw.register(peer, user, f"demo{user}", contact=f"<{uri}>", expires=300)
            assert result.final is not None and result.final.status == 200, result.final
        both = raw.contact_expiries(result.final)
        assert keep in both and drop in both, both
        result = raw.register(peer, user, f"demo{user}", contact=f"<{drop}>", expires=0)
        assert result.final is not None and result.final.status == 200, result.final
        left = raw.contact_expiries(result.final)
        assert drop not in left, f"Expires: 0 did not remove the binding: {left}"
        assert keep in left, f"Expires: 0 removed the wrong binding: {left}"
        _clear(peer, user)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_star_with_expires_zero_removes_all(shared_pbx, transport: str) -> None:
    user = "1008"
    with _peer(shared_pbx, transport) as peer:
        host, port = peer.local
        for index in range(3):
            uri = f"sip:{user}@{host}:{port};line={index}"
            result = raw.register(peer, user, f"demo{user}", contact=f"<{uri}>", expires=300)
            assert result.final is not None and result.final.status == 200, result.final
        assert len(raw.contact_expiries(result.final)) >= 3, result.final
        result = raw.register(peer, user, f"demo{user}", contact="*", expires=0)
        assert result.final is not None and result.final.status == 200, result.final
        assert raw.contact_expiries(result.final) == {}, result.final
        # A REGISTER without Contact is a query: it lists what is bound.
        listing = raw.register(peer, user, f"demo{user}", query=True, expires=None)
        assert listing.final is not None and listing.final.status == 200, listing.final
        assert raw.contact_expiries(listing.final) == {}, f"bindings survived '*': {listing.final}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_too_short_expires_gets_423_with_min_expires(shared_pbx, transport: str) -> None:
    user = "1009"
    with _peer(shared_pbx, transport) as peer:
        result = raw.register(peer, user, f"demo{user}", expires=1)
        assert result.final is not None, "no answer to a REGISTER with Expires: 1"
        assert result.final.status == 423, result.final.start_line
        minimum = result.final.get("min-expires")
        assert minimum is not None and minimum.strip().isdigit(), result.final
        assert int(minimum) > 1
        # Retrying with the minimum the server named succeeds.
        result = raw.register(peer, user, f"demo{user}", expires=int(minimum))
        assert result.final is not None and result.final.status == 200, result.final
        _clear(peer, user)
