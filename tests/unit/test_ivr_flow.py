"""Loading and validating IVR flows: every problem names file, line and key."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.flow import SHIPPED_FLOWS, load_flow, load_flows, resolve_flow_path
from ivr.hours import HoursFormatError, parse_days, parse_intervals
from ivr.nodes import BusinessHoursNode, CollectNode, LanguageNode, MenuNode, SelfServiceNode
from pbx.media.prompt import PromptLibrary
from settings.located_yaml import ConfigError


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary()


def problems_of(text: str, prompts: PromptLibrary, source: str = "flows/test.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_flow(textwrap.dedent(text), source, prompts)
    return caught.value.problems


def test_demo_flow_loads_with_every_node(prompts: PromptLibrary) -> None:
    flow = load_flows(["demo"], prompts)["demo"]
    assert flow.start == "lookup"
    assert flow.languages == ("en", "es")
    menu = flow.nodes["main_menu"]
    assert isinstance(menu, MenuNode)
    assert dict(menu.options) == {"1": "billing_queue", "2": "support_queue", "3": "faq_menu",
                                  "0": "general_queue"}
    assert menu.fallback == "general_queue"
    language = flow.nodes["choose_language"]
    assert isinstance(language, LanguageNode) and dict(language.options) == {"1": "en", "2": "es"}
    faq = flow.nodes["faq_password_reset"]
    assert isinstance(faq, SelfServiceNode)
    assert faq.answer.path("es") == "es/faq_password_reset"
    assert faq.agent_prompt.path("en") == "en/press_0_for_agent"


def test_resolve_flow_path_by_name_and_by_path(tmp_path: Path) -> None:
    assert resolve_flow_path("demo") == SHIPPED_FLOWS / "demo.yaml"
    assert resolve_flow_path("mine.yaml", tmp_path) == tmp_path / "mine.yaml"
    assert resolve_flow_path("/abs/flow.yaml", tmp_path) == Path("/abs/flow.yaml")


def test_unknown_node_is_reported_with_file_line_and_key(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: menu
        nodes:
          menu:
            type: menu
            prompt: "{lang}/main_menu"
            options:
              1: billing
              2: nowhere
            fallback: bye
          billing: {type: enqueue, queue: billing}
          bye: {type: hangup}
        """, prompts)
    assert problems == ["flows/test.yaml:8: nodes.menu.options.2: unknown node 'nowhere'"]


def test_unknown_start_node(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: nope
        nodes:
          bye: {type: hangup}
        """, prompts)
    assert problems == ["flows/test.yaml:1: start: unknown node 'nope'"]


def test_unreachable_node(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: bye
        nodes:
          bye: {type: hangup}
          orphan:
            type: play
            prompt: en/welcome
            next: bye
        """, prompts)
    assert problems == [
        "flows/test.yaml:4: nodes.orphan: unreachable: no path leads here from start node 'bye'"]


def test_missing_prompt_file_for_one_language(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: hello
        languages: [en, es]
        nodes:
          hello:
            type: play
            prompt: {en: en/welcome, es: es/no_such_prompt}
            next: bye
          bye: {type: hangup}
        """, prompts)
    assert len(problems) == 1
    assert problems[0].startswith("flows/test.yaml:6: nodes.hello.prompt: missing prompt file ")
    assert "es/no_such_prompt.wav" in problems[0]


def test_language_template_is_checked_for_every_language(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: hello
        languages: [en, fr]
        nodes:
          hello: {type: play, prompt: "{lang}/welcome", next: bye}
          bye: {type: hangup}
        """, prompts)
    assert len(problems) == 1
    assert problems[0].startswith("flows/test.yaml:4: nodes.hello.prompt: missing prompt file")
    assert "fr/welcome.wav" in problems[0]


def test_default_retry_prompts_are_checked_too(prompts: PromptLibrary, tmp_path: Path) -> None:
    own = PromptLibrary(tmp_path)  # an empty root: {lang}/no_input etc. do not exist there
    problems = problems_of("""\
        start: menu
        nodes:
          menu:
            type: menu
            prompt: /dev/null/not_here.wav
            options: {1: bye}
            fallback: bye
          bye: {type: hangup}
        """, own)
    keys = sorted(problem.split(": ")[1] for problem in problems)
    assert keys == ["nodes.menu.invalid_prompt", "nodes.menu.no_input_prompt", "nodes.menu.prompt"]
    assert all(problem.startswith("flows/test.yaml:3: ") or problem.startswith("flows/test.yaml:5: ")
               for problem in problems)


def test_loop_with_no_exit(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: first
        nodes:
          first:
            type: menu
            prompt: en/main_menu
            options: {1: second}
            fallback: second
          second:
            type: menu
            prompt: en/faq_menu
            options: {1: first}
            fallback: first
        """, prompts)
    assert problems == [
        "flows/test.yaml:3: nodes.first: loop with no exit: first -> second -> first "
        "(no hangup, enqueue or transfer can be reached)"]


def test_loop_with_an_exit_is_fine(prompts: PromptLibrary) -> None:
    flow = load_flow(textwrap.dedent("""\
        start: first
        nodes:
          first: {type: menu, prompt: en/main_menu, options: {1: second, 0: bye}, fallback: second}
          second: {type: play, prompt: en/welcome, next: first}
          bye: {type: hangup}
        """), "loop.yaml", prompts)
    assert set(flow.nodes) == {"first", "second", "bye"}


def test_self_loop_with_no_exit(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: again
        nodes:
          again: {type: play, prompt: en/welcome, next: again}
        """, prompts)
    assert problems == ["flows/test.yaml:3: nodes.again: loop with no exit: again -> again "
                        "(no hangup, enqueue or transfer can be reached)"]


def test_structural_problems_are_all_reported_at_once(prompts: PromptLibrary) -> None:
    problems = problems_of("""\
        start: menu
        colour: blue
        nodes:
          menu:
            type: menu
            prompt: en/main_menu
            options: {12: bye, x: bye}
            fallback: bye
            timeout: -1
          digits:
            type: collect
            prompt: en/main_menu
            min_length: 5
            max_length: 2
            terminator: "%"
            next: bye
          hours:
            type: business_hours
            timezone: Mars/Olympus
            weekly: {mon-fri: "9-18", someday: "09:00-10:00"}
            holidays: ["2025-13-01"]
            open: bye
            closed: bye
          lang:
            type: language
            options: {1: en, 2: fr}
            next: bye
          strange: {type: teleport}
          bye: {type: hangup, colour: red}
        """, prompts)
    assert problems == [
        "flows/test.yaml:2: colour: unknown key (expected one of: defaults, language, "
        "languages, name, nodes, start)",
        "flows/test.yaml:7: nodes.menu.options.12: '12' is not a DTMF key (0-9, * or #)",
        "flows/test.yaml:7: nodes.menu.options.x: 'x' is not a DTMF key (0-9, * or #)",
        "flows/test.yaml:9: nodes.menu.timeout: must be between 0.001 and 300, not -1",
        "flows/test.yaml:10: nodes.digits.fallback: is required",
        "flows/test.yaml:14: nodes.digits.max_length: must not be below min_length (5)",
        "flows/test.yaml:15: nodes.digits.terminator: '%' is not a DTMF key (0-9, * or #)",
        "flows/test.yaml:19: nodes.hours.timezone: unknown time zone 'Mars/Olympus' (e.g. Europe/Madrid)",
        "flows/test.yaml:20: nodes.hours.weekly.mon-fri: '9-18': times must be HH:MM",
        "flows/test.yaml:20: nodes.hours.weekly.someday: 'someday' is not a day or a day range like mon-fri",
        "flows/test.yaml:21: nodes.hours.holidays[0]: '2025-13-01' is not a date like 2025-12-25",
        "flows/test.yaml:26: nodes.lang.options.2: language 'fr' is not in the flow's languages (en)",
        "flows/test.yaml:28: nodes.strange.type: unknown node type 'teleport' (expected one of: "
        "business_hours, collect, enqueue, hangup, language, lookup_caller, menu, offer_callback, play, "
        "self_service, survey, transfer)",
        "flows/test.yaml:29: nodes.bye.colour: unknown key (expected one of: prompt, type)",
    ]


def test_invalid_yaml_names_the_line(prompts: PromptLibrary) -> None:
    problems = problems_of("start: a\nnodes:\n  a: {type: hangup\n", prompts)
    assert len(problems) == 1 and problems[0].startswith("flows/test.yaml:4: invalid YAML")


def test_impossible_unquoted_date_is_a_config_error(prompts: PromptLibrary) -> None:
    problems = problems_of("start: a\nnodes:\n  a: {type: hangup}\nx: 2025-13-01\n", prompts)
    assert problems == ["flows/test.yaml:4: x: invalid value: month must be in 1..12"]


def test_load_flows_collects_problems_of_every_file(prompts: PromptLibrary, tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("start: x\nnodes:\n  bye: {type: hangup}\n")
    (tmp_path / "two.yaml").write_text("start: bye\nnodes:\n  bye: {type: hangup, prompt: en/nope}\n")
    with pytest.raises(ConfigError) as caught:
        load_flows(["one.yaml", "two.yaml", "missing.yaml", "demo"], prompts, base_dir=tmp_path)
    problems = caught.value.problems
    assert problems[0] == f"{tmp_path}/one.yaml:1: start: unknown node 'x'"
    assert problems[1].startswith(f"{tmp_path}/two.yaml:3: nodes.bye.prompt: missing prompt file")
    assert problems[2].startswith(f"{tmp_path}/missing.yaml: cannot read flow")
    assert len(problems) == 3


def test_collect_and_hours_nodes_are_built(prompts: PromptLibrary) -> None:
    flow = load_flow(textwrap.dedent("""\
        start: hours
        defaults: {timeout: 2, inter_digit_timeout: 1}
        nodes:
          hours:
            type: business_hours
            timezone: Europe/Madrid
            weekly: {mon-fri: "09:00-14:00, 16:00-19:00", sat: "10:00-24:00", sun: closed}
            holidays: [2025-12-25, "2026-01-06"]
            open: account
            closed: bye
          account:
            type: collect
            prompt: en/main_menu
            variable: account_number
            min_length: 4
            max_length: 8
            terminator: "#"
            next: bye
            fallback: bye
          bye: {type: hangup}
        """), "collect.yaml", prompts)
    collect = flow.nodes["account"]
    assert isinstance(collect, CollectNode)
    assert (collect.min_length, collect.max_length, collect.terminator) == (4, 8, "#")
    assert (collect.input.timeout, collect.inter_digit_timeout) == (2, 1)
    hours = flow.nodes["hours"]
    assert isinstance(hours, BusinessHoursNode)
    assert hours.hours.holidays == {date(2025, 12, 25), date(2026, 1, 6)}
    madrid = ZoneInfo("Europe/Madrid")
    assert hours.hours.is_open(datetime(2025, 12, 22, 10, 0, tzinfo=madrid))  # Monday
    assert not hours.hours.is_open(datetime(2025, 12, 22, 15, 0, tzinfo=madrid))  # lunch
    assert hours.hours.is_open(datetime(2025, 12, 27, 23, 59, tzinfo=madrid))  # Saturday late
    assert not hours.hours.is_open(datetime(2025, 12, 28, 12, 0, tzinfo=madrid))  # Sunday
    assert not hours.hours.is_open(datetime(2025, 12, 25, 10, 0, tzinfo=madrid))  # holiday
    # 08:30 UTC is 09:30 in Madrid in winter: open, though 08:30 is before opening.
    assert hours.hours.is_open(datetime(2025, 12, 22, 8, 30, tzinfo=UTC))
    # A holiday is a local date: 23:30 UTC on the 24th is already the 25th in Madrid.
    assert not hours.hours.is_open(datetime(2025, 12, 24, 23, 30, tzinfo=UTC))


def test_hours_parsing() -> None:
    assert parse_days("mon-wed,sat") == [0, 1, 2, 5]
    with pytest.raises(HoursFormatError):
        parse_days("fri-mon")
    assert parse_intervals("closed") == ()
    with pytest.raises(HoursFormatError):
        parse_intervals("18:00-09:00")
    with pytest.raises(HoursFormatError):
        parse_intervals("25:00-26:00")


def test_a_misspelt_node_name_is_reported_once_not_as_a_cascade(prompts: PromptLibrary) -> None:
    demo = (SHIPPED_FLOWS / "demo.yaml").read_text()
    misspelt = demo.replace("    next: main_menu", "    next: main_mnu")
    found = problems_of(misspelt, prompts, "flows/demo.yaml")
    assert len(found) == 1, found
    assert re.match(r"flows/demo\.yaml:\d+: nodes\.welcome\.next: unknown node 'main_mnu'",
                    found[0]), found


def test_problems_come_in_line_order(prompts: PromptLibrary) -> None:
    found = problems_of("""\
        name: t
        start: a
        nodes:
          a: {type: play, prompt: en/missing_one, next: b}
          b: {type: menu, prompt: en/main_menu, options: {1: nowhere}, fallback: c}
          c: {type: hangup, prompt: en/missing_two}
        """, prompts)
    lines = [int(problem.split(":")[1]) for problem in found]
    assert lines == sorted(lines) and len(found) == 3, found


def test_flow_references_to_queues_and_accounts(prompts: PromptLibrary) -> None:
    flow = load_flow(textwrap.dedent("""\
        name: t
        start: menu
        nodes:
          menu: {type: menu, prompt: en/main_menu, options: {1: q, 2: t}, fallback: ok}
          q: {type: enqueue, queue: generall}
          t: {type: transfer, extension: "1099"}
          ok: {type: enqueue, queue: general}
        """), "flows/t.yaml", prompts)
    assert flow.unknown_references({"general"}, {"1001"}) == [
        "flows/t.yaml:5: nodes.q.queue: unknown queue 'generall' (not under queues)",
        "flows/t.yaml:6: nodes.t.extension: unknown account '1099' (not under accounts)",
    ]
    assert flow.unknown_references({"general", "generall"}, {"1099"}) == []
