"""The latent pipeline on a tiny trained GAN: e4e + HyperStyle trained briefly, the training split
inverted and stored per key, transformations applied, Table 1, SA datasets and their filtered variants."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from dermsynth.config import validate_config
from dermsynth.data.dataset import read_images
from dermsynth.errors import ConfigError, DermsynthError
from dermsynth.gan.options import TrainGanOptions
from dermsynth.gan.run import load_generator, train_gan
from dermsynth.latent.inversion import invert
from dermsynth.latent.options import InvertOptions, TrainE4eOptions, TrainHyperstyleOptions, TransformOptions
from dermsynth.latent.identity import generator_digest
from dermsynth.latent.run_inversion import (StoredInversion, inversion_fingerprint, load_e4e, load_hyperstyle,
                                            run_invert, run_train_e4e,
                                            run_train_hyperstyle)
from dermsynth.latent.named import load_transformations
from dermsynth.latent.sefa import factorize
from dermsynth.latent.transform import run_transform, transform_images, write_lpips_table
from dermsynth.outputs import read_figure_labels
from dermsynth.synthetic.datasets import build_synthetic_dataset, filter_synthetic, per_transformation_counts
from dermsynth.synthetic.options import SyntheticDatasetOptions

from .test_figures import _find

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")

TRANSFORMATIONS = [
    {"name": "SV", "description": "size", "gan": "tiny", "layer_range": "coarse", "direction": 0, "magnitude": [-2.0, 2.0]},
    {"name": "BCV", "description": "background", "gan": "tiny", "layer_range": "fine", "direction": 1,
     "magnitude": [0.5, 1.5]},
]


@pytest.fixture(scope="module")
def pipeline(gan_setup, tmp_path_factory):
    cfg, lmdb, manifest = gan_setup
    out = tmp_path_factory.mktemp("latent")
    (out / "transformations.yaml").write_text(yaml.safe_dump({"transformations": TRANSFORMATIONS}))
    raw = copy.deepcopy(cfg)
    raw["latent"].update(
        inversion={"gans": ["tiny"], "dataset": "ham10000", "split": "train", "holdout": 0.1, "report_images": 6,
                   "batch": 16, "gpus": 0},
        e4e={"backbone": "resnet18", "input_resolution": 32, "steps": 6, "batch": 4, "progressive_start": 2,
             "progressive_every": 1, "checkpoint_steps": 3, "pretrained": False, "gpus": 0},
        hyperstyle={"backbone": "resnet18", "input_resolution": 32, "steps": 3, "batch": 4, "iterations": 2,
                    "layer_ranges": ["all"], "pretrained": False, "gpus": 0},
        transform={"file": str(out / "transformations.yaml"), "variants": 2, "batch": 16, "lpips_threshold": 0.2})
    raw["synthetic"] = {"sizes": {"SA-a": 10, "SA-b": 15}, "seed": 4}
    cfg = validate_config(raw)
    network = train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest, out / "gan", device="cpu")
    run_train_e4e(TrainE4eOptions.from_config(cfg, gan="tiny"), network, lmdb, manifest, out / "e4e.pt", device="cpu")
    run_train_hyperstyle(TrainHyperstyleOptions.from_config(cfg, gan="tiny"), network, out / "e4e.pt", lmdb, manifest,
                         out / "hyperstyle.pt", device="cpu")
    run_invert(InvertOptions.from_config(cfg, gan="tiny"), network, out / "e4e.pt", out / "hyperstyle.pt", lmdb,
               manifest, out / "inversion", "cpu")
    G = load_generator(network)
    for spec in TRANSFORMATIONS:
        factors = factorize(G, spec["layer_range"])
        np.savez(out / f"sefa-{spec['layer_range']}.npz", directions=factors["directions"],
                 eigenvalues=factors["eigenvalues"], ws_indices=np.array(factors["ws_indices"]),
                 generator=np.array(generator_digest(G)))  # the generator factorised, as `sefa` records it
        run_transform(TransformOptions.from_config(cfg, name=spec["name"]), network,
                      out / f"sefa-{spec['layer_range']}.npz", out / "inversion", lmdb,
                      out / "transformations" / spec["name"], device="cpu")
    return cfg, lmdb, manifest, network, out


def test_encoder_reports_and_inversion_are_stored_per_key(pipeline):
    cfg, lmdb, manifest, network, out = pipeline
    e4e = json.loads((out / "e4e.json").read_text())
    hyper = json.loads((out / "hyperstyle.json").read_text())
    assert e4e["report"]["held_out_images"] == 6 and e4e["backbone_weights"] == "random-init(seed=0)"
    assert {"l2", "lpips_alex", "ms_ssim"} <= set(hyper["report"]["hyperstyle"])
    assert len(hyper["report"]["per_iteration"]) == 2
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    train_keys = sorted(frame.loc[frame["split"] == "train", "key"])
    stored = StoredInversion(out / "inversion")
    assert stored.index["key"].tolist() == train_keys
    assert not (out / "inversion.chunks").exists()
    ws, deltas = stored.latents(train_keys[:3])
    assert ws.shape[0] == 3 and set(deltas) == set(hyper["layers"])
    assert (out / "inversion" / "preview.png").stat().st_size > 1000


def test_a_killed_inversion_resumes_from_its_chunks(pipeline, tmp_path):
    """What a killed `invert` leaves: finished chunks under <out>.chunks. The rerun reuses a chunk that
    holds its keys (marked here so its reuse shows), recomputes one of another batch size, and the merged
    folder equals the uninterrupted inversion everywhere else."""
    cfg, lmdb, manifest, network, out = pipeline
    batch = cfg["latent"]["inversion"]["batch"]
    complete = StoredInversion(out / "inversion")
    keys = complete.index["key"].tolist()
    assert len(keys) > batch + 8
    G = load_generator(network)
    encoder, _ = load_e4e(out / "e4e.pt", G)
    hyper, options = load_hyperstyle(out / "hyperstyle.pt", G)
    chunks = tmp_path / "inversion.chunks"
    chunks.mkdir()
    first = invert(G, encoder, read_images(lmdb, keys[:batch]), hyper, options.iterations)
    fingerprint = inversion_fingerprint(G, encoder, hyper, options.iterations, lmdb)  # this run's chunks
    torch.save({"keys": keys[:batch], "ws": first["ws"] + 100.0, "fingerprint": fingerprint,
                "factors": {k: [a.half(), b.half()] for k, (a, b) in first["factors"].items()}},
               chunks / "chunk-00000000.pt")
    torch.save({"keys": keys[batch:batch + 8], "ws": torch.zeros(8, G.num_ws, G.w_dim), "factors": {}},
               chunks / f"chunk-{batch:08d}.pt")  # from a run with batch 8: other keys at this offset
    run_invert(InvertOptions.from_config(cfg, gan="tiny"), network, out / "e4e.pt", out / "hyperstyle.pt", lmdb,
               manifest, tmp_path / "inversion", "cpu")
    resumed = StoredInversion(tmp_path / "inversion")
    assert resumed.index["key"].tolist() == keys and not chunks.exists()
    ws, expected = np.load(tmp_path / "inversion" / "ws.npy"), np.load(out / "inversion" / "ws.npy")
    np.testing.assert_allclose(ws[:batch], expected[:batch] + 100.0, atol=1e-4)  # the finished chunk, reused
    np.testing.assert_allclose(ws[batch:], expected[batch:], atol=1e-4)  # the stale one recomputed


def test_magnitude_zero_reproduces_the_inversion(pipeline):
    cfg, lmdb, manifest, network, out = pipeline
    G = load_generator(network)
    stored = StoredInversion(out / "inversion")
    keys = stored.index["key"].tolist()[:6]
    encoder, _ = load_e4e(out / "e4e.pt", G)
    hyper, options = load_hyperstyle(out / "hyperstyle.pt", G)
    direct = invert(G, encoder, read_images(lmdb, keys), hyper, options.iterations)["stages"][-1]
    ws, deltas = stored.latents(keys)
    direction = torch.from_numpy(np.load(out / "sefa-coarse.npz")["directions"][0]).float()
    from_store = transform_images(G, ws, deltas, direction, torch.zeros(len(keys)), [0, 1, 2], "cpu")
    difference = (direct.int() - from_store.int()).abs()
    assert difference.float().mean() < 0.5 and difference.max() <= 3  # offsets are stored in float16
    moved = transform_images(G, ws, deltas, direction, torch.full((len(keys),), 2.0), [0, 1, 2], "cpu")
    assert (moved.int() - from_store.int()).abs().float().mean() > 0.5


def test_transformed_images_keep_label_and_record_provenance(pipeline):
    cfg, lmdb, manifest, network, out = pipeline
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    label_of = dict(zip(frame["key"], frame["label"]))
    n_train = int((frame["split"] == "train").sum())
    for spec in TRANSFORMATIONS:
        folder = out / "transformations" / spec["name"]
        rows = pd.read_csv(folder / "manifest.csv", dtype={"key": str, "source_key": str, "label": str})
        assert len(rows) == 2 * n_train
        assert (rows["label"] == rows["source_key"].map(label_of)).all()
        assert (rows["transformation"] == spec["name"]).all() and (rows["direction"] == spec["direction"]).all()
        assert rows["magnitude"].between(*spec["magnitude"]).all()
        assert (rows["accepted"] == (rows["lpips"] <= 0.2)).all()
        assert rows["lpips"].ge(0).all() and rows["lpips_to_inversion"].ge(0).all()
        report = json.loads((folder / "transform.json").read_text())
        assert report["rejected"] == int((~rows["accepted"]).sum())
        assert report["lpips_mean"] == pytest.approx(rows["lpips"].mean())
        assert len(read_images(folder / "lmdb", rows["key"].tolist()[:5])) == 5
        # the labelled preview (rows: source images; columns: source | inversion | variant 0 | 1), pixels unscaled
        preview = np.asarray(Image.open(folder / "preview.png").convert("RGB"))
        first = rows["source_key"].iloc[0]
        stored = read_images(folder / "lmdb", [f"{spec['name']}-{first}-v0", f"{spec['name']}-{first}-v1"])
        found = [_find(preview, image.permute(1, 2, 0).numpy()) for image in stored]
        assert None not in found and found[0][0] == found[1][0] and found[0][1] < found[1][1]  # one row, in order
        labels = read_figure_labels(folder / "preview.png")
        assert labels and spec["name"] in labels["title"] and any(first in row for row in labels["axes"][0]["yticklabels"])


def test_lpips_table_rows_match_the_transformations_file(pipeline, tmp_path):
    cfg, lmdb, manifest, network, out = pipeline
    reports = [out / "transformations" / t["name"] / "transform.json" for t in TRANSFORMATIONS]
    table = write_lpips_table(reports, tmp_path / "table1.csv", "demo")
    assert table["transformation"].tolist() == [t["name"] for t in TRANSFORMATIONS]
    for row, spec in zip(table.itertuples(), TRANSFORMATIONS):
        rows = pd.read_csv(out / "transformations" / spec["name"] / "manifest.csv")
        assert row.LPIPS == pytest.approx(rows["lpips"].mean(), abs=1e-4)
        assert row._11 == int((~rows["accepted"]).sum())  # rejected (> threshold)
    assert pd.read_csv(tmp_path / "table1.csv")["data"].eq("demo").all()


def test_synthetic_sets_have_exact_counts_are_independent_and_hold_no_test_sources(pipeline, tmp_path):
    cfg, lmdb, manifest, network, out = pipeline
    folders = [out / "transformations" / t["name"] for t in TRANSFORMATIONS]
    sets = {}
    for name, size in cfg["synthetic"]["sizes"].items():
        build_synthetic_dataset(SyntheticDatasetOptions.from_config(cfg, name=name), folders, manifest, tmp_path / name)
        sets[name] = pd.read_csv(tmp_path / name / "manifest.csv", dtype={"key": str, "source_key": str})
        counts = sets[name].groupby("transformation").size().to_dict()
        assert counts == per_transformation_counts(size, sorted(t["name"] for t in TRANSFORMATIONS))
        assert sets[name]["key"].is_unique and sets[name]["accepted"].all()
        assert read_images(tmp_path / name / "lmdb", sets[name]["key"].tolist()).shape[0] == size
    assert not set(sets["SA-a"]["key"]) <= set(sets["SA-b"]["key"])  # not nested: independent draws
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    train = set(frame.loc[frame["split"] == "train", "key"])
    assert all(set(s["source_key"]) <= train for s in sets.values())
    assert per_transformation_counts(7, ["a", "b", "c"]) == {"a": 3, "b": 2, "c": 2}

    leaky = frame.copy()
    victim = sets["SA-a"]["source_key"].iloc[0]
    leaky.loc[leaky["key"] == victim, "split"] = "test"
    leaky.to_csv(tmp_path / "leaky.csv", index=False)
    with pytest.raises(DermsynthError, match="outside the real training split"):
        build_synthetic_dataset(SyntheticDatasetOptions(name="SA-a", size=10, seed=4), folders, tmp_path / "leaky.csv",
                                tmp_path / "leak")


def test_filtered_set_is_the_unfiltered_minus_the_misclassified(pipeline):
    manifest = pd.DataFrame({"key": ["a", "b", "c", "d"], "label": ["nv", "mel", "bcc", "nv"]})
    predictions = pd.DataFrame({"key": ["d", "c", "b", "a"], "predicted": ["nv", "nv", "mel", "mel"]})
    kept, dropped = filter_synthetic(manifest, predictions)
    assert kept["key"].tolist() == ["b", "d"] and dropped["key"].tolist() == ["a", "c"]
    with pytest.raises(DermsynthError, match="no prediction"):
        filter_synthetic(manifest, predictions.iloc[:2])


def test_bad_transformations_file_is_named(tmp_path):
    bad = copy.deepcopy(TRANSFORMATIONS) + [dict(TRANSFORMATIONS[0], layer_range="mid")]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"transformations": bad}))
    with pytest.raises(ConfigError) as error:
        load_transformations(tmp_path / "t.yaml", gans=["other"])
    text = str(error.value)
    assert "transformations[2]: name 'SV' is used twice" in text and "layer_range 'mid'" in text
    assert "gan 'tiny' is not one of latent.inversion.gans" in text


def test_transform_and_synthetic_set_by_hand_equal_by_options_file(pipeline, tmp_path, capsys):
    """`dermsynth latent transform` and `synthetic-dataset` with --config + the name flag (by hand) and with the
    options file the workflow writes give the same images and rows."""
    from dermsynth.cli import main
    cfg, lmdb, manifest, network, out = pipeline
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    spec = TRANSFORMATIONS[0]
    common = ["--network", str(network), "--sefa", str(out / f"sefa-{spec['layer_range']}.npz"),
              "--inversion", str(out / "inversion"), "--lmdb", str(lmdb), "--device", "cpu"]
    by_file = TransformOptions.from_config(cfg, name=spec["name"]).write(tmp_path / "options")
    assert main(["latent", "transform", "--config", str(tmp_path / "config.yaml"), "--name", spec["name"], *common,
                 "--out", str(tmp_path / "hand")]) == 0
    assert main(["latent", "transform", "--options", by_file, *common, "--out", str(tmp_path / "file")]) == 0
    hand, file = (pd.read_csv(tmp_path / name / "manifest.csv") for name in ("hand", "file"))
    pd.testing.assert_frame_equal(hand, file)
    pd.testing.assert_frame_equal(file, pd.read_csv(out / "transformations" / spec["name"] / "manifest.csv"))
    assert torch.equal(read_images(tmp_path / "hand" / "lmdb", hand["key"].tolist()),
                       read_images(tmp_path / "file" / "lmdb", file["key"].tolist()))
    assert main(["latent", "transform", "--options", by_file, "--name", TRANSFORMATIONS[1]["name"], *common,
                 "--out", str(tmp_path / "other")]) == 2
    assert f"--name {TRANSFORMATIONS[1]['name']} disagrees" in capsys.readouterr().err

    folders = [str(out / "transformations" / t["name"]) for t in TRANSFORMATIONS]
    by_file = SyntheticDatasetOptions.from_config(cfg, name="SA-a").write(tmp_path / "options")
    common = ["--transformed", *folders, "--manifest", str(manifest)]
    assert main(["synthetic", "dataset", "--config", str(tmp_path / "config.yaml"), "--name", "SA-a", *common,
                 "--out", str(tmp_path / "sa-hand")]) == 0
    assert main(["synthetic", "dataset", "--options", by_file, *common, "--out", str(tmp_path / "sa-file")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "sa-hand" / "manifest.csv"),
                                  pd.read_csv(tmp_path / "sa-file" / "manifest.csv"))


@pytest.mark.parametrize("cls,wildcards", [(TrainE4eOptions, {"gan": "ham10000"}),
                                           (TrainHyperstyleOptions, {"gan": "ham10000"}),
                                           (InvertOptions, {"gan": "ham10000"}), (TransformOptions, {"name": "SV"})])
def test_encoder_inversion_and_transform_options_by_hand_equal_by_file(cls, wildcards, tmp_path, monkeypatch):
    """The demo config's options of each verb: by hand (--config + the wildcard flag) as from the file."""
    import argparse
    from pathlib import Path

    from dermsynth.config import load_config
    from dermsynth.options import options_from_args
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # latent.transform.file is relative to the working directory
    config = str(repo / "config" / "config.yaml")
    path = cls.from_config(load_config(config, workflow=True), **wildcards).write(tmp_path)
    by_file = options_from_args(cls, argparse.Namespace(options=path, config=None), **{k: None for k in wildcards})
    by_hand = options_from_args(cls, argparse.Namespace(options=None, config=config), **wildcards)
    assert by_file == by_hand and by_file.to_dict() == by_hand.to_dict()
    assert not {"gpus", "runtime_hours", "gans"} & set(by_file.to_dict())
    with pytest.raises(ConfigError, match="is not defined under|is not in"):
        cls.from_config(load_config(config, workflow=True), **{k: "nosuch" for k in wildcards})
