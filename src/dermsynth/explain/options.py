"""Step options of the explain stage (see `dermsynth.options`): `authenticity`, `crp`, `pcx`, and frame removal:
`frame-directions`, `frameless-set`, `frame-accuracy`."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import RESOURCE_KEYS, Section, StepOptions, entry, without

# explain.crp keys the workflow reads (whether CRP runs at all; job resources), never the crp verb
CRP_WORKFLOW_KEYS = ("enabled", *RESOURCE_KEYS)


@dataclass(frozen=True)
class AuthenticityOptions(StepOptions):
    """`dermsynth explain authenticity` (rule authenticity): real images and their projections into generator `gan`,
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
    """`dermsynth explain crp` (rule crp): CRP of one architecture's HAM10000 baseline and best filtered SA model (the
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
    """`dermsynth explain pcx` (rule pcx): PCX prototypes of one class for the models CRP explained, from the concept
    relevances `dermsynth explain crp` cached.

    Fields: `pcx` — the `explain.pcx` section (class, prototypes (null: by BIC), max_prototypes, covariance,
    concepts, prototype_images, references, novelty_quantile in (0, 1), n_init, reg_covar, seed: the mixture's
    part is `pcx.MixtureFit`); `composite` and `batch` —
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


@dataclass(frozen=True)
class FrameDirectionsOptions(StepOptions):
    """`dermsynth explain frame-directions` (rule frame_directions): which SeFa directions of generator `gan` take the
    dermatoscope's frame away (`explain.frame_removal`).

    Fields: `gan` — the generator (a name under `gans`; the workflow's is `explain.frames.gan`); from
    `explain.frames`: `class_name` — the class a conditional generator is asked for (`class`; ignored by a
    one-class generator); `layer_range` — the SeFa layer range; `latents` — N latents (seeds seed…seed+N−1); `directions` — the top K directions tried;
    `magnitudes` — distances in W tried on both sides (each > 0); `choose` — pairs (direction, sign) proposed;
    `lpips_weight` — merit = frame drop − this × LPIPS outside the ring; `lpips_max` — moves changing more than
    this are ranked after all others; `threshold` — the frame score of a frame; `truncation_psi`, `batch`, `seed`."""

    step = "frame-directions"
    wildcards = ("gan",)
    gan: str
    class_name: str
    layer_range: str
    latents: int
    directions: int
    magnitudes: list
    choose: int
    lpips_weight: float
    lpips_max: float
    threshold: float
    truncation_psi: float
    batch: int
    seed: int

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "FrameDirectionsOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["explain"]["frames"]
        entry(config, "gans", gan, "gan")
        return cls(gan=gan, class_name=settings["class"],
                   **{k: settings[k] for k in ("layer_range", "latents", "directions", "magnitudes", "choose",
                                               "lpips_weight", "lpips_max", "threshold", "truncation_psi", "batch",
                                               "seed")})


@dataclass(frozen=True)
class FramelessSetOptions(StepOptions):
    """`dermsynth explain frameless-set` (rule frameless_set): `images` frameless images per class, the classes of
    generator `gan` moved along the frame moves (the job's input: the proposal of frame-directions, or the
    reviewed file `explain.frames.file`).

    Fields: `gan`, `layer_range`, `threshold`, `truncation_psi`, `batch`, `seed` — as for frame-directions (the
    moves file must name the same gan and layer range); `generators` — class → generator name, the ISIC family
    `explain.frames.family` of `classifiers.isic.generators`; `images` — per class; `tries_per_image` — at most
    images × this latents tried per class; `framed_only` — a class short of framed images whose frame went is an
    error (true) or is filled with moved frameless ones (false)."""

    step = "frameless-set"
    gan: str
    layer_range: str
    generators: Section
    images: int
    tries_per_image: int
    framed_only: bool
    threshold: float
    truncation_psi: float
    batch: int
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> "FramelessSetOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["explain"]["frames"]
        generators = entry(config["classifiers"]["isic"], "generators", settings["family"],
                           "classifiers.isic generator family")
        return cls(gan=settings["gan"], generators=dict(generators),
                   **{k: settings[k] for k in ("layer_range", "images", "tries_per_image", "framed_only",
                                               "threshold", "truncation_psi", "batch", "seed")})


@dataclass(frozen=True)
class FrameAccuracyOptions(StepOptions):
    """`dermsynth explain frame-accuracy` (rule isic_frames): the ISIC classifiers' accuracy on real test images with and
    without a frame. Fields (from `explain.frames`): `threshold` — the frame score of a frame; `batch` — images
    scored at a time."""

    step = "frame-accuracy"
    threshold: float
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "FrameAccuracyOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["explain"]["frames"]
        return cls(threshold=settings["threshold"], batch=settings["batch"])
