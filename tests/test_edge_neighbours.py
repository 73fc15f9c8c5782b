"""Scenario aug-edge (issue 17, part 2 in the workflow): neighbours of the validation edge cases and baseline
mistakes as training images, never of test images; every ISIC model reported on the test edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dermsynth.classify.data import assemble_training_set, check_no_leak
from dermsynth.classify.edge import (case_frame, edge_table, margins, run_edge_neighbours, select_sources,
                                     write_edge_table)
from dermsynth.classify.options import EDGE_SCENARIO, EdgeNeighboursOptions, IsicEdgeTableOptions
from dermsynth.classify.run import training_sources
from dermsynth.classify.tables import isic_table2, load_models
from dermsynth.errors import DermsynthError
from dermsynth.gan.networks import Generator

CLASSES = ["benign", "malignant"]
D = 0.1


def _predictions(keys, labels, p_malignant) -> pd.DataFrame:
    p = np.asarray(p_malignant, dtype=float)
    return pd.DataFrame({"key": keys, "label": labels, "predicted": np.where(p > 0.5, "malignant", "benign"),
                         "p_benign": 1 - p, "p_malignant": p})


def _manifest(n_validation=8, n_test=6, n_train=10) -> pd.DataFrame:
    rows = [(f"T{i:02d}", "train") for i in range(n_train)] + [(f"V{i:02d}", "validation") for i in range(n_validation)]
    rows += [(f"X{i:02d}", "test") for i in range(n_test)]
    return pd.DataFrame({"key": [k for k, _ in rows], "split": [s for _, s in rows],
                         "label": ["malignant" if i % 3 == 0 else "benign" for i in range(len(rows))]})


def _model(folder: Path, scenario: str, predictions: dict[str, pd.DataFrame], training=(10, 0)) -> Path:
    folder.mkdir(parents=True)
    for split, frame in predictions.items():
        frame.to_csv(folder / f"predictions-{split}.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({
        "study": "isic", "scenario": scenario, "architecture": "netA", "classes": CLASSES, "real_weights": False,
        "data": "demo", "training_set": {"images": training[0], "synthetic": training[1]}}))
    return folder


def _split_predictions(manifest: pd.DataFrame, split: str, seed: int) -> pd.DataFrame:
    rows = manifest[manifest["split"] == split]
    return _predictions(rows["key"].tolist(), rows["label"].tolist(), np.random.default_rng(seed).uniform(size=len(rows)))


def test_edge_cases_are_the_smallest_margins_and_mistakes_are_the_baselines():
    keys = ["a", "b", "c", "d", "e"]
    labels = ["benign", "malignant", "benign", "malignant", "benign"]
    classifier = _predictions(keys, labels, [0.48, 0.9, 0.55, 0.2, 0.05])  # margins 0.04, 0.8, 0.1, 0.6, 0.9
    np.testing.assert_allclose(margins(classifier, CLASSES), [0.04, 0.8, 0.1, 0.6, 0.9], atol=1e-12)
    baseline = _predictions(keys, labels, [0.1, 0.2, 0.9, 0.8, 0.3])  # wrong on b and c
    cases = case_frame(classifier, baseline, CLASSES, edge_cases=2)
    assert cases.loc[cases["edge"], "key"].tolist() == ["a", "c"]
    assert cases.loc[cases["misclassified"], "key"].tolist() == ["b", "c"]
    with pytest.raises(DermsynthError, match="different images"):
        case_frame(classifier, baseline.iloc[1:], CLASSES, 2)


def test_sources_are_validation_images_only():
    manifest = _manifest()
    validation = manifest[manifest["split"] == "validation"]
    classifier = _split_predictions(manifest, "validation", 0)
    baseline = _predictions(validation["key"].tolist(), validation["label"].tolist(),
                            np.where(validation["label"] == "malignant", 0.1, 0.9))  # every image wrong
    cases = case_frame(classifier, baseline, CLASSES, edge_cases=2)
    sources = select_sources(manifest, cases, misclassified=3, seed=0)
    assert set(cases.loc[cases["edge"], "key"]) <= set(sources["key"])
    assert (sources["reason"].str.contains("misclassified")).sum() == 3  # at most 3 mistakes, seeded
    assert sources.equals(select_sources(manifest, cases, misclassified=3, seed=0))
    assert len(select_sources(manifest, cases, misclassified=None, seed=0)) == len(validation)
    test = _split_predictions(manifest, "test", 1)  # the test split offered as sources: refused
    with pytest.raises(DermsynthError, match="never from test images"):
        select_sources(manifest, case_frame(test, test, CLASSES, 2), misclassified=None, seed=0)


def test_no_test_key_or_derivative_enters_any_training_set_and_validation_ones_only_aug_edge():
    manifest = _manifest()
    neighbour = pd.DataFrame({"key": ["V00-nb000"], "label": ["malignant"], "source_key": ["V00"]})
    of_test = pd.DataFrame({"key": ["X00-nb000"], "label": ["malignant"], "source_key": ["X00"]})
    assert training_sources(EDGE_SCENARIO) == ("train", "validation")
    for scenario in ("baseline", "cgan-aug", "SA-6k", "frameless-synth"):
        assert training_sources(scenario) == ("train",)
        with pytest.raises(DermsynthError, match="derived from them"):
            assemble_training_set(manifest, neighbour, derived_from=training_sources(scenario))
    training = assemble_training_set(manifest, neighbour, derived_from=training_sources(EDGE_SCENARIO))
    assert training["source_key"].tolist()[-1] == "V00" and len(training) == 11
    for scenario in (EDGE_SCENARIO, "baseline"):  # a test image's neighbour: never
        with pytest.raises(DermsynthError, match=r"'test': 1"):
            assemble_training_set(manifest, of_test, derived_from=training_sources(scenario))
    real_test = pd.DataFrame({"store": ["real"], "key": ["X01"], "label": ["benign"], "synthetic": [False],
                              "source_key": [""]})
    with pytest.raises(DermsynthError):
        check_no_leak(real_test, manifest, ("train", "validation"))
    with pytest.raises(ValueError, match="test images"):
        check_no_leak(training, manifest, ("train", "test"))


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, mapping_layers=2).eval()
    path = tmp_path_factory.mktemp("edge") / "tiny" / "network-final.pt"
    path.parent.mkdir()
    torch.save({"options": json.dumps({"network": {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16,
                                                   "mapping_layers": 2}}), "G_ema": G.state_dict()}, path)
    return path


def _dataset(root: Path, manifest: pd.DataFrame) -> Path:
    from dermsynth.gan.generate import write_image_set
    images = torch.randint(0, 256, (len(manifest), 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_image_set(root / "data", manifest.to_dict("records"), images, "binary")
    return root / "data"


def test_neighbours_of_validation_sources_at_the_distance_labelled_with_their_class(network, tmp_path):
    manifest = _manifest()
    data = _dataset(tmp_path, manifest)
    validation = manifest[manifest["split"] == "validation"]
    classifier = _model(tmp_path / "cgan-aug", "cgan-aug", {"validation": _split_predictions(manifest, "validation", 2)})
    wrong = np.where(validation["label"] == "malignant", 0.2, 0.7)  # wrong everywhere
    baseline = _model(tmp_path / "baseline", "baseline", {"validation": _predictions(
        validation["key"].tolist(), validation["label"].tolist(), wrong)})
    options = EdgeNeighboursOptions(edge_cases=2, misclassified=1, neighbors=3, distance=D, steps=2, space="w",
                                    batch=4, w_avg_samples=50, seed=0)
    summary = run_edge_neighbours(options, network, data / "lmdb", data / "manifest.csv", classifier, baseline,
                                  tmp_path / "edge", device="cpu")
    out = tmp_path / "edge"
    sources = pd.read_csv(out / "sources.csv", dtype=str, keep_default_na=False)
    assert 2 <= len(sources) <= 3 and set(sources["key"]) <= set(validation["key"])
    rows = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(rows) == 3 * len(sources) == summary["neighbours"]
    label = dict(zip(manifest["key"], manifest["label"]))
    assert (rows["label"] == rows["source_key"].map(label)).all()  # labelled with the source image's class
    assert set(rows["source_key"]) == set(sources["key"]) and (rows["source_split"] == "validation").all()
    saved = np.load(out / "neighbors.npz")
    centres = np.repeat(saved["centre_ws"], 3, axis=0).astype(np.float64)
    distances = np.linalg.norm(saved["ws"].astype(np.float64) - centres, axis=-1)
    np.testing.assert_allclose(distances, D, atol=1e-5)  # every layer of every neighbour at exactly d
    assert summary["max_distance_error"] < 1e-5
    projection = np.load(out / "projection.npz")
    assert projection["keys"].tolist() == sources["key"].tolist()
    training = assemble_training_set(manifest, rows, derived_from=training_sources(EDGE_SCENARIO))
    assert int(training["synthetic"].sum()) == len(rows)
    with pytest.raises(DermsynthError):  # the same set in any other scenario: a leak
        assemble_training_set(manifest, rows)


def test_edge_table_scores_each_model_on_the_test_subsets(tmp_path):
    manifest = _manifest(n_test=12)
    manifest_csv = tmp_path / "manifest.csv"
    manifest.to_csv(manifest_csv, index=False)
    test = manifest[manifest["split"] == "test"]
    keys, labels = test["key"].tolist(), test["label"].tolist()
    rng = np.random.default_rng(3)
    classifier = _model(tmp_path / "cgan-aug", "cgan-aug", {"test": _predictions(keys, labels, rng.uniform(size=12))})
    baseline = _model(tmp_path / "baseline", "baseline", {"test": _predictions(keys, labels, rng.uniform(size=12))})
    edge = _model(tmp_path / "aug-edge", EDGE_SCENARIO, {"test": _predictions(keys, labels, rng.uniform(size=12)),
                                                         "validation": _split_predictions(manifest, "validation", 4)},
                  training=(14, 4))
    neighbours = tmp_path / "neighbours.csv"
    pd.DataFrame({"key": ["V01-nb000"], "label": ["benign"], "source_key": ["V01"]}).to_csv(neighbours, index=False)
    out = tmp_path / "isic_table2_edge.csv"
    summary = write_edge_table(IsicEdgeTableOptions(edge_cases=4), [baseline, classifier, edge], classifier, baseline,
                               neighbours, manifest_csv, out)
    table = pd.read_csv(out)
    assert table[["scenario", "test images"]].values.tolist() == [
        [s, t] for s in ("baseline", "cgan-aug", EDGE_SCENARIO) for t in ("all", "edge", "baseline misclassified")]
    frame = pd.read_csv(edge / "predictions-test.csv")
    for subset, chosen in (("all", keys), ("edge", summary["edge_cases"]),
                           ("baseline misclassified", summary["baseline_misclassified"])):
        row = table[(table["scenario"] == EDGE_SCENARIO) & (table["test images"] == subset)].iloc[0]
        rows = frame[frame["key"].isin(chosen)]
        assert row["images"] == len(rows) and row["accuracy"] == pytest.approx((rows["label"] == rows["predicted"]).mean(),
                                                                              abs=1e-4)
        if rows["label"].nunique() == 2:
            assert row["AUC"] == pytest.approx(roc_auc_score(rows["label"] == "malignant", rows["p_malignant"]), abs=1e-4)
        else:
            assert pd.isna(row["AUC"])
    assert len(summary["edge_cases"]) == 4
    assert (table.loc[(table["scenario"] == "baseline") & (table["test images"] == "baseline misclassified"),
                      "accuracy"] == 0).all()
    assert summary["provenance"]["step"] == "isic-edge-table"
    assert isic_table2(load_models([edge])).loc[0, "scenario"] == EDGE_SCENARIO  # a row of ISIC Table 2
    pd.DataFrame({"key": ["X00-nb000"], "label": ["benign"], "source_key": ["X00"]}).to_csv(neighbours, index=False)
    with pytest.raises(DermsynthError, match="not validation images"):  # a test image's neighbour in training
        write_edge_table(IsicEdgeTableOptions(edge_cases=4), [edge], classifier, baseline, neighbours, manifest_csv, out)


def test_table_edge_subsets_come_from_the_edge_classifier_and_the_baseline(tmp_path):
    manifest = _manifest(n_test=6)
    test = manifest[manifest["split"] == "test"]
    keys, labels = test["key"].tolist(), test["label"].tolist()
    classifier = _predictions(keys, labels, [0.5, 0.9, 0.1, 0.45, 0.99, 0.6])
    baseline = _predictions(keys, labels, [0.9] * 6)
    cases = case_frame(classifier, baseline, CLASSES, 2)
    assert cases.loc[cases["edge"], "key"].tolist() == ["X00", "X03"]
    folder = _model(tmp_path / "m", "baseline", {"test": baseline})
    table = edge_table([folder], cases, CLASSES)
    assert table.loc[table["test images"] == "baseline misclassified", "accuracy"].item() == 0.0


def test_an_unknown_edge_generator_is_named_when_the_workflow_config_is_checked():
    import yaml

    from dermsynth.config import validate_config
    from dermsynth.errors import ConfigError

    from .conftest import REPO
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["classifiers"]["isic"]["edge"]["gan"] = "nope"
    with pytest.raises(ConfigError, match=r"'classifiers.isic.edge.gan': 'nope' is not defined under 'gans'"):
        validate_config(raw, workflow=True)
    raw["classifiers"]["isic"]["edge"]["enabled"] = False
    assert validate_config(raw, workflow=True)["classifiers"]["isic"]["edge"]["gan"] == "nope"  # not planned: fine
