"""The packages' layering (``[tool.importlinter]`` in pyproject.toml) holds, and a break of it
fails: the contracts are checked on this tree, then on a copy with one forbidden import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "settings", "pbx", "ivr", "router", "callbacks", "monitoring", "simulation")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts in ``tree``'s pyproject.toml on the packages found in ``tree``."""
    # Wide lines: the report names each contract on one line.
    environment = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=environment, capture_output=True, text=True, timeout=300)


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy_of_the_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.wav", "*.json"))
    return tree


# One import per rule of the design notes that a change could break, and the contract that
# must then fail (its name as the report prints it).
BREAKS = [
    ("events/event.py", "import router", "events is neutral"),
    ("events/calls.py", "import pbx.calls.manager", "Packages are layered"),
    ("settings/located_yaml.py", "import pbx.configuration.server", "settings (reading and validating configuration files)"),
    ("settings/validation.py", "import sqlmodel", "settings (reading and validating configuration files)"),
    ("pbx/sip/uri.py", "import asyncio", "pbx.sip is sans-I/O SIP"),
    ("pbx/sip/uri.py", "import pbx.media.rtp", "pbx.sip is sans-I/O SIP"),
    ("pbx/media/rtp.py", "import pbx.calls.manager", "pbx.media imports only pbx.sip"),
    ("pbx/bus/topics.py", "import pbx.configuration.server", "pbx.bus (the sites' bus)"),
    ("router/calls.py", "import settings.located_yaml", "router is pure routing"),
    ("ivr/engine.py", "import pbx.calls.manager", "ivr imports of pbx only the media"),
    ("monitoring/metrics.py", "import router.router", "monitoring is fed by events"),
    ("callbacks/numbers.py", "import pbx.store", "callbacks is a domain of its own"),
    ("callbacks/numbers.py", "import sqlmodel", "callbacks is a domain of its own"),
    ("callbacks/numbers.py", "import simulation", "Packages are layered"),
    ("simulation/erlang.py", "import ivr.flow", "simulation drives the real router"),
    ("pbx/configuration/models.py", "import pbx.api.schemas", "pbx's parts are layered"),
    ("pbx/store/store.py", "import pbx.configuration.server", "pbx's parts are layered"),
    ("pbx/edge/transport.py", "import pbx.calls.manager", "pbx's parts are layered"),
    ("pbx/calls/queueing.py", "import pbx.server", "pbx's parts are layered"),
]


@pytest.mark.parametrize(("module", "statement", "contract"), BREAKS,
                         ids=[f"{module}:{statement}" for module, statement, _ in BREAKS])
def test_a_forbidden_import_breaks_its_contract(copy_of_the_tree: Path, module: str, statement: str,
                                                contract: str) -> None:
    path = copy_of_the_tree / module
    original = path.read_text()
    path.write_text(original + f"\n{statement}  # added by the test: forbidden here\n")
    try:
        result = lint_imports(copy_of_the_tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def test_the_untouched_copy_keeps_every_contract(copy_of_the_tree: Path) -> None:
    """The copy is faithful: what breaks above is the added import, not the copying."""
    result = lint_imports(copy_of_the_tree)
    assert result.returncode == 0, result.stdout + result.stderr
