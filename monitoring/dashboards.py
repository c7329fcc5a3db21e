"""Grafana dashboards as code: ``python -m monitoring.dashboards`` writes monitoring/dashboards/*.json.

Built with Grafana Labs' typed builders (grafana-foundation-sdk). Every query is PromQL over
the metrics documented in monitoring/README.md; the integration test
tests/integration/test_prometheus_dashboards.py evaluates each of them on a real Prometheus
scraping a real server, and tests/unit/test_monitoring_dashboards.py fails when the committed
JSON differs from what this module generates.

Grafana variables used in queries: ``$queue`` and ``$site`` (multi-value, regex-matched) and
Grafana's own ``$__range`` and ``$__rate_interval``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model

DASHBOARD_DIR = Path(__file__).with_name("dashboards")
DATASOURCE_UID = "centralita-prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yaml
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
FOLDER_TAG = "centralita"

Q = 'queue=~"$queue"'
S = 'site=~"$site"'


@dataclass(frozen=True)
class Series:
    expr: str
    legend: str = ""


# ------------------------------------------------------------------------ KPI expressions
# Over the dashboard's time range ($__range): what an operator reads as "today" or "this shift".

def _increase(metric: str, selector: str = "", by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}{{{selector}}}[$__range]))"


def _sla_counts(selector: str, by: str) -> tuple[str, str, str, str]:
    """answered within threshold, answered, abandoned, abandoned within threshold."""
    return (_increase("centralita_queue_calls_answered_within_sla_total", selector, by),
            _increase("centralita_queue_calls_answered_total", selector, by),
            _increase("centralita_queue_calls_abandoned_total", selector, by),
            _increase("centralita_queue_calls_abandoned_within_sla_total", selector, by))


# The four definitions of router.ServiceLevelDefinition (T: the queue's sla_seconds).
def service_level(selector: str, by: str = "", definition: str = "abandons_missed") -> str:
    within, answered, abandoned, short = _sla_counts(selector, by)
    return {
        # answered within T / (answered + abandoned)
        "abandons_missed": f"{within} / ({answered} + {abandoned})",
        # abandons within T leave the denominator
        "short_abandons_excluded": f"{within} / ({answered} + {abandoned} - {short})",
        # abandons within T count as met
        "short_abandons_met": f"({within} + {short}) / ({answered} + {abandoned})",
        # answered within T / answered
        "abandons_excluded": f"{within} / {answered}",
    }[definition]


SERVICE_LEVEL_DEFINITIONS = ("abandons_missed", "short_abandons_excluded", "short_abandons_met",
                             "abandons_excluded")


def service_level_as_configured(selector: str) -> str:
    """Per queue, under the queue's own service_level_definition."""
    return " or ".join(
        f"({service_level(selector, 'queue', definition)} and on (queue) "
        f"(max by (queue) (centralita_queue_service_level_definition{{{selector},"
        f'definition="{definition}"}}) == 1))'
        for definition in SERVICE_LEVEL_DEFINITIONS)


def average_speed_of_answer(selector: str, by: str = "") -> str:
    total = _increase("centralita_queue_wait_seconds_sum", f'{selector},outcome="answered"', by)
    count = _increase("centralita_queue_wait_seconds_count", f'{selector},outcome="answered"', by)
    return f"{total} / {count}"


def abandon_rate(selector: str, by: str = "") -> str:
    abandoned = _increase("centralita_queue_calls_abandoned_total", selector, by)
    offered = _increase("centralita_queue_calls_offered_total", selector, by)
    return f"{abandoned} / {offered}"


def average_handle_time(selector: str, by: str = "") -> str:
    total = _increase("centralita_queue_handle_seconds_sum", selector, by)
    count = _increase("centralita_queue_handle_seconds_count", selector, by)
    return f"{total} / {count}"


def occupancy(selector: str, by: str = "") -> str:
    """Busy with calls (reserved, ringing, talking, wrapping up) over logged in and not on break."""
    busy = _increase("centralita_agent_state_seconds_total",
                     f'{selector},state=~"reserved|ringing|on_call|wrap_up"', by)
    staffed = _increase("centralita_agent_state_seconds_total",
                        f'{selector},state=~"available|reserved|ringing|on_call|wrap_up"', by)
    return f"{busy} / {staffed}"


def containment() -> str:
    deflected = _increase("centralita_ivr_outcomes_total", 'outcome="deflected"')
    total = _increase("centralita_ivr_outcomes_total")
    return f"{deflected} / {total}"


# ------------------------------------------------------------------------ panels

def _target(series: Series, ref: int) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(series.expr).ref_id(chr(ord("A") + ref))
    if series.legend:
        query = query.legend_format(series.legend)
    return query.datasource(DATASOURCE)


def stat_panel(title: str, description: str, series: Series | list[Series], *, unit: str = "short",
               width: int = 4, decimals: int | None = None) -> stat.Panel:
    items = series if isinstance(series, list) else [series]
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(4)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])))
    if decimals is not None:
        panel = panel.decimals(decimals)
    for index, item in enumerate(items):
        panel = panel.with_target(_target(item, index))
    return panel


def graph(title: str, description: str, series: list[Series], *, unit: str = "short",
          width: int = 12, stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(8))
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_model.StackingMode.NORMAL))
    for index, item in enumerate(series):
        panel = panel.with_target(_target(item, index))
    return panel


def _variable(name: str, label: str, query: str) -> grafana.QueryVariable:
    return (grafana.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all")))


def _base(uid: str, title: str, description: str) -> grafana.Dashboard:
    return (grafana.Dashboard(title).uid(uid).description(description)
            .tags([FOLDER_TAG]).refresh("30s").time("now-6h", "now").timezone("browser")
            .editable()
            .link(grafana.DashboardLink("Centralita").type(model.DashboardLinkType.DASHBOARDS)
                  .tags([FOLDER_TAG]).as_dropdown(True).include_vars(True).keep_time(True)))


QUEUE_VARIABLE = ("queue", "Queue", "label_values(centralita_queue_calls_waiting, queue)")
SITE_VARIABLE = ("site", "Site", "label_values(centralita_agents, site)")


# ------------------------------------------------------------------------ dashboards

def contact_center_overview() -> grafana.Dashboard:
    every_queue = 'queue=~".+"'
    every_site = 'site=~".+"'
    return (
        _base("centralita-overview", "Centralita: contact-center overview",
              "Service level, speed of answer, abandons, callers waiting and agents, all queues")
        .with_row(grafana.Row("Service (dashboard time range)"))
        .with_panel(stat_panel("Service level", "All queues: answered within the queue's "
                               "threshold over answered + abandoned (every abandon a miss)",
                               Series(service_level(every_queue)), unit="percentunit"))
        .with_panel(stat_panel("Average speed of answer", "Mean wait of answered queue calls",
                               Series(average_speed_of_answer(every_queue)), unit="s"))
        .with_panel(stat_panel("Abandon rate", "Abandoned over offered",
                               Series(abandon_rate(every_queue)), unit="percentunit"))
        .with_panel(stat_panel("Offered", "Calls that entered a queue",
                               Series(_increase("centralita_queue_calls_offered_total",
                                                every_queue)), decimals=0))
        .with_panel(stat_panel("Answered", "Queue calls answered by an agent",
                               Series(_increase("centralita_queue_calls_answered_total",
                                                every_queue)), decimals=0))
        .with_panel(stat_panel("Abandoned", "Callers who hung up while waiting",
                               Series(_increase("centralita_queue_calls_abandoned_total",
                                                every_queue)), decimals=0))
        .with_row(grafana.Row("Now"))
        .with_panel(stat_panel("Waiting now", "Callers in line, all queues",
                               Series("sum(centralita_queue_calls_waiting)"), decimals=0))
        .with_panel(stat_panel("Longest wait now", "The oldest caller in line, any queue",
                               Series("max(centralita_queue_longest_wait_seconds)"), unit="s"))
        .with_panel(stat_panel("Agents available", "Agents free to take a call, all sites",
                               Series('sum(centralita_agents{state="available"})'), decimals=0))
        .with_panel(stat_panel("Agents on a call", "Agents talking, all sites",
                               Series('sum(centralita_agents{state="on_call"})'), decimals=0))
        .with_panel(stat_panel("Agents logged in", "Agents not offline, all sites",
                               Series('sum(centralita_agents{state!="offline"})'), decimals=0))
        .with_panel(stat_panel("Sites healthy", "Sites whose agents may be chosen (a site "
                               "any server sees as unhealthy counts as unhealthy)",
                               Series("sum(min by (site) (centralita_site_healthy))"),
                               decimals=0))
        .with_row(grafana.Row("By queue"))
        .with_panel(graph("Service level by queue", "Each queue under its own "
                          "service_level_definition, over the dashboard range",
                          [Series(service_level_as_configured(every_queue), "{{queue}}")],
                          unit="percentunit"))
        .with_panel(graph("Callers waiting by queue", "Callers in line now",
                          [Series("sum by (queue) (centralita_queue_calls_waiting)", "{{queue}}")]))
        .with_panel(graph("Longest wait by queue", "The oldest caller in line of each queue",
                          [Series("max by (queue) (centralita_queue_longest_wait_seconds)",
                                  "{{queue}}")], unit="s"))
        .with_panel(graph("Estimated wait by queue", "What a caller arriving now would wait",
                          [Series("max by (queue) (centralita_queue_estimated_wait_seconds)",
                                  "{{queue}}")], unit="s"))
        .with_row(grafana.Row("Agents"))
        .with_panel(graph("Agents by site and state", "Agents in each state at each site",
                          [Series("sum by (site, state) (centralita_agents)",
                                  "{{site}} {{state}}")], stacked=True))
        .with_panel(graph("Occupancy by site", "Time busy with calls over time logged in "
                          "and not on break", [Series(occupancy(every_site, "site"), "{{site}}")],
                          unit="percentunit"))
        .with_panel(graph("Staffed and available by queue", "Qualified agents logged in, and "
                          "those free now",
                          [Series("sum by (queue) (centralita_queue_agents_staffed)",
                                  "{{queue}} staffed"),
                           Series("sum by (queue) (centralita_queue_agents_available)",
                                  "{{queue}} available")]))
    )


def queue_detail() -> grafana.Dashboard:
    return (
        _base("centralita-queue", "Centralita: queue detail",
              "One queue (or several): service-level definitions, waits, handle time, agents")
        .with_variable(_variable(*QUEUE_VARIABLE))
        .with_variable(_variable(*SITE_VARIABLE))
        .with_row(grafana.Row("Service level (dashboard time range)"))
        .with_panel(stat_panel("Service level", "Each queue under its own "
                               "service_level_definition", Series(service_level_as_configured(Q),
                                                                  "{{queue}}"),
                               unit="percentunit"))
        .with_panel(stat_panel("SL, abandons missed", "Answered within threshold / (answered + "
                               "abandoned)", Series(service_level(Q)), unit="percentunit"))
        .with_panel(stat_panel("SL, short abandons excluded", "Abandons within the threshold "
                               "leave the denominator",
                               Series(service_level(Q, definition="short_abandons_excluded")),
                               unit="percentunit"))
        .with_panel(stat_panel("SL, short abandons met", "Abandons within the threshold count "
                               "as met", Series(service_level(Q, definition="short_abandons_met")),
                               unit="percentunit"))
        .with_panel(stat_panel("SL, abandons excluded", "Answered within threshold / answered",
                               Series(service_level(Q, definition="abandons_excluded")),
                               unit="percentunit"))
        .with_panel(stat_panel("Average speed of answer", "Mean wait of answered calls",
                               Series(average_speed_of_answer(Q)), unit="s"))
        .with_panel(stat_panel("Abandon rate", "Abandoned over offered",
                               Series(abandon_rate(Q)), unit="percentunit"))
        .with_panel(stat_panel("Average handle time", "Talk (hold included) plus wrap-up",
                               Series(average_handle_time(Q)), unit="s"))
        .with_row(grafana.Row("Calls (dashboard time range)"))
        .with_panel(stat_panel("Offered", "Calls that entered the queue",
                               Series(_increase("centralita_queue_calls_offered_total", Q)),
                               decimals=0))
        .with_panel(stat_panel("Answered", "Calls answered by an agent",
                               Series(_increase("centralita_queue_calls_answered_total", Q)),
                               decimals=0))
        .with_panel(stat_panel("Abandoned", "Callers who hung up while waiting",
                               Series(_increase("centralita_queue_calls_abandoned_total", Q)),
                               decimals=0))
        .with_panel(stat_panel("Short abandons", "Hung up within the queue's service-level time",
                               Series(_increase("centralita_queue_calls_abandoned_within_sla_total",
                                                Q)), decimals=0))
        .with_panel(stat_panel("Ring-no-answer", "Offers an agent let ring out",
                               Series(_increase("centralita_queue_reservation_failures_total",
                                                f'{Q},reason=~"ring_timeout|no_answer"')),
                               decimals=0))
        .with_panel(stat_panel("Answered within threshold", "Calls answered within the "
                               "queue's service-level time",
                               Series(_increase("centralita_queue_calls_answered_within_sla_total",
                                                Q)), decimals=0))
        .with_row(grafana.Row("Waiting"))
        .with_panel(graph("Callers waiting", "Callers in line now",
                          [Series(f"sum by (queue) (centralita_queue_calls_waiting{{{Q}}})",
                                  "{{queue}}")]))
        .with_panel(graph("Longest and estimated wait", "The oldest caller in line, and what a "
                          "caller arriving now would wait",
                          [Series(f"max by (queue) (centralita_queue_longest_wait_seconds{{{Q}}})",
                                  "{{queue}} longest"),
                           Series(f"max by (queue) (centralita_queue_estimated_wait_seconds{{{Q}}})",
                                  "{{queue}} estimated")], unit="s"))
        .with_panel(graph("Wait percentiles (answered)", "90th and 50th percentile of the wait "
                          "of answered calls",
                          [Series("histogram_quantile(0.9, sum by (le, queue) (rate("
                                  f'centralita_queue_wait_seconds_bucket{{{Q},outcome="answered"}}'
                                  "[$__rate_interval])))", "{{queue}} p90"),
                           Series("histogram_quantile(0.5, sum by (le, queue) (rate("
                                  f'centralita_queue_wait_seconds_bucket{{{Q},outcome="answered"}}'
                                  "[$__rate_interval])))", "{{queue}} p50")], unit="s"))
        .with_panel(graph("Waits by outcome", "How waits ended (answered, abandoned, "
                          "overflowed), calls per second",
                          [Series("sum by (queue, outcome) (rate(centralita_queue_wait_seconds_count"
                                  f"{{{Q}}}[$__rate_interval]))", "{{queue}} {{outcome}}")],
                          unit="reqps"))
        .with_panel(graph("Announcements", "Position and \"you are next\" announcements played "
                          "to waiting callers, per second",
                          [Series("sum by (queue, kind) (rate(centralita_queue_announcements_total"
                                  f"{{{Q}}}[$__rate_interval]))", "{{queue}} {{kind}}")],
                          unit="reqps"))
        .with_row(grafana.Row("Agents"))
        .with_panel(graph("Staffed and available", "Qualified agents logged in, and free now",
                          [Series(f"sum by (queue) (centralita_queue_agents_staffed{{{Q}}})",
                                  "{{queue}} staffed"),
                           Series(f"sum by (queue) (centralita_queue_agents_available{{{Q}}})",
                                  "{{queue}} available")]))
        .with_panel(graph("Agents by state", "Agents of the selected sites",
                          [Series(f"sum by (site, state) (centralita_agents{{{S}}})",
                                  "{{site}} {{state}}")], stacked=True))
        .with_panel(stat_panel("Occupancy", "Busy with calls over logged in and not on break, "
                               "selected sites", Series(occupancy(S)), unit="percentunit",
                               width=6))
        .with_panel(stat_panel("Average talk time", "Talk time of answered calls (hold included)",
                               Series(f"{_increase('centralita_queue_talk_seconds_sum', Q)} / "
                                      f"{_increase('centralita_queue_talk_seconds_count', Q)}"),
                               unit="s", width=6))
    )


def ivr_self_service() -> grafana.Dashboard:
    return (
        _base("centralita-ivr", "Centralita: IVR and self-service",
              "How callers leave the IVR, self-service deflection by topic, satisfaction")
        .with_row(grafana.Row("Dashboard time range"))
        .with_panel(stat_panel("Containment", "Calls that ended in self-service over calls "
                               "that left the IVR", Series(containment()), unit="percentunit"))
        .with_panel(stat_panel("Deflected", "Calls ended after self-service without an agent",
                               Series(_increase("centralita_ivr_deflections_total")), decimals=0))
        .with_panel(stat_panel("Sent to queues", "Calls the IVR handed to a queue",
                               Series(_increase("centralita_ivr_enqueued_total")), decimals=0))
        .with_panel(stat_panel("Satisfaction (CSAT)", "Mean post-call survey score (1-5)",
                               Series(f"{_increase('centralita_ivr_survey_score_sum')} / "
                                      f"{_increase('centralita_ivr_survey_score_count')}"),
                               decimals=2))
        .with_panel(stat_panel("Surveys answered", "Post-call survey scores received",
                               Series(_increase("centralita_ivr_survey_score_count")), decimals=0))
        .with_panel(stat_panel("Self-service answers", "Answers played, all topics",
                               Series(_increase("centralita_ivr_self_service_answers_total")),
                               decimals=0))
        .with_row(grafana.Row("By topic and outcome"))
        .with_panel(graph("Deflection by topic", "Deflected calls over answers played, per topic",
                          [Series(f"{_increase('centralita_ivr_deflections_total', by='topic')} / "
                                  f"{_increase('centralita_ivr_self_service_answers_total', by='topic')}",
                                  "{{topic}}")], unit="percentunit"))
        .with_panel(graph("Self-service answers by topic", "Answers played per second",
                          [Series("sum by (topic) (rate(centralita_ivr_self_service_answers_total"
                                  "[$__rate_interval]))", "{{topic}}")], unit="reqps"))
        .with_panel(graph("IVR outcomes", "How calls left the IVR, per second",
                          [Series("sum by (outcome) (rate(centralita_ivr_outcomes_total"
                                  "[$__rate_interval]))", "{{outcome}}")], unit="reqps",
                          stacked=True))
        .with_panel(graph("Sent to each queue", "Calls the IVR handed to each queue, per second",
                          [Series("sum by (queue) (rate(centralita_ivr_enqueued_total"
                                  "[$__rate_interval]))", "{{queue}}")], unit="reqps"))
        .with_panel(graph("Languages chosen", "Call languages, per second",
                          [Series("sum by (language) (rate(centralita_ivr_language_selections_total"
                                  "[$__rate_interval]))", "{{language}}")], unit="reqps"))
        .with_panel(graph("Survey scores", "Scores received per second, by score",
                          [Series("sum by (le) (rate(centralita_ivr_survey_score_bucket"
                                  "[$__rate_interval]))", "score <= {{le}}")], unit="reqps"))
    )


def platform_health() -> grafana.Dashboard:
    return (
        _base("centralita-platform", "Centralita: sites and platform health",
              "Sites, SIP, the call-record store, the event loop and media")
        .with_row(grafana.Row("Sites and store"))
        .with_panel(stat_panel("Sites healthy", "1 per healthy site, 0 when any server sees "
                               "it as unhealthy",
                               Series("min by (site) (centralita_site_healthy)", "{{site}}"),
                               width=6))
        .with_panel(stat_panel("Sites open", "1 per site within its business hours (its agents "
                               "are offered calls), 0 outside them (follow-the-sun)",
                               Series("min by (site) (centralita_site_open)", "{{site}}"),
                               width=6))
        .with_panel(stat_panel("Call records waiting", "CDR and queue-log writes waiting for the "
                               "database", Series("sum(centralita_call_records_pending)"),
                               decimals=0, width=6))
        .with_panel(graph("Store write failures", "Failed CDR and queue-log writes (retried "
                          "with backoff), per second",
                          [Series("sum(rate(centralita_call_records_write_failures_total"
                                  "[$__rate_interval]))", "write failures")], unit="reqps"))
        .with_row(grafana.Row("SIP"))
        .with_panel(graph("Requests by method", "SIP requests received per second",
                          [Series("sum by (method) (rate(centralita_sip_requests_received_total"
                                  "[$__rate_interval]))", "{{method}}")], unit="reqps"))
        .with_panel(graph("Responses by code", "SIP responses sent per second",
                          [Series("sum by (code) (rate(centralita_sip_responses_sent_total"
                                  "[$__rate_interval]))", "{{code}}")], unit="reqps"))
        .with_panel(graph("Registrations", "Registered contacts and accounts",
                          [Series("centralita_sip_registered_contacts", "contacts"),
                           Series("centralita_sip_registered_accounts", "accounts")]))
        .with_panel(graph("Dialogs, transactions, calls", "Live SIP dialogs, transactions and "
                          "calls in progress",
                          [Series("centralita_sip_dialogs_active", "dialogs"),
                           Series("centralita_sip_transactions", "transactions"),
                           Series("sum(centralita_calls_active)", "calls")]))
        .with_panel(graph("Authentication failures", "Requests refused for wrong credentials, "
                          "per second",
                          [Series("sum by (method) (rate(centralita_sip_auth_failures_total"
                                  "[$__rate_interval]))", "{{method}}")], unit="reqps"))
        .with_panel(graph("Blocked sources and connections", "Sources the SIP edge blocks now, "
                          "and open TCP/TLS connections",
                          [Series("sum(centralita_sip_blocked_sources)", "blocked sources"),
                           Series("sum by (transport) (centralita_sip_connections)",
                                  "{{transport}} connections")]))
        .with_panel(graph("Rejected messages", "Unparsable SIP messages per second",
                          [Series("sum by (transport) (rate(centralita_sip_messages_rejected_total"
                                  "[$__rate_interval]))", "{{transport}}")],
                          unit="reqps"))
        .with_row(grafana.Row("Process"))
        .with_panel(graph("Event-loop lag", "How late the loop ran a 100 ms timer (p99, p50)",
                          [Series("histogram_quantile(0.99, sum by (le) (rate("
                                  "centralita_event_loop_lag_seconds_bucket[$__rate_interval])))",
                                  "p99"),
                           Series("histogram_quantile(0.5, sum by (le) (rate("
                                  "centralita_event_loop_lag_seconds_bucket[$__rate_interval])))",
                                  "p50")], unit="s"))
        .with_panel(graph("Garbage collector", "Collector passes per second, and seconds spent "
                          "in them per second, by generation (2 = full pass, which stalls the loop)",
                          [Series("sum by (generation) (rate(centralita_gc_pause_seconds_count"
                                  "[$__rate_interval]))", "gen {{generation}} passes/s"),
                           Series("sum by (generation) (rate(centralita_gc_pause_seconds_sum"
                                  "[$__rate_interval]))", "gen {{generation}} s/s")]))
        .with_panel(graph("Memory", "Resident memory, and calls whose details are held in memory "
                          "per holder (bounded by history: in the config)",
                          [Series("process_resident_memory_bytes", "RSS bytes"),
                           Series("sum by (holder) (centralita_history_entries)",
                                  "{{holder}} entries")]))
        .with_panel(graph("Media and call tasks", "Open RTP sessions (media streams), RTP "
                          "ports reserved, and tasks running calls",
                          [Series("centralita_rtp_sessions", "RTP sessions"),
                           Series("centralita_rtp_ports_in_use", "RTP ports in use"),
                           Series("centralita_call_tasks_active", "call tasks")]))
        .with_panel(graph("Calls ended by cause", "Calls ended per second",
                          [Series("sum by (cause) (rate(centralita_calls_ended_total"
                                  "[$__rate_interval]))", "{{cause}}")], unit="reqps"))
        .with_panel(graph("Stale calls repaired", "Calls found dead and cleaned up, per second",
                          [Series("sum(rate(centralita_stale_calls_repaired_total"
                                  "[$__rate_interval]))", "repaired")],
                          unit="reqps"))
    )


DASHBOARDS = {
    "contact-center-overview.json": contact_center_overview,
    "queue-detail.json": queue_detail,
    "ivr-self-service.json": ivr_self_service,
    "platform-health.json": platform_health,
}


def render(builder: grafana.Dashboard) -> str:
    document: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # Unique panel ids: Grafana keys links, repeats and "view panel" on them.
    for number, panel in enumerate(document["panels"], start=1):
        panel["id"] = number
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def generated() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: render(make()) for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    if argv and (len(argv) > 1 or argv[0].startswith("-")):
        print("usage: python -m monitoring.dashboards [DIRECTORY]\n"
              f"writes every dashboard's JSON there (default {DASHBOARD_DIR})",
              file=sys.stderr if argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv[0] in ("-h", "--help") else 2
    target = Path(argv[0]) if argv else DASHBOARD_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
