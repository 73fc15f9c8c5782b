"""Concept Relevance Propagation (CRP) of the HAM10000 classifiers (HAM10000 study, section 3.3, Fig. 7, App. B).

CRP (Achtibat et al. 2023, "From attribution maps to human-understandable explanations through Concept
Relevance Propagation", Nat. Mach. Intell. 5:1006–1019) splits an LRP explanation of one logit into
concepts: the channels of a chosen layer. A channel's *concept relevance* is the LRP relevance that
reaches it (summed over its spatial positions); its *concept-conditional heatmap* is the input
relevance when the backward pass is masked to that channel alone. Relevances and heatmaps are
computed with zennit-crp's `CondAttribution` on zennit's EpsilonPlusFlat composite (LRP-ε on dense
layers, LRP-z⁺ on convolutions, flat rule on the first layer; Montavon et al. 2019) after the model
is canonized (`canonizers.py`). Each concept is illustrated by *reference samples*: the training
images in which it is most relevant (relevance maximisation, the "sum" target of CRP), each cropped
to where the concept's conditional heatmap is relevant and dimmed elsewhere (zennit-crp's
`vis_opaque_img`).

`run_crp` explains, for one architecture, the baseline and the best filtered SA model (the Table 3
choice): the MEL test images the baseline calls BKL and the augmented model calls MEL (the study's
case), plus configured keys, for the class each model predicts and for the true class.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from crp.attribution import CondAttribution
from crp.concepts import ChannelConcept
from crp.image import vis_opaque_img
from timm.models.densenet import DenseNet
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from zennit.composites import LAYER_MAP_BASE, EpsilonPlusFlat, LayerMapComposite
from zennit.rules import Epsilon
from zennit.types import Linear

from ..classify.data import normalise, read_manifest, resize
from ..classify.tables import best_size, load_models
from ..classify.train import load_best
from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..errors import DermsynthError
from ..figures import pyplot as plt
from ..figures import random_init_note
from ..locks import exclusive
from ..outputs import atomic_path, check_writable, save_figure, save_npz, write_csv, write_json
from ..progress import Progress
from ..provenance import provenance
from .canonizers import canonizers_for
from .components import classifier_identity, load_npz
from .message import message_figure
from .options import CrpOptions

# The last convolutional block: what the study explains (DenseNet: the concatenated output of the
# last dense block, i.e. after the last transition block; EfficientNet: conv_head after its BN + SiLU).
DEFAULT_LAYERS = {ResNet: "layer4", DenseNet: "features.denseblock4", EfficientNet: "bn2"}
COMPOSITES = ("epsilon_plus_flat", "epsilon")


def default_layer(model: torch.nn.Module) -> str:
    """Name of the last convolutional block of a timm ResNet, DenseNet or EfficientNet.

    Raises:
        DermsynthError: another architecture (give `explain.crp.layer`).
    """
    for kind, name in DEFAULT_LAYERS.items():
        if isinstance(model, kind):
            return name
    raise DermsynthError(f"no default CRP layer for {type(model).__name__}: set explain.crp.layer")


def lrp_composite(name: str, model: torch.nn.Module, epsilon: float = 1e-6):
    """zennit composite with the model's canonizers: `epsilon_plus_flat` (zennit's EpsilonPlusFlat,
    the CRP paper's choice) or `epsilon` (LRP-ε on every convolution and dense layer; Bach et al. 2015).

    Raises:
        DermsynthError: unknown name, or a model with BatchNorm for whose architecture no canonizer
        is written (a model without BatchNorm is taken as it is: no residual additions assumed).
    """
    has_batchnorm = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    canonizers = canonizers_for(model) if has_batchnorm else []  # a plain conv/ReLU/linear net needs none
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canonizers)
    if name == "epsilon":
        return LayerMapComposite(LAYER_MAP_BASE + [(Linear, Epsilon(epsilon))], canonizers=canonizers)
    raise DermsynthError(f"unknown LRP composite {name!r}; choose from {', '.join(COMPOSITES)}")


class ConceptExplainer:
    """CRP for one classifier on one layer (zennit-crp `CondAttribution`).

    model: a timm ResNet or DenseNet in eval mode (its parameters stop requiring gradients);
    layer: a module name (None: the last convolutional block, `default_layer`); composite: see `lrp_composite`
    (`explain.crp.composite`; no default here). Inputs are normalised float images (N, 3, R, R) as the classifier
    was trained on.
    """

    def __init__(self, model: torch.nn.Module, layer: str | None, composite: str,
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.layer = layer or default_layer(model)
        if self.layer not in dict(model.named_modules()):
            raise DermsynthError(f"CRP layer {self.layer!r} is not a module of {type(model).__name__}")
        self.composite = lrp_composite(composite, model)
        self.attribution = CondAttribution(self.model, device=torch.device(device))
        self.device = torch.device(device)

    def concept_relevances(self, images: torch.Tensor, targets: list[int], batch: int = 32) -> np.ndarray:
        """Relevance of every channel of the layer for each image's target logit: (N, C) float32,
        signed, summed over spatial positions; a row sums to the layer's total relevance."""
        rows = []
        for start in range(0, len(images), batch):
            x = images[start:start + batch].to(self.device).requires_grad_(True)
            conditions = [{"y": [t]} for t in targets[start:start + batch]]
            result = self.attribution(x, conditions, self.composite, record_layer=[self.layer])
            rows.append(ChannelConcept().attribute(result.relevances[self.layer], abs_norm=False).cpu())
        return torch.cat(rows).float().numpy() if rows else np.zeros((0, 0), np.float32)

    def heatmap(self, image: torch.Tensor, target: int) -> np.ndarray:
        """LRP heatmap (R, R) float32 of one image (3, R, R) for the target logit, summed over colour."""
        x = image[None].to(self.device).requires_grad_(True)
        return self.attribution(x, [{"y": [target]}], self.composite).heatmap[0].cpu().float().numpy()

    def conditional_heatmaps(self, image: torch.Tensor, target: int, concepts: list[int]) -> np.ndarray:
        """Concept-conditional heatmaps (K, R, R) float32 of one image (3, R, R): the input relevance of
        the target logit when the layer passes relevance through concept k alone. Their spatial sums are
        the concepts' relevances (CRP, eq. 5 of Achtibat et al.)."""
        if not concepts:
            return np.zeros((0, *image.shape[-2:]), np.float32)
        x = image[None].to(self.device).requires_grad_(True)
        conditions = [{self.layer: [c], "y": [target]} for c in concepts]
        return self.attribution(x, conditions, self.composite).heatmap.cpu().float().numpy()


    def concept_heatmaps(self, images: torch.Tensor, targets: list[int], concept: int) -> np.ndarray:
        """Conditional heatmaps (M, R, R) float32 of one concept in M images (M, 3, R, R), each for its
        own target logit (one backward pass for all: how reference images are cropped)."""
        x = images.to(self.device).requires_grad_(True)
        conditions = [{self.layer: [concept], "y": [t]} for t in targets]
        return self.attribution(x, conditions, self.composite).heatmap.cpu().float().numpy()


def top_concepts(relevances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, signed shares) of the k most relevant concepts of one relevance vector (C,): share =
    R_c / Σ|R|, so the shares of all concepts have absolute values summing to 1."""
    order = np.argsort(-relevances, kind="stable")[:k]
    total = np.abs(relevances).sum()
    return order, relevances[order] / (total if total > 0 else 1.0)


def reference_indices(relevances: np.ndarray, concept: int, count: int) -> np.ndarray:
    """Rows of a (N, C) relevance matrix whose concept `concept` is most relevant (relevance
    maximisation), best first; only rows with positive relevance."""
    column = relevances[:, concept]
    order = np.argsort(-column, kind="stable")[:count]
    return order[column[order] > 0]


def reference_crops(explainer: ConceptExplainer, images: torch.Tensor, targets: list[int], concept: int,
                    resolution: int) -> list:
    """PIL images: each uint8 image (3, H, W) cropped to where `concept` is relevant for its target
    (the conditional heatmap above 10 % of its maximum) and dimmed where it is below 20 %."""
    if not len(images):
        return []
    pictures = resize(images, resolution)
    heatmaps = explainer.concept_heatmaps(normalise(pictures), targets, concept)
    return vis_opaque_img(pictures.float() / 255, torch.from_numpy(heatmaps), rf=True)


def explained_keys(baseline: pd.DataFrame, augmented: pd.DataFrame, settings: dict) -> tuple[list[str], str]:
    """Test keys to explain and how they were chosen: the study's case (true class `case.label`, baseline
    predicts `case.baseline`, augmented model predicts `case.augmented`), then `keys`; when neither
    gives any, the first images of class `case.label` (so the figure is never empty)."""
    case = settings["case"]
    merged = baseline.merge(augmented[["key", "predicted"]], on="key", suffixes=("", "_augmented"))
    chosen = merged[(merged["label"] == case["label"]) & (merged["predicted"] == case["baseline"])
                    & (merged["predicted_augmented"] == case["augmented"])]["key"].tolist()
    keys = list(dict.fromkeys(sorted(chosen)[:settings["images"]] + list(settings["keys"])))
    if keys:
        return keys, "case" if chosen else "configured keys"
    fallback = sorted(baseline.loc[baseline["label"] == case["label"], "key"])[:settings["images"]]
    return fallback, f"no test image of the case; first {case['label']} test images"


def choose_models(folders: list[str | Path], sizes: list[str]) -> dict[str, dict]:
    """{'baseline': model, 'augmented': model} among one architecture's HAM10000 model folders; the
    augmented model is the filtered twin of the SA size with the best validation balanced accuracy
    (Table 3's choice, `classify.tables.best_size`).

    Raises:
        DermsynthError: no baseline, or no filtered SA model among the folders.
    """
    models = load_models(folders)
    by_scenario = {m["scenario"]: m for m in models}
    if "baseline" not in by_scenario:
        raise DermsynthError("CRP/PCX need the baseline model among --models")
    unfiltered = [s for s in sizes if s in by_scenario]
    if not unfiltered:
        raise DermsynthError(f"CRP/PCX need an unfiltered SA model among --models (sizes {sizes})")
    chosen = best_size(models, models[0]["architecture"], unfiltered)
    if f"{chosen}-filter" not in by_scenario:
        raise DermsynthError(f"CRP/PCX: the best SA size is {chosen} but {chosen}-filter is not among --models")
    return {"baseline": by_scenario["baseline"], "augmented": by_scenario[f"{chosen}-filter"]}


def reference_pool(manifest: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The training images whose concept relevances are computed (reference samples and PCX's input):
    all, or at most `reference_pool` per class (a seeded choice), sorted by key."""
    train = manifest[manifest["split"] == "train"].sort_values("key")
    cap = settings.get("reference_pool")
    if cap:
        shuffled = train.sample(frac=1.0, random_state=settings["seed"])
        train = shuffled.groupby("label").head(cap).sort_values("key")
    return train.reset_index(drop=True)


def cache_concept_relevances(explainer: ConceptExplainer, store, pool: pd.DataFrame, classes: list[str],
                             resolution: int, batch: int, out_npz: Path, label: str, classifier: str = "",
                             composite: str = "") -> dict:
    """Concept relevances (N, C) of the pool's images for their own class, written once per model to
    `out_npz` (keys, labels, relevances, layer, and what they belong to: `classifier`, the identity of the
    model's weights, `components.classifier_identity`, and the LRP `composite`): the reference-sample
    statistics of CRP and PCX's input (PCX refuses them for another classifier or composite)."""
    keys, labels = pool["key"].tolist(), pool["label"].tolist()
    rows, progress = [], Progress(len(keys), f"concept relevances {label}")
    for start in range(0, len(keys), batch):
        images = normalise(resize(read_images(store, keys[start:start + batch]), resolution))
        rows.append(explainer.concept_relevances(images, [classes.index(x) for x in labels[start:start + batch]],
                                                 batch))
        progress.update(len(images))
    progress.close()
    relevances = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    save_npz(out_npz, keys=np.array(keys, dtype=str), labels=np.array(labels, dtype=str), relevances=relevances,
             layer=explainer.layer, classifier=np.array(classifier), composite=np.array(composite))
    return {"keys": keys, "labels": labels, "relevances": relevances, "classifier": classifier,
            "composite": composite}


def load_concept_relevances(npz: str | Path) -> dict:
    """What `cache_concept_relevances` wrote: keys, labels, relevances (N, C) float32, layer, classifier and
    composite ("" when the file records none). Raises FileNotFoundError, WrongFileError (a folder, a truncated
    file, an .npz of another kind: one line)."""
    saved = load_npz(npz, "CRP's cached concept relevances (concepts-<role>.npz)",
                     "give the output folder of `dermsynth explain crp` for the same models",
                     ("keys", "labels", "relevances", "layer"))
    return {"keys": saved["keys"].tolist(), "labels": saved["labels"].tolist(), "relevances": saved["relevances"],
            "layer": str(saved["layer"]), "classifier": str(saved.get("classifier", "")),
            "composite": str(saved.get("composite", ""))}


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(source.read_bytes())


def concept_references(explainer: ConceptExplainer, concept: int, cache: dict, store, classes: list[str],
                       count: int, resolution: int) -> dict:
    """{'keys', 'crops'} of a concept's reference images, computed once per concept and kept in
    cache['references'] (the same concepts recur across explained images and classes)."""
    known = cache.setdefault("references", {})
    if concept not in known:
        rows = reference_indices(cache["relevances"], concept, count)
        keys = [cache["keys"][r] for r in rows]
        targets = [classes.index(cache["labels"][r]) for r in rows]
        crops = reference_crops(explainer, read_images(store, keys), targets, concept, resolution) if keys else []
        known[concept] = {"keys": keys, "crops": crops}
    return known[concept]


def explain_image(explainer: ConceptExplainer, image: torch.Tensor, target: int, cache: dict, store,
                  classes: list[str], settings: dict, resolution: int) -> dict:
    """CRP of one uint8 image (3, H, W) for class index `target`: its LRP heatmap (R, R), the top
    `concepts` concepts with signed shares, their conditional heatmaps (K, R, R) and, per concept, the
    keys and cropped PIL images of its `references` reference samples from `cache`."""
    x = normalise(resize(image, resolution))
    relevances = explainer.concept_relevances(x[None], [target])[0]
    concepts, shares = top_concepts(relevances, settings["concepts"])
    references = [concept_references(explainer, int(concept), cache, store, classes, settings["references"],
                                     resolution) for concept in concepts]
    return {"target": classes[target], "concepts": concepts, "shares": shares, "heatmap": explainer.heatmap(x, target),
            "conditional": explainer.conditional_heatmaps(x, target, concepts.tolist()), "references": references,
            "total_relevance": float(relevances.sum())}


def _show_heatmap(axis, heatmap: np.ndarray) -> None:
    limit = float(np.abs(heatmap).max()) or 1.0
    axis.imshow(heatmap, cmap="bwr", vmin=-limit, vmax=limit)


def crp_figure(image: torch.Tensor, panels: dict[str, dict], titles: dict[str, str], out_png: Path) -> None:
    """Fig. 7 of the study, for a uint8 image (3, H, W) and the `explain_image` panel of each model: one block of columns per model (baseline left, augmented right); first row
    the image and its LRP heatmap, then one row per concept: its conditional heatmap and references."""
    concepts = max(len(p["concepts"]) for p in panels.values())
    references = max([len(r["crops"]) for p in panels.values() for r in p["references"]] + [1])
    width = 1 + references
    figure, axes = plt.subplots(1 + concepts, width * len(panels), figsize=(1.3 * width * len(panels),
                                                                            1.4 * (1 + concepts)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    picture = image.permute(1, 2, 0).numpy()
    for block, (role, panel) in enumerate(panels.items()):
        left = block * width
        axes[0, left].imshow(picture)
        axes[0, left].set_title(titles[role], fontsize=6, loc="left")
        _show_heatmap(axes[0, left + 1], panel["heatmap"])
        axes[0, left + 1].set_title(f"LRP, {panel['target']}", fontsize=6)
        for row, (concept, share) in enumerate(zip(panel["concepts"], panel["shares"]), start=1):
            _show_heatmap(axes[row, left], panel["conditional"][row - 1])
            axes[row, left].set_title(f"concept {concept}: {100 * share:+.1f}%", fontsize=6)
            for column, crop in enumerate(panel["references"][row - 1]["crops"], start=1):
                axes[row, left + column].imshow(crop)
    figure.tight_layout()
    save_figure(out_png, figure, dpi=110)
    plt.close(figure)


def _predict(explainer: ConceptExplainer, image: torch.Tensor, resolution: int) -> np.ndarray:
    with torch.no_grad():
        logits = explainer.model(normalise(resize(image, resolution))[None].to(explainer.device))
    return logits.softmax(dim=1)[0].cpu().numpy()


def _panel_rows(key: str, label: str, role: str, scenario: str, which: str, panel: dict) -> list[dict]:
    return [{"key": key, "label": label, "model": role, "scenario": scenario, "explained": which,
             "explained_class": panel["target"], "rank": rank, "concept": int(concept), "share": float(share),
             "references": " ".join(ref["keys"])}
            for rank, (concept, share, ref) in enumerate(zip(panel["concepts"], panel["shares"],
                                                              panel["references"]), start=1)]


def _explainers(models: dict, store, pool: pd.DataFrame, settings: dict, out_dir: Path, device):
    """Per role (baseline, augmented): its `ConceptExplainer`, its concept relevances of the reference `pool`
    (computed, or read back from concepts-<role>.npz in `out_dir`), its weights label; and the input resolution
    and classes of the models (the last model's: both models share them)."""
    explainers, caches, weights = {}, {}, {}
    for role, info in models.items():
        model, saved = load_best(info["folder"], device)
        resolution, classes = json.loads(saved["recipe"])["input_resolution"], saved["classes"]
        explainers[role] = ConceptExplainer(model, settings.get("layer"), settings["composite"], device)
        caches[role] = cache_concept_relevances(explainers[role], store, pool, classes, resolution, settings["batch"],
                                                out_dir / f"concepts-{role}.npz", role, classifier_identity(saved),
                                                settings["composite"])
        weights[role] = saved.get("weights", "unknown")
    return explainers, caches, weights, resolution, classes


def _explain_key(index: int, key: str, label: str, explainers: dict, caches: dict, models: dict, store,
                 classes: list[str], settings: dict, resolution: int, out_dir: Path, rows: list,
                 heatmaps: dict) -> None:
    """CRP of test image `key` (true class `label`) by every model, for its predicted and its true class:
    figures/crp-<index>-<predicted|true>.png (and crp.png / crp-true.png for the first image); appends its
    crp.csv rows to `rows` and its conditional heatmaps to `heatmaps`."""
    image = read_images(store, [key])[0]
    for which in ("predicted", "true"):
        panels, titles = {}, {}
        for role, explainer in explainers.items():
            p = _predict(explainer, image, resolution)
            target = int(p.argmax()) if which == "predicted" else classes.index(label)
            panels[role] = explain_image(explainer, image, target, caches[role], store, classes, settings, resolution)
            note = random_init_note(bool(models[role].get("real_weights")), "classifier")
            titles[role] = (f"{role} ({models[role]['scenario']}){note}\n{key}: {label} → "
                            f"{classes[int(p.argmax())]} (p={p.max():.2f})")
            rows += _panel_rows(key, label, role, models[role]["scenario"], which, panels[role])
            heatmaps[f"{index}/{role}/{which}"] = panels[role]["conditional"]
        figure = out_dir / "figures" / f"crp-{index:03d}-{which}.png"
        crp_figure(image, panels, titles, figure)
        if index == 0:
            _copy(figure, out_dir / ("crp.png" if which == "predicted" else "crp-true.png"))


def run_crp(options: CrpOptions, folders: list[str], sizes: list[str], lmdb, manifest, out_dir, device=None) -> dict:
    """CRP (settings `options.crp`) of the baseline and best filtered SA model among the HAM10000 model
    `folders` of one architecture (`sizes`: the SA set names in order, for the Table 3 choice), on images of
    `lmdb` split by `manifest`. Writes to `out_dir`: crp.csv (per explained image × model × explained class: top
    concepts, shares, reference keys), crp.png / crp-true.png (Fig. 7 / Fig. B.1 style, first explained image),
    figures/ (every image), heatmaps.npz ('keys', and '<i>/<baseline|augmented>/<predicted|true>' →
    conditional heatmaps (K, R, R) float32 of explained image i), concepts-<baseline|augmented>.npz (cached
    concept relevances of the training pool) and crp.json (models, selection, layer, provenance). Returns the
    crp.json dict.

    Raises:
        DermsynthError: no baseline or filtered SA model among `folders`, no canonizer for them, or a
        configured key that is not in the manifest; WrongFileError: a folder without a classifier's best.pt;
        BusyError: another process writes to `out_dir`; OutputError: `out_dir` is not writable.
    """
    models = choose_models(folders, sizes)
    store, table = LmdbImageStore(lmdb), read_manifest(manifest)
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "crp"):
        return _run_crp(options, models, store, table, manifest, out_dir, device)


def _run_crp(options: CrpOptions, models: dict, store, table: pd.DataFrame, manifest, out_dir: Path, device) -> dict:
    settings = options.crp
    device = choose_device(device)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    pool = reference_pool(table, settings)
    explainers, caches, weights, resolution, classes = _explainers(models, store, pool, settings, out_dir, device)
    predictions = {role: pd.read_csv(Path(info["folder"]) / "predictions-test.csv", dtype=str, keep_default_na=False)
                   for role, info in models.items()}
    keys, selection = explained_keys(predictions["baseline"], predictions["augmented"], settings)
    if not keys:  # tiny demo data: every output says so instead of failing the workflow
        selection = f"nothing to explain: no test image of class {settings['case']['label']}, no explain.crp.keys"
        for name in ("crp.png", "crp-true.png"):
            message_figure(selection, out_dir / name)
    labels = table.set_index("key")["label"]
    unknown = [key for key in keys if key not in labels.index]
    if unknown:
        raise DermsynthError(f"explain.crp.keys: {unknown[:5]} are not images of {manifest}")
    rows, heatmaps = [], {}
    for index, key in enumerate(keys):
        _explain_key(index, key, labels[key], explainers, caches, models, store, classes, settings, resolution,
                     out_dir, rows, heatmaps)
    write_csv(out_dir / "crp.csv", pd.DataFrame(rows))
    save_npz(out_dir / "heatmaps.npz", keys=np.array(keys, dtype=str), **heatmaps)
    summary = {
        "architecture": models["baseline"]["architecture"], "layer": explainers["baseline"].layer,
        "composite": settings["composite"],
        "models": {role: {"scenario": m["scenario"], "folder": m["folder"], "weights": weights[role],
                          "real_weights": bool(m.get("real_weights"))} for role, m in models.items()},
        "augmented_model_chosen_by": "best unfiltered SA size by validation balanced accuracy, its filtered twin "
                                     "(as Table 3)",
        "real_weights": all(bool(m.get("real_weights")) for m in models.values()),
        "data": models["baseline"].get("data", ""), "explained_keys": keys, "selection": selection,
        "reference_pool_images": len(pool), "concepts": int(caches["baseline"]["relevances"].shape[1]),
        "provenance": provenance(options.step, options.to_dict(), seed=settings["seed"]),
    }
    write_json(out_dir / "crp.json", summary)
    print(f"crp {summary['architecture']}: {len(keys)} images ({selection}), layer {summary['layer']}",
          file=sys.stderr)
    return summary
