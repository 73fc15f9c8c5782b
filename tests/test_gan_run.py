"""`dermsynth gan train`: outputs, logs, resume after a stop, and loading the trained generator."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermsynth.errors import ConfigError
from dermsynth.outputs import read_figure_labels
from dermsynth.gan.options import TrainGanOptions
from dermsynth.gan.run import load_generator, train_gan


def _with_kimg(cfg, kimg, **changes):
    cfg = copy.deepcopy(cfg)
    cfg["gans"]["tiny"].update(kimg=kimg, **changes)
    return cfg


def test_outputs_logs_and_loading(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    final = train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest, tmp_path, device="cpu")
    assert final == tmp_path / "network-final.pt"
    lines = [json.loads(x) for x in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4] and all("loss_G" in x and "sec_per_kimg" in x for x in lines)
    assert len(list(tmp_path.glob("network-snapshot-step*.pt"))) == 2
    assert len(list(tmp_path.glob("fakes-step*.png"))) == 2 and (tmp_path / "tensorboard").is_dir()
    info = json.loads((tmp_path / "network-final.json").read_text())
    assert info["steps"] == 4 and info["provenance"]["seed"] == cfg["gans"]["tiny"]["seed"]
    G = load_generator(final)
    images = G(torch.randn(2, 16), noise_mode="const")
    assert images.shape == (2, 3, 64, 64) and G.c_dim == 0


def test_a_stopped_run_resumes_to_the_same_result(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    straight = train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.032), gan="tiny"), lmdb, manifest, tmp_path / "straight", device="cpu")
    train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.016), gan="tiny"), lmdb, manifest, tmp_path / "stopped", device="cpu")  # "killed" at 4 steps
    resumed = train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.032), gan="tiny"), lmdb, manifest, tmp_path / "stopped", device="cpu")
    steps = [json.loads(x)["step"] for x in (tmp_path / "stopped" / "training_log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]  # the second run continued where the first stopped
    a, b = load_generator(straight).state_dict(), load_generator(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conditional_generator_is_loaded_with_its_labels(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    final = train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.008, conditional=True), gan="tiny"), lmdb, manifest, tmp_path, device="cpu")
    G = load_generator(final)
    assert G.c_dim == 7
    assert G(torch.randn(2, 16), torch.eye(7)[:2], noise_mode="const").shape == (2, 3, 64, 64)


def test_unknown_class_is_a_config_error(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    with pytest.raises(ConfigError, match=r"classes \['melanoma'\] are not classes of the dataset"):
        train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.008, classes=["melanoma"]), gan="tiny"), lmdb, manifest, tmp_path, device="cpu")


def test_generate_is_per_seed_and_writes_a_readable_store(gan_setup, tmp_path):
    from dermsynth.data.dataset import LmdbImageDataset
    from dermsynth.gan.generate import generate, generate_images, parse_seeds
    cfg, lmdb, manifest = gan_setup
    network = train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.008, classes=["mel"]), gan="tiny"), lmdb, manifest, tmp_path / "mel", device="cpu")
    G = load_generator(network)
    together = generate_images(G, [3, 5, 7], batch=3)
    alone = torch.cat([generate_images(G, [s], batch=1) for s in (7, 3, 5)])
    # an image depends on its seed only (up to float rounding across batch shapes: ±1 grey level)
    assert (together.int() - alone[[1, 2, 0]].int()).abs().max() <= 1
    flat = generate_images(G, [1, 2, 3], truncation_psi=0.0)
    assert torch.equal(flat[0], flat[1]) and torch.equal(flat[1], flat[2])
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]

    store = generate(network, list(range(6)), tmp_path / "synthetic", truncation_psi=1.0, batch=32, fmt="lmdb",
                     device="cpu")
    synthetic = LmdbImageDataset(store / "lmdb", store / "manifest.csv")
    assert len(synthetic) == 6 and {synthetic.classes[t] for t in synthetic.targets} == {"mel"}  # a one-class GAN
    assert (synthetic[0][0].int() - generate_images(G, [0])[0].int()).abs().max() <= 1


def test_generate_needs_the_class_of_a_conditional_generator(gan_setup, tmp_path):
    import subprocess
    import sys
    cfg, lmdb, manifest = gan_setup
    network = train_gan(TrainGanOptions.from_config(_with_kimg(cfg, 0.008, conditional=True), gan="tiny"), lmdb, manifest, tmp_path / "c", device="cpu")
    command = [sys.executable, "-m", "dermsynth.cli", "gan", "generate", "--network", str(network), "--seeds", "0-3",
               "--out", str(tmp_path / "png"), "--device", "cpu"]
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 2 and "give the class" in failed.stderr and "Traceback" not in failed.stderr
    subprocess.run([*command, "--class", "bcc"], check=True, capture_output=True)
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    rows = pd.read_csv(tmp_path / "png" / "manifest.csv")
    assert set(rows["label"]) == {"bcc"} and list(rows["seed"]) == [0, 1, 2, 3]

    # the sample sheet: one row per class, the same seeds in every row
    subprocess.run([sys.executable, "-m", "dermsynth.cli", "gan", "sample-sheet", "--network", str(network), "--columns", "4",
                    "--out", str(tmp_path / "sheet.png"), "--device", "cpu"], check=True, capture_output=True)
    names = json.loads((tmp_path / "sheet.json").read_text())["rows"]
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB")).astype(int)  # a labelled figure
    assert read_figure_labels(tmp_path / "sheet.png")["axes"][0]["yticklabels"] == names and len(names) == 7
    pngs = [np.asarray(Image.open(tmp_path / "png" / f"c-seed{seed:07d}.png")).astype(int) for seed in rows["seed"]]
    expected = np.concatenate(pngs, axis=1)  # bcc's row: seeds 0…3, unscaled in the figure
    found = [(y, x) for y, x in zip(*np.nonzero(np.abs(sheet - expected[0, 0]).max(axis=2) <= 1))
             if sheet[y:y + 64, x:x + 4 * 64].shape == expected.shape
             and np.abs(sheet[y:y + 64, x:x + 4 * 64] - expected).max() <= 1]
    assert len(found) == 1


def test_data_parallel_training_with_torchrun(gan_setup, tmp_path):
    """Two real processes (gloo on CPU) each train on half of every batch and end with identical weights;
    rank 0 alone writes the outputs."""
    import shutil
    import subprocess
    import sys

    import yaml
    cfg, lmdb, manifest = gan_setup
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node=2", "-m", "dermsynth.cli", "gan", "train", "--config",
         str(config_file), "--gan", "tiny", "--lmdb", str(lmdb), "--manifest", str(manifest), "--out",
         str(tmp_path / "out"), "--device", "cpu", "--threads", "2"],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "network-final.json").read_text())
    assert info["processes"] == 2 and info["steps"] == 4
    lines = (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4]  # written once, by rank 0
    assert result.stderr.count("steps of 4 on 2 × cpu") == 1  # the start banner comes from rank 0 only
    G = load_generator(tmp_path / "out" / "network-final.pt")
    assert torch.isfinite(G(torch.randn(2, 16), noise_mode="const")).all()
