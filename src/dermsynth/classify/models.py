"""Classifier architectures by name: timm's models, and a registry for the ones timm does not have.

`create_classifier(name, num_classes, ...)` is how the classifier and explanation stages build a network.
A name registered here (`@register_model("name")`) is built by its builder; any other name goes to
`timm.create_model` (ImageNet weights from the local weights cache, never from the network); a name that
neither knows is a `ConfigError` naming the registered models and pointing at timm's list.

A new non-timm classifier: a builder `f(num_classes, pretrained, cache, seed, **kwargs) -> (nn.Module, weights
label)` decorated with `@register_model("my-net")` in a module imported by this one (or here), then
`classifiers.<study>.architectures: [my-net]` in the config. The builder should draw (or load) its
weights deterministically from `seed` without touching the global random state (a `torch.Generator`, or
`torch.random.fork_rng`) and return a label beginning with "random-init" when it has no trained weights
(the tables' `real weights` column is read from it).

Weights cache (`$DERMSYNTH_WEIGHTS`, default resources/weights/): timm weights live under
`huggingface/hub/` in the Hugging Face hub's cache layout (`dermsynth fetch-weights` fills it; the
Lite0 extra fills `models--timm--tf_efficientnet_lite0.in1k/` offline).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError

Builder = Callable[..., tuple[nn.Module, str]]
_MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: `builder(num_classes, pretrained, cache, seed, **kwargs) -> (model, weights label)` builds the
    classifier architecture `name` (instead of timm). Raises ValueError if `name` is registered already."""
    def register(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"classifier model {name!r} is registered already ({_MODELS[name].__module__})")
        _MODELS[name] = builder
        return builder
    return register


def registered_models() -> list[str]:
    """The names of the non-timm classifier architectures registered here (sorted)."""
    return sorted(_MODELS)


def weights_cache(path: str | Path | None = None) -> Path:
    """The weights cache: `path`, else $DERMSYNTH_WEIGHTS, else resources/weights (relative to the cwd)."""
    return Path(path or os.environ.get("DERMSYNTH_WEIGHTS", "resources/weights"))


def cached_timm_file(name: str, cache: Path) -> Path | None:
    """The cached weights file of timm model `name` (`arch` or `arch.tag`) under `cache/huggingface`, or None."""
    import timm
    from huggingface_hub import try_to_load_from_cache
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
    `timm.create_model` (num_classes, drop_rate, features_only, in_chans: timm adapts the RGB stem)."""
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


def create_classifier(name: str, num_classes: int, pretrained: bool = True, cache: str | Path | None = None,
                      seed: int = 0, **kwargs) -> tuple[nn.Module, str]:
    """Classifier `name` with a new `num_classes`-way head: a registered builder if `name` is registered,
    else timm's model of that name (`timm_model`: cached ImageNet weights when `pretrained`). The randomly
    initialised weights (the head, or all without ImageNet weights) are drawn from `seed`; the global random
    state is not touched. `kwargs` (e.g. `drop_rate`) go to the builder / `timm.create_model`. Returns (model,
    weights label).

    Raises:
        ConfigError: `name` is neither registered here nor a timm model."""
    if name in _MODELS:
        return _MODELS[name](num_classes=num_classes, pretrained=pretrained, cache=weights_cache(cache), seed=seed,
                             **kwargs)
    import timm
    if not timm.is_model(name):
        registered = ", ".join(registered_models()) or "none"
        raise ConfigError(f"classifier architecture '{name}' is neither a timm model (see timm.list_models()) nor "
                          f"registered in dermsynth.classify.models (registered: {registered})")
    return timm_model(name, cache, pretrained=pretrained, seed=seed, num_classes=num_classes, **kwargs)
