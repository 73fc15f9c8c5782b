"""Registries of the metrics stage, in the style of timm's model registry: feature extractors and generative
metrics are registered by name, and every evaluator (evaluate-gan, gan-curve, evaluate-images, real-features)
builds them through here instead of naming the networks itself. Light: no torch import (the Snakefile reads
the extractors' preprocessing for the real-feature jobs' options).

A new feature network: a function `builder(cache) -> Extractor` (see `metrics.extractors`) and

    @register_extractor("dino", preprocessing={"resize": "224² bicubic", "normalisation": "ImageNet", ...})
    def dino(cache=None): ...

`preprocessing` describes everything done to the uint8 images before the network (resize, normalisation,
dtype, the layer read): it is part of the real-feature cache key and of the real_features jobs' options, so
changing it recomputes the cached features. Register it in a module that `_load_builtins` imports, or import
your module before evaluating.

A new metric: a function and an options class (a frozen dataclass of its settings),

    @register_metric("my_metric", options=MyOptions, spaces={"vgg16": ("my_metric",)})
    def my_metric(real, fake, options) -> tuple: ...

`spaces`: extractor name → the JSON keys the metric fills when computed in that feature space (FID in Lite0
features is `fd_lite0`); the function returns one value per key. A metric of the generator itself (PPL) has
`kind="generator"` and is called as `compute(G, lpips, options, device)`, returning a dict.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError

# timm ImageNet weights that `dermsynth fetch-weights` caches by default (the one list): the classifier stage's
# architectures of the studies, and resnet34, the e4e and HyperStyle encoders' backbone.
DEFAULT_TIMM_MODELS = ("densenet121", "densenet169", "efficientnet_b2", "resnet34")


@dataclass(frozen=True)
class ExtractorInfo:
    """A registered feature extractor: `builder(cache)` gives the `Extractor`; `preprocessing` says what is done
    to uint8 (N, 3, H, W) images before the network (str → str)."""

    name: str
    builder: Callable | str  # a function, or "module:function" imported on first use
    preprocessing: dict
    description: str = ""


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: `compute`, its options class, the JSON keys per feature space, its kind."""

    name: str
    compute: Callable | str
    options: type
    spaces: dict = field(default_factory=dict)
    kind: str = "features"   # "features": compute(real, fake, options) → tuple; "generator": (G, lpips, options, device)
    description: str = ""


EXTRACTORS: dict[str, ExtractorInfo] = {}
METRICS: dict[str, MetricInfo] = {}
_BUILTIN_MODULES = ("dermsynth.metrics.generative", "dermsynth.metrics.ppl")


def register_extractor(name: str, *, preprocessing: dict, description: str = "", builder: Callable | str | None = None):
    """Register feature extractor `name` (a decorator of its builder, or direct with `builder=`)."""
    def add(function):
        EXTRACTORS[name] = ExtractorInfo(name, function, dict(preprocessing), description)
        return function
    return add(builder) if builder is not None else add


def register_metric(name: str, *, options: type, spaces: dict[str, tuple[str, ...]], kind: str = "features",
                    description: str = ""):
    """Decorator: register the metric function under `name` (see the module docstring)."""
    def add(function):
        METRICS[name] = MetricInfo(name, function, options, dict(spaces), kind, description or (function.__doc__ or ""))
        return function
    return add


def _resolve(target: Callable | str) -> Callable:
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def extractor_info(name: str) -> ExtractorInfo:
    """The registered extractor `name`; ConfigError naming the registered ones otherwise."""
    if name not in EXTRACTORS:
        raise ConfigError(f"feature extractor '{name}' is not registered (registered: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[name]


def create_extractor(name: str, cache=None) -> Any:
    """Build the registered extractor `name` from the weights cache (`Extractor`, with its `preprocessing`)."""
    info = extractor_info(name)
    extractor = _resolve(info.builder)(cache)
    extractor.preprocessing = dict(info.preprocessing)
    return extractor


def feature_networks(names: tuple[str, ...] | list[str], cache=None) -> dict:
    """{registered name: Extractor} for `names`, in that order."""
    return {name: create_extractor(name, cache) for name in names}


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def metric(name: str) -> MetricInfo:
    """The registered metric `name` (the built-in ones registered on first use); ConfigError otherwise."""
    _load_builtins()
    if name not in METRICS:
        raise ConfigError(f"metric '{name}' is not registered (registered: {', '.join(METRICS)})")
    return METRICS[name]


def compute_metric(name: str, space: str, real, fake, options) -> dict:
    """Feature metric `name` of real and generated features (float (N, D) arrays) in extractor `space`'s
    features: {JSON key: value} with the keys registered for that space."""
    info = metric(name)
    if space not in info.spaces:
        raise ConfigError(f"metric '{name}' is not defined in {space} features (only in {', '.join(info.spaces)})")
    values = _resolve(info.compute)(real, fake, options)
    return dict(zip(info.spaces[space], values))


def metric_extractors(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The extractors (feature spaces) the feature metrics `names` are computed in, in registration order."""
    spaces: dict[str, None] = {}
    for name in names:
        spaces.update(dict.fromkeys(metric(name).spaces))
    return tuple(spaces)


_PIL_CLEAN = "299×299 PIL bicubic per image (clean-fid's 'clean' resize), float32 0…255"
register_extractor(
    "inception", builder="dermsynth.metrics.extractors:inception",
    description="Inception-v3 pool3 (clean-fid's TorchScript network): FID, KID",
    preprocessing={"resize": _PIL_CLEAN, "normalisation": "(x − 128) / 128 (inside the network)",
                   "input": "uint8 RGB (N, 3, H, W)", "dtype": "float32 in, float64 features out",
                   "layer": "pool3, 2048-d"})
register_extractor(
    "vgg16", builder="dermsynth.metrics.extractors:vgg16",
    description="VGG16 fc2: precision/recall, α/β, authenticity, memorisation",
    preprocessing={"resize": "224×224 bilinear, antialiased (torch), after x / 255",
                   "normalisation": "ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)",
                   "input": "uint8 RGB (N, 3, H, W)", "dtype": "float32 in, float64 features out",
                   "layer": "fc2 (after ReLU of fc1), 4096-d"})
register_extractor(
    "lite0", builder="dermsynth.metrics.lite0:lite0_extractor",
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0) pooled features: fd_lite0, kid_lite0",
    preprocessing={"resize": "224×224 bilinear, antialiased (torch), after x / 255; none at 224²",
                   "normalisation": "(x − 0.5) / 0.5", "input": "uint8 RGB (N, 3, H, W)",
                   "dtype": "float32 in, float64 features out", "layer": "global average pool, 1280-d"})
