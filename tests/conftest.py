"""Shared fixtures: a small demo (all archive layouts) generated once per test session."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dermsynth.config import validate_config
from dermsynth.data.demo.archives import write_demo_archives
from dermsynth.data.splits import split_dataset

REPO = Path(__file__).resolve().parents[1]

SMALL_DEMO = {
    "seed": 11,
    "ham10000": {"lesions": 60, "isic2018_test_images": 21, "isic2018_validation_images": 10},
    "isic2020": {"patients": 16, "images": 120, "malignant_fraction": 0.05, "official_duplicates": 3, "max_side": 256},
    "isic2019": {"images": 40, "from_ham10000": 8, "downsampled_fraction": 0.3},
    "fitzpatrick17k": {"images": 12},
    "derm7pt": {"cases": 8},
}


def demo_config(root: Path, **overrides) -> dict:
    """The repository's default config, pointed at a demo written under `root`, made small."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["demo"] = {**copy.deepcopy(SMALL_DEMO), "output": str(root / "demo")}
    for source in raw["sources"].values():
        source["path"] = source["path"].replace("resources/demo", str(root / "demo"))
    raw["datasets"]["isic"]["federated"]["hospitals"] = {"hospital_1": 8, "hospital_2": 20, "hospital_3": 30}
    raw["ingest"]["workers"] = 1
    for gan in raw.get("gans", {}).values():  # a few steps each: the stage runs, nothing converges
        gan.update(kimg=0.032, snapshot_kimg=0.016)
    raw["evaluation"].update(fake_samples=12, real_samples=12, ppl_samples=6, kid_subset=6, snapshot_samples=6)
    raw["latent"]["projection"].update(images=4, steps=10, w_avg_samples=200)
    raw["latent"]["e4e"].update(steps=4, batch=4, input_resolution=32, progressive_start=1, progressive_every=1,
                                checkpoint_steps=2)
    raw["latent"]["hyperstyle"].update(steps=2, batch=4, input_resolution=32, iterations=2, checkpoint_steps=1)
    raw["latent"]["inversion"].update(report_images=4)
    raw["latent"]["transform"].update(variants=1, file=str(REPO / "config" / "transformations.yaml"))
    raw["synthetic"]["sizes"] = {"SA-2k": 10, "SA-4k": 15}
    raw["classifiers"]["ham10000"].update(architectures=["resnet10t"])
    raw["classifiers"]["ham10000"]["recipe"].update(epochs=1, input_resolution=16)
    raw["classifiers"]["isic"].update(synth_images=20, aug_malignant=10)
    raw["classifiers"]["isic"]["recipe"].update(epochs=1, input_resolution=16)
    raw["classifiers"]["isic"]["edge"].update(misclassified=2, neighbors=2, steps=2, w_avg_samples=100)
    raw["explain"]["authenticity"].update(edge_cases=1, xrai_images=1, xrai_steps=4)
    raw["explain"]["frames"].update(latents=4, directions=2, magnitudes=[3.0], images=4)
    raw["federated"]["isic"].update(rounds=2, local_steps=2, evaluate_every=2, batch=2)
    for key, value in overrides.items():
        raw[key] = value
    return raw


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo-session")
    cfg = validate_config(demo_config(root))
    write_demo_archives(cfg["demo"])
    return root


@pytest.fixture(scope="session")
def demo_cfg(demo_root) -> dict:
    return validate_config(demo_config(demo_root))


@pytest.fixture(scope="session")
def ingested_ham(demo_cfg, tmp_path_factory) -> Path:
    """The demo `ham10000` dataset ingested once (read-only for tests)."""
    from dermsynth.data.ingest import ingest_dataset
    out = tmp_path_factory.mktemp("ingested-ham10000")
    ingest_dataset(demo_cfg, "ham10000", out)
    return out


@pytest.fixture(scope="session")
def gan_setup(demo_root, ingested_ham, tmp_path_factory):
    """A tiny unconditional GAN config on the demo HAM10000 LMDB, with its split manifest."""
    raw = demo_config(demo_root)
    raw["gans"] = {"tiny": {"dataset": "ham10000", "kimg": 0.016, "snapshot_kimg": 0.008, "batch": 4,
                            "augment": "bgc", "augment_p": 0.1, "gpus": 0,
                            "network": {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256,
                                        "channel_max": 16}}}
    raw["evaluation"] = {**raw["evaluation"], "table1_gans": ["tiny"]}
    raw["latent"]["sefa"]["gans"] = ["tiny"]
    raw["latent"]["projection"].update(gans=["tiny"], images=4, steps=10, batch=2, w_avg_samples=200)
    raw["latent"]["inversion"]["gans"] = []
    raw["classifiers"]["isic"]["enabled"] = False
    raw["explain"]["authenticity"]["gans"] = []
    cfg = validate_config(raw)
    manifest = tmp_path_factory.mktemp("gan") / "manifest.csv"
    ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    split_dataset(ingested, cfg["datasets"]["ham10000"]["split"]).to_csv(manifest, index=False)
    return cfg, ingested_ham / "lmdb", manifest


def placeholder_archives(root: Path, config_file: Path) -> None:
    """Empty files and folders under `root` where `config_file`'s archives would be (a dry run reads none)."""
    from dermsynth.config import load_config
    from dermsynth.data.sources import required_files
    cfg = load_config(config_file)
    for name, spec in cfg["sources"].items():
        for path in required_files(name, spec):
            placeholder = root / path
            if placeholder.suffix in (".csv", ".zip"):
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.touch()
            else:
                placeholder.mkdir(parents=True, exist_ok=True)
