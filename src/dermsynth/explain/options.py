"""Step options of the explain stage (see `dermsynth.options`): `authenticity`, `crp`, `pcx`."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import RESOURCE_KEYS, Section, StepOptions, entry, without

# explain.crp keys the workflow reads (whether CRP runs at all; job resources), never the crp verb
CRP_WORKFLOW_KEYS = ("enabled", *RESOURCE_KEYS)


@dataclass(frozen=True)
class AuthenticityOptions(StepOptions):
    """`dermsynth authenticity` (rule authenticity): real images and their projections into generator `gan`,
    embedded by an ISIC classifier (which one is the job's input, chosen by the workflow).

    Fields (from `explain.authenticity`): `gan` — the generator's name (a label in the outputs); `edge_cases` —
    how many edge and central cases to mark (≥ 1); `perplexity` — t-SNE perplexity (> 0; lowered to (n − 1) / 3
    for small sets); `xrai_images` — XRAI heatmaps of this many edge and this many central cases; `xrai_steps` —
    integrated-gradients steps per XRAI baseline (≥ 2); `batch` — images per forward pass; `seed` — t-SNE seed."""

    step = "authenticity"
    wildcards = ("gan",)
    gan: str
    edge_cases: int
    perplexity: float
    xrai_images: int
    xrai_steps: int
    batch: int
    seed: int

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "AuthenticityOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        entry(config, "gans", gan, "gan")  # (a clear error for an unknown name given by hand)
        settings = config["explain"]["authenticity"]
        return cls(gan=gan, **{k: settings[k] for k in ("edge_cases", "perplexity", "xrai_images", "xrai_steps",
                                                        "batch", "seed")})


@dataclass(frozen=True)
class CrpOptions(StepOptions):
    """`dermsynth crp` (rule crp): CRP of one architecture's HAM10000 baseline and best filtered SA model (the
    models are the job's inputs).

    Field `crp`: the `explain.crp` section less `enabled`, `gpus`, `runtime_hours` — layer (null: the last
    convolutional block), composite, concepts, references, reference_pool (null: every training image), images,
    keys, case {label, baseline, augmented}, batch, seed. The same for every architecture."""

    step = "crp"
    crp: Section

    @classmethod
    def from_config(cls, config: dict) -> "CrpOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(crp=without(config["explain"]["crp"], CRP_WORKFLOW_KEYS))


@dataclass(frozen=True)
class PcxOptions(StepOptions):
    """`dermsynth pcx` (rule pcx): PCX prototypes of one class for the models CRP explained, from the concept
    relevances `dermsynth crp` cached.

    Fields: `pcx` — the `explain.pcx` section (class, prototypes (null: by BIC), max_prototypes, covariance,
    concepts, prototype_images, references, novelty_quantile in (0, 1), seed); `composite` and `batch` —
    `explain.crp.composite` (the LRP composite) and `explain.crp.batch` (images per LRP pass)."""

    step = "pcx"
    pcx: Section
    composite: str
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "PcxOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        crp = config["explain"]["crp"]
        return cls(pcx=config["explain"]["pcx"], composite=crp["composite"], batch=crp["batch"])
