"""What operators deploy, checked without Docker: the generated dashboards are the committed
ones, the alert rules pass promtool's checks and unit tests, compose.yaml validates
(``docker compose config``, else Debian's ``docker-compose config``), every file it mounts
exists, and the ports, URLs and paths of the services agree with the configs they mount."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from monitoring.dashboards import DASHBOARD_DIR, DATASOURCE_UID, generated
from pbx.configuration.server import load_config

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts"
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose.yaml"
SITES = ("madrid", "bogota")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is missing: scripts/install-test-deps installs it")
        pytest.skip(f"{tool} is not installed (scripts/install-test-deps)")
    return path


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services[name]


def bind_mounts(name: str) -> dict[str, Path]:
    """Container path -> file or folder of the repository mounted there."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def flag(name: str, option: str) -> str:
    for argument in service(name).get("command", []):
        if argument.startswith(f"--{option}="):
            return str(argument.split("=", 1)[1])
    raise AssertionError(f"{name} has no --{option}")


# ------------------------------------------------------------------------ dashboards

def test_committed_dashboards_are_the_generated_ones() -> None:
    expected = generated()
    committed = {path.name: path.read_text() for path in DASHBOARD_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run: .venv/bin/python -m monitoring.dashboards"
    for name, text in expected.items():
        assert committed[name] == text, (
            f"{name} is stale: run .venv/bin/python -m monitoring.dashboards and commit")


def test_every_dashboard_query_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    [datasource] = provisioned["datasources"]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == "prometheus"
    for path in DASHBOARD_DIR.glob("*.json"):
        document = json.loads(path.read_text())
        panels = [p for p in document["panels"] if p["type"] != "row"]
        assert panels, path
        for panel in panels:
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, (path.name, panel["title"])
                assert target["expr"].strip(), (path.name, panel["title"])
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{path.name}: two panels share a title"


# ------------------------------------------------------------------------ alert rules

def test_alert_rules_pass_promtool_check() -> None:
    promtool = need("promtool")
    result = subprocess.run([promtool, "check", "rules", "centralita.rules.yaml"], cwd=ALERTS,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout, result.stdout


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool = need("promtool")
    result = subprocess.run([promtool, "test", "rules", "centralita.test.yaml"], cwd=ALERTS,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((ALERTS / "centralita.rules.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((ALERTS / "centralita.test.yaml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


# ------------------------------------------------------------------------ compose.yaml

def test_compose_file_validates() -> None:
    """``docker compose config`` when the plugin exists, else Debian's docker-compose (1.29):
    both validate against the Compose schema without a Docker engine."""
    docker = shutil.which("docker")
    plugin = docker is not None and subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0
    argv = [docker, "compose"] if plugin and docker else [need("docker-compose")]
    result = subprocess.run([*argv, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_two_sites_and_the_supporting_services() -> None:
    services = compose()["services"]
    assert {"madrid", "bogota", "front-door", "postgres", "mosquitto", "prometheus",
            "grafana"} <= set(services)
    for site in SITES:
        assert services[site]["image"] == "centralita:latest"
    assert services["madrid"]["build"] == "."


def test_every_mounted_file_exists() -> None:
    for name in compose()["services"]:
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name} mounts {source} at {target}: it does not exist"


def test_dockerfile_copies_what_exists_and_reads_the_mounted_config() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # COPY --from=<stage> copies what an earlier build stage made, not the repository's files.
    for sources in re.findall(r"^COPY\s+(?!--from=)(.+)\s+\S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}: missing"
    [cmd] = re.findall(r"^CMD\s+(\[.*\])$", dockerfile, re.M)
    arguments = json.loads(cmd)
    config_path = arguments[arguments.index("--config") + 1]
    for site in SITES:
        assert config_path in bind_mounts(site), f"{site} does not mount {config_path}"


def site_config(site: str) -> Any:
    mounts = bind_mounts(site)
    return load_config(mounts["/etc/centralita/centralita.yaml"], var_dir=Path("/tmp"))


def test_site_configs_pass_check_config() -> None:
    """`pbx check-config`, cross references between sections and flows included."""
    for site in SITES:
        path = bind_mounts(site)["/etc/centralita/centralita.yaml"]
        result = subprocess.run([sys.executable, "-m", "pbx", "check-config", str(path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr


def test_site_configs_do_not_collide() -> None:
    configs = {site: site_config(site) for site in SITES}
    sip = [(a.transport, a.host, a.port) for config in configs.values() for a in config.sip.listen]
    http = [(config.http.host, config.http.port) for config in configs.values()]
    media = [range(config.media.port_min, config.media.port_max + 1)
             for config in configs.values()]
    assert len(set(http)) == len(http), http
    assert len(set(sip)) == len(sip), sip
    assert not set(media[0]) & set(media[1]), "the sites' RTP ranges overlap"
    for site, config in configs.items():
        assert {agent.profile.site for agent in config.contact_center.agents} == {site}


def test_prometheus_scrapes_both_sites_and_loads_the_mounted_rules() -> None:
    mounts = bind_mounts("prometheus")
    config_file = mounts[flag("prometheus", "config.file")]
    prometheus = yaml.safe_load(config_file.read_text())
    [job] = prometheus["scrape_configs"]
    assert job["job_name"] == "centralita"  # the CentralitaSiteDown alert selects it
    scraped = {group["labels"]["site"]: group["targets"] for group in job["static_configs"]}
    for site in SITES:
        config = site_config(site)
        assert scraped[site] == [f"{config.http.host}:{config.http.port}"], site
    [rule_glob] = prometheus["rule_files"]
    rules_dir, pattern = rule_glob.rsplit("/", 1)
    assert rules_dir in mounts, f"prometheus does not mount {rules_dir}"
    assert list(mounts[rules_dir].glob(pattern)) == [ALERTS / "centralita.rules.yaml"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """promtool checks the config and the rules it loads, at their repository paths."""
    promtool = need("promtool")
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    prometheus["rule_files"] = [str(ALERTS / "*.rules.yaml")]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_reaches_prometheus_and_finds_the_dashboards() -> None:
    mounts = bind_mounts("grafana")
    datasources = mounts["/etc/grafana/provisioning/datasources"]
    [datasource] = yaml.safe_load((datasources / "prometheus.yaml").read_text())["datasources"]
    assert urlsplit(datasource["url"]).netloc == flag("prometheus", "web.listen-address")
    assert service("grafana")["network_mode"] == service("prometheus")["network_mode"] == "host"
    providers = mounts["/etc/grafana/provisioning/dashboards"]
    [provider] = yaml.safe_load((providers / "centralita.yaml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards == DASHBOARD_DIR
    assert sorted(p.name for p in dashboards.glob("*.json")) == sorted(generated())


def test_sites_reach_postgres_at_its_published_port_and_databases() -> None:
    [published] = service("postgres")["ports"]
    host, port, container_port = published.split(":")
    assert container_port == "5432"
    environment = service("postgres")["environment"]
    init = (bind_mounts("postgres")["/docker-entrypoint-initdb.d/10-sites.sql"]).read_text()
    for site in SITES:
        assert service(site)["network_mode"] == "host"
        url = urlsplit(site_config(site).store_url)
        assert (url.hostname, str(url.port)) == (host, port), site
        assert (url.username, url.password) == (environment["POSTGRES_USER"],
                                                environment["POSTGRES_PASSWORD"])
        database = url.path.lstrip("/")
        assert f"CREATE DATABASE {database} OWNER {environment['POSTGRES_USER']};" in init


def front_door_options() -> dict[str, list[str]]:
    """The front door's renderer options in compose.yaml: {"listen": [...], "site": [...], ...}."""
    options: dict[str, list[str]] = {}
    for argument in service("front-door")["command"]:
        name, _, value = argument.removeprefix("--").partition("=")
        options.setdefault(name, []).append(value)
    return options


def test_the_front_door_renders_the_shipped_config_for_both_sites_and_their_agents() -> None:
    mounts = bind_mounts("front-door")
    assert mounts["/opt/front-door"] == DEPLOY / "kamailio"
    assert (DEPLOY / "kamailio" / "kamailio.cfg").is_file()
    entrypoint = " ".join(service("front-door")["entrypoint"])
    assert "/opt/front-door/front_door_config.py --out /run/front-door" in entrypoint
    assert "kamailio -DD -E -f /run/front-door/kamailio.cfg" in entrypoint
    assert service("front-door")["network_mode"] == "host"
    options = front_door_options()
    [listen] = options["listen"]
    sites = dict(site.split("=", 1) for site in options["site"])
    assert list(sites) == list(SITES)
    homes = dict(home.split("=", 1) for home in options["home"])
    for site in SITES:
        config = site_config(site)
        [udp] = [a for a in config.sip.listen if a.transport == "udp"]
        assert sites[site] == f"{udp.host}:{udp.port}", site
        assert {user for user, home in homes.items() if home == site} == {
            agent.profile.extension for agent in config.contact_center.agents}, site
        # Each site knows it is behind the front door.
        host, port = listen.rsplit(":", 1)
        assert config.sip.is_front_door((host, int(port))), site


def test_mosquitto_listens_where_it_is_published() -> None:
    [published] = service("mosquitto")["ports"]
    container_port = published.rsplit(":", 1)[1]
    conf = bind_mounts("mosquitto")["/mosquitto/config/mosquitto.conf"].read_text()
    assert re.search(rf"^listener {container_port}\b", conf, re.M), conf


# ------------------------------------------------------------------------ metrics table

def documented_metrics() -> set[str]:
    text = (ROOT / "monitoring" / "README.md").read_text()
    return set(re.findall(r"^\| `(centralita_[a-z_]+)` \|", text, re.M))


def test_every_metric_the_server_registers_is_documented(tmp_path: Path) -> None:
    """monitoring/README.md has a row (name, type, labels, meaning) for each metric family;
    a metric added without its row fails here."""
    from pbx.server import Server

    server = Server(load_config(None, var_dir=tmp_path), var_dir=tmp_path)
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in server.metrics.registry.collect()
        if family.name.startswith("centralita_")  # not the standard python_/process_ ones
    }
    missing = exported - documented_metrics()
    assert not missing, f"add these to the tables of monitoring/README.md: {sorted(missing)}"
