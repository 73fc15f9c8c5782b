"""Step options of the metrics stage (see `dermsynth.options`). Light: the Snakefile imports this module.

Which `evaluation` keys each verb reads (the rest — `table1_gans`, `snapshots`, `gpus`, `runtime_hours` — only the
workflow reads: which jobs exist, their resources):

| key | evaluate-gan | gan-curve | real-features |
|---|---|---|---|
| real_samples, seed | ✓ | ✓ | ✓ (which real images) |
| kid_subset, truncation_psi, batch | ✓ | ✓ | |
| fake_samples, ppl_samples, k, copy_ratio | ✓ | | |
| snapshot_samples | | ✓ | |
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..options import Section, StepOptions, entry, select
from .registry import extractor_info

EVALUATE_GAN_KEYS = ("real_samples", "fake_samples", "seed", "k", "kid_subset", "truncation_psi", "batch",
                     "ppl_samples", "copy_ratio")
GAN_CURVE_KEYS = ("real_samples", "seed", "snapshot_samples", "kid_subset", "truncation_psi", "batch")
EVALUATE_GAN_EXTRACTORS = ("inception", "vgg16", "lite0")   # the feature spaces of evaluate-gan's metrics
GAN_CURVE_EXTRACTORS = ("inception", "lite0")               # FID/KID and FD/KID in Lite0 features only


def reference_selection(config: dict, gan: str) -> dict:
    """Which real images generator `gan` is compared with: its dataset, splits, classes (None: all) and the
    seeded subset `evaluation.real_samples` (None: all) drawn with `evaluation.seed`."""
    spec = entry(config, "gans", gan, "gan")
    ev = config["evaluation"]
    return {"dataset": spec["dataset"], "splits": list(spec["splits"]), "classes": spec.get("classes") or None,
            "real_samples": ev.get("real_samples"), "seed": ev["seed"]}


def reference_name(config: dict, gan: str) -> str:
    """The name of `gan`'s real reference (`<dataset>-<10 hex digits of its selection>`): generators with the
    same real images share it, and so share one `real_features` job and its files."""
    selection = reference_selection(config, gan)
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()[:10]
    return f"{selection['dataset']}-{digest}"


@dataclass(frozen=True)
class RealFeaturesOptions(StepOptions):
    """`dermsynth metrics real-features` (rule real_features): the features of one real reference in each feature space
    the generator evaluation uses, the cache that evaluate-gan and gan-curve read.

    Fields: `reference` — its name (`reference_name`); `dataset`; `splits`; `classes` (None: every class);
    `real_samples` — a seeded subset of this many images (None: all); `seed`; `extractors` — extractor name →
    its preprocessing as registered (resize, normalisation, dtype, layer: `metrics.registry`), so that a change
    of an extractor's preprocessing re-runs the job."""

    step = "real-features"
    wildcards = ("reference",)
    reference: str
    dataset: str
    splits: list
    classes: list | None
    real_samples: int | None
    seed: int
    extractors: Section

    @classmethod
    def from_config(cls, config: dict, reference: str) -> "RealFeaturesOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        for gan in config.get("gans") or {}:
            if reference_name(config, gan) == reference:
                return cls(reference=reference, **reference_selection(config, gan),
                           extractors={name: extractor_info(name).preprocessing for name in EVALUATE_GAN_EXTRACTORS})
        known = {}
        for gan in config.get("gans") or {}:
            known.setdefault(reference_name(config, gan), []).append(gan)
        listed = "; ".join(f"{name} (of {', '.join(gans)})" for name, gans in known.items()) or "none"
        raise ConfigError(f"real reference '{reference}' is not the reference of any generator under 'gans' "
                          f"(defined: {listed})")


@dataclass(frozen=True)
class _GeneratorEvaluation(StepOptions):
    """What evaluating one generator reads (base of `EvaluateGanOptions` and `GanCurveOptions`, which differ
    only in their `evaluation` keys, `evaluation_keys`).

    Fields: `gan` — the name under `gans`; `dataset`, `splits`, `classes` (None: all) — its real training images;
    `evaluation` — the subclass's keys of the `evaluation` section."""

    wildcards = ("gan",)
    evaluation_keys: ClassVar[tuple[str, ...]] = ()
    gan: str
    dataset: str
    splits: list
    classes: list | None
    evaluation: Section

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "_GeneratorEvaluation":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "gans", gan, "gan")
        return cls(gan=gan, dataset=spec["dataset"], splits=list(spec["splits"]), classes=spec.get("classes") or None,
                   evaluation=select(config["evaluation"], cls.evaluation_keys))


@dataclass(frozen=True)
class EvaluateGanOptions(_GeneratorEvaluation):
    """`dermsynth metrics evaluate-gan` (rule evaluate_gan): what evaluating one generator reads.

    Fields: `gan` — the name under `gans`; `dataset`, `splits`, `classes` (None: all) — its real training images;
    `evaluation` — the `evaluation` keys below: `real_samples` (seeded subset of real images, None: all),
    `fake_samples` (generated images, seeds 0…n−1), `seed`, `k` (nearest neighbours of precision/recall and α/β),
    `kid_subset` (KID subset size), `truncation_psi`, `batch` (images per forward pass), `ppl_samples` (PPL paths),
    `copy_ratio` (memorisation threshold, > 0)."""

    step = "evaluate-gan"
    evaluation_keys = EVALUATE_GAN_KEYS


@dataclass(frozen=True)
class GanCurveOptions(_GeneratorEvaluation):
    """`dermsynth metrics gan-curve` (rule gan_curve): FID/KID of every training snapshot of one generator.

    Fields: `gan`, `dataset`, `splits`, `classes` as `EvaluateGanOptions`; `evaluation` — `real_samples`, `seed`,
    `snapshot_samples` (generated images per snapshot), `kid_subset`, `truncation_psi`, `batch`."""

    step = "gan-curve"
    evaluation_keys = GAN_CURVE_KEYS
