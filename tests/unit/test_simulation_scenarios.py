"""`pbx simulate`: the scenario file, the engine's bookkeeping, staffing, callbacks and the
command end to end on the shipped example."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from callbacks import CallbackPolicy
from events import Event, EventSink, QueueCallAnswered, ReservationExpired
from pbx.cli import main
from pbx.configuration.server import load_config
from pbx.configuration.simulation_scenario import SHIPPED_SCENARIOS, load_scenario
from router import AgentProfile, QueueConfig, Router
from settings.located_yaml import ConfigError
from simulation import (
    CallbackOffer,
    Distribution,
    QueueLoad,
    Scenario,
    Simulation,
    StaffGroup,
    build_report,
)
from simulation.erlang import erlang_c_agents
from simulation.staffing import StaffingTarget, staff_queue

MONDAY = SHIPPED_SCENARIOS / "monday.yaml"


@pytest.fixture(scope="module")
def demo_config():
    return load_config(None)


@pytest.fixture(scope="module")
def monday(demo_config):
    return load_scenario(MONDAY, demo_config)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_mistake_is_named_with_file_line_and_key(tmp_path, demo_config):
    path = write(tmp_path, """\
        scenario: broken
        day: 2026-12-07
        from: 10:00
        queues:
          sales:
            calls: [1, 2]
            handle: {exponential: 120}
          billing:
            calls: [1, -2]
            handle: {gamma: 3}
            self_service: 1.5
        staff:
          - name: a
            like: "9999"
            count: 2
            shift: ["08:00", "16:00"]
          - name: b
            site: lisbon
            shift: ["16:00", "08:00"]
        events:
          - {site_down: paris, from: "10:00", to: "11:00"}
        """)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path, demo_config)
    problems = caught.value.problems
    expected = [
        f"{path}:3: from: must be a time",
        f"{path}:5: queues.sales: unknown queue 'sales'",
        f"{path}:9: queues.billing.calls[1]: must be at least 0, not -2",
        f"{path}:10: queues.billing.handle: must be one of",
        f"{path}:11: queues.billing.self_service: must be between 0 and 1",
        f"{path}:14: staff[0].like: unknown agent '9999'",
        f"{path}:18: staff[1].site: unknown site 'lisbon'",
        f"{path}:19: staff[1].shift: must end after it starts",
        f"{path}:21: events[0].site_down: unknown site 'paris'",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)
    assert len(problems) == len(expected), problems


def test_the_command_reports_errors_and_exits_1(tmp_path, capsys):
    path = write(tmp_path, "day: 2026-12-07\nqueues: {}\nstaff: []\n")
    assert main(["simulate", "--scenario", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}:2: queues: needs the callers of at least one queue" in err
    assert f"error: {path}:3: staff: needs at least one item" in err
    assert f"{path}: 2 problem(s)" in err


def test_every_rule_of_the_file_is_checked_in_one_pass(tmp_path, demo_config):
    """Values, shapes of durations, rules between keys, unknown keys and names the
    configuration lacks: each mistake once, at its own key and line, all together."""
    path = write(tmp_path, """\
        day: "2026-13-07"
        timezone: Mars/Olympus
        from: "08:00"
        to: "07:00"
        start: "09:00"
        warm_up_minutes: -5
        agent_answer_seconds: -3
        queues:
          billing:
            calls: [1, true, .inf]
            handle: {lognormal: 240}
            wrap_up: {exponential: 30, cv: 0.5}
            patience: {uniform: [90, 30]}
            callback: {uptake: 0.3, max_attempts: 0, colour: red}
          support:
            calls: []
            handle: 0
          general:
            calls: [1]
            handle: {gamma: 2, exponential: 3}
            ivr_seconds: "40"
        staff:
          - name: a
            site: madrid
            skills: {billing: 11}
            languages: [english]
            shift: ["08:00", "16:00"]
            breaks: [{at: "07:30", minutes: 15}, {at: "12:00"}, {at: "17:00", minutes: 15}]
          - name: a
            shift: ["08:00"]
          - {name: c, like: 1002, shift: ["08:00", "16:00"], count: 1.5}
        events:
          - {site_down: madrid, away: bogota, from: "10:00", to: "11:00"}
          - {site_down: madrid, count: 2, from: "10:00", to: "11:00"}
          - {away: bogota, from: "11:00", to: "10:00"}
          - {site_down: madrid, from: "10:00"}
        """)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path, demo_config)
    assert caught.value.problems == [f"{path}:{problem}" for problem in [
        "1: day: must be a date like 2026-12-07",
        "2: timezone: unknown time zone 'Mars/Olympus'",
        "4: to: must be after 'from'",
        "5: start: unknown key (expected one of: agent_answer_seconds, day, events, from, queues,"
        " router_tick_seconds, scenario, staff, timezone, to, warm_up_minutes)",
        "6: warm_up_minutes: must be between 0 and 1440, not -5",
        "7: agent_answer_seconds: must be at least 0 seconds, not -3",
        "10: queues.billing.calls[1]: must be a number",
        "10: queues.billing.calls[2]: must be a finite number",
        "11: queues.billing.handle: lognormal needs cv (standard deviation / mean), e.g. 0.6",
        "12: queues.billing.wrap_up: cv only applies to lognormal",
        "13: queues.billing.patience.uniform: must be [LOW, HIGH] with LOW <= HIGH, not [90, 30]",
        "14: queues.billing.callback.offer_over_seconds: is required",
        "14: queues.billing.callback.max_attempts: must be between 1 and 20, not 0",
        "14: queues.billing.callback.colour: unknown key (expected one of: answer_share,"
        " max_attempts, offer_over_seconds, retry_minutes, ring_seconds, uptake)",
        "16: queues.support.calls: needs at least one item",
        "17: queues.support.handle: must average more than 0 seconds",
        "20: queues.general.handle.gamma: unknown key (expected one of: constant, cv,"
        " exponential, lognormal, uniform)",
        "21: queues.general.ivr_seconds: must be a number",
        "25: staff[0].skills.billing: must be between 1 and 10, not 11",
        "26: staff[0].languages[0]: must match ^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$, not 'english'",
        "28: staff[0].breaks: breaks[0] at 07:30, breaks[2] at 17:00 not within the shift (08:00-16:00)",
        "29: staff[1].site: is required unless like: names an agent of the configuration to copy",
        "29: staff[1].name: group 'a' is defined twice",
        "30: staff[1].shift: must be [\"HH:MM\", \"HH:MM\"]",
        "31: staff[2].count: must be an integer",
        "33: events[0]: must be one of {site_down: SITE, from, to} or"
        " {away: SITE, count, from, to, reason}",
        "34: events[1]: count and reason are for away, not site_down",
        "35: events[2].to: must be after 'from'",
        "36: events[3].to: is required",
    ]]


def test_a_group_given_its_site_skills_and_languages(tmp_path, demo_config):
    """What the file says becomes the scenario: keys written like the configuration's
    (identifiers as bare numbers), defaults where a key is left out."""
    path = write(tmp_path, """\
        day: 2026-12-07
        queues:
          support: {calls: [3, 4], handle: 300, patience: {exponential: 200}}
        staff:
          - {name: night, site: bogota, skills: {support: 6}, languages: [es], count: 2,
             shift: ["22:00", "30:00"], breaks: [{at: "26:00", minutes: 30, reason: meal}]}
          - {name: copy, like: 1006, shift: ["07:00", "15:00"]}
        events:
          - {away: bogota, from: "23:00", to: "23:30"}
        """)
    scenario = load_scenario(path, demo_config)
    assert scenario.timezone == demo_config.contact_center.sites[0].timezone
    assert (scenario.start, scenario.end, scenario.router_tick_seconds) == (0.0, 86400.0, 0.25)
    (load,) = scenario.loads
    assert (load.queue, load.calls, load.handle) == ("support", (3.0, 4.0), Distribution("constant", 300))
    assert load.patience == Distribution("exponential", 200) and load.callback is None
    night, copy = scenario.staff
    assert night.profile == AgentProfile("night", "night", "bogota", {"support": 6}, frozenset({"es"}))
    assert (night.count, night.shift_start, night.shift_end) == (2, 22 * 3600, 30 * 3600)
    assert night.breaks[0].start == 26 * 3600 and night.breaks[0].seconds == 1800
    configured = next(a.profile for a in demo_config.contact_center.agents if a.extension == "1006")
    assert (copy.profile.site, copy.profile.skills, copy.profile.languages) == (
        configured.site, configured.skills, configured.languages)
    assert scenario.away[0].count == 1 and scenario.away[0].reason == "drill"


def test_shifts_are_in_each_sites_time_zone(monday):
    """Bogotá's 07:00 is 13:00 in Madrid in December: its agents log in then."""
    report = build_report(Simulation(monday, 1).run())
    bogota = {row["start"]: row["agents"] for row in report["sites"]["bogota"]["intervals"]}
    assert bogota["12:45"] == 0
    assert bogota["13:00"] == pytest.approx(12, abs=0.5)


def test_site_outage_and_drill_show_in_the_day(monday):
    report = build_report(Simulation(monday, 1).run())
    madrid = {row["start"]: row for row in report["sites"]["madrid"]["intervals"]}
    bogota = {row["start"]: row for row in report["sites"]["bogota"]["intervals"]}
    billing = {row["start"]: row for row in report["queues"]["billing"]["intervals"]}
    # Madrid is down 10:00-10:30: its agents stay logged in but are given no call.
    assert madrid["10:15"]["occupancy"] < 0.05 < madrid["09:45"]["occupancy"]
    assert billing["10:15"]["service_level"] < 0.5 and billing["10:15"]["abandoned"] > 0
    # Three of Bogotá's agents leave for a drill 15:00-15:45 (on the Madrid clock).
    assert bogota["15:15"]["agents"] == pytest.approx(bogota["14:30"]["agents"] - 3, abs=0.5)


def test_the_engine_bookkeeping_matches_the_router(monday):
    """Stopped mid-outage, with callers waiting: the simulator's count of callers in line
    (kept from the router's events) is what the router itself says."""
    simulation = Simulation(replace(monday, end=10 * 3600 + 20 * 60), 3)
    simulation.run()
    waiting = {q.name: len(simulation.router.waiting_calls(q.name)) for q in monday.queues}
    assert sum(waiting.values()) > 5
    for queue, count in waiting.items():
        assert simulation.statistics.in_line(queue) == count, queue


def test_the_router_ticks_as_often_as_in_the_server(monday):
    from pbx.server import ROUTER_TICK_INTERVAL

    assert monday.router_tick_seconds == ROUTER_TICK_INTERVAL
    assert Scenario.__dataclass_fields__["router_tick_seconds"].default == ROUTER_TICK_INTERVAL


def test_phones_ringing_out_and_callbacks_put_back_in_line(monday):
    """Agents whose phone rings past the queue's ring timeout (15 s) go on a ring-no-answer
    break and the call, a callback too, goes back to its place; the day still adds up."""
    pushed: list[Event] = []
    slow = replace(monday, agent_answer=Distribution("uniform", low=5, high=25),
                   end=16 * 3600.0)
    simulation = Simulation(slow, 2, router_factory=lambda clock, publish: Router(
        clock, rona_return_seconds=60, publish=also_into(pushed, publish)))
    report = build_report(simulation.run())
    expired = [e for e in pushed if isinstance(e, ReservationExpired)]
    assert len(expired) > 50
    assert any("callback" in e.call_id for e in expired)
    for queue in monday.queues:
        assert simulation.statistics.in_line(queue.name) == len(
            simulation.router.waiting_calls(queue.name))
    assert report["queues"]["billing"]["total"]["answered"] > 300


def test_same_seed_same_day_other_seed_other_day(monday):
    first = build_report(Simulation(monday, 7).run())
    again = build_report(Simulation(monday, 7).run())
    other = build_report(Simulation(monday, 8).run())
    assert json.dumps(first) == json.dumps(again)
    assert first["queues"]["billing"]["total"] != other["queues"]["billing"]["total"]


def single_queue(calls: float, agents: int, *, hours: int = 4, callback: CallbackOffer | None = None,
                 patience: Distribution | None = None) -> Scenario:
    queue = QueueConfig("q", wrap_up_seconds=0)
    load = QueueLoad("q", calls=(calls,) * (hours * 4), handle=Distribution("exponential", 180),
                     patience=patience, callback=callback)
    staff = StaffGroup("agent", AgentProfile("agent", "Agent", "site"), agents, 0.0, 86400.0)
    return Scenario("one queue", date(2026, 12, 7), "UTC", (queue,), {"site": "UTC"}, (load,),
                    (staff,), end=hours * 3600 + 3600)


def test_staffing_finds_about_what_erlang_c_finds_where_erlang_c_holds():
    scenario = single_queue(50, 1)  # 50 calls a quarter hour, 3 minutes each: 10 Erlangs
    target = StaffingTarget(0.8, 20)
    plan = staff_queue(scenario, scenario.loads[0], target, hours=4, seed=2)
    expected = erlang_c_agents(50 / 900, 180, 20, 0.8)
    assert {row.erlang_c_agents for row in plan} == {expected}
    assert all(abs(row.simulated_agents - expected) <= 1 for row in plan)
    assert all(row.simulated_service_level >= 0.8 for row in plan)


def also_into(seen: list[Event], publish: EventSink) -> EventSink:
    """The simulation's sink, with every event the router pushes also kept in ``seen``."""

    def both(event: Event) -> None:
        seen.append(event)
        publish(event)

    return both


def test_a_callback_keeps_the_callers_place_in_line():
    """Callers who would wait take a callback; half do not answer the first time and are
    tried again ten minutes later. When a retry is answered its wait counts from the
    original arrival, and it is served before every live caller who arrived after it."""
    offer = CallbackOffer(offer_over_seconds=0, uptake=1.0, answer_share=0.5,
                          ring=Distribution("constant", 5),
                          policy=CallbackPolicy(max_attempts=5, retry_delay=timedelta(minutes=10),
                                                backoff=1.0))
    scenario = single_queue(4.5, 1, hours=6, callback=offer)
    pushed: list[Event] = []
    result = Simulation(scenario, 5, router_factory=lambda clock, publish: Router(
        clock, publish=also_into(pushed, publish))).run()
    answers = [e for e in pushed if isinstance(e, QueueCallAnswered)]
    retries = [a for a in answers if "-callback" in a.call_id and not a.call_id.endswith("callback1")]
    assert len(retries) > 10
    assert all(a.waited_seconds >= 600 for a in retries)
    total = build_report(result)["queues"]["q"]["total"]
    assert total["callbacks_requested"] > 20
    assert total["callbacks_completed"] + total["callbacks_failed"] <= total["callbacks_requested"]
    arrival = {a.call_id: a.at - a.waited_seconds for a in answers}
    for retry in retries:
        # Live callers answered after this retry all arrived after it (it kept its place).
        later = [a for a in answers if a.at > retry.at and "-callback" not in a.call_id]
        assert all(arrival[a.call_id] >= arrival[retry.call_id] - 1e-6 for a in later[:3])


def test_the_command_runs_the_shipped_example(tmp_path, capsys):
    report_path = tmp_path / "monday.json"
    assert main(["simulate", "--scenario", "monday", "--report", str(report_path), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "queue billing: target 80% in 20s" in out
    assert "model: Erlang A" in out
    report = json.loads(report_path.read_text())
    assert set(report["queues"]) == {"billing", "support", "general"}
    assert len(report["queues"]["billing"]["intervals"]) == 60  # 07:00-22:00 in quarter hours
    total = report["queues"]["billing"]["total"]
    assert total["offered"] > 700 and total["contained_in_ivr"] > 100
    assert total["callbacks_requested"] > 0
    assert total["callbacks_completed"] + total["callbacks_failed"] <= total["callbacks_requested"]
    # Support offers no callback: every caller who reached it left it once, by 22:00.
    support = report["queues"]["support"]["total"]
    assert (support["answered"] + support["abandoned"] + support["overflow_out"]
            == support["offered"] + support["overflow_in"])
    plot = ElementTree.parse(report_path.with_suffix(".svg")).getroot()
    assert plot.tag.endswith("svg")
    assert len(plot.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 4


def test_every_key_of_the_scenario_file_is_in_the_readme():
    """The README's "Simulator" section shows every key the scenario models accept."""
    from pbx.configuration.simulation_scenario import (
        BreakSettings,
        CallbackSettings,
        Duration,
        EventSettings,
        QueueLoadSettings,
        ScenarioFile,
        StaffGroupSettings,
    )

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Simulator"):readme.index("### What a call goes through")]
    models = (ScenarioFile, QueueLoadSettings, CallbackSettings, StaffGroupSettings, BreakSettings,
              EventSettings, Duration)
    keys = {field.alias or name for model in models for name, field in model.model_fields.items()}
    missing = sorted(key for key in keys if f"{key}:" not in section)
    assert not missing, missing
