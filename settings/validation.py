"""Validating located YAML with pydantic models: every failure is ``FILE:LINE: key: reason``.

Configuration sections are ``Section`` models: unknown keys are refused, nothing is
coerced silently ("5" is not a number, 1 is not true) and the result is frozen.
``validate_value`` checks one value against a model or type; ``validate_items`` checks
a list item by item, so one bad item does not hide the good ones, whose references to
each other are still checked. Pydantic's messages are reworded here, once, into the
short form the rest of the file's errors use ("must be between 1 and 10, not 11").

A rule between two fields of a section (``max_expires`` not below ``min_expires``) is
a field validator on the later field that reads the earlier one from ``info.data``:
pydantic runs it even when other fields of the section fail, so the mistake is
reported together with the others, not only once they are fixed. ``info.data`` lacks
the earlier field when that field failed; the rule is then skipped (one mistake, one
error).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
)
from pydantic.fields import FieldInfo

from settings.located_yaml import LocatedDocument

Item = TypeVar("Item")


class Section(BaseModel):
    """A section of a configuration file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _scalar_text(value: Any) -> Any:
    # YAML reads `realm: 1234` as a number; for a text field it is the text the user typed.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _list_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _non_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if not items:
        raise ValueError("needs at least one item")
    return items


Text = Annotated[str, BeforeValidator(_scalar_text)]
# A YAML list, kept as a tuple (sections are frozen).
ListOf = Annotated[tuple[Item, ...], BeforeValidator(_list_as_tuple)]
# Checked after the items (pydantic's min_length would also fire when an item is wrong).
NonEmpty = AfterValidator(_non_empty)


def base_dir(context: Mapping[str, Any] | None) -> Path | None:
    """The directory relative paths in the file are taken from (the file's own), if any."""
    found = (context or {}).get("base_dir")
    return found if isinstance(found, Path) else None


def relative_to_file(value: str, context: Mapping[str, Any] | None) -> Path:
    path = Path(value)
    directory = base_dir(context)
    if directory is not None and not path.is_absolute():
        path = directory / path
    return path


# ------------------------------------------------------------------ running models


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def validate_value(document: LocatedDocument, problems: list[str], path: str, kind: Any,
                   value: Any, *, context: Mapping[str, Any] | None = None) -> Any | None:
    """``value`` (found at ``path``) validated as ``kind``; None, with its problems added to
    ``problems``, when it is not valid."""
    try:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(value, context=dict(context or {}))
        return _adapter(kind).validate_python(value, context=dict(context or {}))
    except ValidationError as error:
        problems.extend(located_problems(document, path, kind, error))
        return None


def validate_items(document: LocatedDocument, problems: list[str], path: str, kind: Any,
                   items: Any, *, context: Mapping[str, Any] | None = None,
                   prepare: Callable[[Any], Any] | None = None) -> list[tuple[int, Any]]:
    """Each item of the list ``items`` validated on its own: (index, model) of the valid ones."""
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append(document.problem(path, "must be a list"))
        return []
    valid: list[tuple[int, Any]] = []
    for i, item in enumerate(items):
        model = validate_value(document, problems, f"{path}[{i}]", kind,
                               prepare(item) if prepare else item, context=context)
        if model is not None:
            valid.append((i, model))
    return valid


def located_problems(document: LocatedDocument, path: str, kind: Any,
                     error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors(include_url=False):
        loc = tuple(part for part in detail["loc"] if part != "[key]")
        key = _key_path(path, kind, loc)
        problems.append(document.problem(key, reason(kind, detail, loc)))
    return problems


def _key_path(path: str, kind: Any, loc: tuple[Any, ...]) -> str:
    for depth, part in enumerate(loc):
        inside = _walk(kind, loc[:depth])[0]
        if isinstance(part, int) and get_origin(inside) in (list, tuple, set, frozenset):
            path = f"{path}[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


# ------------------------------------------------------------------ messages


def _unwrap(kind: Any) -> tuple[Any, list[Any]]:
    """The type inside Annotated and Optional, with the Annotated metadata found on the way."""
    metadata: list[Any] = []
    while True:
        if get_origin(kind) is Annotated:
            kind, *extra = get_args(kind)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
            continue
        if get_origin(kind) in (Union, types.UnionType):
            members = [arg for arg in get_args(kind) if arg is not type(None)]
            if len(members) == 1:
                kind = members[0]
                continue
        return kind, metadata


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field read from ``key``: its name, or its alias (``from`` is a keyword)."""
    found = model.model_fields.get(key)
    if found is None or found.alias not in (None, key):
        found = next((f for f in model.model_fields.values() if f.alias == key), None)
    return found


def _keys(model: type[BaseModel]) -> list[str]:
    return sorted(field.alias or name for name, field in model.model_fields.items())


def _walk(kind: Any, loc: Iterable[Any]) -> tuple[Any, list[Any]]:
    """The type (unwrapped) and constraints found at ``loc`` inside ``kind``; None if lost."""
    kind, metadata = _unwrap(kind)
    for part in loc:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = _field(kind, str(part))
            if field is None:
                return None, []
            kind, metadata = _unwrap(field.annotation)
            metadata = [*field.metadata, *metadata]
        elif get_origin(kind) in (list, tuple, set, frozenset):
            kind, metadata = _unwrap(get_args(kind)[0])
        elif get_origin(kind) is dict:
            kind, metadata = _unwrap(get_args(kind)[1])
        else:
            return None, []
    return kind, metadata


def _bounds(metadata: list[Any]) -> tuple[Any, Any, bool, bool]:
    """(low, high, low inclusive, high inclusive); None where unbounded."""
    low: Any = None
    high: Any = None
    low_inclusive = high_inclusive = True
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_inclusive = item.gt, False
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_inclusive = item.lt, False
    return low, high, low_inclusive, high_inclusive


def _range_reason(metadata: list[Any], value: Any) -> str | None:
    low, high, low_inclusive, high_inclusive = _bounds(metadata)
    if low is not None and high is not None and low_inclusive and high_inclusive:
        return f"must be between {low} and {high}, not {value}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}" if low_inclusive else f"above {low}")
    if high is not None:
        parts.append(f"at most {high}" if high_inclusive else f"below {high}")
    return f"must be {' and '.join(parts)}, not {value}" if parts else None


_TYPE_REASONS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dataclass_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "missing": "is required",
}


def reason(kind: Any, detail: Mapping[str, Any], loc: tuple[Any, ...] | None = None) -> str:
    """One pydantic error as the short reason a configuration error gives."""
    error_type = detail["type"]
    context = detail.get("ctx") or {}
    value = detail.get("input")
    loc = tuple(detail["loc"]) if loc is None else loc
    if error_type == "extra_forbidden":
        owner, _ = _walk(kind, loc[:-1])
        if isinstance(owner, type) and issubclass(owner, BaseModel):
            return f"unknown key (expected one of: {', '.join(_keys(owner))})"
        return "unknown key"
    if error_type in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        found = _range_reason(_walk(kind, loc)[1], value)
        if found is not None:
            return found
    if error_type in ("literal_error", "enum"):
        return f"must be one of {context.get('expected', '')}, not {value!r}"
    if error_type in ("value_error", "assertion_error") and "error" in context:
        return str(context["error"])
    if error_type == "too_short" and context.get("min_length") == 1:
        return "needs at least one item"
    if error_type == "string_pattern_mismatch":
        return f"must match {context.get('pattern', '')}, not {value!r}"
    if error_type == "string_too_short" and context.get("min_length") == 1:
        return "must not be empty"
    if error_type in _TYPE_REASONS:
        return _TYPE_REASONS[error_type]
    message = str(detail.get("msg", error_type))
    return message.replace("Input should be", "must be").replace("Value error, ", "")
