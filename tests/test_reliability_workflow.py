"""Issue 27 for the workflow: what the user sets is what runs (SLURM resources from the profile and the command
line reach the planned jobs unchanged; a Snakemake release that would cut them is refused), sizes the data cannot
support are said at planning time, and a wrong config file is one line.

Dry runs of the real Snakefile with the repository's slurm profile and config/study.yaml (placeholder archives:
a dry run reads none); nothing is mocked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, placeholder_archives

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A working directory with the repository's config/ and placeholder archives for config/study.yaml."""
    root = tmp_path_factory.mktemp("study")
    shutil.copytree(REPO / "config", root / "config")
    placeholder_archives(root, root / "config" / "study.yaml")
    return root


def _plan(workdir: Path, *arguments: str, python: list[str] = SNAKEMAKE) -> subprocess.CompletedProcess:
    return subprocess.run([*python, "--profile", str(REPO / "profiles" / "slurm"), "-s", str(REPO / "Snakefile"),
                           "-d", str(workdir), "-n", *arguments], capture_output=True, text=True, timeout=600)


def _jobs(text: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, {resource: value as printed}) of every job of a dry run's output."""
    jobs, rule = [], None
    for line in text.splitlines():
        started = re.match(r"(?:local)?rule (\w+):", line)
        if started:
            rule = started.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs.append((rule, dict(re.findall(r"(\w+)=([^,\s]+)", line.split("resources:", 1)[1]))))
            rule = None
    return jobs


def test_the_plan_asks_slurm_for_exactly_what_the_profile_and_the_command_line_set(study_dir):
    result = _plan(study_dir, "--set-resources", "train_gan:runtime=6000", "train_gan:mem_mb=123456")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _jobs(result.stdout + result.stderr)
    study = yaml.safe_load((study_dir / "config" / "study.yaml").read_text())
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())["default-resources"]
    gans = [resources for rule, resources in jobs if rule == "train_gan"]
    assert len(gans) == len(study["gans"])
    for resources in gans:  # minutes and MB as written on the command line, not a 60th of them
        assert resources["runtime"] == "6000" and resources["mem_mb"] == "123456"
    assert sorted(int(r["gpu"]) for r in gans) == sorted(g.get("gpus", 1) for g in study["gans"].values())
    for rule, resources in jobs:  # the profile's default-resources reach every job unchanged
        assert resources["slurm_account"] == profile["slurm_account"], rule
        gpus = int(resources.get("gpu", 0))
        wanted = profile["slurm_gpu_partition"] if gpus else profile["slurm_partition"]
        assert resources["slurm_partition"] == wanted, (rule, resources)  # CPU-only jobs never go to the GPU one
    assert {rule for rule, r in jobs if int(r.get("gpu", 0))} >= {"train_gan", "classifier", "evaluate_gan"}
    assert {rule for rule, r in jobs if not int(r.get("gpu", 0))} >= {"ingest", "split", "sefa"}
    evaluations = [r for rule, r in jobs if rule == "evaluate_gan"]  # a rule's own runtime: runtime_hours × 60
    hours = study.get("evaluation", {}).get("runtime_hours")
    if hours:
        assert {r["runtime"] for r in evaluations} == {str(int(hours * 60))}
    placeholder = [line for line in result.stderr.splitlines() if "slurm_account is still the placeholder" in line]
    assert len(placeholder) == 1 and "profiles/slurm/config.yaml" in placeholder[0]


BROKEN = "import snakemake, sys; snakemake.__version__ = '9.17.2'; from snakemake.cli import main; sys.exit(main())"


def test_a_snakemake_that_reads_minutes_as_seconds_is_refused_before_planning(study_dir):
    result = _plan(study_dir, "--set-resources", "train_gan:runtime=6000", python=[sys.executable, "-c", BROKEN])
    assert result.returncode != 0
    said = [line for line in (result.stdout + result.stderr).splitlines() if "reads the runtime of" in line]
    assert said and "minutes" in said[0] and "set-resources train_gan" in said[0] and "snakemake>=9.20" in said[0]
    assert "rule train_gan:" not in result.stdout + result.stderr  # nothing was planned, let alone submitted


def test_pyproject_excludes_the_releases_that_read_minutes_as_seconds():
    from packaging.requirements import Requirement
    text = (REPO / "pyproject.toml").read_text()
    [spec] = [Requirement(line.strip().strip(",").strip('"')) for line in text.splitlines()
              if line.strip().startswith('"snakemake>=')]
    for broken in ("9.16.3", "9.17.0", "9.17.3", "9.18.2", "9.19.0"):
        assert broken not in spec.specifier, broken
    for fine in ("9.16.2", "9.20.0", "9.27.1"):
        assert fine in spec.specifier, fine


@pytest.mark.parametrize("content, says", [
    (None, "is a folder, not a config file"),
    (b"", "is empty (no keys)"),
    (b"\xff\xfe\x00 binary", "is not a text (YAML) file"),
    (b"sources:\n  a: [1,\n", "is not valid YAML at line 3, column 1"),
    (b"- a\n- b\n", "the top level must be a mapping of keys, not list"),
])
def test_check_config_given_a_wrong_file_says_one_line(tmp_path, content, says):
    path = tmp_path / "config.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "dermsynth", "check-config", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert says in line and str(path) in line
