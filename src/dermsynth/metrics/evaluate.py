"""Generative metrics of an image set (generated images, an LMDB or a folder) against a real split.

Real-set features are cached per (dataset, split, resolution, extractor weights, sample count),
so every generator and snapshot evaluated against the same split reuses them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from . import generative
from .extractors import Extractor


def load_split_images(lmdb_root: str | Path, manifest: str | Path, split: str, limit: int | None = None,
                      seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """uint8 images (N, 3, H, W) of one split, a seeded random subset when `limit` is smaller."""
    store = LmdbImageStore(lmdb_root)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    keys = frame.loc[frame["split"] == split, "key"].tolist()
    if limit is not None and limit < len(keys):
        keys = sorted(np.random.default_rng(seed).choice(keys, size=limit, replace=False).tolist())
    return read_images(store, keys), keys


def cached_real_features(cache_dir: str | Path, identity: dict, extractor: Extractor, images_fn,
                         device: str | torch.device = "cpu", batch_size: int = 64) -> np.ndarray:
    key = {**identity, "extractor": extractor.name, "weights": extractor.weights}
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{identity.get('dataset', 'real')}-{identity.get('split', '')}-{extractor.name}-{digest}.npz"
    if path.exists():
        return np.load(path)["features"]
    features = extractor.features(images_fn(), batch_size=batch_size, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=features, identity=repr(key))
    tmp.replace(path)
    return features


def generative_metrics(real: dict[str, np.ndarray], fake: dict[str, np.ndarray],
                       extractors: dict[str, Extractor], kid_subset: int = 1000, k: int = 3) -> dict:
    """FID/KID on Inception features; precision/recall, α/β and authenticity on VGG16 features."""
    inc, vgg = extractors["inception"].name, extractors["vgg16"].name
    precision, recall = generative.precision_recall(real[vgg], fake[vgg], k=k)
    alpha_beta = generative.alpha_precision_beta_recall(real[vgg], fake[vgg], k=k)
    return {
        "fid": generative.fid(real[inc], fake[inc]),
        "fid_rank_deficient": generative.rank_deficient(real[inc], fake[inc]),
        "kid": generative.kid(real[inc], fake[inc], subset_size=min(kid_subset, len(real[inc]), len(fake[inc]))),
        "precision": precision,
        "recall": recall,
        "alpha_precision": alpha_beta["alpha_precision"],
        "beta_recall": alpha_beta["beta_recall"],
        "authenticity": generative.authenticity(real[vgg], fake[vgg]),
        "n_real": int(len(real[inc])), "n_fake": int(len(fake[inc])),
        "feature_extractors": {name: e.describe() for name, e in extractors.items()},
        "comparable_to_published": all(e.real_weights for e in extractors.values()),
    }
