"""Configuration of several sites: the bus section, and what a site of several needs."""

from pathlib import Path

import pytest
import yaml

from pbx.cli import main
from pbx.configuration.server import ConfigError, build_config, load_config
from settings.located_yaml import load_yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "pbx" / "default_config.yaml").read_text()
POSTGRES = "postgresql+asyncpg://centralita@127.0.0.1/centralita"


def demo_with(**sections: object) -> str:
    config = yaml.safe_load(DEMO)
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name].update(values)
        else:
            config[name] = values
    return yaml.safe_dump(config, sort_keys=False)


def problems_of(text: str, site: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=None, site=site)
    return caught.value.problems


def line_of(text: str, key: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(f"{key}:"))


def test_the_demo_is_one_site_serving_every_agent():
    config = load_config(None)
    assert config.bus.url is None and not config.multi_site
    assert {a.profile.site for a in config.contact_center.agents} == {"madrid", "bogota"}
    assert all(config.is_local_agent(a.profile.extension) for a in config.contact_center.agents)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:1883", "is not mqtt://HOST:PORT"),
    ("mqtt://", "is not mqtt://HOST:PORT"),
    ("mqtt://127.0.0.1:99999", "bad port"),
    ("mqtt://user:secret@127.0.0.1:1883", "only mqtt://HOST:PORT"),
    ("mqtt://127.0.0.1:1883/topic", "only mqtt://HOST:PORT"),
])
def test_a_bus_url_must_be_mqtt_host_port(url: str, reason: str):
    text = demo_with(bus={"url": url})
    [problem] = problems_of(text)
    assert problem.startswith(f"centralita.yaml:{line_of(text, 'bus') + 1}: bus.url: ")
    assert reason in problem


def test_a_topic_prefix_with_wildcards_is_refused():
    [problem] = problems_of(demo_with(bus={"topic_prefix": "centralita/#"}))
    assert "bus.topic_prefix: 'centralita/#' is not a topic prefix" in problem


def test_a_site_of_several_without_broker_or_postgresql_is_refused_with_file_line_key():
    text = demo_with(site="madrid")
    bus_line, store_line = line_of(text, "bus"), line_of(text, "store")
    problems = problems_of(text)
    assert len(problems) == 2, problems
    assert any(p.startswith(f"centralita.yaml:{bus_line + 1}: bus.url: site madrid is one of several "
                            "(agents of bogota too)") and "mqtt://HOST:PORT" in p for p in problems)
    assert any(p.startswith(f"centralita.yaml:{store_line + 1}: store.url: ")
               and "postgresql+asyncpg://" in p for p in problems)


def test_sqlite_is_not_shared_between_sites():
    text = demo_with(site="bogota", bus={"url": "mqtt://127.0.0.1:1883"},
                     store={"url": "sqlite+aiosqlite:///var/c.db"})
    [problem] = problems_of(text)
    assert ": store.url: site bogota is one of several (agents of madrid too)" in problem


def test_the_command_line_site_is_checked_like_the_file_one():
    problems = problems_of(demo_with(), site="madrid")
    assert any("bus.url: site madrid is one of several" in p for p in problems)
    [problem] = problems_of(demo_with(bus={"url": "mqtt://127.0.0.1:1883"}, store={"url": POSTGRES}),
                            site="lima")
    assert "site (--site lima): 'lima' is not one of the sites (bogota, madrid)" in problem


def test_a_site_of_several_with_broker_and_postgresql_owns_only_its_agents():
    text = demo_with(site="bogota", bus={"url": "mqtt://127.0.0.1:1883"}, store={"url": POSTGRES})
    config = build_config(load_yaml(text, "c.yaml"), var_dir=Path("var"), base_dir=None)
    assert config.multi_site and config.site == "bogota"
    assert config.bus.url == "mqtt://127.0.0.1:1883" and config.store_url == POSTGRES
    local = {a.profile.extension for a in config.contact_center.agents
             if config.is_local_agent(a.profile.extension)}
    assert local == {a.profile.extension for a in config.contact_center.agents
                     if a.profile.site == "bogota"} != set()


def test_a_site_whose_file_has_only_its_own_agents_stands_alone():
    config = yaml.safe_load(DEMO)
    config["agents"] = [a for a in config["agents"] if a["site"] == "madrid"]
    config["customers"] = []
    config["site"] = "madrid"
    built = build_config(load_yaml(yaml.safe_dump(config), "c.yaml"), var_dir=Path("var"), base_dir=None)
    assert not built.multi_site


def test_check_config_takes_the_site_of_the_command_line(tmp_path: Path, capsys):
    path = tmp_path / "centralita.yaml"
    path.write_text(demo_with())
    assert main(["check-config", str(path)]) == 0
    assert "one site" in capsys.readouterr().out
    assert main(["check-config", "--site", "madrid", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}:" in err and "bus.url: site madrid is one of several" in err
    path.write_text(demo_with(bus={"url": "mqtt://127.0.0.1:1883"}, store={"url": POSTGRES}))
    assert main(["check-config", "--site", "madrid", str(path)]) == 0
    assert "site madrid of 2, bus mqtt://127.0.0.1:1883" in capsys.readouterr().out
    assert main(["check-config", "--site", "a/b", str(path)]) == 1
    assert "--site:" in capsys.readouterr().err


def _with_billing_sites(sites: object) -> str:
    config = yaml.safe_load(DEMO)
    config["queues"][0]["sites"] = sites
    return yaml.safe_dump(config, sort_keys=False)


def test_a_queue_names_the_other_sites_whose_agents_may_take_its_calls():
    def billing_sites(sites: object) -> tuple[str, ...]:
        config = build_config(load_yaml(_with_billing_sites(sites), "centralita.yaml"),
                              var_dir=Path("var"), base_dir=None)
        billing = next(q for q in config.contact_center.queues if q.name == "billing")
        assert billing.allows_site("madrid") == ("madrid" in billing.sites or "any" in billing.sites)
        return billing.sites

    assert load_config(None).contact_center.queues[0].sites == ()  # the demo: own site only
    assert billing_sites(["bogota"]) == ("bogota",)
    assert billing_sites("any") == ("any",)
    assert billing_sites([]) == ()


def test_a_queue_naming_an_unknown_site_is_refused_with_file_line_key():
    text = _with_billing_sites(["bogota", "lima"])
    [problem] = problems_of(text)
    line = next(i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith("sites:")
                and i > line_of(text, "queues"))
    assert problem.startswith(f"centralita.yaml:{line}: queues[0].sites: unknown site 'lima'"), problem


def _line_after(text: str, section: str, key: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1)
                if line.strip().startswith(f"{key}:") and i > line_of(text, section))


def test_a_queue_asks_other_sites_after_its_sites_after_seconds():
    config = yaml.safe_load(DEMO)
    config["queues"][0].update(sites=["bogota"], sites_after_seconds=30)
    built = build_config(load_yaml(yaml.safe_dump(config, sort_keys=False), "centralita.yaml"),
                         var_dir=Path("var"), base_dir=None)
    assert built.contact_center.queues[0].sites_after_seconds == 30
    assert load_config(None).contact_center.queues[0].sites_after_seconds == 0  # at once


@pytest.mark.parametrize(("value", "reason"), [
    (-5, "must be at least 0"),
    ("soon", "number"),
])
def test_a_bad_sites_after_seconds_is_refused_with_file_line_key(value: object, reason: str):
    config = yaml.safe_load(DEMO)
    config["queues"][0].update(sites=["bogota"], sites_after_seconds=value)
    text = yaml.safe_dump(config, sort_keys=False)
    [problem] = problems_of(text)
    line = _line_after(text, "queues", "sites_after_seconds")
    assert problem.startswith(f"centralita.yaml:{line}: queues[0].sites_after_seconds: "), problem
    assert reason in problem


def test_a_sites_business_hours_are_read_in_its_own_time_zone():
    from datetime import UTC, datetime

    from pbx.configuration.models import opening_hours

    config = yaml.safe_load(DEMO)
    config["sites"][1]["business_hours"] = {"weekly": {"mon-fri": "08:00-20:00"},
                                            "holidays": ["2026-12-25"]}
    built = build_config(load_yaml(yaml.safe_dump(config, sort_keys=False), "centralita.yaml"),
                         var_dir=Path("var"), base_dir=None)
    bogota = next(site for site in built.contact_center.sites if site.name == "bogota")
    hours = opening_hours(bogota)
    assert hours is not None
    # 12:30 UTC is 07:30 in Bogota (UTC-5): closed; 13:00 UTC opens it.
    assert not hours.is_open(datetime(2026, 12, 3, 12, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2026, 12, 3, 13, 0, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 12, 25, 15, 0, tzinfo=UTC))  # a holiday
    assert not hours.is_open(datetime(2026, 12, 5, 15, 0, tzinfo=UTC))  # Saturday
    madrid = next(site for site in built.contact_center.sites if site.name == "madrid")
    assert opening_hours(madrid) is None  # always open


@pytest.mark.parametrize(("hours", "key", "reason"), [
    ({"weekly": {"mon-fri": "20:00-08:00"}}, "sites[1].business_hours.weekly",
     "an interval must end after it starts"),
    ({"weekly": {"mon-fri": "08:00-20:00", "fri": "closed"}}, "sites[1].business_hours.weekly",
     "gives hours for a day already given"),
    ({"weekly": {"someday": "08:00-20:00"}}, "sites[1].business_hours.weekly",
     "is not a day or a day range"),
    ({"weekly": {"mon": "8-20"}}, "sites[1].business_hours.weekly", "times must be HH:MM"),
    ({"weekly": {"mon": "08:00-20:00"}, "holidays": ["christmas"]},
     "sites[1].business_hours.holidays[0]", "date"),
    ({"weekly": {"mon": "08:00-20:00"}, "opens": "soon"}, "sites[1].business_hours.opens",
     "unknown key"),
])
def test_bad_business_hours_are_refused_with_file_line_key(hours: dict, key: str, reason: str):
    config = yaml.safe_load(DEMO)
    config["sites"][1]["business_hours"] = hours
    text = yaml.safe_dump(config, sort_keys=False)
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert f": {key}: " in problems[0] and reason in problems[0], problems
    line = int(problems[0].split(":")[1])
    assert line > line_of(text, "sites") and line < line_of(text, "agents"), problems
