"""A user's config is the user's config (issue 19, kind 6), and archives not where it says (kind 5).

`--configfile` (or a profile's `configfile:`) replaces the demo's config/config.yaml instead of being
merged into it; `--config key=value` still applies on top. A configured source whose files are not on
disk (and that no rule writes) is named, with its folder, the files its layout needs and the key to
change, before Snakemake's missing-input listing. All dry runs: Snakemake is run for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]

USER_CONFIG = {
    "sources": {"clinic": {"type": "folder", "path": "clinic_data"}},
    "datasets": {"clinic": {"labels": "ham7", "resolution": 32, "sources": [{"source": "clinic"}],
                            "split": {"group_by": "patient", "fractions": {"train": 0.5, "validation": 0.25,
                                                                           "test": 0.25}}}},
    "gans": {"clinic_gan": {"dataset": "clinic", "kimg": 0.032}},
}
# what USER_CONFIG plans: its dataset's data stage, its generator, its evaluation (with the Lite0 weights it
# computes FD_lite0 in), SeFa's 4 layer ranges
USER_JOBS = {"all": 1, "ingest": 1, "split": 1, "preview": 1, "train_gan": 1, "gan_samples": 1, "evaluate_gan": 1,
             "lite0_weights": 1, "real_features": 1, "isic_table1": 1, "sefa": 4}


def _dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake's output and errors in one stream (`.stdout`), in the order they were written."""
    return subprocess.run([*SNAKEMAKE, "-d", str(workdir), "-n", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=workdir)


def _planned(result: subprocess.CompletedProcess) -> dict[str, int]:
    assert result.returncode == 0, result.stdout[-3000:]
    text = result.stdout
    jobs = {}
    for line in text[text.index("Job stats:"):].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def _wildcard_values(result: subprocess.CompletedProcess) -> set[str]:
    return {value for line in (result.stdout).splitlines() if line.strip().startswith("wildcards:")
            for value in re.findall(r"=([^,\s]+)", line)}


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A working directory holding the demo config (as the repository does) and a user's folder dataset."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "clinic_data" / "img").mkdir(parents=True)
    (tmp_path / "clinic_data" / "labels.csv").write_text("path,label,patient_id\nimg/a.png,nv,P1\n")
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(USER_CONFIG))
    return tmp_path


def test_a_user_config_plans_only_its_own_dataset_and_generator(workdir):
    result = _dry_run(workdir, "--configfile", "my.yaml")
    assert _planned(result) == USER_JOBS
    values = _wildcard_values(result)  # a real-feature reference is named <dataset>-<digest of its selection>
    assert {v for v in values if not v.startswith("clinic-")} <= {"clinic", "clinic_gan", "all", "coarse", "middle",
                                                                   "fine"}
    assert "demo_archives" not in result.stdout


def test_config_overrides_apply_on_top_of_a_user_config(workdir):
    result = _dry_run(workdir, "--configfile", "my.yaml", "--config", "latent={'sefa': {'layer_ranges': ['all']}}",
                      "evaluation={'snapshots': True, 'fake_samples': 3}")  # nested values arrive as strings
    assert _planned(result) == {**USER_JOBS, "sefa": 1, "gan_curve": 1}
    # too few generated images for k-NN precision/recall: said at planning time, with the key to change
    warnings = [line for line in result.stdout.splitlines() if line.startswith("dermsynth: evaluation.")]
    assert warnings == ["dermsynth: evaluation.fake_samples: 3 generated images per generator leave precision/recall "
                        "undefined (null in results/metrics/gan/*.json): it needs at least 4 (each image's k-th "
                        "nearest other image in its own set, k = 3); raise evaluation.fake_samples or lower "
                        "evaluation.k"]


def test_a_profile_configfile_replaces_the_demo_config_too(workdir):
    profile = workdir / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump({"configfile": "my.yaml", "cores": 1}))
    assert _planned(_dry_run(workdir, "--profile", str(profile))) == USER_JOBS


def test_without_configfile_the_demo_config_is_the_default_and_overrides_apply(workdir):
    demo = _planned(_dry_run(workdir))
    assert demo["demo_archives"] == 1 and demo["ingest"] == 3 and demo["train_gan"] == 6
    assert demo["classifier_sa"] == 3  # the demo's one HAM10000 architecture × 3 SA sets
    overridden = _planned(_dry_run(workdir, "--config",
                                   "classifiers={'ham10000': {'architectures': ['resnet18', 'resnet10t']}}"))
    assert overridden["classifier_sa"] == 6 and overridden["filter_synthetic"] == 6
    upstream = ("demo_archives", "ingest", "split", "train_gan", "evaluate_gan", "sefa", "transform")
    assert {k: overridden[k] for k in upstream} == {k: demo[k] for k in upstream}


def test_a_study_stage_switched_on_without_its_dataset_is_named(workdir):
    raw = {**USER_CONFIG, "classifiers": {"isic": {"enabled": True}}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(raw))
    result = _dry_run(workdir, "--configfile", "my.yaml")
    assert result.returncode != 0
    assert "'classifiers.isic.dataset': 'isic' is not defined under 'datasets' (defined: clinic" in result.stdout
    assert "the workflow config (my.yaml)" in result.stdout


def test_planning_refuses_an_unknown_architecture_and_a_quoted_batch(workdir):
    """Issue 29: what fails only when a job runs (an unknown timm name) or would be coerced silently (a quoted
    number) stops the plan, naming the key and the fix."""
    raw = {**USER_CONFIG, "gans": {"clinic_gan": {"dataset": "clinic", "kimg": 0.032, "batch": "8"}},
           "classifiers": {"ham10000": {"architectures": ["densenet12"]}}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(raw))
    result = _dry_run(workdir, "--configfile", "my.yaml")
    assert result.returncode != 0
    assert "'gans.clinic_gan.batch': '8' is a string (in quotes) where an integer is wanted: write 8 without " \
           "quotes" in result.stdout
    raw["gans"]["clinic_gan"]["batch"] = 8
    (workdir / "my.yaml").write_text(yaml.safe_dump(raw))
    result = _dry_run(workdir, "--configfile", "my.yaml")
    assert result.returncode != 0
    assert "'classifiers.ham10000.architectures[0]': 'densenet12' is neither a timm model nor registered in " \
           "dermsynth.classify.models; did you mean densenet121" in result.stdout


def test_targets_go_before_configfile_or_after_a_double_dash(workdir):
    """What the README says about the order: `--configfile` takes several files, so Snakemake reads a target
    given after it as one more config file, and fails in its own command-line handling (before the Snakefile,
    where the project could explain it); a target before `--configfile`, or after `--`, is planned."""
    target = "results/data/clinic/manifest.csv"
    for arguments in ([target, "--configfile", "my.yaml"], ["--configfile", "my.yaml", "--", target]):
        assert _planned(_dry_run(workdir, *arguments)) == {"ingest": 1, "split": 1}, arguments
    after = _dry_run(workdir, "--configfile", "my.yaml", target)
    assert after.returncode != 0
    assert f"FileNotFoundError: [Errno 2] No such file or directory: '{target}'" in after.stdout


def test_a_target_read_as_a_config_file_that_reaches_the_workflow_is_said_in_one_line(workdir):
    """A target that exists and is a JSON mapping (a splits.json, a metrics JSON) is loaded by Snakemake as one
    more config file after `--configfile`: the workflow stops on it with one line and the two orders that work."""
    target = "results/data/clinic/splits.json"
    (workdir / target).parent.mkdir(parents=True)
    (workdir / target).write_text('{"counts": {"train": 3}}')
    result = _dry_run(workdir, "--configfile", "my.yaml", target)
    assert result.returncode == 1
    said = [line for line in result.stdout.splitlines() if line.startswith("dermsynth:")]
    assert said == [f"dermsynth: error: {target} was read as a config file: give targets before --configfile "
                    f"(snakemake {target} --configfile my.yaml), or end the config files with -- (snakemake "
                    f"--configfile my.yaml -- {target})"]
    assert "Traceback" not in result.stdout


# --- kind 5: archives not where the config says -------------------------------------------------------------
def test_missing_archives_are_named_per_source_before_snakemakes_listing(workdir):
    raw = yaml.safe_load((REPO / "config/study.yaml").read_text())
    (workdir / "study.yaml").write_text(yaml.safe_dump(raw))
    (workdir / "resources/archives/ISIC2020").mkdir(parents=True)  # the folder is there, its files are not
    (workdir / "resources/archives/ISIC2020/ISIC_2020_Training_JPEG.zip").touch()
    result = _dry_run(workdir, "--configfile", "study.yaml")
    assert result.returncode != 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("  - source '")]
    assert [re.match(r"  - source '(\w+)'", line).group(1) for line in lines] == sorted(raw["sources"])
    isic2020 = next(line for line in lines if "'isic2020'" in line)
    assert "looked in resources/archives/ISIC2020" in isic2020
    assert "exists but lacks ISIC_2020_Training_GroundTruth_v2.csv" in isic2020
    assert "needs ISIC_2020_Training_GroundTruth_v2.csv, ISIC_2020_Training_JPEG.zip" in isic2020
    assert "set sources.isic2020.path in study.yaml" in isic2020
    ham = next(line for line in lines if "'ham10000'" in line)
    assert "which does not exist" in ham and "HAM10000_metadata.csv, HAM10000_images_part_1.zip" in ham
    assert "read by dataset ham10000, ham10000_gan" in ham
    assert result.stdout.index("configured source(s) not found") < result.stdout.index("MissingInputException")


def test_sources_a_rule_writes_and_sources_present_are_not_reported(workdir):
    demo = _dry_run(workdir)  # the demo archives: written by the demo rule
    assert demo.returncode == 0 and "not found" not in demo.stdout
    user = _dry_run(workdir, "--configfile", "my.yaml")  # the user's folder is there
    assert user.returncode == 0 and "not found" not in user.stdout
    shutil.rmtree(workdir / "clinic_data")
    gone = _dry_run(workdir, "--configfile", "my.yaml")
    assert gone.returncode != 0
    [line] = [line for line in gone.stdout.splitlines() if line.startswith("  - source '")]
    assert "source 'clinic' (type folder, read by dataset clinic): looked in clinic_data" in line
    assert "needs labels.csv, the folder itself" in line and "sources.clinic.path in my.yaml" in line
