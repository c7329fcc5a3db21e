"""IVR flows as data: a YAML file of named nodes, loaded and validated before any call.

A flow file::

    name: demo                  # defaults to the file name
    start: lookup               # the first node
    language: en                # the language a call starts in
    languages: [en, es]         # every language the flow speaks; prompts are checked for each
    defaults: {timeout: 5, retries: 2}
    nodes:
      lookup:  {type: lookup_caller, next: welcome}
      welcome: {type: play, prompt: "{lang}/welcome", next: menu}
      ...

Prompt paths are relative to the prompt library's root (or absolute); ``{lang}``
is replaced by the call's language, or a prompt is a mapping ``{en: ..., es: ...}``.

Validation collects every problem as ``FILE:LINE: key: reason`` and raises one
:class:`~settings.located_yaml.ConfigError`: unknown keys and node types, references to
unknown nodes, nodes unreachable from ``start``, prompt files that are missing or
unreadable (for every language), and loops from which no terminal node (hangup,
enqueue, transfer) can be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.hours import (
    BusinessHours,
    HoursFormatError,
    OpeningInterval,
    parse_days,
    parse_holiday,
    parse_intervals,
)
from pbx.media.prompt import PromptError, PromptLibrary
from settings.located_yaml import (
    ConfigError,
    DocumentReader,
    LocatedDocument,
    in_file_order,
    load_yaml,
)

SHIPPED_FLOWS = Path(__file__).resolve().parent / "flows"
DTMF_KEYS = frozenset("0123456789*#")
LANGUAGE_PLACEHOLDER = "{lang}"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt that may differ per language: a ``{lang}`` template or a per-language map."""

    template: str | None = None
    by_language: Mapping[str, str] = field(default_factory=dict)

    def path(self, language: str) -> str:
        if language in self.by_language:
            return self.by_language[language]
        if self.template is None:
            raise KeyError(f"no prompt for language {language!r}")
        return self.template.replace(LANGUAGE_PLACEHOLDER, language)


@dataclass(frozen=True)
class Node:
    name: str
    type: str

    def targets(self) -> Iterator[tuple[str, str]]:
        """(key, node name) of every node this one can continue to."""
        return iter(())

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        """(key, prompt) of every prompt this node may play."""
        return iter(())


@dataclass(frozen=True)
class InputSettings:
    """How a node waits for input and what it says when the input is missing or wrong."""

    timeout: float
    retries: int
    no_input_prompt: PromptSpec
    invalid_prompt: PromptSpec


@dataclass(frozen=True)
class PlayNode(Node):
    prompt: tuple[PromptSpec, ...]
    next: str
    barge_in: bool = True

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        for spec in self.prompt:
            yield "prompt", spec


@dataclass(frozen=True)
class MenuNode(Node):
    prompt: PromptSpec
    options: Mapping[str, str]
    input: InputSettings
    fallback: str

    def targets(self) -> Iterator[tuple[str, str]]:
        for digit, target in self.options.items():
            yield f"options.{digit}", target
        yield "fallback", self.fallback

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "no_input_prompt", self.input.no_input_prompt
        yield "invalid_prompt", self.input.invalid_prompt


@dataclass(frozen=True)
class CollectNode(Node):
    prompt: PromptSpec
    variable: str
    min_length: int
    max_length: int
    terminator: str | None
    inter_digit_timeout: float
    overall_timeout: float
    input: InputSettings
    next: str
    fallback: str

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next
        yield "fallback", self.fallback

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "no_input_prompt", self.input.no_input_prompt
        yield "invalid_prompt", self.input.invalid_prompt


@dataclass(frozen=True)
class LanguageNode(Node):
    """Sets the call's language from the caller's profile, else by digit; a silent caller
    hears the question again (``retries`` times), then the flow's language is kept."""

    prompt: PromptSpec
    options: Mapping[str, str]  # digit -> language
    use_profile: bool
    input: InputSettings
    next: str
    confirm_prompt: PromptSpec | None = None  # played in the language chosen ("English.")

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "invalid_prompt", self.input.invalid_prompt
        if self.confirm_prompt is not None:
            yield "confirm_prompt", self.confirm_prompt


@dataclass(frozen=True)
class SelfServiceNode(Node):
    """An FAQ answer, then "press 0 for an agent": the digit goes to ``agent``, else ``next``."""

    topic: str
    answer: PromptSpec
    agent_prompt: PromptSpec
    agent_digit: str
    timeout: float
    agent: str
    next: str

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "agent", self.agent
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "answer", self.answer
        yield "agent_prompt", self.agent_prompt


@dataclass(frozen=True)
class BusinessHoursNode(Node):
    hours: BusinessHours
    open: str
    closed: str

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "open", self.open
        yield "closed", self.closed


@dataclass(frozen=True)
class LookupCallerNode(Node):
    """Looks the caller's number up (tier, language, last agent); branches on known/unknown."""

    known: str
    unknown: str

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "known", self.known
        yield "unknown", self.unknown


@dataclass(frozen=True)
class SurveyNode(Node):
    """Asks for a 1-5 score; no valid score after the retries just moves on."""

    prompt: PromptSpec
    thank_you_prompt: PromptSpec
    input: InputSettings
    next: str

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        yield "prompt", self.prompt
        yield "thank_you_prompt", self.thank_you_prompt
        yield "no_input_prompt", self.input.no_input_prompt
        yield "invalid_prompt", self.input.invalid_prompt


@dataclass(frozen=True)
class EnqueueNode(Node):
    queue: str
    priority: int | None
    skills: Mapping[str, int]
    prompt: PromptSpec | None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


@dataclass(frozen=True)
class TransferNode(Node):
    extension: str
    prompt: PromptSpec | None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


@dataclass(frozen=True)
class HangupNode(Node):
    prompt: PromptSpec | None

    def prompts(self) -> Iterator[tuple[str, PromptSpec]]:
        if self.prompt is not None:
            yield "prompt", self.prompt


TERMINAL_TYPES = frozenset({"hangup", "enqueue", "transfer"})


@dataclass(frozen=True)
class Flow:
    name: str
    source: str
    start: str
    language: str
    languages: tuple[str, ...]
    nodes: Mapping[str, Node]
    lines: Mapping[str, int] = field(default_factory=dict)  # key path -> line in source

    def unknown_references(self, queues: Collection[str], accounts: Collection[str]) -> list[str]:
        """Problems (``file:line: key: reason``) for enqueue nodes naming a queue, and
        transfer nodes naming an account, that the server configuration does not define."""
        problems = []
        for name, node in self.nodes.items():
            if isinstance(node, EnqueueNode) and node.queue not in queues:
                key, reason = "queue", f"unknown queue {node.queue!r} (not under queues)"
            elif isinstance(node, TransferNode) and node.extension not in accounts:
                key, reason = "extension", f"unknown account {node.extension!r} (not under accounts)"
            else:
                continue
            path = f"nodes.{name}.{key}"
            line = self.lines.get(path) or self.lines.get(f"nodes.{name}")
            problems.append(f"{self.source}:{line}: {path}: {reason}" if line
                            else f"{self.source}: {path}: {reason}")
        return problems


# ---------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Defaults:
    timeout: float = 5.0
    retries: int = 2
    inter_digit_timeout: float = 3.0
    overall_timeout: float = 20.0


_COMMON_INPUT_KEYS = {"timeout", "retries", "no_input_prompt", "invalid_prompt"}
_NODE_KEYS: dict[str, set[str]] = {
    "play": {"prompt", "next", "barge_in"},
    "menu": {"prompt", "options", "fallback"} | _COMMON_INPUT_KEYS,
    "collect": {"prompt", "variable", "min_length", "max_length", "terminator",
                "inter_digit_timeout", "overall_timeout", "next", "fallback"} | _COMMON_INPUT_KEYS,
    "language": {"prompt", "options", "use_profile", "next", "timeout", "retries",
                 "invalid_prompt", "confirm_prompt"},
    "self_service": {"topic", "answer", "agent_prompt", "agent_digit", "timeout", "agent", "next"},
    "business_hours": {"timezone", "weekly", "holidays", "open", "closed"},
    "lookup_caller": {"next", "known", "unknown"},
    "survey": {"prompt", "thank_you_prompt", "next"} | _COMMON_INPUT_KEYS,
    "enqueue": {"queue", "priority", "skills", "prompt"},
    "transfer": {"extension", "prompt"},
    "hangup": {"prompt"},
}
_TOP_KEYS = {"name", "start", "language", "languages", "defaults", "nodes"}


class _FlowReader(DocumentReader):
    """Builds nodes from a located document, collecting problems instead of stopping."""

    def __init__(self, document: LocatedDocument) -> None:
        super().__init__(document)
        self.defaults = _Defaults()

    def prompt(self, data: dict[str, Any], key: str, path: str, default: str | None = None,
               *, required: bool = False) -> PromptSpec | None:
        value = data.get(key)
        if value is None:
            if default is not None:
                return PromptSpec(template=default)
            if required:
                self.fail(f"{path}.{key}", "is required")
            return None
        return self._prompt_value(value, f"{path}.{key}")

    def _prompt_value(self, value: Any, path: str) -> PromptSpec | None:
        if isinstance(value, str) and value:
            return PromptSpec(template=value)
        if isinstance(value, dict) and value and all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
            return PromptSpec(by_language=dict(value))
        self.fail(path, "must be a prompt path or a mapping of language to prompt path")
        return None

    def prompt_list(self, data: dict[str, Any], key: str, path: str) -> tuple[PromptSpec, ...]:
        value = data.get(key)
        if value is None:
            self.fail(f"{path}.{key}", "is required")
            return ()
        items = value if isinstance(value, list) else [value]
        item_path = (lambda i: f"{path}.{key}[{i}]") if isinstance(value, list) else (
            lambda i: f"{path}.{key}")
        specs = [self._prompt_value(item, item_path(i)) for i, item in enumerate(items)]
        if not specs:
            self.fail(f"{path}.{key}", "needs at least one prompt")
        return tuple(spec for spec in specs if spec is not None)

    def digit(self, value: Any, path: str) -> str | None:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or text not in DTMF_KEYS:
            self.fail(path, f"{value!r} is not a DTMF key (0-9, * or #)")
            return None
        return text

    def options(self, data: dict[str, Any], path: str) -> dict[str, str]:
        raw = self.mapping(data.get("options"), f"{path}.options")
        options: dict[str, str] = {}
        for key, target in raw.items():
            digit = self.digit(key, f"{path}.options.{key}")
            if digit is None:
                continue
            if not isinstance(target, str):
                self.fail(f"{path}.options.{key}", "must be a node name")
                continue
            options[digit] = target
        if not raw and "options" in data:
            self.fail(f"{path}.options", "needs at least one option")
        return options

    def input_settings(self, data: dict[str, Any], path: str) -> InputSettings:
        return InputSettings(
            timeout=self.number(data, "timeout", path, self.defaults.timeout,
                                minimum=0.001, maximum=300),
            retries=self.number(data, "retries", path, self.defaults.retries,
                                minimum=0, maximum=10, integer=True),
            no_input_prompt=self.prompt(data, "no_input_prompt", path, "{lang}/no_input")
            or PromptSpec(template="{lang}/no_input"),
            invalid_prompt=self.prompt(data, "invalid_prompt", path, "{lang}/invalid_option")
            or PromptSpec(template="{lang}/invalid_option"),
        )

    # ---------------------------------------------------------------- nodes

    def node(self, name: str, data: dict[str, Any], path: str, languages: tuple[str, ...]) -> Node | None:
        node_type = data.get("type")
        if node_type is None:
            self.fail(f"{path}.type", f"is required (one of: {', '.join(sorted(_NODE_KEYS))})")
            return None
        if node_type not in _NODE_KEYS:
            self.fail(f"{path}.type", f"unknown node type {node_type!r} "
                                      f"(expected one of: {', '.join(sorted(_NODE_KEYS))})")
            return None
        self.mapping(data, path, _NODE_KEYS[node_type] | {"type"})
        before = len(self.problems)
        build: Callable[[str, dict[str, Any], str, tuple[str, ...]], Node | None] = getattr(
            self, f"_{node_type}")
        node = build(name, data, path, languages)
        return node if len(self.problems) == before else None

    def _target(self, data: dict[str, Any], key: str, path: str) -> str:
        return self.text(data, key, path, required=True) or ""

    def _play(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        return PlayNode(name, "play", self.prompt_list(data, "prompt", path),
                        self._target(data, "next", path),
                        self.boolean(data, "barge_in", path, True))

    def _menu(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node | None:
        prompt = self.prompt(data, "prompt", path, required=True)
        if "options" not in data:
            self.fail(f"{path}.options", "is required")
        options = self.options(data, path)
        node = MenuNode(name, "menu", prompt or PromptSpec(), options,
                        self.input_settings(data, path), self._target(data, "fallback", path))
        return node

    def _collect(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        min_length = self.number(data, "min_length", path, 1, minimum=1, maximum=64, integer=True)
        max_length = self.number(data, "max_length", path, max(min_length, 1), minimum=1,
                                 maximum=64, integer=True)
        if max_length < min_length:
            self.fail(f"{path}.max_length", f"must not be below min_length ({min_length})")
        terminator = None
        if data.get("terminator") is not None:
            terminator = self.digit(data["terminator"], f"{path}.terminator")
        variable = self.text(data, "variable", path, name) or name
        return CollectNode(
            name, "collect", self.prompt(data, "prompt", path, required=True) or PromptSpec(),
            variable, min_length, max_length, terminator,
            self.number(data, "inter_digit_timeout", path, self.defaults.inter_digit_timeout,
                        minimum=0.001, maximum=300),
            self.number(data, "overall_timeout", path, self.defaults.overall_timeout,
                        minimum=0.001, maximum=3600),
            self.input_settings(data, path),
            self._target(data, "next", path), self._target(data, "fallback", path))

    def _language(self, name: str, data: dict[str, Any], path: str,
                  languages: tuple[str, ...]) -> Node:
        if "options" not in data:
            self.fail(f"{path}.options", "is required")
        options = self.options(data, path)
        for digit, language in options.items():
            if language not in languages:
                self.fail(f"{path}.options.{digit}",
                          f"language {language!r} is not in the flow's languages ({', '.join(languages)})")
        return LanguageNode(name, "language",
                            self.prompt(data, "prompt", path, "common/choose_language")
                            or PromptSpec(),
                            options, self.boolean(data, "use_profile", path, True),
                            self.input_settings(data, path), self._target(data, "next", path),
                            self.prompt(data, "confirm_prompt", path))

    def _self_service(self, name: str, data: dict[str, Any], path: str,
                      _: tuple[str, ...]) -> Node:
        agent_digit = self.digit(data.get("agent_digit", "0"), f"{path}.agent_digit") or "0"
        return SelfServiceNode(
            name, "self_service", self.text(data, "topic", path, required=True) or "",
            self.prompt(data, "answer", path, required=True) or PromptSpec(),
            self.prompt(data, "agent_prompt", path, "{lang}/press_0_for_agent") or PromptSpec(),
            agent_digit,
            self.number(data, "timeout", path, self.defaults.timeout, minimum=0.001, maximum=300),
            self._target(data, "agent", path), self._target(data, "next", path))

    def _business_hours(self, name: str, data: dict[str, Any], path: str,
                        _: tuple[str, ...]) -> Node | None:
        zone_name = self.text(data, "timezone", path, required=True)
        zone: ZoneInfo | None = None
        if zone_name is not None:
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                self.fail(f"{path}.timezone", f"unknown time zone {zone_name!r} (e.g. Europe/Madrid)")
        weekly: dict[int, tuple[OpeningInterval, ...]] = {}
        if "weekly" not in data:
            self.fail(f"{path}.weekly", "is required (e.g. {mon-fri: '09:00-18:00'})")
        for days_text, hours_text in self.mapping(data.get("weekly", {}), f"{path}.weekly").items():
            key_path = f"{path}.weekly.{days_text}"
            try:
                days = parse_days(str(days_text))
                if not isinstance(hours_text, str):
                    raise HoursFormatError("must be a string like '09:00-18:00' or 'closed'")
                intervals = parse_intervals(hours_text)
            except HoursFormatError as error:
                self.fail(key_path, str(error))
                continue
            for day in days:
                if day in weekly:
                    self.fail(key_path, "gives hours for a day already given")
                weekly[day] = intervals
        holidays = set()
        raw_holidays = data.get("holidays", [])
        if not isinstance(raw_holidays, list):
            self.fail(f"{path}.holidays", "must be a list of dates")
            raw_holidays = []
        for i, value in enumerate(raw_holidays):
            try:
                holidays.add(parse_holiday(value))
            except HoursFormatError as error:
                self.fail(f"{path}.holidays[{i}]", str(error))
        open_target = self._target(data, "open", path)
        closed_target = self._target(data, "closed", path)
        if zone is None:
            return None
        return BusinessHoursNode(name, "business_hours",
                                 BusinessHours(zone, weekly, frozenset(holidays)),
                                 open_target, closed_target)

    def _lookup_caller(self, name: str, data: dict[str, Any], path: str,
                       _: tuple[str, ...]) -> Node:
        default = self.text(data, "next", path)
        known = self.text(data, "known", path, default)
        unknown = self.text(data, "unknown", path, default)
        if known is None or unknown is None:
            self.fail(f"{path}.next", "is required unless both known and unknown are given")
        return LookupCallerNode(name, "lookup_caller", known or "", unknown or "")

    def _survey(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        return SurveyNode(name, "survey",
                          self.prompt(data, "prompt", path, "{lang}/survey") or PromptSpec(),
                          self.prompt(data, "thank_you_prompt", path, "{lang}/thank_you")
                          or PromptSpec(),
                          self.input_settings(data, path), self._target(data, "next", path))

    def _enqueue(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        priority = None
        if data.get("priority") is not None:
            priority = self.number(data, "priority", path, 0, minimum=0, maximum=100, integer=True)
        skills: dict[str, int] = {}
        raw_skills = data.get("skills", {})
        if isinstance(raw_skills, list):  # [billing, spanish]: any proficiency
            raw_skills = {str(skill): 1 for skill in raw_skills}
        for skill, level in self.mapping(raw_skills, f"{path}.skills").items():
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
                self.fail(f"{path}.skills.{skill}", "must be a proficiency from 1 to 10")
                continue
            skills[str(skill)] = level
        return EnqueueNode(name, "enqueue", self.text(data, "queue", path, required=True) or "",
                           priority, skills, self.prompt(data, "prompt", path))

    def _transfer(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        return TransferNode(name, "transfer",
                            self.text(data, "extension", path, required=True) or "",
                            self.prompt(data, "prompt", path))

    def _hangup(self, name: str, data: dict[str, Any], path: str, _: tuple[str, ...]) -> Node:
        return HangupNode(name, "hangup", self.prompt(data, "prompt", path))


def _check_graph(reader: _FlowReader, start: str, nodes: Mapping[str, Node],
                 defined: Iterable[str]) -> None:
    defined_names = set(defined)
    edges: dict[str, list[str]] = {}
    dangling = False
    for name, node in nodes.items():
        edges[name] = []
        for key, target in node.targets():
            if target not in defined_names:
                reader.fail(f"nodes.{name}.{key}", f"unknown node {target!r}")
                dangling = True
            elif target in nodes:
                edges[name].append(target)
    if start not in defined_names:
        reader.fail("start", f"unknown node {start!r}")
        return
    if dangling or len(nodes) != len(defined_names):
        # A misspelt node name or a node with errors: what lies behind it would be reported
        # unreachable (or trapped) too. The cause is reported once; the graph after the fix.
        return
    reachable = {start}
    stack = [start]
    while stack:
        for target in edges[stack.pop()]:
            if target not in reachable:
                reachable.add(target)
                stack.append(target)
    for name in nodes:
        if name not in reachable:
            reader.fail(f"nodes.{name}", f"unreachable: no path leads here from start node {start!r}")
    # Nodes from which some terminal node can be reached.
    incoming: dict[str, list[str]] = {name: [] for name in nodes}
    for name, targets in edges.items():
        for target in targets:
            incoming[target].append(name)
    escapes = {name for name, node in nodes.items() if node.type in TERMINAL_TYPES}
    stack = list(escapes)
    while stack:
        for source in incoming[stack.pop()]:
            if source not in escapes:
                escapes.add(source)
                stack.append(source)
    trapped = [name for name in nodes if name in reachable and name not in escapes]
    for cycle in _cycles(trapped, edges):
        loop = " -> ".join([*cycle, cycle[0]])
        reader.fail(f"nodes.{cycle[0]}",
                    f"loop with no exit: {loop} (no hangup, enqueue or transfer can be reached)")


def _cycles(names: list[str], edges: Mapping[str, list[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected group of ``names`` (Tarjan)."""
    members = set(names)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in edges[name]:
            if target not in members:
                continue
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1 or name in edges[name]:
                found.append(_cycle_through(name, set(group), edges))

    for name in names:
        if name not in index:
            visit(name)
    return found


def _cycle_through(start: str, group: set[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A simple path start -> ... -> start inside ``group`` (breadth first, shortest)."""
    previous: dict[str, str] = {}
    queue = [start]
    for name in queue:
        for target in edges[name]:
            if target not in group:
                continue
            if target == start:
                path = [name]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return list(reversed(path))
            if target not in previous:
                previous[target] = name
                queue.append(target)
    return [start]


def _check_prompts(reader: _FlowReader, nodes: Mapping[str, Node], languages: tuple[str, ...],
                   prompts: PromptLibrary) -> None:
    for name, node in nodes.items():
        for key, spec in node.prompts():
            for language in languages:
                try:
                    path = spec.path(language)
                except KeyError:
                    reader.fail(f"nodes.{name}.{key}", f"no prompt for language {language!r}")
                    continue
                try:
                    prompts.get(path)  # loading now also warms the cache for calls
                except PromptError as error:
                    missing = "missing prompt file" if not error.path.exists() else "bad prompt file"
                    reader.fail(f"nodes.{name}.{key}", f"{missing} {error.path}: {error.reason}")


def load_flow(text: str, source: str, prompts: PromptLibrary, *, name: str | None = None) -> Flow:
    """Parse and validate one flow; raises ConfigError listing every problem with its line."""
    document = load_yaml(text, source)
    reader = _FlowReader(document)
    data = reader.mapping(document.data, "", _TOP_KEYS) if document.data else {}
    if not data:
        raise ConfigError([f"{source}: empty flow (needs start and nodes)"])
    defaults = reader.mapping(data.get("defaults", {}), "defaults",
                              {"timeout", "retries", "inter_digit_timeout", "overall_timeout"})
    reader.defaults = _Defaults(
        timeout=reader.number(defaults, "timeout", "defaults", 5.0, minimum=0.001, maximum=300),
        retries=reader.number(defaults, "retries", "defaults", 2, minimum=0, maximum=10,
                              integer=True),
        inter_digit_timeout=reader.number(defaults, "inter_digit_timeout", "defaults", 3.0,
                                          minimum=0.001, maximum=300),
        overall_timeout=reader.number(defaults, "overall_timeout", "defaults", 20.0,
                                      minimum=0.001, maximum=3600),
    )
    flow_name = reader.text(data, "name", "", name or Path(source).stem) or Path(source).stem
    language = reader.text(data, "language", "", "en") or "en"
    raw_languages = data.get("languages", [language])
    if not isinstance(raw_languages, list) or not raw_languages or not all(
            isinstance(item, str) and item for item in raw_languages):
        reader.fail("languages", "must be a non-empty list of language codes like [en, es]")
        raw_languages = [language]
    languages = tuple(dict.fromkeys(raw_languages))
    if language not in languages:
        reader.fail("language", f"{language!r} is not in languages ({', '.join(languages)})")
    start = reader.text(data, "start", "", required=True) or ""
    raw_nodes = reader.mapping(data.get("nodes"), "nodes")
    if not raw_nodes and "nodes" in data:
        reader.fail("nodes", "needs at least one node")
    nodes: dict[str, Node] = {}
    for node_name, node_data in raw_nodes.items():
        path = f"nodes.{node_name}"
        if not isinstance(node_data, dict):
            reader.fail(path, "must be a mapping with a type")
            continue
        node = reader.node(str(node_name), node_data, path, languages)
        if node is not None:
            nodes[str(node_name)] = node
    _check_graph(reader, start, nodes, (str(n) for n in raw_nodes))
    _check_prompts(reader, nodes, languages, prompts)
    if reader.problems:
        raise ConfigError(in_file_order(reader.problems))
    return Flow(flow_name, source, start, language, languages, nodes, document.lines)


def resolve_flow_path(reference: str, base_dir: Path | None = None) -> Path:
    """A flow named in configuration: a shipped flow by name (``demo``) or a YAML path."""
    if "/" not in reference and not reference.endswith((".yaml", ".yml")):
        return SHIPPED_FLOWS / f"{reference}.yaml"
    path = Path(reference)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def load_flow_file(path: Path, prompts: PromptLibrary) -> Flow:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read flow: {error.strerror or error}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return load_flow(text, str(path), prompts)


def load_flows(references: Iterable[str], prompts: PromptLibrary, *,
               base_dir: Path | None = None) -> dict[str, Flow]:
    """Load every referenced flow (``demo`` or a path), keyed by reference; all problems at once."""
    flows: dict[str, Flow] = {}
    problems: list[str] = []
    for reference in references:
        if reference in flows:
            continue
        try:
            flows[reference] = load_flow_file(resolve_flow_path(reference, base_dir), prompts)
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    return flows
