"""Classifiers: balanced sampling, early stopping, exact resume, leak checks, tables from predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import WeightedRandomSampler

from dermsynth.classify.data import ImageRows, assemble_training_set, balanced_sample_weights
from dermsynth.classify.tables import isic_table2, load_models, table2, table3
from dermsynth.classify.train import Recipe, train_classifier
from dermsynth.config import schema_defaults
from dermsynth.errors import DermsynthError
from dermsynth.labels import scheme_classes

from .conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")
CLASSES = list(scheme_classes("ham7"))


def test_oversampling_balances_classes_in_expectation():
    labels = ["nv"] * 900 + ["mel"] * 90 + ["df"] * 10
    weights = balanced_sample_weights(labels)
    per_class = pd.Series(weights.numpy()).groupby(pd.Series(labels)).sum()
    assert np.allclose(per_class.to_numpy(), per_class.iloc[0])  # every class carries the same total weight
    drawn = list(WeightedRandomSampler(weights, 30_000, generator=torch.Generator().manual_seed(0)))
    frequencies = pd.Series([labels[i] for i in drawn]).value_counts(normalize=True)
    assert np.allclose(frequencies.to_numpy(), 1 / 3, atol=0.015)


@pytest.fixture(scope="module")
def sets(gan_setup):
    _, lmdb, manifest = gan_setup
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    training = assemble_training_set(frame)
    stores = {"real": lmdb}
    train = ImageRows(training, stores, CLASSES, 16, ["hflip", "vflip", "cutout"])
    validation = ImageRows(frame[frame["split"] == "validation"].assign(store="real"), stores, CLASSES, 16)
    return train, validation


def recipe(**overrides) -> Recipe:
    return Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), **dict(
        input_resolution=16, batch=16, epochs=3, patience=5, lr=1e-3, pretrained=False, seed=5,
        augment=["hflip", "vflip", "cutout"]), **overrides})


def test_early_stopping_stops(sets, tmp_path):
    train, validation = sets
    result = train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=20, patience=2, lr=0.0),
                              tmp_path)
    history = [h["validation_balanced_accuracy"] for h in result["history"]]
    best = int(np.argmax(history))  # first epoch with the highest value (later ties are no gain)
    assert result["stopped_early"] and result["best_epoch"] == best
    assert result["epoch"] == best + 1 + 2 < 20  # stopped `patience` epochs after the best one
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best


def test_resume_after_a_kill_continues_exactly(sets, tmp_path):
    train, validation = sets
    straight = train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=2), tmp_path / "a")
    train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=2), tmp_path / "b", stop_after_epochs=1)
    resumed = train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=2), tmp_path / "b")
    assert [h["train_loss"] for h in straight["history"]] == [h["train_loss"] for h in resumed["history"]]
    a = torch.load(tmp_path / "a" / "resume.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "resume.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_no_held_out_image_or_its_derivative_enters_training(gan_setup):
    _, _, manifest = gan_setup
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    test_key = frame.loc[frame["split"] == "validation", "key"].iloc[0]
    train_key = frame.loc[frame["split"] == "train", "key"].iloc[0]
    fine = pd.DataFrame({"key": ["s1"], "label": ["nv"], "source_key": [train_key]})
    assert len(assemble_training_set(frame, fine)) == int((frame["split"] == "train").sum()) + 1
    derived = pd.DataFrame({"key": ["s2"], "label": ["nv"], "source_key": [test_key]})
    with pytest.raises(DermsynthError, match="derived from them"):
        assemble_training_set(frame, derived)
    synthetic_only = assemble_training_set(frame, fine, real_train=False)
    assert synthetic_only["key"].tolist() == ["s1"]


def _fake_model(folder, study, scenario, architecture, classes, rng, n=60, skill=1.0):
    """A model folder with predictions of a given skill (and its metrics.json stub)."""
    folder.mkdir(parents=True)
    for split in ("test", "validation"):
        labels = rng.integers(0, len(classes), n)
        logits = rng.normal(size=(n, len(classes)))
        logits[np.arange(n), labels] += skill * rng.uniform(0, 3, n)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        frame = pd.DataFrame({"key": [f"{split}{i}" for i in range(n)], "label": [classes[i] for i in labels],
                              "predicted": [classes[i] for i in p.argmax(axis=1)]})
        for k, c in enumerate(classes):
            frame[f"p_{c}"] = p[:, k]
        frame.to_csv(folder / f"predictions-{split}.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({
        "study": study, "scenario": scenario, "architecture": architecture, "classes": classes,
        "real_weights": False, "data": "demo", "training_set": {"images": 10, "synthetic": 3}}))
    return folder


def test_tables_equal_an_independent_computation_from_the_predictions(tmp_path):
    rng = np.random.default_rng(0)
    sizes = ["SA-2k", "SA-4k"]
    folders = [_fake_model(tmp_path / f"{s}-{a}", "ham10000", s, a, CLASSES, rng, skill=1 + i / 3)
               for a in ("netA", "netB") for i, s in
               enumerate(["baseline", "SA-2k", "SA-4k", "SA-2k-filter", "SA-4k-filter"])]
    models = load_models(folders)
    t2 = table2(models, sizes)

    def balanced(folder, split="test"):
        frame = pd.read_csv(folder / f"predictions-{split}.csv")
        return balanced_accuracy_score(frame["label"], frame["predicted"])

    for row in t2.itertuples():
        base = balanced(tmp_path / f"baseline-{row.architecture}")
        assert row.baseline == pytest.approx(base, abs=1e-4)
        for size in sizes:
            name = f"{size}-filter" if row.filtered else size
            assert t2.loc[row.Index, size] == pytest.approx(
                balanced(tmp_path / f"{name}-{row.architecture}") - base, abs=1e-4)
    t3 = table3(models, sizes)
    for architecture in ("netA", "netB"):
        best = max(sizes, key=lambda s: balanced(tmp_path / f"{s}-{architecture}", "validation"))
        rows = t3[t3["architecture"] == architecture]
        assert rows["model"].tolist() == ["baseline", best, f"{best}-filter"]
        frame = pd.read_csv(tmp_path / f"{best}-{architecture}" / "predictions-test.csv")
        aucs = [roc_auc_score(frame["label"] == c, frame[f"p_{c}"]) for c in CLASSES if (frame["label"] == c).any()]
        assert rows.iloc[1]["mean"] == pytest.approx(np.mean(aucs), abs=1e-4)


def test_isic_table_from_predictions(tmp_path):
    rng = np.random.default_rng(1)
    folder = _fake_model(tmp_path / "m", "isic", "cgan-aug", "netA", ["benign", "malignant"], rng)
    table = isic_table2(load_models([folder]))
    frame = pd.read_csv(folder / "predictions-test.csv")
    assert table.loc[0, "AUC"] == pytest.approx(roc_auc_score(frame["label"] == "malignant", frame["p_malignant"]),
                                                abs=1e-4)
    assert table.loc[0, "accuracy"] == pytest.approx((frame["label"] == frame["predicted"]).mean(), abs=1e-4)


def test_auc_early_stopping_with_one_validation_class_stops_before_training(sets, tmp_path):
    train, validation = sets
    one_class = validation.rows["label"] == validation.rows["label"].iloc[0]
    stores = {name: store.root for name, store in validation.stores.items()}
    single = ImageRows(validation.rows[one_class], stores, CLASSES, 16)
    with pytest.raises(DermsynthError, match=r"holds only class .*AUC.*undefined"):
        train_classifier("resnet10t", CLASSES, train, single, recipe(monitor="auc"), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
    with pytest.raises(DermsynthError, match="is empty"):
        train_classifier("resnet10t", CLASSES, train, ImageRows(validation.rows[:0], stores, CLASSES, 16),
                         recipe(), tmp_path)


def _options_run(command: list[str], tmp_path, name: str, options) -> tuple[list[str], list[str]]:
    """`command` by hand (`--config` + wildcard flags) and by `--options`: the two argument lists."""
    return ([*command, "--out", str(tmp_path / f"{name}-by-hand")],
            [*command[:2], "--options", options.write(tmp_path / "options"), *command[2:],
             "--out", str(tmp_path / f"{name}-by-options")])


def test_train_classifier_by_hand_and_by_options_give_the_same_model(gan_setup, tmp_path):
    import yaml

    from dermsynth.classify.options import TrainClassifierOptions
    from dermsynth.cli import main
    cfg, lmdb, manifest = gan_setup
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    options = TrainClassifierOptions.from_config(cfg, study="ham10000", scenario="baseline", arch="resnet10t")
    common = ["classify", "train", "--lmdb", str(lmdb), "--manifest", str(manifest), "--device", "cpu",
              "--threads", "1", "--data-source", "demo"]
    by_hand, by_options = _options_run(common, tmp_path, "model", options)
    assert main([*by_hand, "--config", str(tmp_path / "config.yaml"), "--study", "ham10000", "--scenario",
                 "baseline", "--architecture", "resnet10t"]) == 0
    assert main(by_options) == 0
    hand, opts = (tmp_path / "model-by-hand", tmp_path / "model-by-options")
    for name in ("predictions-test.csv", "predictions-validation.csv"):
        assert (hand / name).read_bytes() == (opts / name).read_bytes(), name
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (hand, opts))
    assert first["test"] == second["test"] and first["history"] == second["history"]
    assert first["provenance"]["config"] == options.to_dict()
    assert (first["study"], first["scenario"], first["architecture"]) == ("ham10000", "baseline", "resnet10t")
    assert main([*by_options[:-2], "--out", str(tmp_path / "x"), "--study", "isic"]) == 2  # disagrees with the file


def test_train_classifier_options_hold_only_their_study():
    """Changing the HAM10000 recipe changes the HAM10000 jobs' options (they re-run), not the ISIC ones."""
    import copy

    from dermsynth.classify.options import TrainClassifierOptions
    from dermsynth.config import validate_config
    from dermsynth.errors import ConfigError
    from .conftest import demo_config
    raw = demo_config(Path("/nonexistent"))
    before = validate_config(copy.deepcopy(raw))
    raw["classifiers"]["ham10000"]["recipe"]["lr"] = 0.123
    after = validate_config(raw)

    def digest(cfg, study, scenario):
        return TrainClassifierOptions.from_config(cfg, study=study, scenario=scenario, arch="resnet10t").digest
    assert digest(before, "ham10000", "baseline") != digest(after, "ham10000", "baseline")
    assert digest(before, "isic", "cgan-aug") == digest(after, "isic", "cgan-aug")
    options = TrainClassifierOptions.from_config(after, study="ham10000", scenario="SA-2k", arch="resnet10t")
    assert options.recipe.lr == 0.123 and set(options.to_dict()) == {"study", "scenario", "arch", "recipe"}
    with pytest.raises(AttributeError, match="gpus"):
        options.recipe.gpus  # job resources are the workflow's
    with pytest.raises(ConfigError, match="'derm' is not defined under 'classifiers'"):
        TrainClassifierOptions.from_config(after, study="derm", scenario="baseline", arch="resnet10t")


def test_isic_synthetic_options_and_plan():
    from dermsynth.classify.options import IsicSyntheticOptions
    from dermsynth.classify.run import isic_synthetic_plan
    from dermsynth.config import validate_config
    from dermsynth.errors import ConfigError
    from .conftest import demo_config
    raw = demo_config(Path("/nonexistent"))
    raw["classifiers"]["isic"].update(synth_images=21, aug_malignant=7, truncation_psi=0.7)
    cfg = validate_config(raw)
    synth = IsicSyntheticOptions.from_config(cfg, family="cgan", kind="synth")
    aug = IsicSyntheticOptions.from_config(cfg, family="cgan", kind="aug")
    assert (synth.images, aug.images, synth.truncation_psi) == (21, 7, 0.7)
    plan = isic_synthetic_plan(synth, {"benign": "b.pt", "malignant": "m.pt"})
    assert [(p["network"], p["class"], len(p["seeds"])) for p in plan] == [("b.pt", "benign", 10),
                                                                          ("m.pt", "malignant", 11)]
    (only,) = isic_synthetic_plan(aug, {"malignant": "m.pt"})
    assert only["class"] == "malignant" and len(only["seeds"]) == 7
    assert not set(only["seeds"]) & {s for p in plan for s in p["seeds"]}  # the sets share no image
    raw["classifiers"]["isic"]["aug_malignant"] = 8  # an aug setting: the synth sets keep their options
    changed = validate_config(raw)
    assert IsicSyntheticOptions.from_config(changed, family="cgan", kind="synth").digest == synth.digest
    assert IsicSyntheticOptions.from_config(changed, family="cgan", kind="aug").digest != aug.digest
    with pytest.raises(DermsynthError, match="no generator given for class"):
        isic_synthetic_plan(synth, {"malignant": "m.pt"})
    with pytest.raises(ConfigError, match="'nope' is not defined"):
        IsicSyntheticOptions.from_config(cfg, family="nope", kind="synth")


def test_a_scenario_name_must_say_what_was_trained_on(tmp_path, capsys):
    """A new user's `--scenario SA-99k` without a synthetic set trained a baseline recorded as SA-99k: refused
    now, before any data is read; so is a baseline with synthetic images, and a -synth scenario with real ones."""
    from dermsynth.cli import main
    common = ["classify", "train", "--config", str(REPO / "config/config.yaml"), "--study", "ham10000",
              "--architecture", "resnet10t", "--lmdb", str(tmp_path / "nolmdb"), "--manifest", str(tmp_path / "no.csv"),
              "--out", str(tmp_path / "model")]
    assert main(common + ["--scenario", "SA-99k"]) == 2
    assert "scenario 'SA-99k' adds synthetic images: pass --synthetic-lmdb" in capsys.readouterr().err
    with_set = ["--synthetic-lmdb", str(tmp_path / "s"), "--synthetic-manifest", str(tmp_path / "s.csv")]
    assert main(common + ["--scenario", "baseline"] + with_set) == 2
    assert "'baseline' trains on real images only" in capsys.readouterr().err
    assert main(common + ["--scenario", "gan-synth"] + with_set) == 2
    assert "pass --no-real-train" in capsys.readouterr().err
    assert main(common + ["--scenario", "baseline"]) == 2  # a valid scenario: now the missing store is named
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nolmdb" in error and "Traceback" not in error
    assert not (tmp_path / "model").exists()
