"""Step options of the latent stage (see `dermsynth.options`): SeFa, projection, e4e + HyperStyle training,
inversion and the named transformations. Light on purpose (no torch): the Snakefile imports it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import RESOURCE_KEYS, Section, StepOptions, entry, select, without
from .named import load_transformations


def _generator_images(config: dict, gan: str) -> dict:
    """What choosing a generator's training images reads (`gan.run.training_images`) and the held-out choice
    of the encoders' reports (`latent.inversion`: holdout, report_images, seed)."""
    spec, held_out = entry(config, "gans", gan, "gan"), config["latent"]["inversion"]
    return {"gan": gan, "splits": list(spec["splits"]), "classes": spec.get("classes"),
            "holdout": held_out["holdout"], "report_images": held_out["report_images"],
            "holdout_seed": held_out["seed"]}


@dataclass(frozen=True)
class SefaOptions(StepOptions):
    """`dermsynth latent sefa` (rule sefa): one layer range of a generator and the preview grid's settings
    (`latent.sefa` less `gans` and `layer_ranges`, which choose the jobs).

    Fields: `layers` — the layer range factorised (all, coarse = 4²–8², middle = 16²–32², fine = 64² and up);
    `preview_directions`, `preview_samples` — rows of the preview (directions × samples, ≥ 1);
    `preview_magnitude` — the largest distance in W shown (> 0); `preview_steps` — columns from −magnitude to
    +magnitude (≥ 2); `truncation_psi` — of the preview samples; `seed` — of the preview samples."""

    step = "sefa"
    wildcards = ("layers",)
    layers: str
    preview_directions: int
    preview_samples: int
    preview_magnitude: float
    preview_steps: int
    truncation_psi: float
    seed: int

    @classmethod
    def from_config(cls, config: dict, layers: str) -> "SefaOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["latent"]["sefa"]
        return cls(layers=layers, **select(settings, ("preview_directions", "preview_samples", "preview_magnitude",
                                                      "preview_steps", "truncation_psi", "seed")))

    def preview(self) -> dict:
        """The preview grid's settings (as recorded in the SeFa summary)."""
        return {"preview_directions": self.preview_directions, "preview_samples": self.preview_samples,
                "preview_magnitude": self.preview_magnitude, "preview_steps": self.preview_steps,
                "truncation_psi": self.truncation_psi, "seed": self.seed}


@dataclass(frozen=True)
class ProjectOptions(StepOptions):
    """`dermsynth latent project` (rule project): optimisation-based projection of real images into one generator.

    Fields: `gan` — the generator's name under `gans`; `classes` — its classes (None: every class), whose images
    alone are projected; from `latent.projection`: `split` (train/validation/test), `images` — a seeded choice
    of at most this many images (≥ 1), `steps` — optimisation steps (≥ 1), `space` — w or w+, `batch` — images
    optimised together, `w_avg_samples` — samples for the mean W (≥ 2), `seed` — of the choice and the noise."""

    step = "project"
    wildcards = ("gan",)
    gan: str
    classes: list | None
    split: str
    images: int
    steps: int
    space: str
    batch: int
    w_avg_samples: int
    seed: int

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "ProjectOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["latent"]["projection"]
        return cls(gan=gan, classes=entry(config, "gans", gan, "gan").get("classes"),
                   **select(settings, ("split", "images", "steps", "space", "batch", "w_avg_samples", "seed")))


@dataclass(frozen=True)
class TrainE4eOptions(StepOptions):
    """`dermsynth latent train-e4e` (rule train_e4e): an e4e encoder for one generator, trained on its training images.

    Fields: `gan` — the generator's name under `gans`; `splits`, `classes` — its training images (as
    `train-gan` chooses them; classes None: every class); `holdout` — fraction (0–1) of them held out of
    training for the report, at most `report_images`, chosen with `holdout_seed` (`latent.inversion`);
    `e4e` — the `latent.e4e` section less its job resources (backbone, input_resolution, steps, batch, lr,
    loss weights, progressive schedule, checkpoint_steps, log_steps, pretrained, seed: `inversion.E4eOptions`)."""

    step = "train-e4e"
    wildcards = ("gan",)
    gan: str
    splits: list
    classes: list | None
    holdout: float
    report_images: int
    holdout_seed: int
    e4e: Section

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "TrainE4eOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(**_generator_images(config, gan), e4e=without(config["latent"]["e4e"], RESOURCE_KEYS))


@dataclass(frozen=True)
class TrainHyperstyleOptions(StepOptions):
    """`dermsynth latent train-hyperstyle` (rule train_hyperstyle): a HyperStyle hypernetwork on top of a generator's
    e4e encoder, trained on the generator's training images.

    Fields: `gan`, `splits`, `classes`, `holdout`, `report_images`, `holdout_seed` — as for `train-e4e`;
    `hyperstyle` — the `latent.hyperstyle` section less its job resources (backbone, input_resolution, steps,
    batch, lr, iterations, rank, layer_ranges, loss weights, checkpoint_steps, log_steps, pretrained, seed:
    `inversion.HyperStyleOptions`)."""

    step = "train-hyperstyle"
    wildcards = ("gan",)
    gan: str
    splits: list
    classes: list | None
    holdout: float
    report_images: int
    holdout_seed: int
    hyperstyle: Section

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "TrainHyperstyleOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(**_generator_images(config, gan),
                   hyperstyle=without(config["latent"]["hyperstyle"], RESOURCE_KEYS))


@dataclass(frozen=True)
class InvertOptions(StepOptions):
    """`dermsynth latent invert` (rule invert): one split of a dataset (`latent.inversion.dataset`, the job's input)
    inverted into a generator with its e4e encoder and HyperStyle hypernetwork.

    Fields: `gan` — the generator's name under `gans`; `split` — which split is inverted (train/validation/test);
    `batch` — images inverted together, and the images per resumable chunk (≥ 1)."""

    step = "invert"
    wildcards = ("gan",)
    gan: str
    split: str
    batch: int

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "InvertOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        entry(config, "gans", gan, "gan")
        settings = config["latent"]["inversion"]
        return cls(gan=gan, split=settings["split"], batch=settings["batch"])


@dataclass(frozen=True)
class TransformOptions(StepOptions):
    """`dermsynth latent transform` (rule transform): one named transformation applied to every inverted image.

    Fields: `transformation` — its entry of the transformations file (`latent.transform.file`: name, gan,
    layer_range, direction — eigenvector index ≥ 0, magnitude — [low, high] distance in W, description), less
    its `review:` block, so editing another transformation or re-reviewing this one re-runs nothing;
    from `latent.transform`: `variants` — transformed versions per source image (≥ 1), `lpips_threshold` —
    images farther than this (LPIPS-Alex to the source) are rejected, `batch` — images per batch, `seed` — of
    the magnitudes (with the transformation, source key and variant)."""

    step = "transform"
    wildcards = ("name",)
    transformation: Section
    variants: int
    lpips_threshold: float
    batch: int
    seed: int

    @classmethod
    def from_config(cls, config: dict, name: str) -> "TransformOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = config["latent"]["transform"]
        entries = {t["name"]: t for t in load_transformations(settings["file"])}
        if name not in entries:
            raise ConfigError(f"transformation {name!r} is not in {settings['file']} (defined: {', '.join(entries)})")
        return cls(transformation=without(entries[name], ("review",)),
                   **{k: settings[k] for k in ("variants", "lpips_threshold", "batch", "seed")})
