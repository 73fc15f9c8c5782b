"""`dermsynth classify train`, `filter-synthetic`, `isic-synthetic`: one classifier per (study, scenario,
architecture), evaluated on the untouched real test split only.

Per model folder (results/classifiers/<study>/<scenario>/<architecture>/):
    best.pt                    the best validation epoch's weights (resume.pt while training)
    metrics.json               test report (accuracy, balanced accuracy, per-class recall/AUC, confusion),
                               the best epoch's validation report, history, training-set counts, provenance
    predictions-test.csv       per test image: key, label, predicted, p_<class>…
    predictions-synthetic.csv  (unfiltered synthetic scenarios) the same for its synthetic images
    confusion.png              row-normalised confusion matrix on the test split
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..errors import ConfigError, DermsynthError
from ..figures import pyplot as plt
from ..figures import random_init_note
from ..fingerprint import require_same
from ..gan.generate import generate_plan_to_lmdb
from ..labels import scheme_classes
from ..locks import exclusive
from ..metrics.classification import classification_report
from ..outputs import check_writable, save_figure, write_csv, write_json
from ..provenance import provenance
from ..scenarios import EDGE, parse
from ..synthetic.datasets import filter_synthetic
from .data import ImageRows, assemble_training_set, read_manifest
from .options import IsicSyntheticOptions, TrainClassifierOptions
from .train import load_best, predict_probabilities, recipe_from, train_classifier


def predictions_frame(rows: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per image: key, label, predicted class and p_<class> for each class (`probabilities`: float (N, C), rows
    summing to 1)."""
    frame = pd.DataFrame({"key": rows["key"].to_numpy(), "label": rows["label"].to_numpy(),
                          "predicted": [classes[i] for i in probabilities.argmax(axis=1)]})
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, k]
    return frame


def report_from_predictions(frame: pd.DataFrame, classes: list[str]) -> dict:
    """The classification report recomputed from a predictions CSV (what the tables are built from)."""
    index = {name: i for i, name in enumerate(classes)}
    probabilities = frame[[f"p_{name}" for name in classes]].to_numpy(dtype=float)
    return classification_report(frame["label"].map(index).to_numpy(), probabilities, classes)


def confusion_figure(report: dict, title: str, out_png: str | Path, weights: str) -> None:
    """A PNG of the row-normalised confusion matrix of `report["confusion"]` (rows = true class, each row divided by
    its count, so the diagonal is each class's recall): true-class tick labels carry their n ('mel (n=23)'), the
    colour bar says "row-normalised (recall)", each cell shows its share and its count. `weights` is the
    classifier's start ('random-init …' puts "random-init" in the title `title`). Raises OutputError."""
    classes = report["confusion"]["classes"]
    counts = np.array(report["confusion"]["counts"])
    matrix = np.array(report["confusion"]["normalised"])
    fig, ax = plt.subplots(figsize=(2.2 + 0.75 * len(classes), 1.4 + 0.65 * len(classes)), dpi=120)
    shown = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{matrix[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=7)
    ax.set_yticks(range(len(classes)), [f"{name} (n={int(n)})" for name, n in zip(classes, counts.sum(axis=1))],
                  fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (n images)")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04).set_label("row-normalised (recall)", fontsize=7)
    note = random_init_note(not weights.startswith("random-init"), "classifier weights")
    ax.set_title(f"{title}{note}\nconfusion matrix, row-normalised (cells: share of the row, count)", fontsize=8)
    fig.tight_layout()
    try:
        save_figure(out_png, fig)
    finally:
        plt.close(fig)


def _write_predictions(model, sets: dict[str, ImageRows], classes: list[str], recipe, device,
                       out_dir: Path) -> dict[str, pd.DataFrame]:
    """predictions-<name>.csv in `out_dir` for each of `sets` (test, validation, synthetic), in that order.
    Returns name → predictions frame."""
    frames = {}
    for name in ("test", "validation", "synthetic"):
        if name in sets:
            label = None if name == "validation" else f"predict {name}"
            probabilities = predict_probabilities(model, sets[name], recipe, device, label)
            frames[name] = predictions_frame(sets[name].rows, probabilities, classes)
            write_csv(out_dir / f"predictions-{name}.csv", frames[name])
    return frames


def _check_scenario(scenario: str, synthetic_lmdb, synthetic_manifest, real_train: bool) -> None:
    """The scenario name is recorded in metrics.json and the tables: it must say what was trained on.
    Raises ConfigError: `baseline` with synthetic images, another scenario without them, or no real images
    outside a `-synth` scenario (and real ones in it), or a name of no scenario (`scenarios.parse`)."""
    parsed = parse(scenario)
    synthetic = bool(synthetic_lmdb and synthetic_manifest)
    if bool(synthetic_lmdb) != bool(synthetic_manifest):
        raise ConfigError("--synthetic-lmdb and --synthetic-manifest go together (the images and their rows)")
    if not parsed.adds_synthetic and synthetic:
        raise ConfigError("scenario 'baseline' trains on real images only: drop --synthetic-lmdb/--synthetic-manifest, "
                          "or name the scenario after the synthetic set (SA-<n>, SA-<n>-filter, <family>-aug)")
    if parsed.adds_synthetic and not synthetic:
        raise ConfigError(f"scenario '{scenario}' adds synthetic images: pass --synthetic-lmdb and "
                          "--synthetic-manifest (the set's LMDB and manifest), or use scenario 'baseline'")
    if parsed.synthetic_only == real_train:
        raise ConfigError(f"scenario '{scenario}': a '-synth' scenario trains on synthetic images only (pass "
                          "--no-real-train), and only a '-synth' scenario may leave the real training images out")


def training_sources(scenario: str) -> tuple[str, ...]:
    """The real splits a scenario's synthetic images may derive from: the training split; for aug-edge also the
    validation split (neighbours of its edge cases and mistakes). Never the test split."""
    return ("train", "validation") if parse(scenario).kind == EDGE else ("train",)


def run_classifier(options: TrainClassifierOptions, real_lmdb, real_manifest, out_dir, synthetic_lmdb=None,
                   synthetic_manifest=None, real_train: bool = True, predict_synthetic: bool = False,
                   data_source: str = "", device=None) -> dict:
    """Train model (`options.study`, `options.scenario`, `options.arch`) with the study's recipe on the train split
    of `real_manifest` (unless not `real_train`) plus the rows of `synthetic_manifest` (images in
    `synthetic_lmdb`); pick the best validation epoch; predict the real validation and test splits (and, with
    `predict_synthetic`, the synthetic rows). Writes best.pt, predictions-*.csv, confusion.png and metrics.json
    (reports, history, training-set counts, `data_source`, provenance) to `out_dir`; resumes per epoch.
    Returns the metrics.json dict. Holds `out_dir`'s lock throughout (one writer per model folder); resumes
    only a resume.pt of the same data, architecture and recipe (`train.train_classifier`); metrics.json records
    the recipe that ran, the run's fingerprint and its starts (`runs`).

    Raises:
        DermsynthError: the training set is empty; InputError: the early-stopping metric is undefined on
        validation; ConfigError: the architecture is unknown; BusyError: another process writes to `out_dir`;
        OutputError: `out_dir` is not writable; StateMismatchError: best.pt is not this run's."""
    _check_scenario(options.scenario, synthetic_lmdb, synthetic_manifest, real_train)
    inputs = _inputs(options, real_lmdb, real_manifest, synthetic_lmdb, synthetic_manifest, real_train)
    out_dir = check_writable(out_dir)  # the inputs are read first: a wrong input leaves no model folder behind
    with exclusive(out_dir, "train-classifier"):
        return _run_classifier(options, inputs, out_dir, predict_synthetic, data_source, device)


def _inputs(options, real_lmdb, real_manifest, synthetic_lmdb, synthetic_manifest, real_train) -> dict:
    """The run's classes, manifests, training rows and datasets (train, validation, test) over its stores."""
    recipe = recipe_from(options.recipe)
    store = LmdbImageStore(real_lmdb)
    classes = list(scheme_classes(store.index["labels"]))
    manifest = read_manifest(real_manifest)
    synthetic = read_manifest(synthetic_manifest) if synthetic_manifest else None
    training = assemble_training_set(manifest, synthetic, real_train, training_sources(options.scenario))
    if training.empty:
        raise DermsynthError(f"scenario {options.scenario}: the training set is empty")
    stores = {"real": real_lmdb, **({"synthetic": synthetic_lmdb} if synthetic_lmdb else {})}
    sets = {split: ImageRows(manifest[manifest["split"] == split].assign(store="real"), stores, classes,
                             recipe.input_resolution) for split in ("validation", "test")}
    return {"recipe": recipe, "classes": classes, "synthetic": synthetic, "training": training, "stores": stores,
            "train_set": ImageRows(training, stores, classes, recipe.input_resolution, recipe.augment), "sets": sets}


def _run_classifier(options, inputs: dict, out_dir: Path, predict_synthetic, data_source, device) -> dict:
    study, scenario, architecture = options.study, options.scenario, options.arch
    recipe, classes, synthetic, training, stores, train_set, sets = (
        inputs[k] for k in ("recipe", "classes", "synthetic", "training", "stores", "train_set", "sets"))
    device = choose_device(device)
    print(f"classifier {study}/{scenario}/{architecture}: {len(train_set)} training images "
          f"({int(training['synthetic'].sum())} synthetic), {len(sets['validation'])} validation, "
          f"{len(sets['test'])} test", file=sys.stderr)
    result = train_classifier(architecture, classes, train_set, sets["validation"], recipe, out_dir, device,
                              locked=True)
    model, best = load_best(out_dir, device)
    require_same(out_dir / "best.pt", best.get("fingerprint"), result["fingerprint"], "a classifier",
                 "remove it and run again")
    if predict_synthetic and synthetic is not None:
        sets["synthetic"] = ImageRows(synthetic.assign(store="synthetic"), stores, classes, recipe.input_resolution)
    predictions = _write_predictions(model, sets, classes, recipe, device, out_dir)
    test_predictions, validation_predictions = predictions["test"], predictions["validation"]
    test_report = report_from_predictions(test_predictions, classes)
    confusion_figure(test_report, f"{study} {scenario} {architecture}: test (balanced accuracy "
                     f"{test_report['balanced_accuracy']:.3f})", out_dir / "confusion.png", result["weights"])
    summary = {
        "study": study, "scenario": scenario, "architecture": architecture, "classes": classes,
        "weights": result["weights"], "real_weights": not result["weights"].startswith("random-init"),
        "data": data_source, "best_epoch": best["epoch"], "epochs_run": result["epoch"],
        "stopped_early": result["stopped_early"], "history": result["history"],
        "training_set": {"images": len(training), "synthetic": int(training["synthetic"].sum()),
                         "per_class": training.groupby("label").size().to_dict(),
                         "synthetic_derived_from_splits": list(training_sources(scenario))},
        "validation": report_from_predictions(validation_predictions, classes), "test": test_report,
        "recipe": asdict(recipe), "fingerprint": result["fingerprint"], "runs": result["runs"],
        "device": str(device),
        "provenance": provenance(options.step, options.to_dict(), seed=recipe.seed)}
    write_json(out_dir / "metrics.json", summary)
    (out_dir / "resume.pt").unlink(missing_ok=True)
    print(f"classifier {study}/{scenario}/{architecture}: test balanced accuracy "
          f"{test_report['balanced_accuracy']:.4f}, accuracy {test_report['accuracy']:.4f}, "
          f"mean AUC {test_report['mean_auc']:.4f}", file=sys.stderr)
    return summary


def run_filter_synthetic(synthetic_manifest, predictions, out_manifest) -> dict:
    """SA-n-filter: the synthetic set minus the images the unfiltered model misclassifies."""
    manifest = read_manifest(synthetic_manifest)
    kept, dropped = filter_synthetic(manifest, read_manifest(predictions))
    write_csv(out_manifest, kept)
    summary = {"synthetic_manifest": str(synthetic_manifest), "predictions": str(predictions),
               "images": len(manifest), "kept": len(kept), "dropped": len(dropped),
               "dropped_percent": round(100 * len(dropped) / max(1, len(manifest)), 2),
               "dropped_per_class": dropped.groupby("label").size().to_dict(),
               "provenance": provenance("filter-synthetic", {"predictions": str(predictions)})}
    write_json(Path(out_manifest).with_suffix(".json"), summary)
    print(f"filter: dropped {len(dropped)} of {len(manifest)} synthetic images ({summary['dropped_percent']}%)",
          file=sys.stderr)
    return summary


def isic_synthetic_plan(options: IsicSyntheticOptions, networks: dict[str, str]) -> list[dict]:
    """ISIC study sets: `synth` = `options.images` split equally between benign and malignant; `aug` =
    `options.images` malignant images. `networks`: class → generator checkpoint (a conditional generator may be
    given for both). Seeds: one block per (kind, class), so the sets do not share images. Returns the plan of
    `gan.generate.generate_plan_to_lmdb`: [{'network', 'class', 'seeds'}, ...]."""
    if options.kind == "synth":
        half = options.images // 2
        counts = {"benign": half, "malignant": options.images - half}
    elif options.kind == "aug":
        counts = {"malignant": options.images}
    else:
        raise ValueError(f"unknown ISIC synthetic kind {options.kind!r} (synth or aug)")
    missing = sorted(set(counts) - set(networks))
    if missing:
        raise DermsynthError(f"isic-synthetic {options.family}-{options.kind}: no generator given for class(es) "
                             f"{', '.join(missing)} (--network <class>=<network-final.pt>)")
    base = {"synth": 0, "aug": 50_000_000}[options.kind]
    return [{"network": networks[name], "class": name,
             "seeds": list(range(base + 10_000_000 * i, base + 10_000_000 * i + count))}
            for i, (name, count) in enumerate(counts.items())]


def isic_synthetic(options: IsicSyntheticOptions, networks: dict[str, str], out_dir, device=None) -> pd.DataFrame:
    """Generate ISIC study set `options.family`-`options.kind` (`isic_synthetic_plan`) with truncation
    `options.truncation_psi` into `out_dir` (lmdb/ + manifest.csv, labels of the binary scheme), holding its
    lock. Returns the manifest frame (key, label, ...). Raises BusyError when another process writes `out_dir`,
    OutputError when it is not writable, WrongFileError when a network is not a generator."""
    plan = isic_synthetic_plan(options, networks)
    with exclusive(check_writable(out_dir), "isic-synthetic"):
        frame = generate_plan_to_lmdb(plan, out_dir, "binary", options.truncation_psi, device=device)
    print(f"isic-synthetic {options.family}-{options.kind}: {frame.groupby('label').size().to_dict()}",
          file=sys.stderr)
    return frame
