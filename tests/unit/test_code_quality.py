"""The project's own standards, checked like any other behaviour: ruff clean, mypy clean."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing():
    result = run("ruff", "check", "events", "settings", "pbx", "ivr", "router", "callbacks", "monitoring", "simulation", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(660)  # mypy may take its 600 s beside the parallel suite on 2 cores
def test_mypy_finds_nothing_in_the_server_packages():
    result = run("mypy", "events", "settings", "pbx", "ivr", "router", "callbacks", "monitoring", "simulation", "--follow-imports=silent")
    assert result.returncode == 0, result.stdout + result.stderr
