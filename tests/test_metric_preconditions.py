"""Generative metrics on too few images (issue 19, kind 4): each metric's declared minimum sample sizes
are checked before any feature is extracted; a metric below its minimum is written as null with the
reason, the rest is computed; with no computable metric the command stops with one line.

The declared minimums are also checked against the implementations: at the minimum a metric is
finite, one image fewer it is not (or fails), so a declaration cannot drift from the code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermsynth.metrics import generative, preconditions

CASE = Path(__file__).parent / "cases" / "tiny-sample-metrics"

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dermsynth.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """The case's folder copied, ingested and split as the README says (6 real images in train)."""
    root = tmp_path_factory.mktemp("tiny") / "case"
    shutil.copytree(CASE, root)
    done = _cli("data", "ingest", "--config", "config.yaml", "--dataset", "clinic", "--out", "out", cwd=root)
    assert done.returncode == 0, done.stderr
    done = _cli("data", "split", "--config", "config.yaml", "--dataset", "clinic", "--ingested", "out/ingested.csv",
                "--manifest", "out/manifest.csv", "--summary", "out/splits.json", cwd=root)
    assert done.returncode == 0, done.stderr
    manifest = pd.read_csv(root / "out/manifest.csv")
    assert (manifest["split"] == "train").sum() == 6
    return root


def _evaluate(root: Path, images: str, *extra) -> tuple[subprocess.CompletedProcess, Path]:
    out = root / f"{images}{'-'.join(extra)}.json"
    done = _cli("metrics", "evaluate-images", "--images", images, "--lmdb", "out/lmdb", "--manifest", "out/manifest.csv",
                "--splits", "train", "--out", out.name, "--device", "cpu", *extra, cwd=root)
    return done, out


def test_two_generated_images_give_fid_and_kid_and_null_precision_recall(case):
    done, out = _evaluate(case, "fake2")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(out.read_text())
    assert result["n_real"] == 6 and result["n_fake"] == 2
    for key in ("fid", "kid", "kid_percent", "alpha_precision", "beta_recall", "authenticity"):
        assert np.isfinite(result[key]), key
    assert result["fid_rank_deficient"] is True and result["kid_subset_size"] == 2
    assert result["precision"] is None and result["recall"] is None
    reason = result["undefined"]["precision"]
    assert "at least 4 real and 4 generated images" in reason and "k = 3" in reason
    assert "got 6 real, 2 generated" in reason and "fake2" in reason
    assert set(result["undefined"]) == {"precision", "recall"}
    # one stderr line per undefined metric, and the summary line says n/a
    assert sum("precision/recall needs at least 4" in line for line in done.stderr.splitlines()) == 1
    assert "precision n/a" in done.stdout and "FID n/a" not in done.stdout


def test_one_generated_image_leaves_only_the_metrics_defined_for_one(case):
    done, out = _evaluate(case, "fake1")
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    for key in ("fid", "fid_rank_deficient", "kid", "kid_percent", "precision", "recall"):
        assert result[key] is None, key
        assert "got 6 real, 1 generated" in result["undefined"][key]
    assert "FID needs at least 2 real and 2 generated images" in result["undefined"]["fid"]
    assert np.isfinite(result["alpha_precision"]) and np.isfinite(result["authenticity"])


def test_no_computable_metric_is_one_line_error_before_any_feature(case):
    done, out = _evaluate(case, "fake2", "--real-samples", "1")
    assert done.returncode == 2 and not out.exists()
    assert "Traceback" not in done.stderr and "features " not in done.stderr  # stopped before extracting
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert "too few images for any metric: 1 real, 2 generated" in line
    for minimum in ("FID ≥ 2 in each set", "KID ≥ 2 in each set", "precision/recall ≥ 4 in each set",
                    "authenticity ≥ 2 real and ≥ 1 generated", "k = 3"):
        assert minimum in line, minimum
    # advice for the short sides: the real selection, and (for precision/recall) the generated set
    assert "choose more real images (splits ['train'] of out/manifest.csv, --real-samples)" in line
    assert "add images to fake2" in line


def test_a_real_selection_without_images_names_the_splits_that_exist(case):
    done, _ = _evaluate(case, "fake2", "--classes", "mel")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no real images in splits ['train'] with classes ['mel']" in done.stderr
    assert "classes ['nv']" in done.stderr


# --- the declarations match the implementations ---------------------------------------------------------
def _features(n: int, seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


COMPUTE = {
    "fid": lambda r, f, k: generative.fid(r, f),
    "kid": lambda r, f, k: generative.kid(r, f, subsets=3, subset_size=min(len(r), len(f))),
    "precision_recall": lambda r, f, k: generative.precision_recall(r, f, k=k),
    "alpha_beta": lambda r, f, k: tuple(generative.alpha_precision_beta_recall(r, f, k=k)[key]
                                        for key in ("alpha_precision", "beta_recall")),
    "authenticity": lambda r, f, k: generative.authenticity(r, f),
    "memorisation": lambda r, f, k: generative.memorisation(r, f, copy_ratio=0.1)["ratio"],
}


def _defined(name: str, n_real: int, n_fake: int, k: int) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            try:
                value = COMPUTE[name](_features(n_real, 1), _features(n_fake, 2), k)
            except (RuntimeError, ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError):
                return False
    return bool(np.all(np.isfinite(np.asarray(value, dtype=float))))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", sorted(COMPUTE))
def test_declared_minimum_is_the_least_number_that_computes(name, k):
    minimum = preconditions.minimums(k)[name]
    assert _defined(name, minimum.real, minimum.generated, k)
    assert _defined(name, minimum.real + 5, minimum.generated + 5, k)
    assert minimum.real >= 2 and not _defined(name, minimum.real - 1, max(minimum.generated, 2), k)
    if minimum.generated > 1:
        assert not _defined(name, max(minimum.real, 2), minimum.generated - 1, k)
    assert preconditions.undefined(minimum.real, minimum.generated, [name], k) == {}
    assert name in preconditions.undefined(minimum.real - 1, minimum.generated, [name], k)


# --- evaluate-gan (the workflow's evaluator) -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gan(gan_setup, tmp_path_factory):
    from dermsynth.gan.options import TrainGanOptions
    from dermsynth.gan.run import train_gan
    cfg, lmdb, manifest = gan_setup
    return cfg, lmdb, manifest, train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest,
                                          tmp_path_factory.mktemp("gan"), device="cpu")


def test_evaluate_gan_writes_undefined_metrics_as_null_and_the_rest(tiny_gan, tmp_path, capfd):
    from dermsynth.metrics.gan_eval import evaluate_gan, table1
    from dermsynth.metrics.options import EvaluateGanOptions
    cfg, lmdb, manifest, network = tiny_gan
    cfg = {**cfg, "evaluation": {**cfg["evaluation"], "fake_samples": 3, "ppl_samples": 2, "k": 3}}
    result = evaluate_gan(EvaluateGanOptions.from_config(cfg, gan="tiny"), network, lmdb, manifest,
                          tmp_path / "t.json", tmp_path / "m.csv", device="cpu", cache_dir=tmp_path / "cache")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert result["undefined"] == saved["undefined"]  # what is returned is what is written
    assert saved["precision"] is None and saved["recall"] is None
    assert "evaluation.fake_samples" in saved["undefined"]["precision"]  # the key to change
    for key in ("fid", "kid", "alpha_precision", "authenticity", "ppl"):
        assert np.isfinite(saved[key]), key
    assert len(pd.read_csv(tmp_path / "m.csv")) == 3  # memorisation: one row per generated sample
    assert "precision n/a" in capfd.readouterr().err
    table = table1([tmp_path / "t.json"], tmp_path / "table1.csv", "demo archives")
    row = pd.read_csv(tmp_path / "table1.csv").iloc[0]
    assert np.isnan(row["Precision"]) and np.isnan(row["Recall"]) and np.isfinite(row["FID"])
    assert "precision/recall needs at least 4" in row["undefined"] and len(table) == 1


def test_evaluate_gan_with_one_real_image_stops_before_features(tiny_gan, tmp_path):
    from dermsynth.metrics.gan_eval import evaluate_gan, snapshot_curve
    from dermsynth.metrics.options import EvaluateGanOptions, GanCurveOptions
    cfg, lmdb, manifest, network = tiny_gan
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    train = frame.index[frame["split"] == "train"]
    frame.loc[train[1:], "split"] = "validation"  # one training image left
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(preconditions.TooFewImages, match=r"too few images for any metric: 1 real, \d+ generated.*"
                       r"authenticity ≥ 2 real.*gans\.tiny more real images"):
        evaluate_gan(EvaluateGanOptions.from_config(cfg, gan="tiny"), network, lmdb, tmp_path / "manifest.csv",
                     tmp_path / "t.json", tmp_path / "m.csv", device="cpu", cache_dir=tmp_path / "cache")
    with pytest.raises(preconditions.TooFewImages, match=r"gan-curve tiny: too few.*FID ≥ 2 in each set"):
        snapshot_curve(GanCurveOptions.from_config(cfg, gan="tiny"), network, lmdb, tmp_path / "manifest.csv",
                       tmp_path / "c.csv", tmp_path / "c.png", device="cpu", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "t.json").exists()
