"""settings.validation: a pydantic failure becomes ``FILE:LINE: key: reason``, key and line exact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from settings.located_yaml import in_file_order, load_yaml
from settings.validation import ListOf, NonEmpty, Section, Text, validate_items, validate_value


class Ring(Section):
    after: float = Field(0, ge=0)
    skills: dict[Text, int] = Field(default_factory=dict)


class Sample(Section):
    count: int = Field(1, ge=1, le=10)
    ratio: float = Field(0.5, gt=0)
    mode: Literal["fast", "slow"] = "fast"
    label: Text = "x"
    rings: ListOf[Ring] = ()
    tags: ListOf[Text] = ()
    low: int = 1
    high: int = Field(2, validate_default=True)

    @field_validator("high")
    @classmethod
    def _above_low(cls, value: int, info: ValidationInfo) -> int:
        if "low" in info.data and value <= info.data["low"]:
            raise ValueError(f"must be above low ({info.data['low']})")
        return value


def problems_of(text: str) -> list[str]:
    document = load_yaml(text, "f.yaml")
    problems: list[str] = []
    assert validate_value(document, problems, "s", Sample, document.data["s"]) is None
    return in_file_order(problems)


def test_each_kind_of_failure_reads_as_a_short_reason_at_its_key_and_line():
    assert problems_of(
        "s:\n"
        "  count: 11\n"
        "  ratio: 0\n"
        "  mode: medium\n"
        "  label: [a]\n"
        "  rings:\n"
        "    - {after: -1}\n"
        "    - {skills: {billing: high}}\n"
        "  tags: x\n"
        "  colour: red\n"
        "  low: 5\n"
        "  high: 'six'\n") == [
        "f.yaml:2: s.count: must be between 1 and 10, not 11",
        "f.yaml:3: s.ratio: must be above 0, not 0",
        "f.yaml:4: s.mode: must be one of 'fast' or 'slow', not 'medium'",
        "f.yaml:5: s.label: must be a string",
        "f.yaml:7: s.rings[0].after: must be at least 0, not -1",
        "f.yaml:8: s.rings[1].skills.billing: must be an integer",
        "f.yaml:9: s.tags: must be a list",
        "f.yaml:10: s.colour: unknown key (expected one of: count, high, label, low, mode,"
        " ratio, rings, tags)",
        "f.yaml:12: s.high: must be an integer",
    ]


def test_a_rule_between_fields_fires_beside_other_failures():
    assert problems_of("s:\n  count: 0\n  low: 5\n  high: 3\n") == [
        "f.yaml:2: s.count: must be between 1 and 10, not 0",
        "f.yaml:4: s.high: must be above low (5)",
    ]


def test_a_missing_key_is_reported_at_its_parent_line():
    document = load_yaml("top:\n  - {}\n", "f.yaml")
    problems: list[str] = []

    class Needs(Section):
        name: Text

    assert validate_items(document, problems, "top", Needs, document.data["top"]) == []
    assert problems == ["f.yaml:2: top[0].name: is required"]


def test_items_are_validated_one_by_one_and_the_good_ones_kept():
    document = load_yaml("rings:\n  - {after: 1}\n  - {after: x}\n  - {after: 3}\n", "f.yaml")
    problems: list[str] = []
    valid = validate_items(document, problems, "rings", Ring, document.data["rings"])
    assert [(i, ring.after) for i, ring in valid] == [(0, 1.0), (2, 3.0)]
    assert problems == ["f.yaml:3: rings[1].after: must be a number"]


def test_text_takes_a_number_as_written_and_lists_become_tuples():
    document = load_yaml("s: {label: 1001, tags: [a, 2]}\n", "f.yaml")
    sample = validate_value(document, [], "s", Sample, document.data["s"])
    assert sample is not None and sample.label == "1001" and sample.tags == ("a", "2")


def test_non_empty_is_checked_after_the_items():
    class Codecs(Section):
        codecs: ListOf[Literal["PCMU", "PCMA"]] = Field(("PCMU",))

    class NonEmptyCodecs(Section):
        codecs: Annotated[ListOf[Literal["PCMU", "PCMA"]], NonEmpty] = ("PCMU",)

    document = load_yaml("a: {codecs: [G729]}\nb: {codecs: []}\n", "f.yaml")
    problems: list[str] = []
    validate_value(document, problems, "a", NonEmptyCodecs, document.data["a"])
    validate_value(document, problems, "b", NonEmptyCodecs, document.data["b"])
    assert problems == ["f.yaml:1: a.codecs[0]: must be one of 'PCMU' or 'PCMA', not 'G729'",
                        "f.yaml:2: b.codecs: needs at least one item"]
    assert validate_value(document, [], "b", Codecs, document.data["b"]) is not None


def test_a_key_read_through_an_alias_is_named_as_written():
    """``from`` is a Python keyword, so its field has another name: the errors, and the
    keys an unknown key is told to choose from, still say ``from``."""

    class Span(Section):
        start: float = Field(0, ge=0, le=24, alias="from")
        code: Annotated[Text, StringConstraints(pattern=r"^[a-z]+$")] = "a"

    document = load_yaml("s: {from: 25, start: 1, code: A1}\n", "f.yaml")
    problems: list[str] = []
    assert validate_value(document, problems, "s", Span, document.data["s"]) is None
    assert problems == ["f.yaml:1: s.from: must be between 0 and 24, not 25",
                        "f.yaml:1: s.code: must match ^[a-z]+$, not 'A1'",
                        "f.yaml:1: s.start: unknown key (expected one of: code, from)"]
