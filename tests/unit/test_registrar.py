import dataclasses
from pathlib import Path

import pytest

from pbx.configuration.server import load_config
from pbx.registration.registrar import Registrar
from pbx.sip.digest import DigestAuthenticator, authorize, select_challenge
from pbx.sip.message import Request, Response, parse_message

CONFIG = load_config(None, var_dir=Path("var"))
SOURCE = ("127.0.0.1", 40000)


@pytest.fixture
def registrar() -> Registrar:
    authenticator = DigestAuthenticator(CONFIG.sip.realm, b"test-secret", 300, ("SHA-256", "MD5"))
    return Registrar(CONFIG.accounts, authenticator, CONFIG.sip)


def register(user: str = "1001", *, contact: str | None = "<sip:1001@127.0.0.1:40000>",
             expires: str | None = "600", cseq: int = 1, call_id: str = "reg-1",
             authorization: str | None = None, to_user: str | None = None) -> Request:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-" + str(cseq),
        f"From: <sip:{user}@127.0.0.1>;tag=abc",
        f"To: <sip:{to_user or user}@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def credentials_for(challenge: Response, user: str, password: str, nc: int = 1) -> str:
    chosen = select_challenge(challenge.headers.values("www-authenticate"))
    assert chosen is not None
    return authorize(chosen, "REGISTER", "sip:127.0.0.1", user, password, "cnonce", nc)


def authenticated_register(registrar: Registrar, now: float = 0.0, password: str = "demo1001",
                           **kwargs) -> Response:
    challenge = registrar.handle_register(register(**kwargs), SOURCE, "UDP", now)
    assert challenge.status == 401
    user = kwargs.get("user", "1001")
    auth = credentials_for(challenge, user, password)
    return registrar.handle_register(register(authorization=auth, cseq=kwargs.pop("cseq", 1) + 1, **kwargs),
                                     SOURCE, "UDP", now)


def test_challenge_offers_sha256_first_then_md5(registrar: Registrar):
    response = registrar.handle_register(register(), SOURCE, "UDP", 0.0)
    assert response.status == 401
    challenges = response.headers.values("www-authenticate")
    assert "algorithm=SHA-256" in challenges[0] and "algorithm=MD5" in challenges[1]
    assert 'realm="centralita"' in challenges[0]


def test_right_password_binds_contact_with_expiry(registrar: Registrar):
    response = authenticated_register(registrar)
    assert response.status == 200
    assert response.headers.get("contact") == "<sip:1001@127.0.0.1:40000>;expires=600"
    [binding] = registrar.bindings("1001", 10.0)
    assert binding.source == SOURCE and binding.transport == "UDP"
    assert registrar.bindings("1001", 601.0) == []


def test_wrong_password_and_unknown_user_get_the_same_answer(registrar: Registrar):
    wrong = authenticated_register(registrar, password="nope")
    unknown = authenticated_register(registrar, user="9999", password="whatever")
    assert wrong.status == unknown.status == 403
    assert wrong.reason == unknown.reason
    assert registrar.bindings("1001", 0.0) == []


def test_credentials_of_one_account_cannot_register_another(registrar: Registrar):
    challenge = registrar.handle_register(register(to_user="1002"), SOURCE, "UDP", 0.0)
    auth = credentials_for(challenge, "1001", "demo1001")
    response = registrar.handle_register(register(to_user="1002", authorization=auth, cseq=2), SOURCE, "UDP", 0.0)
    assert response.status == 403


def test_too_short_expiry_gets_423_with_min_expires(registrar: Registrar):
    response = authenticated_register(registrar, expires="10")
    assert response.status == 423
    assert response.headers.get("min-expires") == str(CONFIG.sip.min_expires)


def test_long_expiry_is_shortened_to_the_maximum(registrar: Registrar):
    response = authenticated_register(registrar, expires="999999")
    assert response.headers.get("contact").endswith(f"expires={CONFIG.sip.max_expires}")


def test_several_contacts_and_removal_with_expires_zero(registrar: Registrar):
    authenticated_register(registrar, contact="<sip:1001@127.0.0.1:40000>")
    authenticated_register(registrar, contact="<sip:1001@127.0.0.1:40002>", call_id="reg-2")
    assert len(registrar.bindings("1001", 1.0)) == 2
    response = authenticated_register(registrar, contact="<sip:1001@127.0.0.1:40000>", expires="0", cseq=5)
    assert response.status == 200
    assert [b.contact_uri for b in registrar.bindings("1001", 1.0)] == ["sip:1001@127.0.0.1:40002"]


def test_wildcard_removes_everything_and_needs_expires_zero(registrar: Registrar):
    authenticated_register(registrar)
    assert authenticated_register(registrar, contact="*", expires="60", cseq=3).status == 400
    assert authenticated_register(registrar, contact="*", expires="0", cseq=5).status == 200
    assert registrar.bindings("1001", 1.0) == []


def test_query_without_contact_lists_bindings(registrar: Registrar):
    authenticated_register(registrar)
    response = authenticated_register(registrar, contact=None, expires=None, cseq=3)
    assert response.status == 200
    assert response.headers.get("contact").startswith("<sip:1001@127.0.0.1:40000>;expires=")


def test_stale_nonce_is_rechallenged_with_stale_true(registrar: Registrar):
    challenge = registrar.handle_register(register(), SOURCE, "UDP", 0.0)
    auth = credentials_for(challenge, "1001", "demo1001")
    later = CONFIG.sip.nonce_lifetime + 1
    response = registrar.handle_register(register(authorization=auth, cseq=2), SOURCE, "UDP", later)
    assert response.status == 401
    assert "stale=TRUE" in response.headers.get("www-authenticate")


def test_reachability_is_announced_on_change_and_on_expiry(registrar: Registrar):
    seen: list[tuple[str, bool]] = []
    registrar.listeners.append(lambda user, reachable: seen.append((user, reachable)))
    authenticated_register(registrar, expires="60")
    authenticated_register(registrar, expires="60", cseq=3)
    registrar.expire(61.0)
    assert seen == [("1001", True), ("1001", False)]
    assert len(registrar) == 0


def test_non_sip_to_uri_is_rejected_before_authentication(registrar: Registrar):
    message = parse_message(
        b"REGISTER sip:example.com SIP/2.0\r\nTo: isbn:2983792873\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"Call-ID: x\r\nCSeq: 1 REGISTER\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n")
    assert isinstance(message, Request)
    assert registrar.handle_register(message, SOURCE, "UDP", 0.0).status == 400


def test_a_phone_that_stops_answering_is_unreachable_and_skipped(registrar: Registrar):
    seen: list[tuple[str, bool]] = []
    registrar.listeners.append(lambda user, reachable: seen.append((user, reachable)))
    authenticated_register(registrar, contact="<sip:1001@127.0.0.1:40000>")
    authenticated_register(registrar, contact="<sip:1001@127.0.0.1:40002>", call_id="reg-2")
    first, second = registrar.bindings("1001", 1.0)
    registrar.set_answering(first, False, 1.0)
    assert registrar.bindings("1001", 1.0, answering_only=True) == [second]
    assert seen == [("1001", True)]  # one contact still answers: still reachable
    registrar.set_answering(second, False, 1.0)
    assert seen == [("1001", True), ("1001", False)]
    registrar.set_answering(first, True, 2.0)
    assert seen[-1] == ("1001", True)


def test_bindings_listeners_hear_every_change_of_an_accounts_bindings(registrar: Registrar):
    heard: list[tuple[str, list[str]]] = []
    registrar.bindings_listeners.append(
        lambda user, bindings: heard.append((user, [b.contact_uri for b in bindings])))
    authenticated_register(registrar)
    authenticated_register(registrar, cseq=3)  # a refresh changes the expiry only
    authenticated_register(registrar, expires="0", cseq=5)
    assert heard == [("1001", ["sip:1001@127.0.0.1:40000"]),
                     ("1001", ["sip:1001@127.0.0.1:40000"]),
                     ("1001", [])]


def test_a_restored_binding_makes_the_account_reachable_until_it_expires(registrar: Registrar):
    reachable: list[tuple[str, bool]] = []
    registrar.listeners.append(lambda user, now_reachable: reachable.append((user, now_reachable)))
    authenticated_register(registrar)
    [binding] = registrar.bindings("1001", 0.0)
    fresh = Registrar(CONFIG.accounts, registrar.authenticator, CONFIG.sip)
    fresh.listeners.append(lambda user, now_reachable: reachable.append((user, now_reachable)))
    assert fresh.restore(binding, 10.0)
    assert fresh.bindings("1001", 10.0) == [binding]
    assert not fresh.restore(dataclasses.replace(binding, user="9999"), 10.0)  # no such account
    assert not fresh.restore(binding, 700.0)  # expired meanwhile
    fresh.expire(700.0)
    assert reachable == [("1001", True), ("1001", True), ("1001", False)]


def test_path_is_stored_and_returned_to_a_phone_that_supports_it(registrar: Registrar):
    """RFC 3327: the binding keeps the proxies' Path as the route toward the phone."""
    challenge = registrar.handle_register(register(), SOURCE, "UDP", 0.0)
    auth = credentials_for(challenge, "1001", "demo1001")
    request = register(authorization=auth, cseq=2)
    request.headers.add("Path", "<sip:127.0.0.1:5080;lr;received=sip:127.0.0.1:40000>")
    request.headers.add("Path", "<sip:edge.example;lr>")
    request.headers.add("Supported", "replaces, path")
    response = registrar.handle_register(request, SOURCE, "UDP", 0.0)
    assert response.status == 200
    expected = ["<sip:127.0.0.1:5080;lr;received=sip:127.0.0.1:40000>", "<sip:edge.example;lr>"]
    assert response.headers.values("path") == expected
    [binding] = registrar.bindings("1001", 1.0)
    assert list(binding.path) == expected


def test_path_is_kept_but_not_echoed_without_supported_path(registrar: Registrar):
    challenge = registrar.handle_register(register(), SOURCE, "UDP", 0.0)
    request = register(authorization=credentials_for(challenge, "1001", "demo1001"), cseq=2)
    request.headers.add("Path", "<sip:127.0.0.1:5080;lr>")
    response = registrar.handle_register(request, SOURCE, "UDP", 0.0)
    assert response.status == 200 and response.headers.values("path") == []
    [binding] = registrar.bindings("1001", 1.0)
    assert binding.path == ("<sip:127.0.0.1:5080;lr>",)


def test_malformed_path_is_refused_and_binds_nothing(registrar: Registrar):
    challenge = registrar.handle_register(register(), SOURCE, "UDP", 0.0)
    request = register(authorization=credentials_for(challenge, "1001", "demo1001"), cseq=2)
    request.headers.add("Path", "<sip:127.0.0.1:5080;lr")
    response = registrar.handle_register(request, SOURCE, "UDP", 0.0)
    assert response.status == 400 and response.reason == "Invalid Path"
    assert registrar.bindings("1001", 1.0) == []


def test_registration_without_path_has_an_empty_route(registrar: Registrar):
    assert authenticated_register(registrar).status == 200
    [binding] = registrar.bindings("1001", 1.0)
    assert binding.path == ()
