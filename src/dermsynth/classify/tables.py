"""The studies' classifier tables, computed from the saved per-image predictions.

HAM10000 study:
  table2.csv  rows architecture × filtered; the baseline's balanced accuracy on the test split and,
              per SA size, the difference (SA − baseline), as the study's Table 2
  table3.csv  per architecture: per-class AUC-ROC and their mean for the baseline, the best unfiltered
              SA size and its filtered twin; "best" = highest balanced accuracy on the validation split
              (choosing on test would leak it)
  recall-per-class-<architecture>.png  per-class recall of the baseline and every SA model
ISIC study:
  isic_table2.csv  accuracy, balanced accuracy and AUC per scenario and architecture
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..figures import pyplot as plt
from ..figures import random_init_note
from ..outputs import save_figure, write_csv
from ..scenarios import Scenario
from .folders import model_info
from .run import report_from_predictions


def load_models(folders: list[str | Path]) -> list[dict]:
    """metrics.json of each model folder plus its test and validation reports recomputed from predictions.
    Raises WrongFileError for a folder that is not a finished classifier folder (`model_info`)."""
    models = []
    for folder in map(Path, folders):
        info = model_info(folder)
        classes = info["classes"]
        for split in ("test", "validation"):
            frame = pd.read_csv(folder / f"predictions-{split}.csv", dtype={"key": str, "label": str, "predicted": str})
            info[f"{split}_recomputed"] = report_from_predictions(frame, classes)
        info["folder"] = str(folder)
        models.append(info)
    return models


def _with_provenance(table: pd.DataFrame, models: list[dict], key: str) -> pd.DataFrame:
    """`real weights` per row (whether every model of the row's `key` value, e.g. its architecture, started
    from ImageNet weights: a random-init resnet10t row and an ImageNet Lite0 row can share a table) and `data`."""
    real = {value: all(m["real_weights"] for m in models if m[key] == value) for value in table[key]}
    return table.assign(**{"real weights": table[key].map(real), "data": models[0]["data"] if models else ""})


def table2(models: list[dict], sizes: list[str]) -> pd.DataFrame:
    """HAM10000 study Table 2: one row per architecture × (unfiltered, filtered SA sets): the baseline's
    balanced multi-class accuracy on the test split (0–1) and, per SA size, the change against it (−1…1;
    None where that model was not trained), with the rows' real-weights provenance."""
    rows = []
    for architecture in dict.fromkeys(m["architecture"] for m in models):
        mine = {m["scenario"]: m for m in models if m["architecture"] == architecture}
        baseline = mine["baseline"]["test_recomputed"]["balanced_accuracy"]
        for filtered in (False, True):
            row = {"architecture": architecture, "filtered": filtered, "baseline": round(baseline, 4)}
            for size in sizes:
                model = mine.get(Scenario.sa(size, filtered).name)
                row[size] = None if model is None else round(model["test_recomputed"]["balanced_accuracy"] - baseline, 4)
            rows.append(row)
    return _with_provenance(pd.DataFrame(rows), models, "architecture")


def best_size(models: list[dict], architecture: str, sizes: list[str]) -> str:
    """The unfiltered SA size with the highest validation balanced accuracy (ties: the smaller size)."""
    candidates = [m for m in models if m["architecture"] == architecture and m["scenario"] in sizes]
    best = max(candidates, key=lambda m: (m["validation_recomputed"]["balanced_accuracy"],
                                          -sizes.index(m["scenario"])))
    return best["scenario"]


def table3(models: list[dict], sizes: list[str]) -> pd.DataFrame:
    """HAM10000 study Table 3: per architecture, the baseline and the SA size chosen on validation balanced
    accuracy (unfiltered and filtered): test AUC (0–1) of every class, one-vs-rest, and their mean."""
    rows = []
    for architecture in dict.fromkeys(m["architecture"] for m in models):
        mine = {m["scenario"]: m for m in models if m["architecture"] == architecture}
        chosen = best_size(models, architecture, sizes)
        for scenario in ("baseline", chosen, Scenario.sa(chosen, filtered=True).name):
            if scenario not in mine:
                continue
            report = mine[scenario]["test_recomputed"]
            row = {"architecture": architecture, "model": scenario,
                   "chosen on": "validation balanced accuracy" if scenario != "baseline" else ""}
            row.update({name: round(v["auc"], 4) for name, v in report["per_class"].items()})
            row["mean"] = round(report["mean_auc"], 4)
            rows.append(row)
    return _with_provenance(pd.DataFrame(rows), models, "architecture")


def recall_figure(models: list[dict], architecture: str, sizes: list[str], out_png: str | Path) -> None:
    """Bar chart of per-class test recall (0–1) for one architecture, baseline vs each SA model (left unfiltered,
    right filtered), written as PNG: each class's tick label carries its number of test images ('mel (n=23)', the
    same test split for every model); the title says "random-init" when any of these models did not start from
    ImageNet weights (metrics.json `real_weights`). Raises OutputError."""
    mine = {m["scenario"]: m for m in models if m["architecture"] == architecture}
    classes = mine["baseline"]["classes"]
    support = mine["baseline"]["test_recomputed"]["per_class"]
    ticks = [f"{c}\n(n={support[c]['support']})" for c in classes]
    note = random_init_note(all(m["real_weights"] for m in mine.values()), "classifier weights")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), dpi=120, sharey=True)
    for ax, filtered in zip(axes, (False, True)):
        scenarios = ["baseline"] + [Scenario.sa(s, filtered).name for s in sizes]
        scenarios = [s for s in scenarios if s in mine]
        width = 0.8 / len(scenarios)
        for i, scenario in enumerate(scenarios):
            recall = [mine[scenario]["test_recomputed"]["per_class"][c]["recall"] for c in classes]
            ax.bar(np.arange(len(classes)) + i * width, recall, width, label=scenario)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, ticks, fontsize=7)
        ax.set_xlabel("true class (n test images)", fontsize=8)
        ax.set_title(f"{'filtered' if filtered else 'unfiltered'} SA sets", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("recall on the test split")
    fig.suptitle(f"{architecture}: recall per class, baseline vs SA models{note}", fontsize=10)
    fig.tight_layout()
    try:
        save_figure(out_png, fig)
    finally:
        plt.close(fig)


def isic_table2(models: list[dict]) -> pd.DataFrame:
    """ISIC study Table 2: one row per classifier scenario (baseline, synth, aug per GAN): training images,
    synthetic count, accuracy, balanced accuracy and binary AUC (0–1) on the real test split, real weights."""
    rows = []
    for m in models:
        report = m["test_recomputed"]
        rows.append({"scenario": m["scenario"], "architecture": m["architecture"],
                     "training images": m["training_set"]["images"], "synthetic": m["training_set"]["synthetic"],
                     "accuracy": round(report["accuracy"], 4), "balanced accuracy": round(report["balanced_accuracy"], 4),
                     "AUC": round(report["binary_auc"], 4), "real weights": m["real_weights"],
                     "data": m["data"]})
    return pd.DataFrame(rows)


def write_ham_tables(folders: list[str], sizes: list[str], table2_out, table3_out, figure_dir) -> None:
    """Load the classifier folders and write Tables 2 and 3 (CSV) and one recall figure per architecture."""
    models = load_models(folders)
    write_csv(table2_out, table2(models, sizes))
    write_csv(table3_out, table3(models, sizes))
    for architecture in dict.fromkeys(m["architecture"] for m in models):
        recall_figure(models, architecture, sizes, Path(figure_dir) / f"recall-per-class-{architecture}.png")


def write_isic_table(folders: list[str], out) -> pd.DataFrame:
    """Load the ISIC classifier folders and write ISIC Table 2 (CSV); returns the table."""
    table = isic_table2(load_models(folders))
    write_csv(out, table)
    return table
