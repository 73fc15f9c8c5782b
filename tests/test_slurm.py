"""The workflow on a real single-node SLURM cluster (munged + slurmctld + slurmd, GPUs as GRES),
through a copy of the repository's slurm profile with only the partition/account lines changed: CPU-only jobs
go to the profile's CPU partition, and a run with the profile's placeholder account stops before submitting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, demo_config
from .slurm import cluster as slurm

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm.available()
    if why:
        pytest.skip(why)
    running = slurm.start(tmp_path_factory.mktemp("slurm"))
    yield running
    running.stop()


def _jobs(cluster) -> list[dict]:
    """Every job slurmctld still remembers (MinJobAge=600), as key=value fields."""
    text = cluster.run("scontrol", "show", "job", "--oneliner")
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.startswith("JobId=")]


def test_gpu_requests_are_scheduled_as_gres(cluster, tmp_path):
    job = cluster.run("sbatch", "--parsable", "--gpus=1", "--mem=100", "-c", "1", f"--chdir={tmp_path}",
                      "--wrap", "echo gpus=$SLURM_GPUS_ON_NODE").strip()
    subprocess.run(["bash", "-c", f"for i in $(seq 60); do squeue -h -j {job} | grep -q . || exit 0; sleep 0.5; done"],
                   env=cluster.env, check=True)
    [info] = [j for j in _jobs(cluster) if j["JobId"] == job]
    assert info["JobState"] == "COMPLETED"
    assert info["TresPerJob"] == "gres:gpu:1"
    assert (tmp_path / f"slurm-{job}.out").read_text().strip() == "gpus=1"


CPU_PARTITION, GPU_PARTITION = "cpu", "gpu"  # made on the test cluster (`scontrol create`), both on its node


def _partitions(cluster) -> None:
    """A CPU and a GPU partition on the test cluster's node, as a cluster with both kinds of node has."""
    known = cluster.run("sinfo", "-h", "-o", "%R").split()
    for name in (CPU_PARTITION, GPU_PARTITION):
        if name not in known:
            cluster.run("scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=INFINITE", "State=UP")


def _profile(tmp_path: Path, config_file: Path, account: bool = False) -> Path:
    """The repository's slurm profile with the test cluster's partitions and, unless `account`, no account (with
    `account`: the profile's placeholder, as shipped)."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = CPU_PARTITION
    profile["default-resources"]["slurm_gpu_partition"] = GPU_PARTITION
    if not account:
        del profile["default-resources"]["slurm_account"]
        profile["slurm-no-account"] = True
    profile.update({"configfile": str(config_file), "slurm-status-command": "squeue",
                    "slurm-init-seconds-before-status-checks": 2, "latency-wait": 5})
    folder = tmp_path / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_data_stage_runs_through_the_slurm_profile(cluster, tmp_path):
    _partitions(cluster)
    raw = demo_config(tmp_path)
    raw["ingest"]["workers"] = 2
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(_profile(tmp_path, config_file)), "-s",
         str(REPO / "Snakefile"), "-d", str(workdir), "results/data/isic/federated.csv"],
        env=cluster.env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "results/data/isic/federated.csv").exists()

    jobs = {j["Comment"].split("_wildcards")[0].removeprefix("rule_"): j for j in _jobs(cluster)
            if j.get("Comment", "").startswith("rule_")}
    assert {"demo_archives", "ingest", "split", "federated_split"} <= set(jobs)
    for rule, job in jobs.items():
        assert job["JobState"] == "COMPLETED", (rule, job["JobState"])
        assert job["Partition"] == CPU_PARTITION  # CPU-only jobs never queue for a GPU node
    ingest = jobs["ingest"]
    assert ingest["NumCPUs"] == "2"                         # threads: ingest.workers
    assert ingest["MinMemoryNode"] == f"{1500 + 800 * 2}M"  # mem_mb: grows with threads
    assert ingest["TimeLimit"] == "01:00:00"                # runtime: 60 min × attempt 1
    assert jobs["demo_archives"]["NumCPUs"] == "2"


def test_the_placeholder_account_stops_a_run_before_anything_is_submitted(cluster, tmp_path):
    """The shipped profile's `slurm_account: my_project`: a dry run warns; a real run through the slurm executor
    stops with one line naming the key to set, and SLURM never sees a job."""
    _partitions(cluster)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(demo_config(tmp_path)))
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = [sys.executable, "-m", "snakemake", "--profile", str(_profile(tmp_path, config_file, account=True)),
               "-s", str(REPO / "Snakefile"), "-d", str(workdir), "results/data/isic/manifest.csv"]
    before = {j["JobId"] for j in _jobs(cluster)}
    dry = subprocess.run([*command, "-n"], env=cluster.env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "dermsynth: warning: default-resources.slurm_account is still the placeholder 'my_project'" in dry.stderr

    run = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    [error] = [line for line in run.stderr.splitlines() if line.startswith("dermsynth: error:")]
    assert error.startswith("dermsynth: error: default-resources.slurm_account is still the placeholder 'my_project': "
                            "set `slurm_account` to your account in profiles/slurm/config.yaml (or give "
                            "--default-resources slurm_account=<account>)") and error.endswith("nothing was submitted")
    assert "Traceback" not in run.stderr
    assert {j["JobId"] for j in _jobs(cluster)} == before  # SLURM saw no job
    assert not (workdir / "results").exists()
