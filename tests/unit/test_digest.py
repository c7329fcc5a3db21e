"""Digest authentication: RFC 7616 vectors, the server's verdicts, and hostile input."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.digest import (
    DigestAuthenticator,
    authorize,
    parse_digest_parameters,
    select_challenge,
)

REALM = "pbx.example.com"
URI = "sip:pbx.example.com"
PASSWORDS = {"1001": "demo1001", "agent7": "s3cret pass"}
NOW = 1_700_000_000.0


def lookup(username: str) -> str | None:
    return PASSWORDS.get(username)


@pytest.fixture
def server() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, b"k" * 32, nonce_lifetime=300.0)


def challenge_for(server: DigestAuthenticator, algorithm: str, now: float = NOW) -> str:
    for value in server.challenge(now):
        if f"algorithm={algorithm}," in value:
            return value
    raise AssertionError(f"no {algorithm} challenge")


# --- RFC 7616 §3.9.1: the worked example, for both algorithms.

RFC_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_response(algorithm: str, response: str) -> None:
    value = authorize(
        RFC_CHALLENGE.format(algorithm=algorithm),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    parameters = parse_digest_parameters(value)
    assert parameters is not None
    assert parameters["response"] == response
    assert parameters["qop"] == "auth"
    assert parameters["nc"] == "00000001"
    assert parameters["algorithm"] == algorithm
    assert parameters["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc2069_response_without_qop() -> None:
    # RFC 2069's challenge; the response is the one other implementations publish for it.
    value = authorize(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        "GET",
        "/dir/index.html",
        "Mufasa",
        "CircleOfLife",
        cnonce="unused",
    )
    parameters = parse_digest_parameters(value)
    assert parameters is not None
    assert parameters["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in parameters and "nc" not in parameters and "cnonce" not in parameters


# --- challenges


def test_challenge_lists_sha256_first_with_required_parameters(
    server: DigestAuthenticator,
) -> None:
    values = server.challenge(NOW)
    assert len(values) == 2
    first, second = (parse_digest_parameters(value) for value in values)
    assert first is not None and second is not None
    assert first["algorithm"] == "SHA-256" and second["algorithm"] == "MD5"
    for parameters in (first, second):
        assert parameters["realm"] == REALM
        assert parameters["qop"] == "auth"
        assert parameters["nonce"] and parameters["opaque"]
        assert "stale" not in parameters


def test_stale_challenge_says_so(server: DigestAuthenticator) -> None:
    for value in server.challenge(NOW, stale=True):
        parameters = parse_digest_parameters(value)
        assert parameters is not None and parameters["stale"] == "TRUE"


def test_every_challenge_has_a_fresh_nonce(server: DigestAuthenticator) -> None:
    nonces = set()
    for _ in range(50):
        parameters = parse_digest_parameters(server.challenge(NOW)[0])
        assert parameters is not None
        nonces.add(parameters["nonce"])
    assert len(nonces) == 50


def test_select_challenge_prefers_sha256(server: DigestAuthenticator) -> None:
    md5_first = list(reversed(server.challenge(NOW)))
    chosen = select_challenge(md5_first)
    assert chosen is not None and "algorithm=SHA-256" in chosen
    assert select_challenge(['Digest realm="r", nonce="n", algorithm=SHA-512-256']) is None
    assert select_challenge(['Basic realm="r"']) is None


# --- verification round trips


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip_accepts_right_password(server: DigestAuthenticator, algorithm: str) -> None:
    header = authorize(challenge_for(server, algorithm), "REGISTER", URI, "1001", "demo1001", "c1")
    result = server.verify(header, "REGISTER", lookup, NOW + 1, request_uri=URI)
    assert result.ok and not result.stale
    assert result.username == "1001"


def test_escaped_username_and_password_with_space(server: DigestAuthenticator) -> None:
    passwords = {'we"ird\\name': "pw", "agent7": "s3cret pass"}
    for username, password in passwords.items():
        header = authorize(challenge_for(server, "MD5"), "INVITE", URI, username, password, "cn")
        result = server.verify(header, "INVITE", passwords.get, NOW)
        assert result.ok, result.reason
        assert result.username == username


def test_method_is_part_of_the_digest(server: DigestAuthenticator) -> None:
    header = authorize(challenge_for(server, "SHA-256"), "REGISTER", URI, "1001", "demo1001", "c")
    result = server.verify(header, "INVITE", lookup, NOW)
    assert not result.ok and not result.stale


def test_nonce_counts_must_increase(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "SHA-256")
    first = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c", nc=1)
    second = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c", nc=2)
    assert server.verify(first, "REGISTER", lookup, NOW).ok
    assert server.verify(second, "REGISTER", lookup, NOW).ok
    replayed = server.verify(first, "REGISTER", lookup, NOW)
    assert not replayed.ok
    # The digest itself is valid, so the phone may retry with a new nonce without a prompt.
    assert replayed.stale
    assert not server.verify(second, "REGISTER", lookup, NOW).ok


def test_failed_attempts_do_not_consume_nonce_counts(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "MD5")
    forged = authorize(challenge, "REGISTER", URI, "1001", "guess", "c", nc=5)
    assert not server.verify(forged, "REGISTER", lookup, NOW).ok
    genuine = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c", nc=1)
    assert server.verify(genuine, "REGISTER", lookup, NOW).ok


def test_expired_nonce_with_right_password_is_stale(server: DigestAuthenticator) -> None:
    header = authorize(challenge_for(server, "SHA-256"), "REGISTER", URI, "1001", "demo1001", "c")
    result = server.verify(header, "REGISTER", lookup, NOW + 301)
    assert not result.ok and result.stale
    assert result.reason == "nonce expired"


def test_expired_nonce_with_wrong_password_is_not_stale(server: DigestAuthenticator) -> None:
    header = authorize(challenge_for(server, "SHA-256"), "REGISTER", URI, "1001", "nope", "c")
    result = server.verify(header, "REGISTER", lookup, NOW + 301)
    assert not result.ok and not result.stale


def test_nonce_from_another_secret_or_realm_is_forged(server: DigestAuthenticator) -> None:
    impostors = [
        DigestAuthenticator(REALM, b"other secret"),
        DigestAuthenticator("other.example.com", b"k" * 32),
    ]
    for impostor in impostors:
        parameters = parse_digest_parameters(impostor.challenge(NOW)[0])
        assert parameters is not None
        challenge = f'Digest realm="{REALM}", nonce="{parameters["nonce"]}", qop="auth"'
        header = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c")
        result = server.verify(header, "REGISTER", lookup, NOW)
        assert not result.ok and not result.stale
        assert result.reason == "nonce not issued by us"


def test_other_spellings_of_a_nonce_are_not_ours(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "SHA-256")
    parameters = parse_digest_parameters(challenge)
    assert parameters is not None
    nonce = parameters["nonce"]
    # 32 bytes take 43 base64 digits, leaving 2 unused bits in the last one: setting one gives
    # a text that decodes to the very same bytes.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet[alphabet.index(nonce[-1]) ^ 1]
    respelled = nonce[:-1] + last
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(nonce + "=")
    header = authorize(
        challenge.replace(nonce, respelled), "REGISTER", URI, "1001", "demo1001", "c"
    )
    result = server.verify(header, "REGISTER", lookup, NOW)
    assert not result.ok and result.reason == "nonce not issued by us"


def test_empty_password_is_a_password() -> None:
    server = DigestAuthenticator(REALM, b"k" * 32)
    header = authorize(server.challenge(NOW)[0], "REGISTER", URI, "kiosk", "", "c")
    assert server.verify(header, "REGISTER", {"kiosk": ""}.get, NOW).ok


def test_wrong_opaque_is_rejected(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "SHA-256")
    parameters = parse_digest_parameters(challenge)
    assert parameters is not None
    header = authorize(
        challenge.replace(parameters["opaque"], "0" * 32), "REGISTER", URI, "1001", "demo1001", "c"
    )
    result = server.verify(header, "REGISTER", lookup, NOW)
    assert not result.ok and result.reason == "wrong opaque"


def test_tampered_nonce_is_rejected(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "SHA-256")
    parameters = parse_digest_parameters(challenge)
    assert parameters is not None
    nonce = parameters["nonce"]
    tampered = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    header = authorize(challenge.replace(nonce, tampered), "REGISTER", URI, "1001", "demo1001", "c")
    result = server.verify(header, "REGISTER", lookup, NOW)
    assert not result.ok and result.reason == "nonce not issued by us"


def test_wrong_password_and_unknown_user_look_alike(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "SHA-256")
    wrong = server.verify(
        authorize(challenge, "REGISTER", URI, "1001", "bad", "c"), "REGISTER", lookup, NOW
    )
    unknown = server.verify(
        authorize(challenge, "REGISTER", URI, "9999", "bad", "c"), "REGISTER", lookup, NOW
    )
    assert (wrong.ok, wrong.stale) == (unknown.ok, unknown.stale) == (False, False)
    assert wrong.reason == "wrong password" and unknown.reason == "unknown user"


def test_unknown_user_costs_the_same_hashing(
    server: DigestAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pbx.sip.digest as digest

    calls: list[str] = []
    real_hex = digest._hex

    def counting_hex(algorithm: str, text: str) -> str:
        calls.append(algorithm)
        return real_hex(algorithm, text)

    monkeypatch.setattr(digest, "_hex", counting_hex)
    challenge = challenge_for(server, "SHA-256")
    counts = []
    for username in ("1001", "9999"):
        header = authorize(challenge, "REGISTER", URI, username, "bad", "c")
        calls.clear()
        server.verify(header, "REGISTER", lookup, NOW)
        counts.append(len(calls))
    assert counts[0] == counts[1] == 3


def test_request_uri_must_match_except_scheme_and_host_case(server: DigestAuthenticator) -> None:
    challenge = challenge_for(server, "MD5")
    header = authorize(
        challenge, "INVITE", "SIP:Agent@PBX.Example.com;transport=udp", "1001", "demo1001", "c"
    )
    assert server.verify(
        header, "INVITE", lookup, NOW, request_uri="sip:Agent@pbx.example.com;transport=udp"
    ).ok
    other = authorize(
        challenge, "INVITE", "sip:agent@pbx.example.com", "1001", "demo1001", "c", nc=2
    )
    result = server.verify(other, "INVITE", lookup, NOW, request_uri="sip:Agent@pbx.example.com")
    assert not result.ok and result.reason == "uri does not match the Request-URI"


def test_rfc2069_client_accepted_once_per_nonce(server: DigestAuthenticator) -> None:
    parameters = parse_digest_parameters(challenge_for(server, "MD5"))
    assert parameters is not None
    old_style = f'Digest realm="{REALM}", nonce="{parameters["nonce"]}"'
    header = authorize(old_style, "REGISTER", URI, "1001", "demo1001", "unused")
    assert "qop" not in header
    assert server.verify(header, "REGISTER", lookup, NOW).ok
    again = server.verify(header, "REGISTER", lookup, NOW)
    assert not again.ok and again.stale


def test_no_qop_can_be_refused() -> None:
    strict = DigestAuthenticator(REALM, b"k" * 32, allow_no_qop=False)
    parameters = parse_digest_parameters(strict.challenge(NOW)[1])
    assert parameters is not None
    header = authorize(
        f'Digest realm="{REALM}", nonce="{parameters["nonce"]}"',
        "REGISTER",
        URI,
        "1001",
        "demo1001",
        "unused",
    )
    result = strict.verify(header, "REGISTER", lookup, NOW)
    assert not result.ok and result.reason == "qop required"


def test_algorithm_not_offered_is_refused() -> None:
    sha_only = DigestAuthenticator(REALM, b"k" * 32, algorithms=("SHA-256",))
    assert len(sha_only.challenge(NOW)) == 1
    parameters = parse_digest_parameters(sha_only.challenge(NOW)[0])
    assert parameters is not None
    md5_challenge = f'Digest realm="{REALM}", nonce="{parameters["nonce"]}", qop="auth"'
    header = authorize(md5_challenge, "REGISTER", URI, "1001", "demo1001", "c")
    result = sha_only.verify(header, "REGISTER", lookup, NOW)
    assert not result.ok and "not offered" in result.reason


def test_nonce_tracking_is_bounded_and_never_reopens_replay() -> None:
    server = DigestAuthenticator(REALM, b"k" * 32, max_tracked_nonces=2)
    headers = []
    for offset in range(3):
        challenge = challenge_for(server, "MD5", now=NOW + offset)
        headers.append(authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c"))
    for header in headers:
        assert server.verify(header, "REGISTER", lookup, NOW + 10).ok
    assert len(server._nonce_counts) == 2
    # The oldest nonce was dropped: replaying it must still fail, as stale.
    replay = server.verify(headers[0], "REGISTER", lookup, NOW + 10)
    assert not replay.ok and replay.stale
    # Refusing it must not evict a nonce still in use, which would let that one be replayed.
    assert not server.verify(headers[1], "REGISTER", lookup, NOW + 10).ok
    second_nonce = parse_digest_parameters(headers[1])
    assert second_nonce is not None
    challenge = f'Digest realm="{REALM}", nonce="{second_nonce["nonce"]}", qop="auth"'
    follow_up = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c", nc=2)
    assert server.verify(follow_up, "REGISTER", lookup, NOW + 10).ok


def test_expired_nonces_are_forgotten(server: DigestAuthenticator) -> None:
    for offset in range(5):
        challenge = challenge_for(server, "SHA-256", now=NOW + offset)
        header = authorize(challenge, "REGISTER", URI, "1001", "demo1001", "c")
        assert server.verify(header, "REGISTER", lookup, NOW + offset).ok
    assert len(server._nonce_counts) == 5
    fresh = authorize(
        challenge_for(server, "MD5", now=NOW + 400), "REGISTER", URI, "1001", "demo1001", "c"
    )
    assert server.verify(fresh, "REGISTER", lookup, NOW + 400).ok
    assert len(server._nonce_counts) == 1


# --- header parsing


def test_parser_handles_case_spacing_escapes_and_commas() -> None:
    parameters = parse_digest_parameters(
        'DIGEST  UserName = "a\\"b,c" ,, Realm="r, s", nc=00000001 ,qop=auth,uri="sip:x"'
    )
    assert parameters == {
        "username": 'a"b,c',
        "realm": "r, s",
        "nc": "00000001",
        "qop": "auth",
        "uri": "sip:x",
    }


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic dXNlcjpwYXNz",
        'Digest username="unterminated',
        'Digest username="a" realm="b"',  # missing comma
        'Digest username="a", username="b"',  # repeated parameter
        "Digest =value",
        "Digest username",
        'Digest username="a\\',
        "Digest a=b c",
    ],
)
def test_parser_rejects_malformed(value: str) -> None:
    assert parse_digest_parameters(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        'Digest username="1001"',
        'Digest username="1001", realm="pbx.example.com", nonce="x", uri="sip:a", response="zz"',
        'Digest username="1001", realm="pbx.example.com", nonce="x", uri="sip:a", '
        'response="00000000000000000000000000000000", qop=auth, nc=zz, cnonce="c"',
        "Digest " + "a=b, " * 5000,
    ],
)
def test_garbage_is_refused_with_a_reason(server: DigestAuthenticator, value: str) -> None:
    result = server.verify(value, "REGISTER", lookup, NOW)
    assert not result.ok and not result.stale and result.reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(value: str) -> None:
    server = DigestAuthenticator(REALM, b"k" * 32)
    result = server.verify(value, "REGISTER", lookup, NOW)
    assert not result.ok


_PARAMETER_NAMES = st.sampled_from(
    [
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "opaque",
        "userhash",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_PARAMETER_NAMES, st.text(max_size=40), st.booleans()), max_size=12))
def test_structured_garbage_never_raises(parts: list[tuple[str, str, bool]]) -> None:
    server = DigestAuthenticator(REALM, b"k" * 32)
    rendered = ", ".join(
        f'{name}="{value}"' if quoted else f"{name}={value}" for name, value, quoted in parts
    )
    result = server.verify("Digest " + rendered, "REGISTER", lookup, NOW, request_uri=URI)
    assert not result.ok
