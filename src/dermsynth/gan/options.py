"""Step options of the GAN stage (see `dermsynth.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import RESOURCE_KEYS, Section, StepOptions, entry, without


@dataclass(frozen=True)
class TrainGanOptions(StepOptions):
    """`dermsynth train-gan` (rule train_gan): one generator's section of `gans`, less its job resources.

    Fields: `gan` — the name under `gans`; `spec` — that section (dataset, splits, classes, conditional,
    network, kimg, batch, lrate, gamma, augment, …, seed; schema defaults filled by the workflow)."""

    step = "train-gan"
    wildcards = ("gan",)
    gan: str
    spec: Section

    @classmethod
    def from_config(cls, config: dict, gan: str) -> "TrainGanOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(gan=gan, spec=without(entry(config, "gans", gan, "gan"), RESOURCE_KEYS))
