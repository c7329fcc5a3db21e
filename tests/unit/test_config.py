from pathlib import Path

import pytest

from pbx.configuration.server import ConfigError, ListenAddress, build_config, load_config
from settings.located_yaml import load_yaml


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
    # In line order, each once.
    assert found[0].startswith("centralita.yaml:2: sip.listen[0]: '1.2.3' is not an IP address")
    assert "centralita.yaml:3: sip.bogus: unknown key" in found[1]
    assert found[2].startswith("centralita.yaml:5: media.port_min: must be between")
    assert len(found) == 3, found


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


DEMO = (Path(__file__).resolve().parents[2] / "pbx" / "default_config.yaml").read_text()


def demo_problems(*replacements: tuple[str, str], tmp_path: Path | None = None) -> list[str]:
    text = DEMO
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return problems_of(text, tmp_path)


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_unknown_overflow_queue_is_an_error_with_its_line():
    found = demo_problems(("overflow: general", "overflow: generall"))
    line = line_of(DEMO, "overflow: general")
    assert found == [f"centralita.yaml:{line}: queues[0].overflow: unknown queue 'generall'"
                     " (define it under queues)"]


def test_every_cross_reference_is_checked_and_reported_in_line_order():
    found = demo_problems(
        ('"100": {application: ivr, flow: demo}', '"100": {application: ivr, flow: demoo}'),
        ("site: madrid, skills: {billing: 5}", "site: madird, skills: {billing: 5}"),
        ('{extension: "1008"', '{extension: "1099"'),
        ("overflow: general\n  - name: general", "overflow: generall\n  - name: general"),
        ('preferred_agent: "1001"', 'preferred_agent: "1011"'),
    )
    assert [problem.split(": ", 2)[1] for problem in found] == [
        "extensions.100.flow", "agents[1].site", "agents[7].extension", "queues[1].overflow",
        "customers[0].preferred_agent"], found
    lines = [int(problem.split(":")[1]) for problem in found]
    assert lines == sorted(lines), found
    assert "unknown flow 'demoo' (shipped flows: demo" in found[0]
    assert "unknown site 'madird'" in found[1]
    assert "agent 1099 has no SIP account" in found[2]
    assert "unknown agent '1011'" in found[4]


def test_one_mistake_is_one_error_not_a_cascade():
    # Ana's skill of 11 is her error; the customer who prefers her is not "unknown agent".
    found = demo_problems(("skills: {billing: 8, support: 3}", "skills: {billing: 11, support: 3}"))
    assert len(found) == 1 and "agents[0].skills.billing" in found[0], found
    # A site with a bad time zone: its agents are not "unknown site" on top.
    found = demo_problems(("timezone: Europe/Madrid", "timezone: Europe/Madird"))
    assert len(found) == 1 and found[0].split(": ", 2)[1].startswith("sites[0]"), found
    # A queue with an error of its own is still a known overflow target.
    found = demo_problems(("  - name: general\n    strategy: longest_idle",
                           "  - name: general\n    strategy: longest_idel"))
    assert len(found) == 1 and "queues[2].strategy" in found[0], found


def test_ivr_flow_file_must_exist(tmp_path: Path):
    found = demo_problems(('"100": {application: ivr, flow: demo}',
                           '"100": {application: ivr, flow: flows/missing.yaml}'),
                          tmp_path=tmp_path)
    assert len(found) == 1 and "extensions.100.flow: flow file" in found[0], found


def test_check_config_reports_flow_references_to_unknown_queues_and_accounts(tmp_path: Path,
                                                                             capsys):
    from pbx.cli import main

    flow = tmp_path / "menu.yaml"
    flow.write_text("name: menu\nstart: menu\nnodes:\n"
                    "  menu: {type: menu, prompt: en/main_menu, options: {1: q, 2: t},"
                    " fallback: ok}\n"
                    "  q: {type: enqueue, queue: generall}\n"
                    "  t: {type: transfer, extension: '1099'}\n"
                    "  ok: {type: enqueue, queue: general}\n")
    config = tmp_path / "centralita.yaml"
    config.write_text(DEMO.replace('"100": {application: ivr, flow: demo}',
                                   '"100": {application: ivr, flow: menu.yaml}'))
    assert main(["check-config", str(config)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {flow}:5: nodes.q.queue: unknown queue 'generall' (not under queues)",
        f"error: {flow}:6: nodes.t.extension: unknown account '1099' (not under accounts)",
    ]
    config.write_text(DEMO)
    assert main(["check-config", str(config)]) == 0
    assert ": OK" in capsys.readouterr().out
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


def test_rules_between_fields_are_reported_even_when_other_fields_are_wrong():
    # The rules between two fields used to wait until the rest of the section was valid,
    # so fixing one error revealed the next; every mistake comes in the first run now.
    found = problems_of("sip:\n  realm: [x]\n  min_expires: 600\n  max_expires: 60\n"
                        "  trace: maybe\n"
                        "media:\n  host: localhost\n  port_min: 30000\n  port_max: 20000\n"
                        "  codecs: [G729]\n")
    assert found == [
        "centralita.yaml:2: sip.realm: must be a string",
        "centralita.yaml:4: sip.max_expires: must not be below min_expires (600)",
        "centralita.yaml:5: sip.trace: must be true or false",
        "centralita.yaml:7: media.host: 'localhost' is not an IP address",
        "centralita.yaml:9: media.port_max: must be above port_min (30000)",
        "centralita.yaml:10: media.codecs[0]: must be one of 'PCMU' or 'PCMA', not 'G729'",
    ]


def test_a_rule_against_a_default_is_checked_too():
    # port_max is not written: its default (29999) is below the port_min given.
    assert problems_of("media:\n  port_min: 40000\n") == [
        "centralita.yaml:1: media.port_max: must be above port_min (40000)"]


def test_a_wrong_field_does_not_also_break_the_rule_that_reads_it():
    # port_min is out of range: that is its error, not also "port_max must be above it".
    assert problems_of("media:\n  port_min: 5\n  port_max: 4\n") == [
        "centralita.yaml:2: media.port_min: must be between 1024 and 65534, not 5",
        "centralita.yaml:3: media.port_max: must be between 1025 and 65535, not 4"]


def test_numbers_and_switches_are_not_coerced_from_text():
    found = problems_of("sip:\n  min_expires: '60'\n  trace: 'yes'\nhistory:\n  ivr_calls: 2.5\n")
    assert found == ["centralita.yaml:2: sip.min_expires: must be an integer",
                     "centralita.yaml:3: sip.trace: must be true or false",
                     "centralita.yaml:5: history.ivr_calls: must be an integer"]


def test_media_engine_defaults_to_embedded_and_rtpengine_needs_its_address():
    assert load_config(None, var_dir=Path("/tmp/x")).media.engine == "embedded"
    chosen = build("media:\n  engine: rtpengine\n  rtpengine: 127.0.0.1:22222\n")
    assert (chosen.media.engine, chosen.media.rtpengine) == ("rtpengine", ("127.0.0.1", 22222))
    found = problems_of("media:\n  engine: rtpengine\n")
    # A missing key is reported at its section.
    assert any(p.startswith("centralita.yaml:1: media.rtpengine: engine is rtpengine: give its ng")
               for p in found), found
    found = problems_of("media:\n  engine: asterisk\n")
    assert any(p.startswith("centralita.yaml:2: media.engine:") for p in found), found
    found = problems_of("media:\n  engine: rtpengine\n  rtpengine: nowhere\n")
    assert any(p.startswith("centralita.yaml:3: media.rtpengine:") for p in found), found


def test_how_long_an_interrupted_caller_keeps_their_place_is_read_and_checked():
    assert build("routing: {interrupted_caller_keeps_place_seconds: 90}\n").routing \
        .interrupted_caller_keeps_place_seconds == 90
    assert build("").routing.interrupted_caller_keeps_place_seconds == 600
    found = problems_of("routing:\n  interrupted_caller_keeps_place_seconds: -5\n")
    assert any(p.startswith("centralita.yaml:2: routing.interrupted_caller_keeps_place_seconds: ")
               for p in found), found
