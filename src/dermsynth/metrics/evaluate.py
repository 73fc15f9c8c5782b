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
from . import generative, preconditions
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
    """Features float64 (N, dim) of a real image set in `extractor`'s space, cached on disk under a key of
    `identity` (dataset, split, resolution, keys hash, count), the extractor's name and its weights;
    `images_fn()` gives the uint8 (N, 3, H, W) images only when the cache misses."""
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


IMAGE_SET_METRICS = ["fid", "kid", "precision_recall", "alpha_beta", "authenticity"]


def generative_metrics(real: dict[str, np.ndarray], fake: dict[str, np.ndarray],
                       extractors: dict[str, Extractor], kid_subset: int = 1000, k: int = 3,
                       undefined: dict[str, str] | None = None) -> dict:
    """FID/KID on Inception features; precision/recall, α/β and authenticity on VGG16 features; and, when
    `extractors` has a "lite0" entry, the same Fréchet distance and KID in EfficientNet-Lite0 pooled features
    (`fd_lite0`, `kid_lite0`, `kid_lite0_percent`: not FID, whose scale is Inception's; with the package's
    ImageNet weights they are the demo's one real feature space, see `metrics.lite0`). Those have FID's and
    KID's minimum sample sizes.

    `real`/`fake`: extractor name → float (N, D) features. `comparable_to_published`: Inception and VGG16
    both have real weights (Lite0 does not count: no published number lives in its space); `lite0_real_weights`
    says whether the Lite0 numbers come from ImageNet weights (None without a Lite0 extractor).

    A metric whose minimum sample sizes (`preconditions.minimums`) are not met is written as null,
    with the reason under `undefined` (`undefined`: the reasons the caller's check already found)."""
    inc, vgg = extractors["inception"].name, extractors["vgg16"].name
    n_real, n_fake = len(real[inc]), len(fake[inc])
    if undefined is None:
        undefined = preconditions.undefined(n_real, n_fake, IMAGE_SET_METRICS, k)
    result = {key: None for key in preconditions.null_keys(undefined, k) if key != "memorisation"}
    if "fid" not in undefined:
        result["fid"] = generative.fid(real[inc], fake[inc])
        result["fid_rank_deficient"] = generative.rank_deficient(real[inc], fake[inc])
    kid_size = min(kid_subset, n_real, n_fake)
    if "kid" not in undefined:
        result["kid"] = generative.kid(real[inc], fake[inc], subset_size=kid_size)
        result["kid_percent"] = result["kid"] * 100
    lite = extractors["lite0"].name if "lite0" in extractors else None
    if lite is not None:
        result["fd_lite0"] = None if "fid" in undefined else generative.fid(real[lite], fake[lite])
        result["fd_lite0_rank_deficient"] = None if "fid" in undefined else generative.rank_deficient(real[lite],
                                                                                                     fake[lite])
        result["kid_lite0"] = None if "kid" in undefined else generative.kid(real[lite], fake[lite], subset_size=kid_size)
        result["kid_lite0_percent"] = None if result["kid_lite0"] is None else result["kid_lite0"] * 100
    if "precision_recall" not in undefined:
        result["precision"], result["recall"] = generative.precision_recall(real[vgg], fake[vgg], k=k)
    if "alpha_beta" not in undefined:
        alpha_beta = generative.alpha_precision_beta_recall(real[vgg], fake[vgg], k=k)
        result["alpha_precision"], result["beta_recall"] = alpha_beta["alpha_precision"], alpha_beta["beta_recall"]
    if "authenticity" not in undefined:
        result["authenticity"] = generative.authenticity(real[vgg], fake[vgg])
    order = ["fid", "fid_rank_deficient", "kid", "kid_percent", "precision", "recall", "alpha_precision",
             "beta_recall", "authenticity"]
    lite_keys = ["fd_lite0", "fd_lite0_rank_deficient", "kid_lite0", "kid_lite0_percent"] if lite is not None else []
    undefined_out = {key: reason for key, reason in preconditions.null_keys(undefined, k).items() if key in order}
    for key, source in (("fd_lite0", "fid"), ("fd_lite0_rank_deficient", "fid"), ("kid_lite0", "kid"),
                        ("kid_lite0_percent", "kid")):
        if lite is not None and source in undefined_out:
            undefined_out[key] = undefined_out[source]
    return {
        **{key: result[key] for key in order + lite_keys},
        "kid_subset_size": kid_size if "kid" not in undefined else None,
        "k": k,
        "undefined": undefined_out,
        "n_real": int(n_real), "n_fake": int(n_fake),
        "feature_extractors": {name: e.describe() for name, e in extractors.items()},
        "comparable_to_published": all(e.real_weights for e in extractors.values() if e.published),
        "lite0_real_weights": extractors["lite0"].real_weights if lite is not None else None,
    }
