"""Planning stays light (issue 29): a dry run reads the config, the step options and the rule files' helpers, never
PyTorch or matplotlib (the study's `snakemake -n` imported torch through `latent.transform` in common.smk); nor does
`dermsynth --help`. Each runs in its own process under `python -X importtime`, which lists every module the process
imports, deferred ones included; nothing is mocked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, placeholder_archives

pytestmark = pytest.mark.workflow
HEAVY = {"torch", "matplotlib"}


def _imports(*command: str, cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules `command` (a `python -m …` argument list) imports, by `python -X importtime`'s lines
    ('import time: <self µs> | <cumulative µs> | <module>', on stderr), and the finished process."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=cwd, capture_output=True, text=True,
                            timeout=600)
    said = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    assert result.returncode == 0, said[-3000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and line.count("|") == 2}
    return modules, result


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def _dry_run(workdir: Path, *args: str) -> set[str]:
    modules, result = _imports("-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n",
                               "--cores", "1", *args, cwd=workdir)
    assert "Job stats:" in result.stdout + result.stderr  # something was planned
    assert {"dermsynth.config", "dermsynth.latent.named", "dermsynth.scenarios"} <= modules  # the helpers were read
    return modules


def test_a_dry_run_of_the_demo_imports_neither_torch_nor_matplotlib(tmp_path):
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "transformations.yaml"):
        shutil.copy(REPO / "config" / name, tmp_path / "config" / name)
    assert _heavy(_dry_run(tmp_path)) == []


def test_a_dry_run_of_the_study_with_a_target_imports_neither_torch_nor_matplotlib(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    placeholder_archives(tmp_path, tmp_path / "config" / "study.yaml")  # a dry run reads none of them
    modules = _dry_run(tmp_path, "results/tables/table2.csv", "--configfile", "config/study.yaml")
    assert _heavy(modules) == []


def test_dermsynth_help_imports_neither_torch_nor_matplotlib(tmp_path):
    modules, result = _imports("-m", "dermsynth", "--help", cwd=tmp_path)
    assert "gan" in result.stdout.split() and "classify" in result.stdout.split() and "dermsynth.cli" in modules
    assert _heavy(modules) == []
