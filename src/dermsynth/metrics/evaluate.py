"""Generative metrics of an image set (generated images, an LMDB or a folder) against a real split.

Real-set features are cached per image set (dataset, split, classes, resolution, the LMDB store's identity, the
chosen keys), extractor (name, weights file and the digest of its bytes, real or random weights) and
preprocessing, so every generator and snapshot evaluated against the same images reuses them, and nothing else
does.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..fingerprint import file_digest
from ..outputs import save_npz
from . import preconditions
from .extractors import Extractor
from .generative import AuthenticityOptions, FidOptions, KidOptions, NeighbourOptions
from .registry import compute_metric, metric


def load_split_images(lmdb_root: str | Path, manifest: str | Path, split: str, limit: int | None = None,
                      seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """uint8 images (N, 3, H, W) of one split, a seeded random subset when `limit` is smaller."""
    store = LmdbImageStore(lmdb_root)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    keys = frame.loc[frame["split"] == split, "key"].tolist()
    if limit is not None and limit < len(keys):
        keys = sorted(np.random.default_rng(seed).choice(keys, size=limit, replace=False).tolist())
    return read_images(store, keys), keys


_WEIGHT_DIGESTS: dict = {}


def weights_digest(weights: str) -> str:
    """The identity of an extractor's weights: the digest of the weights file's bytes (a file replaced under the
    same name is another extractor), or the random-init description itself. Computed once per file version."""
    path = Path(weights)
    if weights.startswith("random-init") or not path.is_file():
        return weights
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _WEIGHT_DIGESTS:
        _WEIGHT_DIGESTS[key] = file_digest(path)
    return _WEIGHT_DIGESTS[key]


def feature_key(identity: dict, extractor: Extractor) -> dict:
    """The cache key of real features: `identity` (dataset, split, classes, resolution, the store's identity, keys
    hash, count), the extractor's name, its weights (path, digest of their bytes, whether real) and its
    preprocessing (resize, normalisation, dtype, layer)."""
    return {**identity, "extractor": extractor.name, "weights": extractor.weights,
            "weights_digest": weights_digest(extractor.weights), "real_weights": extractor.real_weights,
            "preprocessing": dict(sorted(extractor.preprocessing.items()))}


def _digest(key: dict) -> str:
    return hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]


def write_features(path: str | Path, features: np.ndarray, key: dict) -> Path:
    """Save features with their cache key, atomically under a temporary name unique to this process (two jobs
    filling one cache entry each write a complete file; the last rename wins, with the same content).
    Raises OutputError when the disk refuses."""
    path = Path(path)
    save_npz(path, features=features, identity=repr(sorted(key.items())))
    return path


def read_features(path: str | Path, key: dict) -> np.ndarray | None:
    """The features saved at `path` if they were saved under exactly `key`, else None (absent, unreadable —
    truncated by a kill before atomic writes, or not a feature file — or another image set, extractor, weights or
    preprocessing: recomputed by the caller)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if "identity" not in saved.files or str(saved["identity"]) != repr(sorted(key.items())):
                return None
            return saved["features"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def cached_real_features(cache_dir: str | Path, identity: dict, extractor: Extractor, images_fn,
                         device: str | torch.device = "cpu", batch_size: int = 64) -> np.ndarray:
    """Features float64 (N, dim) of a real image set in `extractor`'s space, cached on disk under `feature_key`
    (the image set's identity, the extractor's name, weights and preprocessing); `images_fn()` gives the uint8
    (N, 3, H, W) images only when the cache misses."""
    key = feature_key(identity, extractor)
    path = Path(cache_dir) / f"{identity.get('dataset', 'real')}-{identity.get('split', '')}-{extractor.name}-{_digest(key)}.npz"
    features = read_features(path, key)
    if features is None:
        features = extractor.features(images_fn(), batch_size=batch_size, device=device)
        write_features(path, features, key)
    return features


IMAGE_SET_METRICS = ["fid", "kid", "precision_recall", "alpha_beta", "authenticity"]  # registered metric names


def metric_options(kid_size: int, k: int = 3) -> dict:
    """Each image-set metric's options (`metrics.registry`): KID over subsets of `kid_size`, k-NN with `k`."""
    return {"fid": FidOptions(), "kid": KidOptions(subset_size=kid_size), "precision_recall": NeighbourOptions(k),
            "alpha_beta": NeighbourOptions(k), "authenticity": AuthenticityOptions()}


def generative_metrics(real: dict[str, np.ndarray], fake: dict[str, np.ndarray],
                       extractors: dict[str, Extractor], kid_subset: int, k: int,
                       undefined: dict[str, str] | None = None) -> dict:
    """FID/KID on Inception features; precision/recall, α/β and authenticity on VGG16 features; and, when
    `extractors` has a "lite0" entry, the same Fréchet distance and KID in EfficientNet-Lite0 pooled features
    (`fd_lite0`, `kid_lite0`, `kid_lite0_percent`: not FID, whose scale is Inception's; with the package's
    ImageNet weights they are the demo's one real feature space, see `metrics.lite0`). Those have FID's and
    KID's minimum sample sizes.

    `real`/`fake`: extractor name → float (N, D) features. `comparable_to_published`: Inception and VGG16
    both have real weights (Lite0 does not count: no published number lives in its space); `lite0_real_weights`
    says whether the Lite0 numbers come from ImageNet weights (None without a Lite0 extractor).

    `kid_subset` and `k`: `evaluation.kid_subset` and `evaluation.k` (KID's subset size, capped at both sets' sizes;
    the nearest neighbours of precision/recall and α/β).

    A metric whose minimum sample sizes (`preconditions.minimums`) are not met is written as null,
    with the reason under `undefined` (`undefined`: the reasons the caller's check already found)."""
    inc = extractors["inception"].name
    n_real, n_fake = len(real[inc]), len(fake[inc])
    if undefined is None:
        undefined = preconditions.undefined(n_real, n_fake, IMAGE_SET_METRICS, k)
    result = {key: None for key in preconditions.null_keys(undefined, k) if key != "memorisation"}
    kid_size = min(kid_subset, n_real, n_fake)
    options = metric_options(kid_size, k)
    lite = extractors["lite0"].name if "lite0" in extractors else None
    for name in IMAGE_SET_METRICS:
        for space, keys in metric(name).spaces.items():
            if space not in extractors:
                continue
            if name in undefined:
                result.update(dict.fromkeys(keys))
            else:
                result.update(compute_metric(name, space, real[extractors[space].name], fake[extractors[space].name],
                                             options[name]))
    # each metric's keys in its first feature space (fid, kid, precision, …), then in the others (fd_lite0, …)
    spaces = {name: [keys for space, keys in metric(name).spaces.items() if space in extractors]
              for name in IMAGE_SET_METRICS}
    order = [key for name in IMAGE_SET_METRICS for key in spaces[name][0]]
    lite_keys = [key for name in IMAGE_SET_METRICS for keys in spaces[name][1:] for key in keys]
    undefined_out = {key: reason for key, reason in preconditions.null_keys(undefined, k).items() if key in order}
    undefined_out.update({key: undefined[name].replace(preconditions.minimums(k)[name].name, keys[0], 1)
                          for name in IMAGE_SET_METRICS if name in undefined
                          for keys in spaces[name][1:] for key in keys})  # 'fd_lite0 needs …', not 'FID needs …'
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
