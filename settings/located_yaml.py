"""Reading YAML while remembering where every key came from.

Validation errors must name the file, the line and the key, so the loader
keeps a map from each key path (such as ``sip.listen[1]``) to its line. The
checking itself is done by pydantic models, through ``settings.validation``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_LOCATION = re.compile(r"^(.*?):(\d+): ")


def in_file_order(problems: list[str]) -> list[str]:
    """Problems sorted by line within each file, files in the order they first appear."""
    files: dict[str, int] = {}
    keyed = []
    for problem in problems:
        found = _LOCATION.match(problem)
        source, line = (found.group(1), int(found.group(2))) if found else (problem.split(":")[0], 0)
        keyed.append((files.setdefault(source, len(files)), line, problem))
    return [problem for _, _, problem in sorted(keyed, key=lambda item: item[:2])]


class ConfigError(Exception):
    """One or more problems in a configuration file, each with its location."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class LocatedDocument:
    """A parsed YAML document plus the line of every key path."""

    source: str
    data: Any
    lines: dict[str, int]

    def where(self, path: str) -> str:
        # Fall back to the closest ancestor that has a recorded line.
        probe = path
        while probe:
            if probe in self.lines:
                return f"{self.source}:{self.lines[probe]}"
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self.source

    def problem(self, path: str, reason: str) -> str:
        if not path:  # the document as a whole
            return f"{self.where(path)}: {reason}"
        return f"{self.where(path)}: {path}: {reason}"


def _convert(node: yaml.Node, path: str, lines: dict[str, int], source: str) -> Any:
    if path:
        lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError([f"{source}:{key_node.start_mark.line + 1}: keys must be plain scalars"])
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in result:
                raise ConfigError([f"{source}:{key_node.start_mark.line + 1}: {child}: duplicate key"])
            lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, f"{path}[{i}]", lines, source) for i, item in enumerate(node.value)]
    try:
        return yaml.SafeLoader("").construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:
        # An impossible date (2025-13-01) or number fails while building the value.
        raise ConfigError([f"{source}:{node.start_mark.line + 1}: {path or '(top)'}: invalid value: {exc}"]) from None


def load_yaml(text: str, source: str) -> LocatedDocument:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}{line}: invalid YAML: {reason}"]) from None
    lines: dict[str, int] = {}
    data = {} if node is None else _convert(node, "", lines, source)
    return LocatedDocument(source, data, lines)


def load_yaml_file(path: Path) -> LocatedDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return load_yaml(text, str(path))
