"""`dermsynth train-gan`: outputs, logs, resume after a stop, and loading the trained generator."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from dermsynth.config import validate_config
from dermsynth.data.splits import split_dataset
from dermsynth.errors import ConfigError
from dermsynth.gan.run import load_generator, train_gan

from .conftest import demo_config


@pytest.fixture(scope="module")
def gan_setup(demo_root, ingested_ham, tmp_path_factory):
    raw = demo_config(demo_root)
    raw["gans"] = {"tiny": {"dataset": "ham10000", "kimg": 0.016, "snapshot_kimg": 0.008, "batch": 4,
                            "augment": "bgc", "augment_p": 0.1, "gpus": 0,
                            "network": {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256,
                                        "channel_max": 16}}}
    cfg = validate_config(raw)
    manifest = tmp_path_factory.mktemp("gan") / "manifest.csv"
    ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    split_dataset(ingested, cfg["datasets"]["ham10000"]["split"]).to_csv(manifest, index=False)
    return cfg, ingested_ham / "lmdb", manifest


def _with_kimg(cfg, kimg, **changes):
    cfg = copy.deepcopy(cfg)
    cfg["gans"]["tiny"].update(kimg=kimg, **changes)
    return cfg


def test_outputs_logs_and_loading(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    final = train_gan(cfg, "tiny", lmdb, manifest, tmp_path, device="cpu")
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
    straight = train_gan(_with_kimg(cfg, 0.032), "tiny", lmdb, manifest, tmp_path / "straight", device="cpu")
    train_gan(_with_kimg(cfg, 0.016), "tiny", lmdb, manifest, tmp_path / "stopped", device="cpu")  # "killed" at 4 steps
    resumed = train_gan(_with_kimg(cfg, 0.032), "tiny", lmdb, manifest, tmp_path / "stopped", device="cpu")
    steps = [json.loads(x)["step"] for x in (tmp_path / "stopped" / "training_log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]  # the second run continued where the first stopped
    a, b = load_generator(straight).state_dict(), load_generator(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conditional_generator_is_loaded_with_its_labels(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    final = train_gan(_with_kimg(cfg, 0.008, conditional=True), "tiny", lmdb, manifest, tmp_path, device="cpu")
    G = load_generator(final)
    assert G.c_dim == 7
    assert G(torch.randn(2, 16), torch.eye(7)[:2], noise_mode="const").shape == (2, 3, 64, 64)


def test_unknown_class_is_a_config_error(gan_setup, tmp_path):
    cfg, lmdb, manifest = gan_setup
    with pytest.raises(ConfigError, match=r"classes \['melanoma'\] are not classes of the dataset"):
        train_gan(_with_kimg(cfg, 0.008, classes=["melanoma"]), "tiny", lmdb, manifest, tmp_path, device="cpu")
