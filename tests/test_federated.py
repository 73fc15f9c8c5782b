"""The federated stage (issue 14): FedAvg, what stays at a hospital, real Flower processes, dropout, resume.

Everything runs on CPU with a tiny generator (16², 16 channels) on the demo ISIC images at 16²; the deployment
tests start a real SuperLink and SuperNodes as processes on 127.0.0.1 through `dermsynth federated train`.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml

from .conftest import demo_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name (a dependency of flwr)
    import tomli as tomllib
from dermsynth.config import validate_config
from dermsynth.federated.client import Hospital, train_round
from dermsynth.federated.deploy import Federation, flower_command
from dermsynth.federated.launch import APP_FOLDER, node_configs
from dermsynth.federated.messages import check_reply
from dermsynth.federated.options import TrainFederatedOptions
from dermsynth.federated.server import global_networks, initial_arrays
from dermsynth.federated.state import fedavg, load_shared, shared_arrays

TINY = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 16}


def _folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` (relative path → size, modification time in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


APP_FOLDER_STATE = _folder_state(APP_FOLDER)  # the repository's Flower app before any run of this module


@pytest.fixture(scope="module")
def federation_data(demo_root, tmp_path_factory):
    """The demo ISIC dataset ingested at 16², split, federated into 3 hospitals; a config with a tiny run."""
    from dermsynth.data.ingest import ingest_dataset
    from dermsynth.data.splits import federated_split, split_dataset
    raw = demo_config(demo_root)
    raw["datasets"]["isic"]["resolution"] = 16
    raw["federated"] = {"isic": {"dataset": "isic", "conditional": True, "augment": "bg", "central": "cgan_no_color",
                                 "rounds": 4, "local_steps": 2, "evaluate_every": 2, "checkpoint_every": 1,
                                 "round_timeout_s": 120, "batch": 2, "gpus": 0, "network": TINY}}
    cfg = validate_config(raw, workflow=True)
    root = tmp_path_factory.mktemp("federated-data")
    ingest_dataset(cfg, "isic", root, workers=1)
    ingested = pd.read_csv(root / "ingested.csv", dtype=str, keep_default_na=False)
    manifest = split_dataset(ingested, cfg["datasets"]["isic"]["split"])
    manifest.to_csv(root / "manifest.csv", index=False)
    federated_split(manifest, cfg["datasets"]["isic"]["federated"]).to_csv(root / "federated.csv", index=False)
    return raw, root


def _options(raw: dict, **changes) -> TrainFederatedOptions:
    raw = copy.deepcopy(raw)
    raw["federated"]["isic"].update(changes)
    return TrainFederatedOptions.from_config(validate_config(raw, workflow=True), run="isic")


def _hospital_keys(root: Path) -> dict[str, set[str]]:
    table = pd.read_csv(root / "federated.csv", dtype=str, keep_default_na=False)
    return {h: set(rows["key"]) for h, rows in table.groupby("hospital")}


# --- FedAvg and the shared state ----------------------------------------------------------------------------
def test_fedavg_is_the_image_weighted_mean_whatever_the_order_of_replies():
    rng = np.random.default_rng(0)
    counts = {"hospital_1": 3, "hospital_2": 17, "hospital_3": 40}
    arrays = {h: {"a": torch.from_numpy(rng.normal(size=(5, 7)).astype(np.float32)),
                  "b": torch.from_numpy(rng.normal(size=3).astype(np.float32))} for h in counts}
    replies = [(h, counts[h], arrays[h]) for h in counts]
    result = fedavg(replies)
    for name in ("a", "b"):
        expected = sum(counts[h] * arrays[h][name].numpy().astype(np.float64) for h in sorted(counts))
        expected = (expected / sum(counts.values())).astype(np.float32)
        np.testing.assert_array_equal(result[name].numpy(), expected)
        assert result[name].dtype == torch.float32
    for permutation in (replies[::-1], [replies[1], replies[2], replies[0]]):
        for name in ("a", "b"):
            assert torch.equal(fedavg(permutation)[name], result[name])
    with pytest.raises(ValueError, match="reported 0"):
        fedavg([("h", 0, arrays["hospital_1"])])


def test_shared_state_is_parameters_and_w_avg_never_constant_buffers(federation_data):
    raw, _ = federation_data
    nets = global_networks(_options(raw))
    arrays = shared_arrays(nets)
    assert "G.mapping.w_avg" in arrays and "G_ema.mapping.w_avg" in arrays
    assert not any("noise_const" in k or "resample_filter" in k for k in arrays)
    params = {f"{n}.{k}" for n in ("G", "D", "G_ema") for k, _ in nets[n].named_parameters()}
    assert params <= set(arrays) and all(v.dtype == torch.float32 for v in arrays.values())
    changed = {k: v + 1 for k, v in arrays.items()}
    load_shared(nets, changed)
    assert all(torch.equal(shared_arrays(nets)[k], changed[k]) for k in arrays)
    with pytest.raises(ValueError, match="does not fit"):
        load_shared(nets, {k: v for k, v in arrays.items() if k != "G.mapping.w_avg"})
    # the server and every hospital build the same constant buffers from the run's seed
    again = global_networks(_options(raw))
    assert all(torch.equal(a, b) for a, b in zip(nets["G"].buffers(), again["G"].buffers()) if a.ndim > 1)


def test_a_reply_may_hold_only_the_model_arrays_and_scalar_metrics():
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
    arrays = {"G.x": torch.zeros(2)}
    ok = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 3, "loss-G": 0.5})})
    check_reply(ok, {"G.x"})
    leaking = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 3}),
                          "keys": ConfigRecord({"keys": ["ISIC_0000001"]})})
    with pytest.raises(ValueError, match="only 'arrays' and 'metrics'"):
        check_reply(leaking, {"G.x"})
    with pytest.raises(ValueError, match="only"):
        check_reply(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"mean-pixel": 0.3})}), {"G.x"})
    with pytest.raises(ValueError, match="shared arrays"):
        check_reply(RecordDict({"arrays": ArrayRecord({"G.x": torch.zeros(2), "features": torch.zeros(4)}),
                                "metrics": MetricRecord({"num-examples": 3})}), {"G.x"})


def test_a_client_reads_only_its_own_images_and_resumes_its_own_state(federation_data, tmp_path):
    raw, root = federation_data
    options = _options(raw)
    own = _hospital_keys(root)
    hospital = Hospital("hospital_2", str(root / "lmdb"), str(root / "federated.csv"), str(tmp_path / "h2"), "cpu", 1)
    arrays, metrics = train_round(initial_arrays(options), options, 1, hospital)
    assert set(arrays) == set(initial_arrays(options)) and metrics["num-examples"] == len(own["hospital_2"])
    assert metrics["hospital-steps"] == 2 and all(isinstance(v, (int, float)) for v in metrics.values())
    read = set((tmp_path / "h2" / "keys-read.txt").read_text().split())
    assert read and read <= own["hospital_2"]
    _, metrics = train_round(arrays, options, 2, hospital)
    assert metrics["hospital-steps"] == 4  # its own counters came back from state-round0001.pt
    with pytest.raises(ValueError, match="no training images"):
        train_round(arrays, options, 1, Hospital("nowhere", str(root / "lmdb"), str(root / "federated.csv"),
                                                 str(tmp_path / "x"), "cpu", 1))


def test_an_unconditional_run_trains_too(federation_data, tmp_path):
    raw, root = federation_data
    options = _options(raw, conditional=False, augment="noaug")
    hospital = Hospital("hospital_3", str(root / "lmdb"), str(root / "federated.csv"), str(tmp_path / "h3"), "cpu", 1)
    arrays, metrics = train_round(initial_arrays(options), options, 1, hospital)
    assert not any("embed" in name for name in arrays)  # no class embedding in G or D
    assert global_networks(options, arrays)["G_ema"].c_dim == 0 and metrics["hospital-steps"] == 2


# --- real processes -------------------------------------------------------------------------------------------
def _config_file(raw: dict, path: Path, **changes) -> Path:
    raw = copy.deepcopy(raw)
    raw["federated"]["isic"].update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


def _launch(config: Path, root: Path, out: Path) -> subprocess.Popen:
    """`dermsynth federated train` as a process in its own process group (what a job scheduler kills)."""
    command = [sys.executable, "-m", "dermsynth.cli", "federated", "train", "--config", str(config), "--run", "isic",
               "--lmdb", str(root / "lmdb"), "--federated", str(root / "federated.csv"), "--out", str(out),
               "--threads", "2"]
    log = open(out.parent / f"{out.name}.log", "ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _flower_processes(run: Path) -> list[psutil.Process]:
    """Flower's processes of the run whose output folder is `run` (by the FLWR_HOME the launcher gives them and
    they pass on), so that other Flower runs on the machine do not count."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if any(name in cmd for name in ("flower-superlink", "flower-supernode", "flwr-serverapp", "flwr-clientapp",
                                        "flower-superexec")):
            try:
                home = p.environ().get("FLWR_HOME", "")
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if home.startswith(str(run)):
                found.append(p)
    return found


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _round(out: Path) -> tuple[int, str]:
    try:
        progress = json.loads((out / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0, ""
    return progress["round"], progress["stage"]


@pytest.fixture(scope="module")
def deployed_run(federation_data, tmp_path_factory):
    """A 2-round run through `dermsynth federated train` (SuperLink + 3 SuperNodes as processes)."""
    raw, root = federation_data
    work = tmp_path_factory.mktemp("deployed")
    out = work / "run"
    process = _launch(_config_file(raw, work / "config.yaml", rounds=2), root, out)
    assert process.wait(timeout=600) == 0, (work / "run.log").read_text()[-3000:]
    return out


@pytest.fixture(scope="module")
def simulated_run(federation_data, tmp_path_factory):
    """The same run, 4 rounds, in Flower's Simulation Runtime (Ray): the uninterrupted reference."""
    pytest.importorskip("ray")
    raw, root = federation_data
    work = tmp_path_factory.mktemp("simulated")
    process = _launch(_config_file(raw, work / "config.yaml", runtime="simulation"), root, work / "run")
    assert process.wait(timeout=600) == 0, (work / "run.log").read_text()[-3000:]
    return work / "run"


def _same_networks(a: Path, b: Path) -> None:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for net in ("G", "D", "G_ema"):
        for key, value in first[net].items():
            assert torch.equal(second[net][key], value), f"{net}.{key}"


def test_a_deployment_of_superlink_and_three_supernodes_runs_fedavg_and_leaves_no_process(deployed_run,
                                                                                            federation_data):
    out = deployed_run
    _, root = federation_data
    for name in ("network-final.pt", "network-final.json", "rounds.csv", "checkpoint.pt", "messages.jsonl",
                 "network-snapshot-round0002.pt", "logs/superlink.log", "logs/supernode-hospital_1.log",
                 "logs/flwr-run.log"):
        assert (out / name).exists(), name
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [1, 2] and (rounds["n_hospitals"] == 3).all()
    assert not _flower_processes(out)  # every process of the run is gone
    # the repository's app folder was submitted as it is: no copy of it, nothing written into it; the run config
    # carried the run's round settings
    assert not (out / "flower" / "app").exists() and _folder_state(APP_FOLDER) == APP_FOLDER_STATE
    submitted = tomllib.loads((out / "flower" / "run-config.toml").read_text())
    assert (submitted["rounds"], submitted["local-steps"], submitted["evaluate-every"]) == (2, 2, 2)
    assert Path(submitted["options"]).is_file() and submitted["out"] == str(out)
    # FedAvg: the global model of round 2 = image-weighted mean of what the hospitals returned in round 2
    # (their saved local states of round 2 hold exactly the arrays they sent), computed here independently.
    own = _hospital_keys(root)
    hospitals = ("hospital_1", "hospital_2", "hospital_3")
    sent = {h: torch.load(out / "clients" / h / "state-round0002.pt", weights_only=True) for h in hospitals}
    global_arrays = torch.load(out / "checkpoint.pt", weights_only=True)["arrays"]
    total = sum(len(own[h]) for h in hospitals)
    for name, value in global_arrays.items():
        net, key = name.split(".", 1)
        expected = sum(len(own[h]) * sent[h][net][key].numpy().astype(np.float64) for h in sorted(hospitals)) / total
        np.testing.assert_array_equal(value.numpy(), expected.astype(np.float32), err_msg=name)
    # data stays home: each hospital read only its images; replies held only arrays and scalar metrics
    for hospital in hospitals:
        read = set((out / "clients" / hospital / "keys-read.txt").read_text().split())
        assert read and read <= own[hospital]
    replies = [json.loads(line) for line in (out / "messages.jsonl").read_text().splitlines()]
    assert len(replies) == 6
    assert all(r["records"] == ["arrays", "metrics"] and r["arrays"] == len(global_arrays) for r in replies)


def test_the_simulation_runtime_trains_the_same_model_as_the_deployment(deployed_run, simulated_run):
    deployed = deployed_run
    _same_networks(deployed / "network-final.pt", simulated_run / "network-snapshot-round0002.pt")


def test_a_tls_run_with_authenticated_supernodes_trains_the_same_model_as_the_insecure_run(deployed_run,
                                                                                        federation_data, tmp_path):
    """Issue 31: TLS with the run's CA and SuperNode authentication change the transport, not the model."""
    raw, root = federation_data
    out = tmp_path / "run"
    process = _launch(_config_file(raw, tmp_path / "config.yaml", rounds=2, tls=True, supernode_auth=True), root, out)
    assert process.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    _same_networks(deployed_run / "network-final.pt", out / "network-final.pt")
    superlink = (out / "logs" / "superlink.log").read_text()
    assert "insecure" not in superlink.lower() and "authentication is disabled" not in superlink
    registered = (out / "logs" / "register-supernodes.log").read_text()
    assert registered.count("registered successfully") == 3
    config = (out / "flower" / "home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config
    assert superlink.count("[Fleet.ActivateNode] Activated node_id=") >= 3
    assert not _flower_processes(out)


@pytest.mark.slow  # ≈ 2½ minutes: six rounds of SuperLink, SuperNodes and ClientApp processes
def test_a_run_killed_after_round_2_resumes_at_round_3_and_equals_the_uninterrupted_run(simulated_run,
                                                                                       federation_data, tmp_path):
    raw, root = federation_data
    out = tmp_path / "run"
    config = _config_file(raw, tmp_path / "config.yaml")
    process = _launch(config, root, out)
    _wait_for(lambda: _round(out) == (3, "training") or process.poll() is not None, 300, "round 3")
    os.killpg(process.pid, signal.SIGKILL)  # the job is killed: launcher, SuperLink, SuperNodes
    process.wait()
    assert json.loads((out / "checkpoint.json").read_text())["round"] == 2
    process = _launch(config, root, out)
    assert process.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert "resuming at round 3 of 4" in (out / "logs" / "flwr-run.log").read_text()
    # Flower's apps run in sessions of their own, out of the killed group's reach: the rerun stopped them
    assert not _flower_processes(out)
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [1, 2, 3, 4]
    _same_networks(simulated_run / "network-final.pt", out / "network-final.pt")


def _flwr_run_by_hand(federation: Federation, run_config: dict, log: Path) -> int:
    """What the app folder's README tells a Flower user: `flwr run <the repository's app folder> <connection>
    --stream --run-config "key=value ..."` against a SuperLink they started; returns flwr's exit status."""
    text = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in run_config.items())
    command = [flower_command("flwr"), "run", str(APP_FOLDER), "dermsynth", "--stream", "--run-config", text]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stream:
        return subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=federation.env,
                              timeout=900).returncode


def _uninvited_supernode(federation: Federation, root: Path, folder: Path) -> subprocess.CompletedProcess:
    """`dermsynth federated join` of a SuperNode with a key pair of its own (not registered) that claims to be
    hospital_1, against the federation's SuperLink with the right CA: returns when it gave up."""
    from dermsynth.federated.certs import make_site_keys
    from dermsynth.federated.sites import write_site_kit
    key, _ = make_site_keys(folder / "keys", "intruder")
    kit = write_site_kit(folder / "kit", "hospital_1", federation.security.ca, key, f"127.0.0.1:{federation.port}")
    site = {**yaml.safe_load(kit.read_text()), "lmdb": str(root / "lmdb"), "federated_csv": str(root / "federated.csv"),
            "state_dir": str(folder / "state"), "runtime_port": _free_port(), "device": "cpu", "threads": 1}
    kit.write_text(yaml.safe_dump(site))
    command = [sys.executable, "-m", "dermsynth.cli", "federated", "join", "--site", str(kit), "--max-retries", "2"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=federation.env)


def _free_port() -> int:
    from dermsynth.federated.deploy import free_port
    return free_port()


def test_a_supernode_killed_mid_round_does_not_stop_training_and_rejoins(federation_data, tmp_path):
    """The app folder run by hand, as a Flower user would, against a SuperLink and three SuperNodes over TLS with
    SuperNode authentication (issue 31); one SuperNode dies in round 2 and comes back in round 3 with its key; an
    uninvited SuperNode with a key of its own, claiming a hospital's name, is refused and receives nothing."""
    from dermsynth.federated.launch import security
    raw, root = federation_data
    # a round of three fresh ClientApp processes takes 60-90 s on a loaded 2-core machine; the round without
    # hospital_1 ends at the timeout
    options = _options(raw, min_available_nodes=2, round_timeout_s=150, tls=True, supernode_auth=True)
    out = tmp_path / "run"
    nodes = node_configs(list(options.hospitals), root / "lmdb", root / "federated.csv", out / "clients", "cpu", 1)
    run_config = {"options": options.write(tmp_path), "out": str(out), **options.federation.to_run_config()}
    with Federation(APP_FOLDER, tmp_path / "flower", out / "logs", nodes,
                    security=security(options, tmp_path / "certs")) as federation:
        status = {}
        runner = threading.Thread(target=lambda: status.update(
            code=_flwr_run_by_hand(federation, run_config, out / "logs" / "flwr-run.log")))
        runner.start()
        intruder = _uninvited_supernode(federation, root, tmp_path / "intruder")
        _wait_for(lambda: _round(out) == (2, "training"), 300, "round 2")
        federation.kill_supernode("hospital_1")
        _wait_for(lambda: _round(out) == (3, "training"), 300, "round 3")
        federation.start_supernode("hospital_1")
        runner.join(timeout=600)
    assert status.get("code") == 0
    rounds = pd.read_csv(out / "rounds.csv")
    by_round = dict(zip(rounds["round"], rounds["hospitals"]))
    assert by_round[1] == "hospital_1;hospital_2;hospital_3"
    assert by_round[2] == "hospital_2;hospital_3"
    assert by_round[4] == "hospital_1;hospital_2;hospital_3"
    assert (out / "network-final.pt").exists()
    # the uninvited SuperNode: refused (said in the SuperLink's log), never trained, never answered
    assert intruder.returncode == 2 and "stopped with exit status" in intruder.stderr
    assert "No SuperNode found with the given public key" in (out / "logs" / "superlink.log").read_text()
    assert not (tmp_path / "intruder" / "state").exists() or not any((tmp_path / "intruder" / "state").iterdir())
    replies = [json.loads(line) for line in (out / "messages.jsonl").read_text().splitlines()]
    assert len(replies) == rounds["n_hospitals"].sum() and len({r["node"] for r in replies}) == 3  # rejoined: same id
