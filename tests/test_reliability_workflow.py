"""Issue 27 for the workflow: what the user sets is what runs (SLURM resources from the profile and the command
line reach the planned jobs unchanged; a Snakemake release that would cut them is refused), sizes the data cannot
support are said at planning time, and a wrong config file is one line.

Dry runs of the real Snakefile with the repository's slurm profile and config/study.yaml (placeholder archives:
a dry run reads none); nothing is mocked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dermsynth.config import load_config

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


def _manifest(path: Path, rows: list[tuple[str, str, int]]) -> None:
    """A split manifest with `count` images of (split, label) per row (the columns the size checks read)."""
    import pandas as pd
    records = [{"key": f"{split}-{label}-{i}", "split": split, "label": label}
               for split, label, count in rows for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(path, index=False)


def test_sizes_the_split_data_cannot_support_are_said_with_the_key_to_change(tmp_path):
    from dermsynth.config import data_size_warnings, validate_config
    from .conftest import demo_config
    cfg = validate_config(demo_config(tmp_path), workflow=True)
    manifests = {name: tmp_path / name / "manifest.csv" for name in cfg["datasets"]}
    _manifest(manifests["isic"], [("train", "benign", 40), ("train", "malignant", 3), ("validation", "benign", 5),
                                  ("test", "benign", 6), ("test", "malignant", 1)])
    lines = data_size_warnings(cfg, lambda dataset: manifests[dataset])
    assert any(line.startswith("'gans.mal_gan.batch': 8 is more than the 3 training images of class malignant")
               and "at most 3" in line for line in lines), lines
    assert not any("gans.ben_gan" in line or "gans.cgan" in line for line in lines)  # 40 and 43 images: enough
    assert any("validation split of dataset isic" in line and "class malignant" in line
               and "datasets.isic.split.fractions.validation" in line for line in lines), lines
    assert not any("test split of dataset isic" in line for line in lines)
    assert not any("ham10000" in line for line in lines)  # not split yet: judged by the verb at its start
    cfg["classifiers"]["isic"]["recipe"]["batch"] = 64
    assert any(line.startswith("'classifiers.isic.recipe.batch': 64 is more than the 43 training images")
               for line in data_size_warnings(cfg, lambda dataset: manifests[dataset]))
    _manifest(manifests["isic"], [("train", "benign", 40), ("train", "malignant", 30), ("validation", "benign", 5),
                                  ("validation", "malignant", 5), ("test", "benign", 6), ("test", "malignant", 1)])
    cfg["classifiers"]["isic"]["recipe"]["batch"] = 8
    assert data_size_warnings(cfg, lambda dataset: manifests[dataset]) == []


def test_the_plan_says_a_batch_the_split_data_cannot_support(tmp_path):
    from .conftest import demo_config
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(demo_config(tmp_path)))
    _manifest(tmp_path / "results/data/isic/manifest.csv",
              [("train", "benign", 40), ("train", "malignant", 2), ("validation", "benign", 5),
               ("validation", "malignant", 2), ("test", "benign", 6), ("test", "malignant", 2)])
    _written_under(load_config(config_file, workflow=True), tmp_path / "results/data/isic", "isic")
    result = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile",
                             str(config_file), "-n", "--cores", "1", "results/gan/mal_gan/network-final.pt"],
                            capture_output=True, text=True, timeout=600)
    said = [line for line in result.stderr.splitlines() if "'gans.mal_gan.batch'" in line]
    assert len(said) == 1 and "2 training images of class malignant" in said[0], result.stderr[-3000:]


def _written_under(config: dict, folder: Path, dataset: str) -> None:
    """The provenance the ingest and split jobs record (their options' digests), so that planning judges the
    manifest in `folder` as this config's (`data.options.current_manifest`)."""
    from dermsynth.data.options import IngestOptions, SplitOptions
    for name, options in (("ingest.json", IngestOptions), ("splits.json", SplitOptions)):
        digest = options.from_config(config, dataset=dataset).digest
        (folder / name).write_text(json.dumps({"provenance": {"config_digest": digest}}))


def test_report_patterns_of_folder_outputs_skip_lock_files_and_superseded_folders(tmp_path):
    """The report globs each folder output with its rule's `patterns`: a `superseded-<time>/` folder (state set
    aside by a verb) or the `.dermsynth-lock` file inside must not become report entries."""
    from snakemake.io import glob_wildcards
    patterns = {p for f in (REPO / "workflow" / "rules").glob("*.smk")
                for p in re.findall(r'patterns=\["([^"]+)"\]', f.read_text())}
    assert patterns
    folder = tmp_path / "out"
    (folder / "superseded-20260101-000000").mkdir(parents=True)
    for name in ("grid.png", "superseded-20260101-000000/grid.png", ".dermsynth-lock"):
        (folder / name).write_bytes(b"")
    for pattern in patterns:
        found = glob_wildcards(str(folder / pattern))._asdict()
        assert list(zip(*found.values())) == [("grid",)], (pattern, found)
