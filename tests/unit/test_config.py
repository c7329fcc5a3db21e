from pathlib import Path

import pytest

from pbx.config import ConfigError, ListenAddress, build_config, load_config
from pbx.config_file import load_yaml


def build(text: str, tmp_path: Path | None = None):
    return build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=tmp_path)


def problems_of(text: str, tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build(text, tmp_path)
    return caught.value.problems


def test_embedded_demo_config_is_the_documented_contact_center():
    config = load_config(None, var_dir=Path("/tmp/x"))
    assert ListenAddress("udp", "127.0.0.1", 5060) in config.sip.listen
    assert ListenAddress("tcp", "127.0.0.1", 5060) in config.sip.listen
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert sorted(config.accounts) == [str(n) for n in range(1001, 1011)]
    assert all(a.password == f"demo{a.user}" for a in config.accounts.values())
    assert config.extensions["100"].application in ("greeting", "ivr")
    assert config.store_url == "sqlite+aiosqlite:////tmp/x/centralita.db"


def test_errors_name_file_line_and_key():
    text = "sip:\n  listen: ['udp:1.2.3:5060']\n  bogus: 1\nmedia:\n  port_min: 5\n"
    found = problems_of(text)
    assert "centralita.yaml:3: sip.bogus: unknown key" in found[0]
    assert any(p.startswith("centralita.yaml:2: sip.listen[0]: '1.2.3' is not an IP address") for p in found)
    assert any(p.startswith("centralita.yaml:5: media.port_min: must be between") for p in found)


def test_account_problems_are_each_reported():
    text = "accounts:\n  - {user: '1001', password: a}\n  - {user: '1001', password: b}\n  - {user: 'a b', password: c}\n  - {user: '1003'}\n"
    found = problems_of(text)
    assert any("accounts[1].user: account 1001 is defined twice" in p for p in found)
    assert any("accounts[2].user: 'a b' is not a valid SIP user name" in p for p in found)
    assert any("centralita.yaml:5: accounts[3].password: is required" in p for p in found)


def test_extension_checks_application_and_prompt_file(tmp_path: Path):
    text = "extensions:\n  '200': {application: karaoke}\n  '201': {application: greeting, prompt: missing.wav}\n"
    found = problems_of(text, tmp_path)
    assert any("extensions.200.application: unknown application 'karaoke'" in p for p in found)
    assert any(f"prompt file {tmp_path / 'missing.wav'} does not exist" in p for p in found)


def test_invalid_yaml_reports_line():
    found = problems_of("sip:\n  listen: [unclosed\n")
    assert found[0].startswith("centralita.yaml:")
    assert "invalid YAML" in found[0]


def test_duplicate_keys_are_rejected():
    found = problems_of("sip:\n  realm: a\n  realm: b\n")
    assert found == ["centralita.yaml:3: sip.realm: duplicate key"]


def test_plain_host_port_listens_on_both_transports_and_transport_prefix_picks_one():
    config = build("sip:\n  listen: ['127.0.0.1:5070', 'tcp:127.0.0.2:5071']\n")
    assert config.sip.listen == (
        ListenAddress("udp", "127.0.0.1", 5070),
        ListenAddress("tcp", "127.0.0.1", 5070),
        ListenAddress("tcp", "127.0.0.2", 5071),
    )


def test_store_url_must_name_a_supported_driver():
    found = problems_of("store:\n  url: mysql://x\n")
    assert "store.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://" in found[0]


def test_contact_center_sections_are_validated_like_the_api():
    text = (
        "accounts:\n  - {user: '1001', password: x}\n  - {user: '1002', password: y}\n"
        "sites:\n  - {name: madrid, timezone: Europe/Madrid}\n"
        "agents:\n"
        "  - {extension: 1001, name: Ana, site: madrid, skills: {billing: 11}}\n"
        "  - {extension: '1002', name: Bruno, site: lima}\n"
        "  - {extension: '1003', name: Nobody, site: madrid}\n"
        "queues:\n  - {name: billing, strategy: fastest}\n"
    )
    found = problems_of(text)
    assert any(p.startswith("centralita.yaml:7: agents[0].skills.billing:") for p in found)
    assert any("agents[1].site: unknown site 'lima'" in p for p in found)
    assert any(p.startswith("centralita.yaml:9: agents[2].extension: agent 1003 has no SIP account")
               for p in found)
    assert any(p.startswith("centralita.yaml:11: queues[0].strategy:") for p in found)


def test_contact_center_sections_become_router_and_store_records():
    text = (
        "accounts:\n  - {user: '1001', password: x}\n"
        "sites:\n  - {name: madrid}\n"
        "agents:\n  - {extension: 1001, name: Ana, site: madrid, skills: {billing: 7}, languages: [es]}\n"
        "queues:\n  - {name: billing, skills: {billing: 5}, wrap_up_seconds: 3}\n"
        "customers:\n  - {number: '+34910000001', tier: vip, preferred_agent: '1001'}\n"
        "routing: {auto_login: true}\n"
    )
    config = build(text)
    [agent] = config.contact_center.agents
    assert agent.profile.extension == "1001" and dict(agent.profile.skills) == {"billing": 7}
    [queue] = config.contact_center.queues
    assert (queue.name, dict(queue.skills), queue.wrap_up_seconds) == ("billing", {"billing": 5}, 3)
    assert config.contact_center.customers[0].tier.priority == 3
    assert config.routing.auto_login is True


def test_an_empty_or_spaced_api_token_is_refused_rather_than_locking_everyone_out():
    for token in ('""', '"two words"'):
        [problem] = problems_of(f"http:\n  api_token: {token}\n")
        assert "centralita.yaml:2: http.api_token: must be a non-empty string" in problem
    assert build("http:\n  api_token: s3cret\n").http.api_token == "s3cret"


def test_calls_per_source_default_to_half_the_rtp_port_range():
    config = load_config(None, var_dir=Path("/tmp/x"))
    assert config.media.unauthenticated_calls_per_source is None
    assert config.media.port_capacity == 5000  # even ports of 20000-29999
    assert config.media.calls_per_source_limit == 2500
    small = build("media:\n  port_min: 30000\n  port_max: 30009\n")
    assert small.media.calls_per_source_limit == 2
    explicit = build("media:\n  unauthenticated_calls_per_source: 40\n")
    assert explicit.media.calls_per_source_limit == 40


def test_calls_per_source_must_be_a_positive_integer():
    found = problems_of("media:\n  unauthenticated_calls_per_source: 0\n")
    assert any(p.startswith("centralita.yaml:2: media.unauthenticated_calls_per_source: must be between")
               for p in found), found
