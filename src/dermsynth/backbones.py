"""timm backbones with ImageNet weights from the project's offline weights cache (core layer).

Every timm network of the project — the classifiers (`dermsynth.classify.models`), the e4e/HyperStyle feature
pyramids (`dermsynth.latent.encoders`) and the Lite0 feature extractor (`dermsynth.metrics.lite0`) — is built by
`timm_model` here, so they share one cache and one rule for missing weights. Not a light module: it imports
torch and timm.

Weights cache (`$DERMSYNTH_WEIGHTS`, default resources/weights/, relative to the working directory): timm weights
live under `huggingface/hub/` in the Hugging Face hub's cache layout (`dermsynth fetch-weights` fills it on a
connected machine; the Lite0 extra fills `models--timm--tf_efficientnet_lite0.in1k/` offline). Nothing here
downloads.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn


def weights_cache(path: str | Path | None = None) -> Path:
    """The weights cache folder: `path`, else $DERMSYNTH_WEIGHTS, else resources/weights (relative to the cwd).
    The folder need not exist."""
    return Path(path or os.environ.get("DERMSYNTH_WEIGHTS", "resources/weights"))


def cached_timm_file(name: str, cache: Path) -> Path | None:
    """The cached weights file (model.safetensors or pytorch_model.bin) of timm model `name` (`arch` or
    `arch.tag`) under `cache/huggingface/hub`, or None when it is not there or timm names no hub repository for
    it. Reads the cache only (never the network)."""
    # deferred: timm — 2½ s of import (with torchvision), paid only by the jobs that build a timm network
    import timm
    model_name, _, tag = name.partition(".")
    pretrained = timm.models.get_pretrained_cfg(f"{model_name}.{tag}" if tag else model_name)
    repo = getattr(pretrained, "hf_hub_id", None) if pretrained else None
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, cache_dir=str(cache / "huggingface" / "hub"))
        if isinstance(found, str):
            return Path(found)
    return None


def timm_model(name: str, cache: str | Path | None = None, pretrained: bool = True, seed: int = 0,
               **kwargs) -> tuple[nn.Module, str]:
    """A timm model with ImageNet weights from the cache's `huggingface/` folder (filled by
    `dermsynth fetch-weights`), never from the network. Returns (model, weights label); the weights timm
    initialises at random (all of them without cached weights or with pretrained=False, else a new head) are
    drawn from `seed` inside `torch.random.fork_rng`, so the global random state is left as it was. Without
    weights the label is "random-init(seed=<seed>)" (a warning says why when weights were wanted). `kwargs` go to
    `timm.create_model` (num_classes, drop_rate, features_only, in_chans: timm adapts the RGB stem); timm's own
    errors (e.g. RuntimeError for an unknown name) pass through."""
    # deferred: timm — 2½ s of import (with torchvision), paid only by the jobs that build a timm network
    import timm
    cache = weights_cache(cache)
    found = cached_timm_file(name, cache) if pretrained else None
    if found is None and pretrained:
        warnings.warn(f"timm {name}: no weights at {cache / 'huggingface'}; using a deterministic randomly "
                      "initialised network. Metrics will be marked as not comparable to published numbers. Fill "
                      "the cache with `dermsynth fetch-weights` on a connected machine.", stacklevel=2)
    with torch.random.fork_rng(devices=[]):  # timm initialises from the global generator: seed a private copy
        torch.manual_seed(seed)
        if found is not None:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(found)}, **kwargs)
            return model, f"timm:{name} ImageNet ({found})"
        return timm.create_model(name, pretrained=False, **kwargs), f"random-init(seed={seed})"
