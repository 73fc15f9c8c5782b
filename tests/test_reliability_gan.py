"""Issue 27 for the GAN stage: state belongs to its run, one writer per output, one line for a wrong file or a
full disk, all-NaN losses stop training, no helper reseeds the global random state; and the kill-and-race
checks (two writers at once, SIGKILL at seeded random moments) of train-gan and generate.

Everything runs on a tiny store written here (24 images at 16², a 3-block generator): no demo is needed."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dermsynth.checkpoints import WrongFileError
from dermsynth.config import schema_defaults, validate_config
from dermsynth.gan.generate import generate, parse_seeds, write_image_set
from dermsynth.gan.options import TrainGanOptions, TrainingOptions
from dermsynth.gan.run import load_generator, train_gan
from dermsynth.gan.training import TrainingDivergedError, build_networks, recorded_fingerprint
from dermsynth.errors import DermsynthError
from dermsynth.locks import BusyError, exclusive
from tests.race import (DERMSYNTH, assert_no_partial_outputs, assert_one_refused, killed_at, log_steps_once,
                        start_together)

NETWORK = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 16}
ENV = {"OMP_NUM_THREADS": "1"}


def _store(folder: Path, resolution: int, n: int = 24) -> tuple[Path, Path]:
    """A small LMDB image set of smooth random blobs (labels nv/mel) with a manifest whose rows are all `train`."""
    rng = np.random.default_rng(resolution)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    images = []
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        blob = np.clip((r - np.hypot(xx - cx, yy - cy)) * 8, 0, 1)[None]
        picture = 200 - blob * np.array([90, 120, 130])[:, None, None] + rng.normal(0, 4, (3, resolution, resolution))
        images.append(np.clip(picture, 0, 255).astype(np.uint8))
    rows = [{"key": f"img{i:03d}", "label": ("nv", "mel")[i % 2], "split": "train"} for i in range(n)]
    write_image_set(folder, rows, torch.from_numpy(np.stack(images)), "ham7")
    return folder / "lmdb", folder / "manifest.csv"


def _config(folder: Path, resolution: int = 16, kimg: float = 0.016, snapshot_kimg: float = 0.004, **gan) -> dict:
    (folder / "source").mkdir(parents=True, exist_ok=True)
    return {"sources": {"clinic": {"type": "folder", "path": str(folder / "source")}},
            "ingest": {"workers": 1, "shards": 1},
            "datasets": {"clinic": {"labels": "ham7", "resolution": resolution, "sources": [{"source": "clinic"}],
                                    "split": {"group_by": "patient",
                                              "fractions": {"train": 0.7, "validation": 0.15, "test": 0.15}}}},
            "gans": {"tiny": {"dataset": "clinic", "kimg": kimg, "snapshot_kimg": snapshot_kimg, "batch": 4,
                              "augment": "noaug", "gpus": 0, "network": dict(NETWORK), **gan}}}


def _options(raw: dict) -> TrainGanOptions:
    return TrainGanOptions.from_config(validate_config(raw), gan="tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Stores at 16² and 32² and a config file for the CLI (4 steps of 4 images, a snapshot every step)."""
    root = tmp_path_factory.mktemp("reliability-gan")
    lmdb16, manifest16 = _store(root / "set16", 16)
    lmdb32, manifest32 = _store(root / "set32", 32)
    (root / "config.yaml").write_text(yaml.safe_dump(_config(root)))
    return {"root": root, "lmdb": lmdb16, "manifest": manifest16, "lmdb32": lmdb32, "manifest32": manifest32}


def _train_cmd(data, out: Path, config: Path | None = None, lmdb=None, manifest=None) -> list[str]:
    return [*DERMSYNTH, "gan", "train", "--config", str(config or data["root"] / "config.yaml"), "--gan", "tiny",
            "--lmdb", str(lmdb or data["lmdb"]), "--manifest", str(manifest or data["manifest"]), "--device", "cpu",
            "--threads", "1", "--out", str(out)]


def _steps(out: Path) -> list[int]:
    return log_steps_once(out / "training_log.jsonl")


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_generator(a).state_dict(), load_generator(b).state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# --- kind 7: randomness stays local ----------------------------------------------------------------------------
def test_building_networks_leaves_the_global_random_state_alone():
    options = TrainingOptions.from_section({**schema_defaults("gans.*"), "batch": 4, "network": NETWORK, "seed": 5})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    G1, _ = build_networks(options, 0, 16)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    G2, _ = build_networks(options, 0, 16)
    G3, _ = build_networks(dataclasses.replace(options, seed=6), 0, 16)
    a, b, c = G1.state_dict(), G2.state_dict(), G3.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same seed: the same weights
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: other weights


# --- kind 6: all-NaN losses stop the run -----------------------------------------------------------------------

def test_a_run_whose_losses_all_become_nan_stops_at_once_and_saves_no_final_network(data, tmp_path, capsys):
    raw = _config(tmp_path, kimg=0.2, snapshot_kimg=0.2, g_lr=1e30, d_lr=1e30)
    with pytest.raises(TrainingDivergedError) as caught:
        train_gan(_options(raw), data["lmdb"], data["manifest"], tmp_path / "out", device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "NaN or infinite" in message and "gans.tiny.g_lr" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert step < 50  # stopped when it happened, not at the end of the 50 steps
    assert not (tmp_path / "out" / "network-final.pt").exists()
    assert not list((tmp_path / "out").glob("network-snapshot-*.pt"))  # no snapshot after the divergence either


# --- kind 4: a wrong file gets one line ------------------------------------------------------------------------
def test_the_generator_loader_names_a_folder_a_truncated_file_and_other_checkpoints(data, tmp_path):
    final = train_gan(_options(_config(tmp_path, kimg=0.004)), data["lmdb"], data["manifest"], tmp_path / "g",
                      device="cpu")
    assert load_generator(final).img_resolution == 16
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(final.read_bytes()[:2000])
    torch.save({"format": "dermsynth-federated-checkpoint-v1", "round": 1, "arrays": {}}, tmp_path / "checkpoint.pt")
    torch.save({"architecture": "resnet10t", "model": {"w": torch.zeros(1)}}, tmp_path / "best.pt")
    cases = {tmp_path / "g": "is a folder", truncated: "not a readable PyTorch checkpoint",
             tmp_path / "checkpoint.pt": "federated server's resume checkpoint", tmp_path / "best.pt": "classifier"}
    for path, says in cases.items():
        with pytest.raises(WrongFileError) as caught:
            load_generator(path)
        assert says in str(caught.value) and "network-final.pt" in str(caught.value) and "\n" not in str(caught.value)


def test_weights_that_do_not_fit_their_options_are_one_line(data, tmp_path):
    final = train_gan(_options(_config(tmp_path, kimg=0.004)), data["lmdb"], data["manifest"], tmp_path / "g",
                      device="cpu")
    state = torch.load(final, weights_only=True)
    state["options"] = json.dumps({**json.loads(state["options"]), "network": {**NETWORK, "w_dim": 32}})
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(WrongFileError, match="do not fit the network its options describe"):
        load_generator(tmp_path / "edited.pt")


# --- kind 1: state belongs to its run --------------------------------------------------------------------------
def test_snapshots_of_another_resolution_are_set_aside_before_anything_loads(data, tmp_path, capfd):
    out = tmp_path / "gan"
    train_gan(_options(_config(tmp_path, kimg=0.008)), data["lmdb"], data["manifest"], out, device="cpu")
    capfd.readouterr()
    final = train_gan(_options(_config(tmp_path, resolution=32, kimg=0.008)), data["lmdb32"], data["manifest32"], out,
                      device="cpu")
    said = [line for line in capfd.readouterr().err.splitlines() if "belongs to another run" in line]
    assert len(said) == 1 and "data.resolution: 16 → 32" in said[0] and "superseded-" in said[0]
    assert json.loads((out / "network-final.json").read_text())["resolution"] == 32
    assert load_generator(final).img_resolution == 32
    aside = next(out.glob("superseded-*"))
    assert sorted(p.name for p in aside.glob("network-snapshot-*.pt")) == ["network-snapshot-step0000001.pt",
                                                                           "network-snapshot-step0000002.pt"]
    assert _steps(out) == [1, 2]  # the new run's log only


@pytest.mark.parametrize("change", ["r1_gamma", "classes", "no-fingerprint"])
def test_a_snapshot_of_other_data_recipe_or_without_fingerprint_is_not_resumed(data, tmp_path, capfd, change):
    out = tmp_path / "gan"
    train_gan(_options(_config(tmp_path, kimg=0.008)), data["lmdb"], data["manifest"], out, device="cpu")
    changed = {"r1_gamma": {"r1_gamma": 2.0}, "classes": {"classes": ["nv"]}}.get(change, {})
    if change == "no-fingerprint":  # as an older dermsynth wrote it
        newest = out / "network-snapshot-step0000002.pt"
        state = torch.load(newest, weights_only=True)
        del state["fingerprint"]
        torch.save(state, newest)
    capfd.readouterr()
    train_gan(_options(_config(tmp_path, kimg=0.008, **changed)), data["lmdb"], data["manifest"], out, device="cpu")
    err = capfd.readouterr().err
    expected = {"r1_gamma": "recipe", "classes": "data.selection", "no-fingerprint": "no fingerprint recorded"}[change]
    assert "resumed from" not in err and expected in err and "superseded-" in err
    state = torch.load(out / "network-final.pt", weights_only=True)
    assert state["step"] == 2 and recorded_fingerprint(state)["recipe"]["r1_gamma"] == changed.get("r1_gamma", 1.0)


def test_the_same_run_resumes_and_its_log_is_cut_back_to_the_resumed_step(data, tmp_path, capfd):
    out = tmp_path / "gan"
    straight = train_gan(_options(_config(tmp_path)), data["lmdb"], data["manifest"], tmp_path / "straight",
                         device="cpu")
    train_gan(_options(_config(tmp_path)), data["lmdb"], data["manifest"], out, device="cpu")
    for step in (3, 4):  # a run killed after logging steps 3 and 4 but before their snapshots were kept
        (out / f"network-snapshot-step{step:07d}.pt").unlink()
    (out / "network-final.pt").unlink()
    capfd.readouterr()
    final = train_gan(_options(_config(tmp_path)), data["lmdb"], data["manifest"], out, device="cpu")
    assert "resumed from network-snapshot-step0000002.pt" in capfd.readouterr().err
    assert _steps(out) == [1, 2, 3, 4] and not list(out.glob("superseded-*"))
    assert _same_weights(final, straight)


# --- kind 2 and 4: one writer, a full disk, a read-only folder -------------------------------------------------
def test_a_second_writer_of_the_folder_is_refused_in_one_line(data, tmp_path):
    out = tmp_path / "gan"
    with exclusive(out, "train-gan"):
        with pytest.raises(BusyError, match=r"another train-gan \(pid \d+ .*is writing to"):
            train_gan(_options(_config(tmp_path)), data["lmdb"], data["manifest"], out, device="cpu")
    assert not list(out.glob("network-*.pt"))


def test_a_full_disk_while_writing_a_snapshot_is_one_line_and_the_rerun_completes(data, tmp_path):
    out = tmp_path / "gan"

    def small_files():  # the kernel refuses bigger files (EFBIG), as a full disk refuses any
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    full = subprocess.run(_train_cmd(data, out), capture_output=True, text=True, preexec_fn=small_files,
                          env={**os.environ, **ENV}, timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert "cannot write" in last and "network-snapshot-step0000001.pt" in last and "run the same command again" in last
    assert_no_partial_outputs(out)
    again = subprocess.run(_train_cmd(data, out), capture_output=True, text=True, timeout=300,
                           env={**os.environ, **ENV})
    assert again.returncode == 0, again.stderr[-2000:]
    assert _steps(out) == [1, 2, 3, 4]


def test_an_unwritable_output_folder_is_refused_before_training(data, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip("running as root: permissions do not stop writes")
        with pytest.raises(DermsynthError, match="cannot write"):
            train_gan(_options(_config(tmp_path)), data["lmdb"], data["manifest"], locked / "gan", device="cpu")
    finally:
        locked.chmod(0o700)


# --- generate --------------------------------------------------------------------------------------------------
def test_generate_writes_exactly_the_manifests_images_and_refuses_a_folder_of_other_pngs(data, tmp_path):
    network = train_gan(_options(_config(tmp_path, kimg=0.004)), data["lmdb"], data["manifest"], tmp_path / "g",
                        device="cpu")
    out = generate(network, [0, 1, 2], tmp_path / "png", truncation_psi=1.0, batch=32, device="cpu")
    manifest = pd.read_csv(out / "manifest.csv")
    assert sorted(f"{k}.png" for k in manifest["key"]) == sorted(p.name for p in out.glob("*.png"))
    generate(network, [0, 1, 2], tmp_path / "png", truncation_psi=1.0, batch=32, device="cpu")  # again: fine
    with pytest.raises(DermsynthError, match="already holds 3 PNG file"):
        generate(network, [5, 6], tmp_path / "png", truncation_psi=1.0, batch=32, device="cpu")
    with pytest.raises(DermsynthError, match="more than once"):
        parse_seeds("0-3,2")


@pytest.mark.workflow
def test_two_generates_on_one_folder_one_is_refused(data, tmp_path):
    network = train_gan(_options(_config(tmp_path, kimg=0.004)), data["lmdb"], data["manifest"], tmp_path / "g",
                        device="cpu")
    command = [*DERMSYNTH, "gan", "generate", "--network", str(network), "--seeds", "0-199", "--batch", "8", "--device",
               "cpu", "--out", str(tmp_path / "png")]
    assert_one_refused(start_together([command, command], tmp_path, ENV), "is writing to")
    assert_no_partial_outputs(tmp_path / "png")
    assert len(pd.read_csv(tmp_path / "png" / "manifest.csv")) == len(list((tmp_path / "png").glob("*.png"))) == 200


# --- the kill-and-race test of train-gan -----------------------------------------------------------------------
@pytest.mark.workflow
def test_two_train_gans_at_once_one_is_refused_and_each_step_is_logged_once(data, tmp_path):
    out = tmp_path / "gan"
    assert_one_refused(start_together([_train_cmd(data, out)] * 2, tmp_path, ENV), "is writing to")
    assert _steps(out) == [1, 2, 3, 4]
    assert_no_partial_outputs(out)


@pytest.mark.workflow
def test_train_gan_killed_at_random_moments_resumes_to_the_uninterrupted_result(data, tmp_path):
    raw = _config(data["root"], kimg=0.048, snapshot_kimg=0.004)  # 12 steps, a snapshot at each
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    straight = subprocess.run(_train_cmd(data, tmp_path / "straight", config), capture_output=True, text=True,
                              timeout=300, env={**os.environ, **ENV})
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    for seed in (1, 2, 3):
        killed_at(_train_cmd(data, out, config), seed, tmp_path, low=0.0, high=3.0, env=ENV, ready="train-gan tiny:")
        assert_no_partial_outputs(out)
        if (out / "training_log.jsonl").exists():
            _steps(out)  # each step once, whatever the moment of the kill
    rerun = subprocess.run(_train_cmd(data, out, config), capture_output=True, text=True, timeout=300,
                           env={**os.environ, **ENV})
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _steps(out) == list(range(1, 13)) and not list(out.glob("superseded-*"))
    assert _same_weights(out / "network-final.pt", tmp_path / "straight" / "network-final.pt")


# --- kind 5: sizes the data cannot support are said at start ---------------------------------------------------
def test_fewer_images_than_one_batch_is_one_line_naming_the_config_key(data, tmp_path):
    from dermsynth.errors import ConfigError
    with pytest.raises(ConfigError, match=r"gives 24 training images .*fewer than one batch of 32: lower "
                                          r"gans\.tiny\.batch"):
        train_gan(_options(_config(tmp_path, batch=32)), data["lmdb"], data["manifest"], tmp_path / "g", device="cpu")
    assert not list((tmp_path / "g").glob("*.pt"))
