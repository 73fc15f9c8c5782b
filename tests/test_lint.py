"""The linter's short rule set (pyproject.toml [tool.ruff]: syntax errors E9 and pyflakes F) holds for src and tests.

.ci/run runs the same check before pytest; here it is part of the suite, so a local `pytest` sees it too."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    """The command that runs ruff: the installed Python package, else a `ruff` on PATH; skips when neither exists."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed: it comes with the test extra (pip install -e '.[test]')")


def _check(*paths: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = [*_ruff(), "check", "--no-cache", "--output-format", "concise",
               "--config", str(ROOT / "pyproject.toml"), *map(str, paths)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing_in_src_and_tests():
    result = _check("src", "tests")
    assert result.returncode == 0, f"ruff check src tests:\n{result.stdout}{result.stderr}"


def test_the_rule_set_catches_unused_and_undefined_names(tmp_path):
    """The configuration is live: an unused import (F401) and an undefined name (F821) are findings."""
    (tmp_path / "bad.py").write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    result = _check("bad.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "F401" in result.stdout and "F821" in result.stdout, result.stdout
