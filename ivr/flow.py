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

Each node type is a pydantic model whose fields are the node's keys
(``ivr.nodes``), validated through ``settings.validation`` like the server's
configuration; the engine runs those models. Validation collects every problem as ``FILE:LINE: key: reason`` and
raises one :class:`~settings.located_yaml.ConfigError`: unknown keys and node types,
references to unknown nodes, nodes unreachable from ``start``, prompt files that are
missing or unreadable (for every language), and loops from which no terminal node
(hangup, enqueue, transfer) can be reached.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ivr.nodes import (
    NODE_TYPES,
    TERMINAL_TYPES,
    EnqueueNode,
    Node,
    OfferCallbackNode,
    Retries,
    Timeout,
    TransferNode,
)
from pbx.media.prompt import PromptError, PromptLibrary
from settings.located_yaml import ConfigError, LocatedDocument, in_file_order, load_yaml
from settings.validation import ListOf, NonEmpty, Section, Text, validate_value

SHIPPED_FLOWS = Path(__file__).resolve().parent / "flows"


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
        """Problems (``file:line: key: reason``) for enqueue and offer_callback nodes naming a queue, and
        transfer nodes naming an account, that the server configuration does not define."""
        problems = []
        for name, node in self.nodes.items():
            if isinstance(node, EnqueueNode | OfferCallbackNode) and node.queue not in queues:
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


class FlowDefaults(Section):
    """Values of the input keys for every node that does not give its own."""

    timeout: Timeout = 5.0
    retries: Retries = 2
    inter_digit_timeout: Timeout = 3.0
    overall_timeout: float = Field(20.0, ge=0.001, le=3600)


def _non_empty_text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


class FlowFile(Section):
    """The top of a flow file; its nodes are validated one by one (``NODE_TYPES``)."""

    name: Text | None = None  # default: the file's name
    start: Text
    languages: Annotated[ListOf[Annotated[Text, AfterValidator(_non_empty_text)]], NonEmpty] | None = None
    language: Text = Field("en", validate_default=True)
    defaults: FlowDefaults = FlowDefaults()
    nodes: dict[Text, Any]

    @field_validator("language")
    @classmethod
    def _one_of_the_languages(cls, language: str, info: ValidationInfo) -> str:
        languages = info.data.get("languages")
        if languages is not None and language not in languages:
            raise ValueError(f"{language!r} is not in languages ({', '.join(languages)})")
        return language

    @field_validator("nodes")
    @classmethod
    def _at_least_one(cls, nodes: dict[str, Any]) -> dict[str, Any]:
        if not nodes:
            raise ValueError("needs at least one node")
        return nodes


def _node(document: LocatedDocument, problems: list[str], name: str, data: Any,
          defaults: FlowDefaults, languages: tuple[str, ...]) -> Node | None:
    path = f"nodes.{name}"
    if not isinstance(data, dict):
        problems.append(document.problem(path, "must be a mapping with a type"))
        return None
    node_type = data.get("type")
    if node_type is None:
        problems.append(document.problem(f"{path}.type", f"is required (one of: {', '.join(sorted(NODE_TYPES))})"))
        return None
    model = NODE_TYPES.get(node_type) if isinstance(node_type, str) else None
    if model is None:
        problems.append(document.problem(f"{path}.type", f"unknown node type {node_type!r} "
                                         f"(expected one of: {', '.join(sorted(NODE_TYPES))})"))
        return None
    inherited = {key: value for key, value in defaults.model_dump().items() if key in model.model_fields}
    found: Node | None = validate_value(document, problems, path, model, {**inherited, **data},
                                        context={"node": name, "languages": languages})
    return found


def _check_graph(problems: list[str], document: LocatedDocument, start: str,
                 nodes: Mapping[str, Node], defined: Iterable[str]) -> None:
    def fail(path: str, reason: str) -> None:
        problems.append(document.problem(path, reason))

    defined_names = set(defined)
    edges: dict[str, list[str]] = {}
    dangling = False
    for name, node in nodes.items():
        edges[name] = []
        for key, target in node.targets():
            if target not in defined_names:
                fail(f"nodes.{name}.{key}", f"unknown node {target!r}")
                dangling = True
            elif target in nodes:
                edges[name].append(target)
    if start not in defined_names:
        fail("start", f"unknown node {start!r}")
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
            fail(f"nodes.{name}", f"unreachable: no path leads here from start node {start!r}")
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
        fail(f"nodes.{cycle[0]}",
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


def _check_prompts(problems: list[str], document: LocatedDocument, nodes: Mapping[str, Node],
                   languages: tuple[str, ...], prompts: PromptLibrary) -> None:
    for name, node in nodes.items():
        for key, spec in node.prompts():
            for language in languages:
                try:
                    path = spec.path(language)
                except KeyError:
                    problems.append(document.problem(f"nodes.{name}.{key}",
                                                     f"no prompt for language {language!r}"))
                    continue
                try:
                    prompts.get(path)  # loading now also warms the cache for calls
                except PromptError as error:
                    missing = "missing prompt file" if not error.path.exists() else "bad prompt file"
                    problems.append(document.problem(f"nodes.{name}.{key}",
                                                     f"{missing} {error.path}: {error.reason}"))


def load_flow(text: str, source: str, prompts: PromptLibrary, *, name: str | None = None) -> Flow:
    """Parse and validate one flow; raises ConfigError listing every problem with its line."""
    document = load_yaml(text, source)
    if not document.data:
        raise ConfigError([f"{source}: empty flow (needs start and nodes)"])
    problems: list[str] = []
    top: FlowFile | None = validate_value(document, problems, "", FlowFile, document.data)
    raw_nodes = document.data.get("nodes") if isinstance(document.data, dict) else None
    if top is None and not isinstance(raw_nodes, dict):
        raise ConfigError(in_file_order(problems))
    defaults = top.defaults if top is not None else FlowDefaults()
    language = top.language if top is not None else "en"
    languages = (top.languages or (language,)) if top is not None else (language,)
    languages = tuple(dict.fromkeys(languages))
    nodes: dict[str, Node] = {}
    for node_name, node_data in (raw_nodes or {}).items():
        node = _node(document, problems, str(node_name), node_data, defaults, languages)
        if node is not None:
            nodes[str(node_name)] = node
    if top is not None:
        _check_graph(problems, document, top.start, nodes, (str(n) for n in raw_nodes or {}))
    _check_prompts(problems, document, nodes, languages, prompts)
    if problems or top is None:
        raise ConfigError(in_file_order(problems))
    flow_name = top.name or name or Path(source).stem
    return Flow(flow_name, source, top.start, language, languages, nodes, document.lines)


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
