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

timm models are built by `dermsynth.backbones.timm_model`, with weights from the offline weights cache
(`dermsynth.backbones.weights_cache`: `$DERMSYNTH_WEIGHTS`, default resources/weights/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import timm
from torch import nn

from ..backbones import timm_model, weights_cache
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


def create_classifier(name: str, num_classes: int, *, pretrained: bool, seed: int, cache: str | Path | None = None,
                      **kwargs) -> tuple[nn.Module, str]:
    """Classifier `name` with a new `num_classes`-way head: a registered builder if `name` is registered,
    else timm's model of that name (`timm_model`: ImageNet weights from the weights cache `cache` when
    `pretrained`). The randomly initialised weights (the head, or all without ImageNet weights) are drawn from
    `seed`; the global random state is not touched. `pretrained` and `seed` are the recipe's
    (`classifiers.<study>.recipe`; no default here). `kwargs` (e.g. `drop_rate`) go to the builder /
    `timm.create_model`. Returns (model, weights label).

    Raises:
        ConfigError: `name` is neither registered here nor a timm model."""
    if name in _MODELS:
        return _MODELS[name](num_classes=num_classes, pretrained=pretrained, cache=weights_cache(cache), seed=seed,
                             **kwargs)
    if not timm.is_model(name):
        registered = ", ".join(registered_models()) or "none"
        raise ConfigError(f"classifier architecture '{name}' is neither a timm model (see timm.list_models()) nor "
                          f"registered in dermsynth.classify.models (registered: {registered})")
    return timm_model(name, cache, pretrained=pretrained, seed=seed, num_classes=num_classes, **kwargs)
