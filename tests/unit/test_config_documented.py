"""The shipped configuration documents every key the server reads, and every shipped file is valid.

The keys come from the models themselves (the sections of ``pbx.configuration.server`` and the
contact center's item models), so a field added to a model without a line in
``pbx/default_config.yaml`` fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from ivr.flow import SHIPPED_FLOWS, load_flow_file
from pbx.configuration.callbacks import TrunkSettings
from pbx.configuration.models import AgentCreate, CustomerCreate, QueueCreate, SiteCreate
from pbx.configuration.server import (
    SCALAR_KEYS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    Account,
    ExtensionSettings,
    load_config,
)
from pbx.media.prompt import PromptLibrary
from settings.located_yaml import load_yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pbx" / "default_config.yaml"

# Sections that are lists of items (or, for extensions, a mapping of number to item).
ITEMS: dict[str, type[BaseModel]] = {
    "accounts": Account,
    "extensions": ExtensionSettings,
    "sites": SiteCreate,
    "agents": AgentCreate,
    "queues": QueueCreate,
    "customers": CustomerCreate,
    "trunks": TrunkSettings,
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def keys_of(model: type[BaseModel], prefix: str) -> list[str]:
    """Every key path ``model`` accepts: ``sip.tls.key``, ``queues[].expansion[].skills``."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        keys.append(path)
        nested = _models_in(field.annotation)
        listed = get_origin(field.annotation) in (list, tuple) or "list[" in str(field.annotation)
        for inner in nested:
            keys.extend(keys_of(inner, f"{path}[]" if listed else path))
    return keys


def accepted_keys() -> list[str]:
    keys = list(SCALAR_KEYS)
    for name, model in SECTIONS.items():
        keys.append(name)
        keys.extend(keys_of(model, name))
    for name, model in ITEMS.items():
        keys.append(name)
        keys.extend(keys_of(model, f"{name}.*" if name == "extensions" else f"{name}[]"))
    return keys


def written_keys(text: str) -> set[str]:
    """The key paths written in the file, list indexes and extension numbers generalised."""
    document = load_yaml(text, "default_config.yaml")
    written = set()
    for path in document.lines:
        path = re.sub(r"\[\d+\]", "[]", path)
        path = re.sub(r"^extensions\.[^.]+", "extensions.*", path)
        written.add(path)
    return written


def commented_keys(text: str) -> set[str]:
    """Keys shown only in a comment (``# domain: pbx.example.com``, ``#  - name: carrier``
    for an item of a list), with their section."""
    found = set()
    section = ""
    for line in text.splitlines():
        top = re.match(r"^([a-z_]+):", line)
        if top:
            section = top.group(1)
        example = re.match(r"^\s*#\s*(?:-\s+)?([a-z_0-9]+):", line)
        if example and section:
            found.add((section, example.group(1)))
    return found


def test_every_accepted_key_is_documented_in_the_demo_config():
    text = DEMO.read_text()
    written = written_keys(text)
    commented = commented_keys(text)
    undocumented = [key for key in accepted_keys()
                    if key not in written
                    and (key.split(".")[0].split("[")[0], key.rsplit(".", 1)[-1]) not in commented]
    assert undocumented == [], (
        f"keys the server accepts but {DEMO.name} does not show (write them, or a "
        f"'# key: example' comment in their section): {undocumented}")


def test_the_top_level_keys_are_the_sections():
    assert set(TOP_LEVEL_KEYS) == set(SECTIONS) | set(ITEMS) | set(SCALAR_KEYS)


def test_the_documentation_check_catches_a_missing_key():
    # The check itself can fail: without the realm line, sip.realm is undocumented.
    text = DEMO.read_text()
    without_realm = "\n".join(line for line in text.splitlines() if "realm:" not in line)
    assert "sip.realm" in written_keys(text)
    assert "sip.realm" not in written_keys(without_realm)
    assert ("sip", "realm") not in commented_keys(without_realm)


SHIPPED_CONFIGS = [DEMO, *sorted((ROOT / "deploy" / "centralita").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_shipped_configs_are_valid(path: Path):
    config = load_config(path, var_dir=Path("/tmp/centralita-check"))
    assert config.sip.listen and config.accounts


SHIPPED_FLOW_FILES = [*sorted(SHIPPED_FLOWS.glob("*.yaml")),
                      *sorted((ROOT / "tests" / "integration" / "flows").glob("*.yaml")),
                      *sorted((ROOT / "bench" / "scenarios").glob("*flow*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED_FLOW_FILES, ids=lambda path: path.name)
def test_shipped_flows_are_valid(path: Path):
    flow = load_flow_file(path, PromptLibrary())
    assert flow.start in flow.nodes


IVR_README = ROOT / "ivr" / "README.md"


def table_rows(text: str) -> dict[str, str]:
    """First cell (without backticks) -> the whole row, for every row of the page's tables."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1:
            rows[cells[0].strip("`")] = line
    return rows


def test_every_flow_key_is_documented_in_the_ivr_readme():
    from ivr.flow import FlowDefaults, FlowFile
    from ivr.nodes import NODE_TYPES

    rows = table_rows(IVR_README.read_text())
    missing = [f"{name}.{key}" for name, model in NODE_TYPES.items()
               for key in model.model_fields
               if key != "type" and f"`{key}`" not in rows.get(name, "")]
    missing += [key for key in FlowFile.model_fields if key not in rows]
    missing += [f"defaults.{key}" for key in FlowDefaults.model_fields
                if f"`{key}`" not in rows.get("defaults", "")]
    assert missing == [], f"flow keys missing from {IVR_README}: {missing}"
