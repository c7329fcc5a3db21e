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
