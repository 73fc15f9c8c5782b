"""Step options of the synthetic stage (see `dermsynth.options`). Light on purpose (no torch): the Snakefile
imports it."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import StepOptions, entry


@dataclass(frozen=True)
class SyntheticDatasetOptions(StepOptions):
    """`dermsynth synthetic dataset` (rule synthetic_dataset): one SA-n set drawn from the transformed images.

    Fields: `name` — the set's name under `synthetic.sizes` (SA-2k, …); `size` — its number of images (≥ 1; an
    equal share per transformation); `seed` — `synthetic.seed`, drawn with the size, so each set is an
    independent draw (SA-4k is not SA-2k plus more). The other sizes are not held: adding or changing one
    re-runs only that set."""

    step = "synthetic-dataset"
    wildcards = ("name",)
    name: str
    size: int
    seed: int

    @classmethod
    def from_config(cls, config: dict, name: str) -> "SyntheticDatasetOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        size = entry({"synthetic.sizes": config["synthetic"]["sizes"]}, "synthetic.sizes", name, "synthetic set")
        return cls(name=name, size=size, seed=config["synthetic"]["seed"])
