"""Every dashboard panel and every alert rule, evaluated on a real Prometheus scraping a real
server that SIPp callers and a SIPp agent drove through the IVR and the queues.

The server runs flows/metrics_menu.yaml (1 billing, 2 support, 3 a self-service answer and a
survey) with queues billing (threshold 15 s) and support (30 s). Agent 1001 (billing, SIPp)
answers two billing callers and hangs up on each; a support caller waits (nobody has the
skill) and hangs up after 3 s, within the threshold: a short abandon; a fourth caller hears the self-service
answer, scores 4 in the survey and is hung up on, deflected; a phone registers as 1002 with
a wrong password. A private Prometheus (Debian's package) runs deploy/prometheus/prometheus.yml
aimed at the server, scraping every second, and loads monitoring/alerts. Then every PromQL expression of every panel of monitoring/dashboards/*.json
and every rule of monitoring/alerts is evaluated through Prometheus's HTTP API: each panel
returns data (not only NaN), each alert's compared operands return data, every metric name
exists, and the KPI panels show what the test did.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.test_queue_agents import (
    REGISTER_XML,
    SippAgent,
    caller_xml,
    cc_config,
    need_sipp,
    wait_agent_state,
    wait_idle,
    wait_until,
)
from integration.test_queue_scenarios import caller_got_bye, finish_caller, start_caller
from peers import sipp
from peers.procs import free_port
from peers.prometheus import PrometheusServer, scraping

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLOW = Path(__file__).with_name("flows") / "metrics_menu.yaml"
DASHBOARDS = ROOT / "monitoring" / "dashboards"
RULES = ROOT / "monitoring" / "alerts" / "centralita.rules.yaml"
SHIPPED_PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SITE = "lab"
SURVEY_SCORE = 4

# Grafana's variables as a user sees them with "All" selected and a long enough range.
ALL_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$queue": ".*", "$site": ".*"}
METRIC_NAME = re.compile(r"\b(centralita_[a-z_]+|up)\b(?!\s*\()")


def server_config() -> str:
    config = yaml.safe_load(cc_config(agents={"1001": {"billing": 8}, "1002": {"support": 8}},
                                      wrap_up=1))
    config["extensions"]["100"]["flow"] = str(FLOW)
    for queue in config["queues"]:
        queue["sla_seconds"] = {"billing": 15, "support": 30}[queue["name"]]
    return yaml.safe_dump(config, sort_keys=False)


def self_service_caller(workdir: Path, server: Any) -> sipp.SippProcess:
    """Digits 3 (menu: self-service), 9 (not 0: no agent, go on), then the survey score,
    each as RFC 2833 from SIPp's pcaps, well apart; then it waits for the server's BYE."""
    def digit(value: int | str) -> str:
        return f'<nop><action><exec play_pcap_audio="pcap/dtmf_2833_{value}.pcap"/></action></nop>'

    scenario = caller_xml(digit="3", number="+34915550004", hold_ms=60_000, play_audio=False)
    assert digit(3) in scenario
    scenario = scenario.replace(digit(3), "\n  <pause milliseconds=\"1500\"/>\n  ".join(
        (digit(3), digit(9), digit(SURVEY_SCORE))))
    return sipp.start(server.sip_address, scenario=scenario, service="100", calls=1,
                      trace_msg=True, workdir=workdir)


def panels() -> list[tuple[str, str, list[str]]]:
    """(dashboard file, panel title, its PromQL expressions) of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                found.append((path.name, panel["title"], [t["expr"] for t in panel["targets"]]))
    return found


def variables() -> list[tuple[str, str, str]]:
    """(dashboard file, variable name, its query) of every template variable."""
    return [(path.name, variable["name"], variable["query"])
            for path in sorted(DASHBOARDS.glob("*.json"))
            for variable in json.loads(path.read_text()).get("templating", {}).get("list", [])]


def alert_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


_SPLIT = re.compile(r"\s+(?:and|or|unless|[<>]=?|[!=]=)(?:\s+bool)?"
                    r"(?:\s+(?:on|ignoring)\s*\([^)]*\))?\s+")


def operands(expr: str) -> list[str]:
    """The operands of the top-level comparisons and set operators of an alert expression:
    what the alert compares, which must have data even while the alert is quiet."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(expr):
        char = expr[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            match = _SPLIT.match(expr, index)
            if match:
                parts.append(expr[start:index])
                start = index = match.end()
                continue
        index += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if not re.fullmatch(r"\s*[0-9.]+\s*", p)]


def panel_value(prometheus: PrometheusServer, at: float, dashboard: str, title: str,
                variables: dict[str, str] = ALL_VARIABLES) -> float:
    [expr] = next(exprs for name, panel, exprs in panels() if (name, panel) == (dashboard, title))
    value = prometheus.value(substitute(expr, variables), at)
    assert value is not None, f"{dashboard}: {title} is empty"
    return value


def test_every_panel_and_alert_query_has_data_and_agrees_with_the_calls(pbx_server,
                                                                         tmp_path) -> None:
    need_sipp()
    server = pbx_server(server_config(), sip_trace=True)
    with ExitStack() as stack:
        # The shipped Prometheus config, aimed at this server, every second.
        config = scraping(yaml.safe_load(SHIPPED_PROMETHEUS.read_text()),
                          {SITE: server.http_url.removeprefix("http://")}, [RULES])
        prometheus = PrometheusServer(tmp_path / "prometheus", config)
        stack.callback(prometheus.stop)
        # The queues' counters are scraped at zero before the first call, so increase() sees it.
        assert wait_until(lambda: prometheus.query(
            'centralita_queue_calls_offered_total{queue="support"}'), 60), \
            "Prometheus never scraped the server:\n" + json.dumps(prometheus.api("targets"))

        agent = SippAgent(tmp_path / "agent", server, "1001", hold_ms=1500, calls=2)
        stack.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        for number in ("+34915550001", "+34915550002"):
            caller = start_caller(server, tmp_path / f"billing{number}", digit="1",
                                  hold_ms=60_000, number=number)
            stack.callback(caller.stop)
            assert caller_got_bye(finish_caller(caller)), "the agent's BYE never reached the caller"
            wait_agent_state(server, "1001", "available", timeout=30)  # wrap-up done
        completed = agent.uas.wait(30)
        assert completed.returncode == 0, completed.describe()
        answered_by_agent = completed.successful
        assert answered_by_agent == 2, completed.describe()

        caller = start_caller(server, tmp_path / "support", digit="2", hold_ms=3000,
                              number="+34915550003")
        stack.callback(caller.stop)
        assert not caller_got_bye(finish_caller(caller))  # hung up while waiting: abandoned
        caller = self_service_caller(tmp_path / "self-service", server)
        stack.callback(caller.stop)
        assert caller_got_bye(finish_caller(caller)), "the IVR never hung up after its answer"
        intruder = sipp.run(server.sip_address, scenario=REGISTER_XML.replace("{user}", "1002"),
                            workdir=tmp_path / "wrong-password", calls=1,
                            local_port=free_port(udp=True, tcp=True), auth=("1002", "guess"),
                            auth_uri=server.sip_address, timeout=20, trace_msg=True)
        assert intruder.successful == 0 and "SIP/2.0 403" in intruder.messages_log, \
            intruder.describe()
        idle = wait_idle(server)
        assert not any(idle.values()), idle

        # Everything is evaluated at the time of a scrape that began after all had settled:
        # increase() then has no extrapolation, and the counts are exact.
        settled = time.time() + 1
        at = wait_until(lambda: (lambda t: t if t and t > settled else None)(
            prometheus.value('timestamp(up{job="centralita"})')), 60)
        assert at, "no scrape after the calls"

        names = prometheus.metric_names()
        problems: list[str] = []
        for dashboard, title, exprs in panels():
            for expr in exprs:
                query = substitute(expr, ALL_VARIABLES)
                unknown = set(METRIC_NAME.findall(query)) - names
                if unknown:
                    problems.append(f"{dashboard}: {title}: unknown metrics {sorted(unknown)}")
                elif not (result := prometheus.query(query, at)):
                    problems.append(f"{dashboard}: {title}: no data for {query}")
                elif all(sample["value"][1] == "NaN" for sample in result):
                    problems.append(f"{dashboard}: {title}: only NaN from {query}")
        for alert, expr in alert_rules():
            unknown = set(METRIC_NAME.findall(expr)) - names
            if unknown:
                problems.append(f"alert {alert}: unknown metrics {sorted(unknown)}")
            prometheus.query(expr, at)  # valid PromQL (raises otherwise); empty while quiet
            for operand in operands(expr):
                if not prometheus.query(operand, at):
                    problems.append(f"alert {alert}: no data for {operand}")
        assert not problems, "\n".join(problems)

        # Prometheus itself evaluated every rule without error.
        groups = prometheus.api("rules")["groups"]
        evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert sorted(evaluated) == sorted(alert for alert, _ in alert_rules())
        assert all(rule["health"] == "ok" for rule in evaluated.values()), evaluated

        # Every template variable's label_values() finds the queues, or the site.
        expected_values = {"queue": ["billing", "support"], "site": [SITE]}
        for dashboard, variable, query in variables():
            found = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
            assert found, f"{dashboard}: ${variable}: {query}"
            metric, label = found.groups()
            values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
            assert sorted(values) == expected_values[variable], (dashboard, variable, values)
        # The queues' service-level thresholds are buckets of the wait histogram.
        for queue, threshold in (("billing", "15.0"), ("support", "30.0")):
            assert prometheus.query(
                f'centralita_queue_wait_seconds_bucket{{queue="{queue}",le="{threshold}"}}', at)

        check_values(prometheus, at, server, answered=answered_by_agent)
        check_documented(names)


def check_documented(names: set[str]) -> None:
    """Every metric family the server exported (the call-record store's included) has its
    row in monitoring/README.md."""
    documented = set(re.findall(r"^\| `(centralita_[a-z_]+)` \|",
                                (ROOT / "monitoring" / "README.md").read_text(), re.M))
    missing = set()
    for name in (n for n in names if n.startswith("centralita_")):
        base = re.sub(r"_(bucket|sum|count|created)$", "", name)
        if not {name, base, f"{base}_total"} & documented:
            missing.add(name)
    assert not missing, f"undocumented in monitoring/README.md: {sorted(missing)}"


def check_values(prometheus: PrometheusServer, at: float, server: Any, *, answered: int) -> None:
    """The panels show what the test did: 2 billing calls answered within 15 s, 1 support
    caller abandoned within its 30 s threshold (short), 1 caller deflected by self-service."""
    def approx(expected: float) -> Any:
        return pytest.approx(expected, rel=1e-6)

    def served(name: str, **labels: str) -> float:
        value = server.metric(name, **labels)
        assert value is not None, f"the server exports no {name} {labels}"
        return float(value)

    overview = "contact-center-overview.json"
    offered = answered + 1
    assert panel_value(prometheus, at, overview, "Answered") == approx(answered)
    assert panel_value(prometheus, at, overview, "Offered") == approx(offered)
    assert panel_value(prometheus, at, overview, "Abandoned") == approx(1)
    assert panel_value(prometheus, at, overview, "Abandon rate") == approx(1 / offered)
    assert panel_value(prometheus, at, overview, "Service level") == approx(answered / offered)
    assert panel_value(prometheus, at, overview, "Waiting now") == 0
    assert panel_value(prometheus, at, overview, "Longest wait now") == 0
    assert panel_value(prometheus, at, overview, "Agents logged in") == 1
    assert panel_value(prometheus, at, overview, "Agents on a call") == 0
    assert panel_value(prometheus, at, overview, "Sites healthy") == 1

    queue = "queue-detail.json"
    # All queues: 2 answered within threshold, 1 abandoned within it.
    assert panel_value(prometheus, at, queue, "SL, abandons missed") == approx(answered / offered)
    assert panel_value(prometheus, at, queue, "SL, short abandons excluded") == approx(1)
    assert panel_value(prometheus, at, queue, "SL, short abandons met") == approx(1)
    assert panel_value(prometheus, at, queue, "SL, abandons excluded") == approx(1)
    assert panel_value(prometheus, at, queue, "Short abandons") == approx(1)
    assert panel_value(prometheus, at, queue, "Ring-no-answer") == 0
    billing = {**ALL_VARIABLES, "$queue": "billing"}
    assert panel_value(prometheus, at, queue, "Answered", billing) == approx(answered)
    assert panel_value(prometheus, at, queue, "Answered within threshold", billing) == \
        approx(answered)
    assert panel_value(prometheus, at, queue, "Abandoned", billing) == 0
    # Under billing's own definition, as the router computes it.
    assert panel_value(prometheus, at, queue, "Service level", billing) == \
        approx(served("centralita_queue_service_level_ratio", queue="billing")) == approx(1)
    # Means over the range agree with the server's own histograms.
    wait_sum = served("centralita_queue_wait_seconds_sum", queue="billing", outcome="answered")
    handle_sum = served("centralita_queue_handle_seconds_sum", queue="billing")
    assert served("centralita_queue_handle_seconds_count", queue="billing") == answered
    assert panel_value(prometheus, at, queue, "Average speed of answer", billing) == \
        approx(wait_sum / answered)
    assert panel_value(prometheus, at, queue, "Average handle time", billing) == \
        approx(handle_sum / answered)
    # Handle time is talk plus wrap-up.
    assert handle_sum > served("centralita_queue_talk_seconds_sum", queue="billing")
    occupancy = panel_value(prometheus, at, queue, "Occupancy")
    assert 0 < occupancy < 1, occupancy

    ivr = "ivr-self-service.json"
    assert panel_value(prometheus, at, ivr, "Deflected") == approx(1)
    assert panel_value(prometheus, at, ivr, "Self-service answers") == approx(1)
    assert panel_value(prometheus, at, ivr, "Sent to queues") == approx(offered)
    assert panel_value(prometheus, at, ivr, "Containment") == approx(1 / (offered + 1))
    assert panel_value(prometheus, at, ivr, "Surveys answered") == approx(1)
    assert panel_value(prometheus, at, ivr, "Satisfaction (CSAT)") == approx(SURVEY_SCORE)

    platform = "platform-health.json"
    assert panel_value(prometheus, at, platform, "Sites healthy") == 1
    assert panel_value(prometheus, at, platform, "Sites open") == 1  # no business_hours: always
    assert panel_value(prometheus, at, platform, "Call records waiting") == 0
    [auth] = next(exprs for name, title, exprs in panels()
                  if (name, title) == (platform, "Authentication failures"))
    refused = {sample["metric"]["method"]: float(sample["value"][1])
               for sample in prometheus.query(substitute(auth, ALL_VARIABLES), at)}
    assert refused["REGISTER"] > 0 and refused["INVITE"] == 0, refused
