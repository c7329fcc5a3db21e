"""The site, trunks and callbacks sections of the configuration."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pbx.cli import build_parser, main
from pbx.configuration.server import ConfigError, build_config
from settings.located_yaml import load_yaml

QUEUES = """\
sites: [{name: madrid, timezone: Europe/Madrid}]
queues:
  - {name: billing, skills: {billing: 1}}
  - {name: support, skills: {support: 1}}
"""


def build(text: str):
    return build_config(load_yaml(QUEUES + text, "centralita.yaml"), var_dir=Path("var"), base_dir=None)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build(text)
    return caught.value.problems


ONE_TRUNK = """\
site: madrid
trunks:
  - name: carrier
    address: 127.0.0.1:5080
    transport: tcp
    username: centralita
    password: s3cret
    caller_id: "+34 910 000 000"
callbacks:
  lease_seconds: 10
  queues:
    billing:
      max_attempts: 5
      retry_delay_seconds: 30
      business_hours: {timezone: Europe/Madrid, weekly: {mon-fri: "09:00-18:00"}}
"""


def test_a_single_trunk_is_every_queues_trunk_and_the_rules_become_policies() -> None:
    config = build(ONE_TRUNK)
    assert config.site == "madrid"
    [trunk] = config.callbacks.trunks
    assert (trunk.host, trunk.port, trunk.transport) == ("127.0.0.1", 5080, "tcp")
    assert trunk.caller_id == "+34910000000"
    assert config.callbacks.trunk_for("billing") is trunk
    assert config.callbacks.trunk_for("support") is trunk
    policy = config.callbacks.callbacks.for_queue("billing").policy()
    assert policy.max_attempts == 5 and policy.retry_delay == timedelta(seconds=30)
    assert config.callbacks.callbacks.for_queue("support").policy().max_attempts == 3
    hours = config.callbacks.callbacks.for_queue("billing").business_hours.hours()
    assert hours.is_open(datetime(2026, 3, 4, 9, 0, tzinfo=UTC))  # Wednesday 10:00 in Madrid
    assert not hours.is_open(datetime(2026, 3, 7, 9, 0, tzinfo=UTC))  # Saturday


def test_without_a_site_the_server_is_the_one_local_site() -> None:
    config = build("")
    assert config.site == "local"
    assert config.callbacks.trunks == () and config.callbacks.trunk_for("billing") is None


def test_trunk_mistakes_are_named_by_line_and_key() -> None:
    found = problems_of("""\
trunks:
  - name: carrier
    address: carrier.example:5060
    transport: tls
    username: centralita
    caller_id: call me
  - {name: carrier, address: "127.0.0.1:5060", caller_id: "600"}
callbacks:
  queues:
    billing: {trunk: nowhere, max_attempts: 0}
    sales: {}
""")
    text = "\n".join(found)
    assert "centralita.yaml:7: trunks[0].address: 'carrier.example' is not an IP address" in text
    assert "centralita.yaml:8: trunks[0].transport: must be one of 'udp' or 'tcp', not 'tls'" in text
    assert "centralita.yaml:10: trunks[0].caller_id: the callback number contains letters" in text
    assert "centralita.yaml:11: trunks[1].name: trunk carrier is defined twice" in text
    assert "centralita.yaml:14: callbacks.queues.billing.max_attempts: must be between 1 and 20, not 0" in text
    # The password is missing beside the username: reported with the other mistakes.
    assert "centralita.yaml:6: trunks[0].password: is required with a username" in text
    assert len(found) == 6, found  # an invalid section is not checked further
    assert "sales" not in text


def test_credentials_go_together_and_references_must_exist() -> None:
    found = problems_of("""\
trunks:
  - {name: a, address: "127.0.0.1:5060", caller_id: "600", username: me}
  - {name: b, address: "127.0.0.1:5061", caller_id: "600"}
callbacks:
  trunk: c
  queues:
    billing: {trunk: d}
""")
    text = "\n".join(found)
    assert "centralita.yaml:6: trunks[0].password: is required with a username" in text
    assert "centralita.yaml:9: callbacks.trunk: unknown trunk 'c'" in text
    assert "centralita.yaml:11: callbacks.queues.billing.trunk: unknown trunk 'd'" in text


def test_with_several_trunks_each_queue_names_one_or_a_default_is_given() -> None:
    trunks = """\
trunks:
  - {name: a, address: "127.0.0.1:5060", caller_id: "600"}
  - {name: b, address: "127.0.0.1:5061", caller_id: "600"}
"""
    found = problems_of(trunks + "callbacks:\n  queues:\n    billing: {trunk: b}\n")
    assert len(found) == 1 and "queue 'support'" in found[0]
    config = build(trunks + "callbacks:\n  trunk: a\n  queues:\n    billing: {trunk: b}\n")
    assert config.callbacks.trunk_for("billing").name == "b"
    assert config.callbacks.trunk_for("support").name == "a"


def test_callback_rules_for_an_unknown_queue_are_refused() -> None:
    found = problems_of("callbacks:\n  queues:\n    sales: {}\n")
    assert found == ["centralita.yaml:7: callbacks.queues.sales: unknown queue 'sales' "
                     "(define it under queues)"]


def test_callback_rules_are_checked_together_and_nothing_is_coerced() -> None:
    found = problems_of("""\
callbacks:
  poll_seconds: 0
  lease_seconds: "5"
  queues:
    billing: {retry_delay_seconds: 600, max_retry_delay_seconds: 60, backoff: 0}
site: two words
""")
    assert found == [
        "centralita.yaml:6: callbacks.poll_seconds: must be above 0 and at most 60, not 0",
        "centralita.yaml:7: callbacks.lease_seconds: must be a number",
        "centralita.yaml:9: callbacks.queues.billing.backoff: must be between 1 and 10, not 0",
        # A rule between two fields is reported beside the section's other mistakes.
        "centralita.yaml:9: callbacks.queues.billing.max_retry_delay_seconds: must not be below "
        "retry_delay_seconds (600)",
        "centralita.yaml:10: site: 'two words' is not a name (1-64 letters, digits, '.', '_', "
        "'+', '-'; starting with a letter or digit)",
    ]


def test_a_password_needs_a_username() -> None:
    found = problems_of("""\
trunks:
  - {name: a, address: "127.0.0.1:5060", caller_id: "600", password: s3cret}
""")
    assert found == ["centralita.yaml:6: trunks[0].password: needs a username beside it "
                     "(digest credentials)"]


def test_bad_business_hours_are_refused() -> None:
    found = problems_of("""\
callbacks:
  queues:
    billing:
      business_hours: {timezone: Mars/Olympus, weekly: {mon-fri: "18:00-09:00"}, holidays: [xmas]}
""")
    text = "\n".join(found)
    assert "centralita.yaml:8: callbacks.queues.billing.business_hours.timezone: unknown time zone 'Mars/Olympus'" in text
    assert "centralita.yaml:8: callbacks.queues.billing.business_hours.weekly: " in text
    assert "an interval must end after it starts" in text
    assert "centralita.yaml:8: callbacks.queues.billing.business_hours.holidays[0]: must be a valid date" in text
    assert len(found) == 3, found


def test_serve_takes_the_site_from_the_command_line(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--site", "bogota"])
    assert args.site == "bogota"
    config_file = tmp_path / "c.yaml"
    config_file.write_text(QUEUES + ONE_TRUNK)
    assert main(["check-config", str(config_file)]) == 0


def test_a_site_name_on_the_command_line_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--site", "two words", "--var-dir", "/nonexistent/var"]) == 2
    assert "--site: 'two words' is not a name (1-64 letters" in capsys.readouterr().err


def test_the_callback_offer_keys() -> None:
    config = build("callbacks:\n  offer_digit: 7\n  queues:\n    billing: {offer_after_wait: 90}\n")
    rules = config.callbacks.callbacks
    assert rules.offer_digit == "7"  # a YAML number is the key the user typed
    assert rules.for_queue("billing").offer_after_wait == 90
    assert rules.for_queue("support").offer_after_wait is None  # never announced
    assert build("callbacks: {offer_digit: null}\n").callbacks.callbacks.offer_digit is None
    assert build("site: madrid\n").callbacks.callbacks.offer_digit == "9"
    found = problems_of("""\
callbacks:
  offer_digit: "99"
  queues:
    billing: {offer_after_wait: -1}
    support: {offer_after_wait: soon}
""")
    assert found == [
        "centralita.yaml:6: callbacks.offer_digit: '99' is not a DTMF key (0-9, * or #)",
        "centralita.yaml:8: callbacks.queues.billing.offer_after_wait: must be between 0 and "
        "86400, not -1",
        "centralita.yaml:9: callbacks.queues.support.offer_after_wait: must be a number",
    ]
