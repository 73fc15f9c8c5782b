"""Scenario aug-edge (ISIC study, §5): neighbours of edge cases and misclassified images as training images.

The study "selected all the misclassifications and edge cases and generated N neighbors using a distance of 0.1
to augment the dataset", and saw "an improvement in performance in those edge cases". Done on the test images, the
neighbours of the very images the model is then tested on would be in its training set. Here:

* **Sources (training side): validation images only.** The validation split's *edge cases* — the `edge_cases`
  images with the smallest margin between the two most probable classes of the edge classifier (by default the
  authenticity stage's classifier, cGAN-aug: its definition of an edge case, `explain.authenticity.mark_cases`,
  applied to every validation image instead of the projected test images) — and the validation images the
  *baseline* misclassifies (the model aug-edge is meant to improve; at most `misclassified`, a seeded choice).
  `select_sources` refuses any key that is not in the validation split.
* Each source is projected into the generator (`latent.project`) and `neighbors` latents at exactly `distance`
  around its projection (`gan.neighbors`: every W layer moved by one offset of that length) are rendered with
  its noise maps and labelled with its class → `results/synthetic/isic/edge-neighbours/` (lmdb/ + manifest.csv,
  whose `source_key` is the validation image's key). The classifier's leak check accepts such derivatives of
  validation images for this scenario only, and derivatives of test images never (`classify.data.check_no_leak`).
* **Reporting: test images.** The test split's edge cases (same definition, same classifier) and the test images
  the baseline misclassifies; every ISIC model's accuracy and AUC on all test images and on each subset
  (`edge_table`). `write_edge_table` asserts that no neighbour derives from a test image.

The aug-edge model still stops early on validation AUC, and neighbours of some validation images are in its
training set, so its *validation* scores are optimistic; its test scores are not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from ..data.dataset import read_images
from ..devices import choose_device
from ..errors import DermsynthError
from ..fingerprint import tensors_digest
from ..gan.generate import network_classes, write_image_set
from ..gan.neighbors import key_id, neighbour_latents, neighbour_rows, render_neighbours
from ..gan.run import load_generator
from ..latent.project import ProjectionOptions
from ..latent.run import project_in_batches, save_projection
from ..locks import exclusive
from ..metrics import extractors
from ..outputs import check_writable, save_npz, write_csv, write_json
from ..provenance import provenance
from .folders import model_info

SUBSETS = ("all", "edge", "baseline misclassified")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest CSV as strings (`classify.data.read_manifest`, without importing torch: the table job is light)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def margins(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Per row of a predictions CSV: the most probable class's probability minus the second's (0–1)."""
    probabilities = np.sort(predictions[[f"p_{name}" for name in classes]].to_numpy(dtype=float), axis=1)[:, ::-1]
    return probabilities[:, 0] - (probabilities[:, 1] if probabilities.shape[1] > 1 else 0.0)


def case_frame(classifier: pd.DataFrame, baseline: pd.DataFrame, classes: list[str], edge_cases: int) -> pd.DataFrame:
    """One split's images (the keys both prediction frames hold, sorted): key, label, margin (edge classifier),
    edge (the `edge_cases` smallest margins, ties by key — `mark_cases`' rule), baseline_predicted, misclassified
    (by the baseline). Raises DermsynthError when the two frames are not predictions of the same images."""
    if set(classifier["key"]) != set(baseline["key"]):
        raise DermsynthError("the edge classifier and the baseline predicted different images "
                             f"({len(set(classifier['key']) ^ set(baseline['key']))} keys differ): not the same split")
    frame = classifier[["key", "label"]].assign(margin=margins(classifier, classes),
                                                classifier_predicted=classifier["predicted"].to_numpy())
    frame = frame.merge(baseline[["key", "predicted"]].rename(columns={"predicted": "baseline_predicted"}), on="key")
    edge = set(frame.sort_values(["margin", "key"])["key"][:edge_cases])
    frame["edge"] = frame["key"].isin(edge)
    frame["misclassified"] = frame["baseline_predicted"] != frame["label"]
    return frame.sort_values("key").reset_index(drop=True)


def select_sources(manifest: pd.DataFrame, cases: pd.DataFrame, misclassified: int | None, seed: int) -> pd.DataFrame:
    """The validation images aug-edge's neighbours are made from: every edge case and the baseline's mistakes (at
    most `misclassified`, drawn with `seed`; None: all), sorted by key, with a `reason` column (edge,
    misclassified, edge+misclassified). Raises DermsynthError for any key outside the validation split of
    `manifest` — a test image's neighbours would train on what is tested."""
    split = manifest.set_index("key")["split"]
    outside = sorted(k for k in cases["key"] if split.get(k) != "validation")
    if outside:
        raise DermsynthError(f"{len(outside)} of the images offered as neighbours' sources are not validation images "
                             f"(e.g. {outside[:3]}, split {[split.get(k, 'unknown') for k in outside[:3]]}): "
                             "aug-edge is made from validation images only, never from test images")
    wrong = cases[cases["misclassified"]]
    if misclassified is not None and len(wrong) > misclassified:
        wrong = wrong.sample(n=misclassified, random_state=seed)
    chosen = cases[cases["edge"] | cases["key"].isin(set(wrong["key"]))].copy()
    chosen["reason"] = np.where(chosen["edge"] & chosen["key"].isin(set(wrong["key"])), "edge+misclassified",
                                np.where(chosen["edge"], "edge", "misclassified"))
    return chosen.sort_values("key").reset_index(drop=True)


def _predictions(folder: str | Path, split: str) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / f"predictions-{split}.csv", dtype={"key": str, "label": str, "predicted": str},
                       keep_default_na=False)


def _model_info(folder: str | Path) -> dict:
    return model_info(folder)


def split_cases(classifier_dir, baseline_dir, split: str, edge_cases: int) -> tuple[pd.DataFrame, list[str]]:
    """`case_frame` of one split from two model folders (their predictions-<split>.csv), and the classes."""
    classes = _model_info(classifier_dir)["classes"]
    if _model_info(baseline_dir)["classes"] != classes:
        raise DermsynthError(f"{classifier_dir} and {baseline_dir} have different classes")
    return case_frame(_predictions(classifier_dir, split), _predictions(baseline_dir, split), classes,
                      edge_cases), classes


def _check_generator(classes: list[str], trained_on: list[str], labels: set[str], network) -> None:
    """A generator that records its classes (network-final.json) must have been trained on every source's class."""
    missing = sorted(labels - set(trained_on or classes)) if trained_on or classes else []
    if missing:
        raise DermsynthError(f"{network} was not trained on class(es) {', '.join(missing)} of the edge cases: "
                             "project them into a conditional generator or one trained on every class "
                             "(classifiers.isic.edge.gan)")


def render_edge_neighbours(options, network, targets, sources: pd.DataFrame, device) -> dict:
    """Project `targets` (uint8 (M, 3, R, R), the rows of `sources`) into `network` and render `options.neighbors`
    neighbours at `options.distance` around each projection. Returns ws, noise, curve, moved (M, N, num_ws,
    w_dim), images (M·N, 3, R, R) and the largest deviation of a neighbour layer's distance from the distance."""

    G = load_generator(network, device)
    classes, trained_on = network_classes(network)
    _check_generator(classes, trained_on, set(sources["label"]), network)
    lpips_vgg, lpips_info = extractors.lpips_model(net="vgg")
    optimiser = ProjectionOptions.from_section(options.to_dict(), where=f"{options.step} options")
    class_indices = [classes.index(label) for label in sources["label"]] if G.c_dim else None
    ws, noise, curve = project_in_batches(G, targets, class_indices, lpips_vgg, optimiser, options.batch, device,
                                          "edge-neighbours: project")
    keys = sources["key"].tolist()
    moved = neighbour_latents(ws, [key_id(k) for k in keys], options.neighbors, options.distance, options.seed)
    deviation = float((torch.linalg.vector_norm(moved.double() - ws.double()[:, None], dim=-1)
                       - options.distance).abs().max()) if len(keys) else 0.0
    images = render_neighbours(G, moved, noise, options.batch, device)
    return {"ws": ws, "noise": noise, "curve": curve, "moved": moved, "images": images, "deviation": deviation,
            "lpips": lpips_info, "generator": tensors_digest(G.state_dict())}


def run_edge_neighbours(options, network, lmdb_root, manifest, classifier_dir, baseline_dir, out_dir,
                        device: str | None = None) -> dict:
    """aug-edge's training images (`EdgeNeighboursOptions`): the validation sources (`select_sources`: edge cases of
    the classifier in `classifier_dir`, mistakes of the baseline in `baseline_dir`) projected into generator
    `network` and `options.neighbors` neighbours of each rendered into `out_dir`: lmdb/ + manifest.csv (key
    '<source key>-nb<j>', the source's label, source_key, distance, …), sources.csv (the sources, their margins
    and reasons), projection.npz (their latents, as `dermsynth latent project` writes), neighbors.npz (every neighbour's
    ws and its centre) and edge.json (counts, distances, provenance). Returns edge.json's dict. The projection
    records the generator's identity. Holds `out_dir`'s lock; checks it writable before projecting.

    Raises:
        DermsynthError: no source, or sources outside validation; WrongFileError: a model folder that is not a
        finished classifier, `network` not a generator; BusyError/OutputError: `out_dir` is being written by
        another process, or not writable."""
    frame = read_manifest(manifest)
    cases, classes = split_cases(classifier_dir, baseline_dir, "validation", options.edge_cases)
    sources = select_sources(frame, cases, options.misclassified, options.seed)
    if sources.empty:
        raise DermsynthError("aug-edge: no validation edge case and no baseline mistake to make neighbours of")
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "edge-neighbours"):
        return _edge_neighbours(options, network, lmdb_root, sources, cases, classes, classifier_dir, baseline_dir,
                                out_dir, device)


def _edge_neighbours(options, network, lmdb_root, sources, cases, classes, classifier_dir, baseline_dir,
                     out_dir: Path, device) -> dict:

    device = choose_device(device)
    made = render_edge_neighbours(options, network, read_images(lmdb_root, sources["key"].tolist()), sources, device)
    rows = neighbour_rows(sources["key"].tolist(), sources["label"].tolist(), sources["key"].tolist(),
                          options.neighbors, options.distance, options.seed, network)
    for row in rows:
        row["source_split"] = "validation"
    write_image_set(out_dir, rows, made["images"], "binary" if set(classes) == {"benign", "malignant"} else "ham7")
    write_csv(out_dir / "sources.csv", sources)
    save_projection(out_dir / "projection.npz", sources, made["ws"], made["noise"], generator=made["generator"])
    save_npz(out_dir / "neighbors.npz", keys=np.array([r["key"] for r in rows]),
             centre=np.array([r["centre"] for r in rows]),
             ws=made["moved"].reshape(-1, *made["moved"].shape[2:]).numpy(), centre_ws=made["ws"].numpy())
    summary = _edge_summary(options, sources, rows, made, network, classifier_dir, baseline_dir, cases)
    write_json(out_dir / "edge.json", summary)
    print(f"edge-neighbours: {len(sources)} validation images ({summary['sources_per_reason']}), "
          f"{len(rows)} neighbours at distance {options.distance} in W", file=sys.stderr)
    return summary


def _edge_summary(options, sources, rows, made, network, classifier_dir, baseline_dir, cases) -> dict:
    return {"network": str(network), "edge_classifier": str(classifier_dir), "baseline": str(baseline_dir),
            "source_split": "validation", "validation_images": len(cases),
            "sources": len(sources), "sources_per_reason": sources.groupby("reason").size().to_dict(),
            "sources_per_class": sources.groupby("label").size().to_dict(),
            "baseline_misclassified_validation": int(cases["misclassified"].sum()),
            "neighbours": len(rows), "neighbours_per_source": options.neighbors, "distance": options.distance,
            "max_distance_error": made["deviation"], "space": "W, one offset on every layer",
            "projection": {"steps": options.steps, "space": options.space,
                           "lpips_vgg_curve": {"first": float(made["curve"][0]), "last": float(made["curve"][-1])},
                           "lpips": made["lpips"]},
            "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}


def _subset_scores(predictions: pd.DataFrame, keys: set[str], positive: str) -> dict:
    """images, accuracy and AUC (positive class `positive`; None without both classes) on the rows of `keys`."""
    rows = predictions[predictions["key"].isin(keys)]
    both = rows["label"].nunique() == 2
    return {"images": len(rows), "positives": int((rows["label"] == positive).sum()),
            "accuracy": round(float((rows["label"] == rows["predicted"]).mean()), 4) if len(rows) else None,
            "AUC": round(float(roc_auc_score(rows["label"] == positive, rows[f"p_{positive}"])), 4) if both else None}


def edge_table(folders: list[str | Path], cases: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per model folder × test subset (all, edge, baseline misclassified, as in `cases`): images, positives
    (the second class, malignant), accuracy and AUC (None where the subset lacks a class), real weights, data."""
    subsets = {"all": set(cases["key"]), "edge": set(cases.loc[cases["edge"], "key"]),
               "baseline misclassified": set(cases.loc[cases["misclassified"], "key"])}
    rows = []
    for folder in folders:
        info, predictions = _model_info(folder), _predictions(folder, "test")
        for subset in SUBSETS:
            rows.append({"scenario": info["scenario"], "architecture": info["architecture"], "test images": subset,
                         **_subset_scores(predictions, subsets[subset], classes[-1]),
                         "real weights": info["real_weights"], "data": info["data"]})
    return pd.DataFrame(rows)


def write_edge_table(options, folders: list[str], classifier_dir, baseline_dir, edge_manifest, manifest, out) -> dict:
    """ISIC Table 2 on the test edge cases (`IsicEdgeTableOptions`): `edge_table` of `folders` to `out` (CSV) and a
    .json beside it (the test subsets' keys, the classifiers that define them, provenance). Raises DermsynthError
    when a neighbour of aug-edge's training set (`edge_manifest`) derives from an image outside the validation
    split of `manifest` — from a test image above all."""
    split = read_manifest(manifest).set_index("key")["split"]
    neighbours = read_manifest(edge_manifest)
    outside = sorted({k for k in neighbours["source_key"] if split.get(k) != "validation"})
    if outside:
        raise DermsynthError(f"aug-edge's training set holds neighbours of {len(outside)} images that are not "
                             f"validation images (e.g. {outside[:3]}): its test scores would not be a test")
    cases, classes = split_cases(classifier_dir, baseline_dir, "test", options.edge_cases)
    table = edge_table(folders, cases, classes)
    write_csv(out, table)
    summary = {"edge_classifier": str(classifier_dir), "baseline": str(baseline_dir), "test_images": len(cases),
               "edge_cases": sorted(cases.loc[cases["edge"], "key"]),
               "baseline_misclassified": sorted(cases.loc[cases["misclassified"], "key"]),
               "neighbour_sources": sorted(set(neighbours["source_key"])), "models": [str(f) for f in folders],
               "provenance": provenance(options.step, options.to_dict())}
    write_json(Path(out).with_suffix(".json"), summary)
    return summary
