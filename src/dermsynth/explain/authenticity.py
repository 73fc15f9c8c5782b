"""Authenticity of a generator's projections, in a classifier's eyes (ISIC study, section 4.3).

Real images projected into the generator (`dermsynth latent project`) are re-synthesised; real images and
their projections are embedded by an ISIC classifier (its pooled last convolutional features). For
every real image: the cosine distance to its own projection, the rank of that projection among all
projections, and its nearest neighbour among every other embedding (the other real images and all
projections). When that nearest neighbour is its own projection — closer than any other real image —
the generator may have memorised the image (the study: 2 of 12,000, median distance 0.0028).

A 3-D t-SNE of all embeddings shows the class clusters (also as a rotatable HTML page, and the embeddings
themselves in TensorBoard Projector's TSV format: `embedding_views`). Edge cases are the real images the
classifier is least sure about (smallest margin between its two most probable classes); central cases are the
ones nearest their own class's centroid. XRAI heatmaps show what the classifier looked at in both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE
from sklearn.metrics.pairwise import cosine_distances

from ..classify.data import normalise, resize
from ..classify.train import load_best
from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..figures import pyplot as plt
from ..figures import random_init_note, write_image_grid
from ..gan.pixels import render_ws
from ..gan.run import load_generator
from ..latent.transform import at_resolution
from ..locks import exclusive
from ..outputs import check_writable, save_figure, save_npz, write_csv, write_json
from ..progress import Progress
from ..provenance import provenance
from .components import generator_identity, load_npz, recorded, require_made_for
from .embedding_views import write_embedding_views
from .options import AuthenticityOptions
from .xrai import xrai_figure, xrai_heatmaps


@torch.no_grad()
def embed(model, images: torch.Tensor, resolution: int, device) -> tuple[np.ndarray, np.ndarray]:
    """(pooled last-convolution features (N, D), class probabilities (N, C)) of uint8 images (N, 3, R, R)."""
    features = model.forward_features(normalise(resize(images, resolution)).to(device))
    pooled = model.forward_head(features, pre_logits=True)
    probabilities = model.forward_head(features).softmax(dim=1)
    return pooled.float().cpu().numpy(), probabilities.float().cpu().numpy()


def neighbours(real: np.ndarray, projected: np.ndarray) -> dict[str, np.ndarray]:
    """Row i of `projected` is the projection of row i of `real`. Per real image: cosine distance to
    its projection, that projection's rank among all projections (1 = nearest), the index of its
    nearest neighbour among all other embeddings (< n: a real image, ≥ n: projection index − n),
    and the distance to the nearest other real image."""
    n = len(real)
    distances = cosine_distances(real, np.vstack([real, projected]))
    distances[np.arange(n), np.arange(n)] = np.inf  # not itself
    own = distances[np.arange(n), n + np.arange(n)]
    to_projections = distances[:, n:]
    rank = (to_projections < own[:, None]).sum(axis=1) + 1
    nearest_real = distances[:, :n].min(axis=1) if n > 1 else np.full(n, np.nan)
    return {"own": own, "rank": rank, "nearest": distances.argmin(axis=1), "nearest_distance": distances.min(axis=1),
            "nearest_real": nearest_real}


def authenticity_table(keys: list[str], labels: list[str], real: np.ndarray, projected: np.ndarray,
                       probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per real image: cosine distance to its projection and to the nearest projection in the classifier embedding
    (float (N, D) `real`, `projected`), the memorisation flag and the edge/central case from the class probabilities
    (float (N, C))."""
    found = neighbours(real, projected)
    n = len(keys)
    nearest = found["nearest"]
    top2 = np.sort(probabilities, axis=1)[:, ::-1][:, :2]
    label_index = np.array([classes.index(label) for label in labels])
    return pd.DataFrame({
        "key": keys, "label": labels,
        "predicted": [classes[i] for i in probabilities.argmax(axis=1)],
        "p_label": probabilities[np.arange(n), label_index],
        "margin": top2[:, 0] - (top2[:, 1] if probabilities.shape[1] > 1 else 0.0),
        "distance_to_projection": found["own"],
        "projection_rank": found["rank"],
        "nearest_key": [keys[i % n] for i in nearest],
        "nearest_kind": np.where(nearest < n, "real", "projection"),
        "nearest_distance": found["nearest_distance"],
        "nearest_real_distance": found["nearest_real"],
        "memorisation_flag": nearest == n + np.arange(n),
        "distance_to_class_centroid": _centroid_distances(real, labels),
    })


def _centroid_distances(features: np.ndarray, labels: list[str]) -> np.ndarray:
    labels = np.asarray(labels)
    out = np.empty(len(features))
    for label in np.unique(labels):
        members = labels == label
        centroid = features[members].mean(axis=0, keepdims=True)
        out[members] = cosine_distances(features[members], centroid)[:, 0]
    return out


def mark_cases(table: pd.DataFrame, count: int) -> pd.Series:
    """'edge' for the `count` smallest margins, 'central' for the `count` nearest their class centroid
    among the rest (ties broken by key), '' otherwise."""
    ordered = table.sort_values(["margin", "key"])
    edge = set(ordered["key"][:count])
    rest = table[~table["key"].isin(edge)].sort_values(["distance_to_class_centroid", "key"])
    central = set(rest["key"][:count])
    return table["key"].map(lambda k: "edge" if k in edge else "central" if k in central else "")


def tsne_3d(features: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """3-D t-SNE (cosine metric, PCA start); the perplexity is lowered to (n − 1) / 3 for small sets."""
    perplexity = min(perplexity, max(1.0, (len(features) - 1) / 3))
    return TSNE(n_components=3, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        features)


def tsne_figure(coordinates: pd.DataFrame, title: str, out_png: Path) -> None:
    """A 3-D scatter PNG of the t-SNE coordinates (columns x, y, z, class, kind), real and projected points marked
    apart."""
    figure = plt.figure(figsize=(7, 6))
    axes = figure.add_subplot(projection="3d")
    colours = dict(zip(sorted(coordinates["label"].unique()), plt.get_cmap("tab10").colors))
    real = coordinates[coordinates["kind"] == "real"].set_index("key")
    projected = coordinates[coordinates["kind"] == "projection"].set_index("key")
    for key in real.index:  # a thin line from each real image to its projection
        pair = pd.concat([real.loc[[key]], projected.loc[[key]]])
        axes.plot(pair["x"], pair["y"], pair["z"], color="0.8", linewidth=0.5)
    for (kind, label), group in coordinates.groupby(["kind", "label"]):
        axes.scatter(group["x"], group["y"], group["z"], s=14, marker="o" if kind == "real" else "^",
                     color=colours[label], label=f"{label}, {kind}", depthshade=False)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, loc="upper left")
    save_figure(out_png, figure, dpi=120)
    plt.close(figure)


class _Projections:
    """The projected latents of `dermsynth latent project`, re-synthesised on demand."""

    def __init__(self, npz: str | Path, network, G, device):
        saved = load_npz(npz, "a projection file (projection.npz of `dermsynth latent project`)",
                         "give the .npz that `dermsynth latent project` wrote", ("keys", "labels", "ws"))
        require_made_for(npz, recorded(saved, "generator"), generator_identity(G), network,
                         f"project the images into {network} again (`dermsynth latent project`)")
        self.keys = saved["keys"].tolist()
        self.labels = saved["labels"].tolist()
        self.ws = torch.from_numpy(saved["ws"])
        self.noise = [torch.from_numpy(saved[f"noise{i}"]) for i in range(sum(k.startswith("noise") for k in saved))]
        self.G, self.device = G, device

    def images(self, rows: slice | list[int]) -> torch.Tensor:
        """uint8 (n, 3, R, R) re-synthesised images of the projections in `rows` (their W+ latents and noise)."""
        return render_ws(self.G, self.ws[rows], [m[rows] for m in self.noise], self.device)


def run_authenticity(options: AuthenticityOptions, network, projection_npz, lmdb_root, classifier_dir, out_dir,
                     device: str | None = None) -> dict:
    """The real images of `projection_npz` (keys in the LMDB store `lmdb_root`) and their reconstructions by
    generator checkpoint `network`, embedded by the classifier in `classifier_dir` (best.pt): writes
    authenticity.csv + .json, tsne.csv + tsne.png + tsne.html (interactive), projector/tensors.tsv +
    metadata.tsv (the embeddings for TensorBoard's Embedding Projector), pairs.png (closest and farthest),
    cases.png, xrai.npz + xrai.png (heatmaps of edge and central cases) to `out_dir`. Returns the authenticity.json dict.

    Raises:
        StateMismatchError: the projections were made for another generator than `network` (by the identity of
        its weights). WrongFileError: `network` is not a generator, `classifier_dir` holds no classifier's
        best.pt, `projection_npz` is not a projection file. BusyError, OutputError: `out_dir` is being written
        by another process, or not writable."""
    device = choose_device(device)
    projections = _Projections(projection_npz, network, load_generator(network, device), device)
    model, saved = load_best(classifier_dir, device)
    store = LmdbImageStore(lmdb_root)
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "authenticity"):
        return _run_authenticity(options, projections, model, saved, store, projection_npz, classifier_dir,
                                 out_dir, device)


def _run_authenticity(options: AuthenticityOptions, projections, model, saved: dict, store, projection_npz,
                      classifier_dir, out_dir: Path, device) -> dict:
    gan = options.gan
    resolution = json.loads(saved["recipe"])["input_resolution"]
    keys, batch = projections.keys, options.batch
    real_features, projected_features, probabilities = [], [], []
    progress = Progress(len(keys), f"authenticity {gan}")
    for start in range(0, len(keys), batch):
        rows = slice(start, start + batch)
        features, p = embed(model, read_images(store, keys[rows]), resolution, device)
        real_features.append(features)
        probabilities.append(p)
        projected_features.append(embed(model, projections.images(rows), resolution, device)[0])
        progress.update(len(keys[rows]))
    progress.close()
    real, projected = np.concatenate(real_features), np.concatenate(projected_features)
    table = authenticity_table(keys, projections.labels, real, projected, np.concatenate(probabilities),
                               saved["classes"])
    table["case"] = mark_cases(table, options.edge_cases)
    write_csv(out_dir / "authenticity.csv", table)
    coordinates = _tsne_frame(table, real, projected, options)
    write_csv(out_dir / "tsne.csv", coordinates)
    weights = saved.get("weights", "unknown")
    title = f"{gan}: real images and their projections, 3-D t-SNE of {saved['architecture']} features ({weights})"
    tsne_figure(coordinates, title, out_dir / "tsne.png")
    write_embedding_views(table, real, projected, coordinates, title, out_dir)
    _pairs_figure(table, store, projections, out_dir / "pairs.png", str(weights))
    _cases_figure(table, store, out_dir / "cases.png", str(weights))
    _explain_cases(model, table, store, saved["classes"], resolution, options, out_dir, device, str(weights))
    summary = _summary(table, saved, classifier_dir, projection_npz, options)
    write_json(out_dir / "authenticity.json", summary)
    print(f"authenticity {gan}: {len(table)} images, median distance to projection "
          f"{summary['distance_to_projection']['median']:.4g}, {summary['memorisation_flags']} flagged", file=sys.stderr)
    return summary


def _tsne_frame(table: pd.DataFrame, real: np.ndarray, projected: np.ndarray,
                options: AuthenticityOptions) -> pd.DataFrame:
    xyz = tsne_3d(np.vstack([real, projected]), options.perplexity, options.seed)
    n = len(table)
    return pd.DataFrame({"key": list(table["key"]) * 2, "label": list(table["label"]) * 2,
                         "kind": ["real"] * n + ["projection"] * n,
                         "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


def _pairs_figure(table: pd.DataFrame, store, projections: _Projections, out_png: Path, weights: str,
                  count: int = 4) -> None:
    """A labelled grid (`figures.image_grid`): the `count` closest real/projection pairs, then the `count` most
    distant, one per row (its key, class and feature distance), columns real image | its projection; `weights`
    (the classifier's start) puts "random-init" in the title when the features come from a random-init network."""
    ordered = table.sort_values(["distance_to_projection", "key"])
    chosen = list(ordered.index[:count]) + [i for i in ordered.index[::-1][:count] if i not in ordered.index[:count]]
    fakes = projections.images(chosen)
    reals = at_resolution(read_images(store, table["key"][chosen].tolist()), fakes.shape[-1])
    rows = [f"{'closest' if n < count else 'most distant'}: {table['key'][i]} ({table['label'][i]})\n"
            f"distance {table['distance_to_projection'][i]:.3f}" for n, i in enumerate(chosen)]
    write_image_grid(out_png, torch.stack([reals, fakes], dim=1), rows, ["real", "projection"],
                     f"real images and their projections: the {count} closest and the {count} most distant "
                     f"in classifier features{_random_init(weights)}",
                     row_title="image (class), cosine distance to its projection")


def _random_init(weights: str) -> str:
    return random_init_note(not weights.startswith("random-init"), "classifier")


def _cases_figure(table: pd.DataFrame, store, out_png: Path, weights: str) -> None:
    """A labelled grid (`figures.image_grid`): column 1 the edge cases (smallest margin first), column 2 the central
    cases (nearest their centroid first), at most 8 each, black where a column has fewer; each row names its
    images' keys, classes and margin / centroid distance."""
    edge = table[table["case"] == "edge"].sort_values(["margin", "key"])[:8]
    central = table[table["case"] == "central"].sort_values(["distance_to_class_centroid", "key"])[:8]
    groups = [(name, part) for name, part in (("edge", edge), ("central", central)) if len(part)]
    rows = max(len(part) for _, part in groups)
    columns = []
    for _, part in groups:
        images = read_images(store, part["key"].tolist())
        columns.append(torch.cat([images, torch.zeros(rows - len(images), *images.shape[1:], dtype=torch.uint8)]))
    labels = []
    for r in range(rows):
        parts = []
        for name, part in groups:
            if r < len(part):
                item = part.iloc[r]
                value = (f"margin {item['margin']:.3f}" if name == "edge"
                         else f"to centroid {item['distance_to_class_centroid']:.3f}")
                parts.append(f"{name}: {item['key']} ({item['label']}), {value}")
        labels.append("\n".join(parts))
    write_image_grid(out_png, torch.stack(columns, dim=1), labels, [f"{name} cases" for name, _ in groups],
                     "edge cases (smallest classifier margin) and central cases (nearest their class centroid)"
                     f"{_random_init(weights)}",
                     row_title="rank: image (class), score")


def _explain_cases(model, table: pd.DataFrame, store, classes: list[str], resolution: int,
                   options: AuthenticityOptions, out_dir: Path, device, weights: str) -> None:
    """XRAI heatmaps of the classifier's predicted class for the first edge and central cases; the figure's title
    says when the classifier started from random-init weights."""
    count = options.xrai_images
    chosen = pd.concat([table[table["case"] == "edge"].sort_values(["margin", "key"])[:count],
                        table[table["case"] == "central"].sort_values(["distance_to_class_centroid", "key"])[:count]])
    images = read_images(store, chosen["key"].tolist())
    predicted = [classes.index(name) for name in chosen["predicted"]]
    heatmaps = xrai_heatmaps(model, images, predicted, resolution, device, steps=options.xrai_steps)
    save_npz(out_dir / "xrai.npz", keys=chosen["key"].to_numpy(dtype=str),
             explained_class=chosen["predicted"].to_numpy(dtype=str), case=chosen["case"].to_numpy(dtype=str),
             heatmaps=heatmaps)
    titles = [f"{row.case}: {row.key}\n{row.label} → {row.predicted} (margin {row.margin:.2f})"
              for row in chosen.itertuples()]
    xrai_figure(images, heatmaps, titles, out_dir / "xrai.png",
                heading=f"XRAI of the predicted class{_random_init(weights)}")


def _summary(table, saved, classifier_dir, projection_npz, options: AuthenticityOptions) -> dict:
    distances = table["distance_to_projection"]
    quartiles = distances.quantile([0.25, 0.5, 0.75])
    return {
        "gan": options.gan, "images": len(table), "projection": str(projection_npz),
        "classifier": {"folder": str(classifier_dir), "architecture": saved["architecture"],
                       "weights": saved.get("weights"), "embedding": "pooled last convolutional features"},
        "distance_to_projection": {"mean": float(distances.mean()), "median": float(quartiles[0.5]),
                                   "q1": float(quartiles[0.25]), "q3": float(quartiles[0.75]),
                                   "min": float(distances.min()), "max": float(distances.max())},
        "memorisation_flags": int(table["memorisation_flag"].sum()),
        "flagged_keys": table.loc[table["memorisation_flag"], "key"].tolist(),
        "own_projection_nearest_of_projections": float((table["projection_rank"] == 1).mean()),
        "classifier_accuracy_on_these_images": float((table["label"] == table["predicted"]).mean()),
        "provenance": provenance(options.step, options.to_dict(), seed=options.seed),
    }
