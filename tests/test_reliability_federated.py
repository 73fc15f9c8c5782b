"""Issue 27 for the federated stage, without starting Flower: the server's checkpoint, the hospitals' states and
the run folder belong to their run (fingerprints; other runs' state set aside in one line), one launcher per run
folder, and all-NaN local losses stop a hospital's round without saving its state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dermsynth.config import schema_defaults
from dermsynth.federated.client import ClientState, Hospital, train_round
from dermsynth.federated.launch import own_state, run_federated
from dermsynth.federated.options import TrainFederatedOptions
from dermsynth.federated.server import RUN_FINGERPRINT, data_fingerprint, initial_arrays, run_fingerprint
from dermsynth.federated.state import load_checkpoint, save_checkpoint
from dermsynth.gan.generate import write_image_set
from dermsynth.gan.options import TrainingOptions
from dermsynth.gan.training import GanTrainer, TrainingDivergedError
from dermsynth.labels import scheme_classes
from dermsynth.locks import BusyError, exclusive

NETWORK = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 16}
TRAINING = {"batch": 4, "g_lr": 0.0025, "d_lr": 0.0025, "r1_gamma": 1.0, "pl_weight": 2.0, "style_mixing_prob": 0.9,
            "ema_kimg": 10, "mirror": True, "augment": "noaug", "augment_p": 0.0, "ada_target": 0.6, "ada_kimg": 500,
            "seed": 7, "cuda_ops": "auto", "compile": False, "network": NETWORK, "conditional": True, "init": None,
            "freeze_d": 0}
FEDERATION = {"rounds": 2, "local_steps": 2, "min_available_nodes": 2, "round_timeout_s": 60, "checkpoint_every": 1,
              "evaluate_every": 1}


def _options(**training) -> TrainFederatedOptions:
    return TrainFederatedOptions(run="fed", dataset="set", hospitals=["h1", "h2"],
                                 label_classes=list(scheme_classes("ham7")), resolution=16,
                                 training={**TRAINING, **training}, federation=dict(FEDERATION),
                                 security={"tls": False, "supernode_auth": False, "secure_aggregation": False},
                                 runtime="simulation")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 16² store of 16 images (nv/mel) and a federated split giving 8 to each of two hospitals."""
    root = tmp_path_factory.mktemp("reliability-federated")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(60, 200, (16, 3, 16, 16), dtype=np.uint8))
    rows = [{"key": f"img{i:03d}", "label": ("nv", "mel")[i % 2], "split": "train"} for i in range(16)]
    write_image_set(root / "set", rows, images, "ham7")
    table = pd.DataFrame([{**r, "hospital": f"h{1 + i % 2}"} for i, r in enumerate(rows)])
    table.to_csv(root / "federated.csv", index=False)
    return root / "set" / "lmdb", root / "federated.csv"


def _hospital(data, folder, name="h1") -> Hospital:
    lmdb, csv = data
    return Hospital(name, str(lmdb), str(csv), str(folder), "cpu", 1)


def test_the_server_resumes_only_a_checkpoint_of_the_same_run(data, tmp_path, capsys):
    lmdb, csv = data
    fingerprint = run_fingerprint(_options(), data_fingerprint(_options(), lmdb, csv))
    arrays = {"G.w": torch.ones(2)}
    save_checkpoint(tmp_path, 2, arrays, [{"round": 1}, {"round": 2}], fingerprint)
    round_number, loaded, history = load_checkpoint(tmp_path, json.loads(json.dumps(fingerprint)))
    assert round_number == 2 and torch.equal(loaded["G.w"], arrays["G.w"]) and len(history) == 2
    other = run_fingerprint(_options(r1_gamma=4.0), data_fingerprint(_options(), lmdb, csv))
    assert load_checkpoint(tmp_path, other) is None
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "belongs to another run" in said[0] and "recipe" in said[0]
    assert not (tmp_path / "checkpoint.pt").exists() and len(list(tmp_path.glob("checkpoint-superseded-*"))) == 2


def test_a_checkpoint_written_before_fingerprints_is_not_resumed(tmp_path, capsys):
    torch.save({"format": "dermsynth-federated-checkpoint-v1", "round": 1, "arrays": {}}, tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.json").write_text(json.dumps({"round": 1, "history": [], "options": {"run": "fed"}}))
    assert load_checkpoint(tmp_path, run_fingerprint(_options())) is None
    assert "no fingerprint recorded" in capsys.readouterr().err


def test_another_stores_data_changes_the_run_fingerprint(data, tmp_path):
    lmdb, csv = data
    table = pd.read_csv(csv, dtype=str)
    table.loc[0, "hospital"] = "h2"  # one image moved to another hospital
    table.to_csv(tmp_path / "moved.csv", index=False)
    assert data_fingerprint(_options(), lmdb, csv)["data.selection"] != \
        data_fingerprint(_options(), lmdb, tmp_path / "moved.csv")["data.selection"]


def test_a_hospital_state_of_another_run_is_set_aside_not_resumed(data, tmp_path, capsys):
    options = _options()
    hospital = _hospital(data, tmp_path / "h1")
    arrays, metrics = train_round(initial_arrays(options), options, 1, hospital, run="run-A")
    assert metrics["hospital-steps"] == 2
    _, metrics = train_round(arrays, options, 2, hospital, run="run-A")
    assert metrics["hospital-steps"] == 4  # the same run: its state of round 1 resumed
    capsys.readouterr()
    _, metrics = train_round(arrays, options, 3, hospital, run="run-B")
    assert metrics["hospital-steps"] == 2  # another run: started afresh
    said = [line for line in capsys.readouterr().err.splitlines() if "belongs to another run" in line]
    assert len(said) == 1 and "run: run-A → run-B" in said[0]
    aside = next((tmp_path / "h1").glob("superseded-*"))
    assert sorted(p.name for p in aside.iterdir()) == ["state-round0001.pt", "state-round0002.pt"]


def test_client_state_kinds_are_checked_before_reuse(tmp_path, capsys):
    state = ClientState(tmp_path, keep=2)
    (tmp_path / "state-round0001.pt").write_bytes(b"not a checkpoint")
    assert state.resumable(2, {"run": "x"}, "hospital h1") == (None, None)
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_all_nan_local_losses_stop_the_round_and_save_no_state(data, tmp_path):
    options = _options(g_lr=1e30, d_lr=1e30)
    options = TrainFederatedOptions(**{**options.__dict__, "federation": {**FEDERATION, "local_steps": 40}})
    with pytest.raises(TrainingDivergedError, match=r"hospital h1, round 1: training diverged at step \d+.*"
                                                    r"federated\.fed\.g_lr"):
        train_round(initial_arrays(options), options, 1, _hospital(data, tmp_path / "h1"))
    assert not list((tmp_path / "h1").glob("state-round*.pt"))


def test_the_launcher_sets_aside_a_run_folder_of_another_run_and_keeps_its_own(data, tmp_path, capsys):
    lmdb, csv = data
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.json").write_text("{}")
    (out / "alone" / "hospital_1").mkdir(parents=True)  # other jobs' outputs in the run folder stay where they are
    (out / "samples.png").write_bytes(b"png")
    own_state(_options(), lmdb, csv, out)  # written before fingerprints: set aside
    assert not (out / "checkpoint.json").exists() and (out / RUN_FINGERPRINT).exists()
    assert (out / "alone" / "hospital_1").is_dir() and (out / "samples.png").exists()
    assert "no fingerprint recorded" in capsys.readouterr().err
    (out / "rounds.csv").write_text("round\n1\n")
    own_state(_options(), lmdb, csv, out)  # the same run: kept
    assert (out / "rounds.csv").exists() and len(list(out.glob("superseded-*"))) == 1
    own_state(_options(seed=8), lmdb, csv, out)  # another recipe: set aside
    assert not (out / "rounds.csv").exists() and len(list(out.glob("superseded-*"))) == 2
    assert "recipe" in capsys.readouterr().err
    assert json.loads((out / "flower" / "data-fingerprint.json").read_text())["data.store"]


def test_a_second_launcher_on_the_run_folder_is_refused_before_anything_starts(data, tmp_path):
    lmdb, csv = data
    out = tmp_path / "run"
    with exclusive(out, "train-federated"):
        with pytest.raises(BusyError, match=r"another train-federated \(pid \d+.*is writing to"):
            run_federated(_options(), lmdb, csv, out)
    assert not (out / "flower").exists()


def test_a_trainer_state_records_the_fingerprint_it_was_given(tmp_path):
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
    section = {**schema_defaults("gans.*"), "batch": 4, "augment": "noaug", "network": NETWORK, "seed": 0}
    trainer = GanTrainer(TrainingOptions.from_section(section), images)
    trainer.fingerprint = {"run": "x"}
    trainer.save(tmp_path / "s.pt")
    assert json.loads(torch.load(tmp_path / "s.pt", weights_only=True)["fingerprint"]) == {"run": "x"}
