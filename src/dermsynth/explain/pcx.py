"""Prototypical Concept-based eXplanations (PCX) of the HAM10000 classifiers (study App. C, Figs. D.1/D.2).

PCX (Dreyer et al. 2024, "Understanding the (extra-)ordinary: validating deep model decisions with
prototypical concept-based explanations", CVPR Workshops) describes a class's prediction sub-strategies:
the concept relevance vectors (CRP, `crp.py`) of every training image of the class are normalised to
relevance shares (R_c / Σ|R|) and clustered with a Gaussian mixture; each component is a prototype,
shown by the training images closest to its mean and read as a distribution over concepts. A new image
is assigned to its most likely prototype, or flagged as a novelty when its log-likelihood under the
mixture falls below a threshold set on the training vectors (a low quantile of their log-likelihoods).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.mixture import GaussianMixture

from ..classify.data import normalise, read_manifest, resize
from ..classify.train import load_best
from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..errors import DermsynthError
from ..figures import pyplot as plt
from ..figures import random_init_note
from ..fingerprint import require_same
from ..locks import exclusive
from ..options import Settings
from ..outputs import check_writable, save_figure, write_csv, write_json
from ..provenance import provenance
from .components import classifier_identity
from .crp import ConceptExplainer, choose_models, concept_references, load_concept_relevances
from .message import message_figure
from .options import PcxOptions


def relevance_shares(relevances: np.ndarray) -> np.ndarray:
    """(N, C) concept relevances → shares R_c / Σ_c |R_c| per row (rows of zeros stay zero), float64."""
    relevances = np.asarray(relevances, dtype=np.float64)
    total = np.abs(relevances).sum(axis=1, keepdims=True)
    return relevances / np.where(total > 0, total, 1.0)


@dataclass
class Prototypes:
    """A fitted PCX model: the Gaussian mixture (one component per prototype) and the novelty threshold
    (log-likelihood below which a vector is new to the model)."""
    mixture: GaussianMixture
    threshold: float
    bic: dict[int, float]

    @property
    def count(self) -> int:
        """Number of prototypes (mixture components)."""
        return self.mixture.n_components

    def assign(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prototype index (N,) int, log-likelihood (N,) float, novelty flag (N,) bool) of vectors (N, C)."""
        likelihood = self.mixture.score_samples(vectors)
        return self.mixture.predict(vectors), likelihood, likelihood < self.threshold


@dataclass(frozen=True)
class MixtureFit(Settings):
    """How PCX fits its Gaussian mixture, mirroring `explain.pcx` (build it with `MixtureFit.from_section`; the
    schema holds the defaults): `prototypes` — components (None: the count in 1…`max_prototypes` with the lowest
    BIC, Schwarz 1978); `covariance` — scikit-learn's covariance_type (full | diag | spherical | tied);
    `novelty_quantile` — in (0, 1), the quantile of the training vectors' log-likelihoods below which a vector is
    new; `n_init` — initialisations per fit, the best kept; `reg_covar` — added to the covariances' diagonals
    (≥ 0); `seed` — scikit-learn's random_state."""

    schema_section = "explain.pcx"

    prototypes: int | None
    max_prototypes: int
    covariance: str
    novelty_quantile: float
    n_init: int
    reg_covar: float
    seed: int


def fit_prototypes(vectors: np.ndarray, fit: MixtureFit) -> Prototypes:
    """Gaussian mixture on vectors (N, C) float (Dreyer et al. 2024, PCX): `fit.prototypes` components, or the count
    in 1…`fit.max_prototypes` with the lowest BIC when None. Threshold: the `fit.novelty_quantile` quantile of the
    training vectors' log-likelihoods.

    Raises:
        DermsynthError: fewer vectors than prototypes.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    counts = [fit.prototypes] if fit.prototypes else list(range(1, fit.max_prototypes + 1))
    counts = [k for k in counts if k <= len(vectors)]
    if not counts:
        raise DermsynthError(f"PCX: {len(vectors)} relevance vectors cannot make {fit.prototypes or 1} prototypes")
    fits = {k: GaussianMixture(k, covariance_type=fit.covariance, random_state=fit.seed, n_init=fit.n_init,
                               reg_covar=fit.reg_covar).fit(vectors) for k in counts}
    bic = {k: float(mixture.bic(vectors)) for k, mixture in fits.items()}
    best = fits[min(bic, key=bic.get)]
    threshold = float(np.quantile(best.score_samples(vectors), fit.novelty_quantile))
    return Prototypes(best, threshold, bic)


def prototype_members(prototypes: Prototypes, vectors: np.ndarray, count: int) -> list[np.ndarray]:
    """Per prototype: row indices of the `count` vectors closest (Euclidean) to its mean, closest first."""
    distances = np.linalg.norm(vectors[:, None, :] - prototypes.mixture.means_[None], axis=2)
    return [np.argsort(distances[:, k], kind="stable")[:count] for k in range(prototypes.count)]


def concept_matrix(prototypes: Prototypes, concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """(concept indices (K,), percentages (K, P)): the `concepts` concepts with the largest mean share
    over all prototypes (weighted by mixture weight), and each prototype's mean share of each, in %
    of that prototype's total absolute share (the matrix of Figs. D.1/D.2)."""
    means = prototypes.mixture.means_
    overall = prototypes.mixture.weights_ @ means
    chosen = np.argsort(-overall, kind="stable")[:concepts]
    percentages = 100 * means[:, chosen].T / np.abs(means).sum(axis=1)[None, :]
    return chosen, percentages


def pcx_figure(prototype_images: list[list], concept_ids: np.ndarray, percentages: np.ndarray,
               references: list[list], title: str, out_png: Path) -> None:
    """Columns = prototypes (their closest training images on top), rows = concepts (CRP reference
    images on the left, each prototype's share of the concept in the cells)."""
    shown = max([len(r) for r in references] + [1])
    columns = shown + len(prototype_images)
    size = (max(4.0, 1.1 * columns), 1.1 * (1 + len(concept_ids)))
    figure, axes = plt.subplots(1 + len(concept_ids), columns, figsize=size, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for p, images in enumerate(prototype_images):
        if images:
            axes[0, shown + p].imshow(np.concatenate([np.asarray(i) for i in images[:2]], axis=1))
        axes[0, shown + p].set_title(f"prototype {p}", fontsize=6)
    for row, concept in enumerate(concept_ids, start=1):
        for column, crop in enumerate(references[row - 1]):
            axes[row, column].imshow(crop)
        axes[row, 0].set_title(f"concept {concept}", fontsize=6, loc="left")
        for p in range(len(prototype_images)):
            value = percentages[row - 1, p]
            axes[row, shown + p].text(0.5, 0.5, f"{value:.0f}%", ha="center", va="center", fontsize=8,
                                      color="darkred" if value < 0 else "black")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    save_figure(out_png, figure, dpi=110)
    plt.close(figure)


def _test_vectors(explainer: ConceptExplainer, store, keys: list[str], target: int, resolution: int,
                  batch: int) -> np.ndarray:
    rows = [explainer.concept_relevances(normalise(resize(read_images(store, keys[s:s + batch]), resolution)),
                                         [target] * len(keys[s:s + batch]), batch)
            for s in range(0, len(keys), batch)]
    return relevance_shares(np.concatenate(rows)) if rows else np.zeros((0, 0))


def _pcx_one_model(role: str, info: dict, cache: dict, store, table: pd.DataFrame, settings: dict,
                   crp_settings: dict, out_dir: Path, device) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """PCX of one model: (test assignments, concept × prototype matrix, summary); writes pcx-<role>.png."""
    model, saved = load_best(info["folder"], device)
    require_same(cache["path"], {"classifier": cache["classifier"] or None, "composite": cache["composite"] or None},
                 {"classifier": classifier_identity(saved), "composite": crp_settings["composite"]},
                 "concept relevances", f"run `dermsynth explain crp` again for {info['folder']} with LRP composite "
                 f"{crp_settings['composite']} (explain.crp.composite)")
    resolution, classes = json.loads(saved["recipe"])["input_resolution"], saved["classes"]
    explainer = ConceptExplainer(model, cache["layer"], crp_settings["composite"], device)
    name = settings["class"]
    if name not in classes:
        raise DermsynthError(f"explain.pcx.class {name!r} is not a class of {info['folder']} ({', '.join(classes)})")
    members = np.array([label == name for label in cache["labels"]])
    if members.sum() < 2:  # too few to cluster (tiny demo data): say so in every output instead of failing
        note = f"{int(members.sum())} training image(s) of class {name!r} in the reference pool: too few for PCX"
        message_figure(note, out_dir / f"pcx-{role}.png")
        return pd.DataFrame(), pd.DataFrame(), {"scenario": info["scenario"], "folder": info["folder"],
                                                "real_weights": bool(info.get("real_weights")), "prototypes": 0,
                                                "training_vectors": int(members.sum()), "test_images": 0,
                                                "novelties": 0, "note": note}
    vectors = relevance_shares(cache["relevances"][members])
    keys = [k for k, m in zip(cache["keys"], members) if m]
    prototypes = fit_prototypes(vectors, MixtureFit.from_section(settings, where="pcx options' pcx"))
    closest = prototype_members(prototypes, vectors, settings["prototype_images"])
    concept_ids, percentages = concept_matrix(prototypes, settings["concepts"])
    test_keys = sorted(table.loc[(table["split"] == "test") & (table["label"] == name), "key"])
    test = _test_vectors(explainer, store, test_keys, classes.index(name), resolution, crp_settings["batch"])
    assigned, likelihood, novel = prototypes.assign(test) if len(test_keys) else ([], [], [])
    references = [concept_references(explainer, int(c), cache, store, classes, settings["references"],
                                     resolution)["crops"] for c in concept_ids]
    pictures = [[image.permute(1, 2, 0).numpy() for image in resize(read_images(store, [keys[i] for i in rows]),
                                                                      resolution)] for rows in closest]
    pcx_figure(pictures, concept_ids, percentages, references,
               f"PCX, class {name}: {role} ({info['scenario']}), {prototypes.count} prototypes"
               f"{random_init_note(bool(info.get('real_weights')), 'classifier')}", out_dir /
               f"pcx-{role}.png")
    assignments = pd.DataFrame({"model": role, "scenario": info["scenario"], "key": test_keys,
                                "prototype": assigned, "log_likelihood": likelihood, "novelty": novel})
    matrix = pd.DataFrame([{"model": role, "scenario": info["scenario"], "concept": int(c), "prototype": p,
                            "percent": round(float(percentages[r, p]), 2)}
                           for r, c in enumerate(concept_ids) for p in range(prototypes.count)])
    summary = {"scenario": info["scenario"], "folder": info["folder"], "weights": saved.get("weights", "unknown"),
               "real_weights": bool(info.get("real_weights")), "training_vectors": int(members.sum()),
               "prototypes": prototypes.count, "bic": prototypes.bic, "novelty_threshold": prototypes.threshold,
               "prototype_weights": prototypes.mixture.weights_.round(4).tolist(),
               "prototype_images": [[keys[i] for i in rows] for rows in closest],
               "test_images": len(test_keys), "novelties": int(np.sum(novel))}
    return assignments, matrix, summary


def run_pcx(options: PcxOptions, folders: list[str], sizes: list[str], crp_dir, lmdb, manifest, out_dir,
            device=None) -> dict:
    """PCX (settings `options.pcx`; LRP composite and batch `options.composite`, `options.batch`) of the models
    `dermsynth explain crp` explained (the same choice from `folders` and `sizes`), from the concept relevances it
    cached in `crp_dir`, on images of `lmdb` split by `manifest`. Writes to `out_dir`: pcx.csv (each test image
    of the class: model, prototype, log-likelihood, novelty), prototypes.csv (concept × prototype percentages),
    pcx-<baseline|augmented>.png and pcx.json. Returns the pcx.json dict.

    Raises:
        StateMismatchError: the cached concept relevances of `crp_dir` were computed for another classifier (its
        weights' identity) or LRP composite; WrongFileError: a missing/foreign concepts file or best.pt;
        BusyError, OutputError: `out_dir` is being written by another process, or not writable."""
    models = choose_models(folders, sizes)
    store, table = LmdbImageStore(lmdb), read_manifest(manifest)
    caches = {role: load_concept_relevances(Path(crp_dir) / f"concepts-{role}.npz") for role in models}
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "pcx"):
        return _run_pcx(options, models, caches, Path(crp_dir), store, table, out_dir, device)


def _run_pcx(options: PcxOptions, models: dict, caches: dict, crp_dir: Path, store, table: pd.DataFrame,
             out_dir: Path, device) -> dict:
    settings, crp_settings = options.pcx, {"composite": options.composite, "batch": options.batch}
    device = choose_device(device)
    assignments, matrices, summaries = [], [], {}
    for role, info in models.items():
        cache = {**caches[role], "path": crp_dir / f"concepts-{role}.npz"}
        a, m, summaries[role] = _pcx_one_model(role, info, cache, store, table, settings, crp_settings, out_dir,
                                               device)
        assignments.append(a)
        matrices.append(m)
    write_csv(out_dir / "pcx.csv", pd.concat(assignments, ignore_index=True))
    write_csv(out_dir / "prototypes.csv", pd.concat(matrices, ignore_index=True))
    summary = {"architecture": models["baseline"]["architecture"], "class": settings["class"],
               "layer": cache["layer"], "models": summaries,
               "real_weights": all(s["real_weights"] for s in summaries.values()),
               "data": models["baseline"].get("data", ""),
               "provenance": provenance(options.step, options.to_dict(), seed=settings["seed"])}
    write_json(out_dir / "pcx.json", summary)
    print(f"pcx {summary['architecture']}: " + ", ".join(f"{r} {s['prototypes']} prototypes, {s['novelties']}/"
                                                         f"{s['test_images']} novel" for r, s in summaries.items()),
          file=sys.stderr)
    return summary
