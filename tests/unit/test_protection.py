"""The per-source guard (pbx.edge.protection): pure, driven by an explicit clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pbx.cli import _apply_overrides, build_parser
from pbx.configuration.server import ConfigError, ListenAddress, build_config, load_config
from pbx.edge.protection import (
    ProtectionSettings,
    SourceGuard,
    TokenBucket,
    Verdict,
    security_event,
)
from settings.located_yaml import load_yaml

ATTACKER = ("203.0.113.7", 5062)
OTHER = ("198.51.100.2", 5060)


def guard(**settings: object) -> SourceGuard:
    values: dict[str, object] = {"trusted": ()}
    values.update(settings)
    return SourceGuard(ProtectionSettings(**values))  # type: ignore[arg-type]


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=10, capacity=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True
    assert bucket.is_full(100.0)


def test_message_rate_is_limited_per_source() -> None:
    g = guard(requests_per_second=10, request_burst=20, flood_block_after=1000)
    verdicts = [g.admit(ATTACKER, False, 0.0) for _ in range(25)]
    assert verdicts.count(Verdict.ADMIT) == 20
    assert verdicts[-1] is Verdict.RATE_LIMITED
    # Another source is untouched, and the attacker gets tokens back with time.
    assert g.admit(OTHER, False, 0.0) is Verdict.ADMIT
    assert g.admit(ATTACKER, False, 0.5) is Verdict.ADMIT


def test_invites_have_their_own_tighter_limit() -> None:
    g = guard(requests_per_second=100, request_burst=100, invites_per_second=1, invite_burst=3)
    assert [g.admit(ATTACKER, True, 0.0) for _ in range(4)] == [Verdict.ADMIT] * 3 + [Verdict.INVITE_LIMITED]
    assert g.admit(ATTACKER, False, 0.0) is Verdict.ADMIT  # a BYE still passes


def test_a_sustained_flood_blocks_the_source_until_the_block_ends() -> None:
    g = guard(requests_per_second=1, request_burst=1, flood_block_after=5, block_seconds=60)
    verdicts = [g.admit(ATTACKER, False, 1.0) for _ in range(7)]
    assert verdicts[:1] == [Verdict.ADMIT]
    assert verdicts[-1] is Verdict.BLOCKED
    assert g.is_blocked(ATTACKER[0], 30.0)
    assert g.admit(ATTACKER, False, 30.0) is Verdict.BLOCKED  # tokens are back, still blocked
    assert g.admit(ATTACKER, False, 62.0) is Verdict.ADMIT
    assert g.blocked_sources(62.0) == 0


def test_trusted_networks_skip_rate_limits_but_not_login_blocking() -> None:
    g = guard(trusted=("127.0.0.0/8",), requests_per_second=1, request_burst=1, auth_failures=3)
    local = ("127.0.0.1", 5060)
    assert all(g.admit(local, True, 0.0) is Verdict.ADMIT for _ in range(1000))
    for _ in range(3):
        g.auth_failed(local, "1001", "call", "wrong password", 1.0)
    assert g.admit(local, False, 1.0) is Verdict.FORBIDDEN


def test_failed_logins_block_and_the_block_answers_forbidden(caplog: pytest.LogCaptureFixture) -> None:
    g = guard(auth_failures=3, auth_window=10, block_seconds=100)
    caplog.set_level(logging.INFO, "pbx.security")
    assert g.auth_failed(ATTACKER, "1001", "a@b", "wrong password", 0.0) is False
    assert g.auth_failed(ATTACKER, "1001", "a@b", "wrong password", 1.0) is False
    assert g.auth_failed(ATTACKER, "1001", "a@b", "wrong password", 2.0) is True
    assert g.admit(ATTACKER, False, 3.0) is Verdict.FORBIDDEN
    assert g.admit(OTHER, False, 3.0) is Verdict.ADMIT
    assert g.admit(ATTACKER, False, 103.0) is Verdict.ADMIT
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ('security event=auth-failed source=203.0.113.7:5062 user="1001"'
                        ' call_id="a@b" reason="wrong password"')
    assert 'security event=blocked source=203.0.113.7:5062 reason="auth-failures" seconds=100' in lines


def test_failures_outside_the_window_do_not_add_up() -> None:
    g = guard(auth_failures=3, auth_window=10)
    for at in (0.0, 11.0, 22.0, 33.0):
        assert g.auth_failed(ATTACKER, "1001", "x", "wrong password", at) is False
    assert g.admit(ATTACKER, False, 34.0) is Verdict.ADMIT


def test_log_fields_chosen_by_an_attacker_cannot_forge_a_line() -> None:
    line = security_event("auth-failed", ("2001:db8::1", 5060), user='x" source=1.2.3.4:1\nfake',
                          call_id=None)
    assert "\n" not in line
    assert line.startswith("security event=auth-failed source=[2001:db8::1]:5060 user=")
    assert line.count("source=") == 2 and '\\"' in line


def test_disabled_protection_admits_everything() -> None:
    g = guard(enabled=False, requests_per_second=1, request_burst=1)
    assert all(g.admit(ATTACKER, True, 0.0) is Verdict.ADMIT for _ in range(100))


def test_idle_sources_are_forgotten_and_memory_is_capped() -> None:
    g = guard(max_sources=100, requests_per_second=10, request_burst=10)
    for i in range(250):
        g.admit((f"10.0.{i // 256}.{i % 256}", 5060), False, 0.0)
    assert len(g) <= 100
    g.auth_failed(ATTACKER, "1001", "x", "wrong password", 0.0)
    assert g.prune(100.0) >= 1
    assert len(g) == 0


def build(text: str, tmp_path: Path | None = None):
    return build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=tmp_path)


def test_protection_tcp_and_tls_settings_are_read() -> None:
    config = build("sip:\n  listen: ['tls:127.0.0.1:5061']\n  protection:\n    trusted: [10.0.0.0/8]\n"
                   "    invites_per_second: 3\n  tcp:\n    idle_timeout: 90\n")
    assert config.sip.listen == (ListenAddress("tls", "127.0.0.1", 5061),)
    assert config.sip.protection.trusted == ("10.0.0.0/8",)
    assert config.sip.protection.invites_per_second == 3
    assert config.sip.streams.idle_timeout == 90
    assert config.sip.tls.certificate is None


def test_protection_errors_name_file_line_and_key(tmp_path: Path) -> None:
    text = ("sip:\n  protection:\n    trusted: [10.0.0/33]\n    auth_failures: 0\n    bogus: 1\n"
            "  tcp:\n    max_connections: -1\n  tls:\n    certificate: missing.pem\n")
    with pytest.raises(ConfigError) as caught:
        build(text, tmp_path)
    found = caught.value.problems
    assert any(p.startswith("centralita.yaml:3: sip.protection.trusted[0]: '10.0.0/33' is not an IP network")
               for p in found), found
    assert any(p.startswith("centralita.yaml:4: sip.protection.auth_failures: must be between") for p in found)
    assert any(p.startswith("centralita.yaml:5: sip.protection.bogus: unknown key") for p in found)
    assert any(p.startswith("centralita.yaml:7: sip.tcp.max_connections: must be between") for p in found)
    assert any(p.startswith("centralita.yaml:9: sip.tls.certificate:") and "does not exist" in p
               for p in found), found
    # The missing key is that file's own mistake: reported once the certificate is found.
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError) as caught:
        build("sip:\n  tls:\n    certificate: cert.pem\n", tmp_path)
    assert caught.value.problems == [
        "centralita.yaml:2: sip.tls.key: give both certificate and key, or neither"
        " (a self-signed pair is generated)"]


def test_the_demo_listens_for_tls_on_5061() -> None:
    config = load_config(None)
    assert ListenAddress("tls", "127.0.0.1", 5061) in config.sip.listen
    assert config.sip.protection.enabled


def test_sip_listen_may_be_given_more_than_once() -> None:
    args = build_parser().parse_args(["serve", "--sip-listen", "127.0.0.1:5070",
                                      "--sip-listen", "tls:127.0.0.1:5071"])
    config = _apply_overrides(load_config(None), args)
    assert config.sip.listen == (ListenAddress("udp", "127.0.0.1", 5070),
                                 ListenAddress("tcp", "127.0.0.1", 5070),
                                 ListenAddress("tls", "127.0.0.1", 5071))
