"""Step options of the federated stage (see `dermsynth.options`). Light: the Snakefile imports this module.

| verb (rule) | options | reads |
|---|---|---|
| train-federated (train_federated) | `TrainFederatedOptions` | one `federated.<run>` section: training keys + federation keys |
| train-gan (train_alone) | `HospitalAloneOptions` | the same run's training keys, as a `gans` entry limited to one hospital |
| evaluate-federated (evaluate_federated) | `EvaluateFederatedOptions` | the run's hospitals, its central generator, `evaluation` sample sizes |
| federated-table (federated_table) | `FederatedTableOptions` | the run's hospitals, `fid_threshold` |
"""

from __future__ import annotations

from dataclasses import dataclass

from ..labels import scheme_classes
from ..options import RESOURCE_KEYS, Section, StepOptions, entry, select
from ..gan.options import TrainGanOptions

# The keys of a `gans` entry that configure the training step itself (`gan.training.TrainingOptions`), plus the
# data keys a federated run shares with it. Anything else of the run section belongs to the federation.
TRAINING_KEYS = ("batch", "g_lr", "d_lr", "r1_gamma", "pl_weight", "style_mixing_prob", "ema_kimg", "mirror",
                 "augment", "augment_p", "ada_target", "ada_kimg", "seed", "cuda_ops", "compile", "network",
                 "conditional", "classes")
FEDERATION_KEYS = ("rounds", "local_steps", "min_available_nodes", "round_timeout_s", "checkpoint_every",
                   "evaluate_every", "runtime")
CURVE_KEYS = ("real_samples", "seed", "snapshot_samples", "kid_subset", "truncation_psi", "batch")


def run_hospitals(config: dict, run: str) -> list[str]:
    """The hospitals of federated run `run`: its `hospitals`, else every hospital of its dataset's federated split
    (sorted by name: the order of the client indices)."""
    spec = entry(config, "federated", run, "federated run")
    return sorted(spec.get("hospitals") or config["datasets"][spec["dataset"]]["federated"]["hospitals"])


def iterations_per_evaluation(spec: dict) -> int:
    """Training steps each hospital runs between two evaluated snapshots (`evaluate_every` × `local_steps`)."""
    return spec["evaluate_every"] * spec["local_steps"]


@dataclass(frozen=True)
class TrainFederatedOptions(StepOptions):
    """`dermsynth train-federated` (rule train_federated): one federated StyleGAN2 run.

    Fields: `run` — the name under `federated`; `dataset`; `hospitals` — the taking part hospitals, sorted (a
    client's index is its position); `label_classes` — every class of the dataset's label scheme (a conditional
    generator has one input per class, the same at every hospital); `resolution` — image side in pixels;
    `training` — the training keys (`TRAINING_KEYS`: as a `gans` entry; `classes` only when set);
    `federation` — `rounds`, `local_steps`, `min_available_nodes`, `round_timeout_s` (seconds),
    `checkpoint_every`, `evaluate_every` (rounds), `runtime` (deployment | simulation)."""

    step = "train-federated"
    wildcards = ("run",)
    run: str
    dataset: str
    hospitals: list
    label_classes: list
    resolution: int
    training: Section
    federation: Section

    @classmethod
    def from_config(cls, config: dict, run: str) -> "TrainFederatedOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        dataset = config["datasets"][spec["dataset"]]
        return cls(run=run, dataset=spec["dataset"], hospitals=run_hospitals(config, run),
                   label_classes=list(scheme_classes(dataset["labels"])), resolution=dataset["resolution"],
                   training=select(spec, TRAINING_KEYS), federation=select(spec, FEDERATION_KEYS))


@dataclass(frozen=True)
class HospitalAloneOptions(TrainGanOptions):
    """`dermsynth train-gan` for a hospital-alone baseline (rule train_alone): the run's generator trained on one
    hospital's images only, for as many steps as each hospital runs in the federation (rounds × local_steps), with
    a snapshot at every evaluated round. The same verb and fields as `TrainGanOptions` (`gan` is
    `<run>-alone-<hospital>`; `spec` a `gans` entry with `hospital` and `kimg`/`snapshot_kimg` derived)."""

    wildcards = ("run", "hospital")

    @classmethod
    def from_config(cls, config: dict, run: str, hospital: str) -> "HospitalAloneOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        if hospital not in run_hospitals(config, run):
            from ..errors import ConfigError
            raise ConfigError(f"federated run '{run}' has no hospital '{hospital}' "
                              f"(hospitals: {', '.join(run_hospitals(config, run))})")
        steps, batch = spec["rounds"] * spec["local_steps"], spec["batch"]
        pool = config["datasets"][spec["dataset"]]["federated"]["pool"]
        gan = {**select(spec, TRAINING_KEYS), "dataset": spec["dataset"], "splits": list(pool), "hospital": hospital,
               "kimg": steps * batch / 1000, "snapshot_kimg": iterations_per_evaluation(spec) * batch / 1000}
        return cls(gan=f"{run}-alone-{hospital}", spec=gan)


@dataclass(frozen=True)
class EvaluateFederatedOptions(StepOptions):
    """`dermsynth evaluate-federated` (rule evaluate_federated): FID/KID of every evaluated snapshot of the
    federated run, of each hospital-alone baseline and of the central generator, against the real training images
    of each hospital and of all of them pooled.

    Fields: `run`; `dataset`; `hospitals`; `classes` (None: every class) — which real images; `central` — the
    central generator's name (None: none); `baselines` — whether hospital-alone models exist; `evaluation` — the
    `evaluation` keys `CURVE_KEYS` (`real_samples` per reference, `snapshot_samples` generated per snapshot, …)."""

    step = "evaluate-federated"
    wildcards = ("run",)
    run: str
    dataset: str
    hospitals: list
    classes: list | None
    central: str | None
    baselines: bool
    evaluation: Section

    @classmethod
    def from_config(cls, config: dict, run: str) -> "EvaluateFederatedOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        return cls(run=run, dataset=spec["dataset"], hospitals=run_hospitals(config, run),
                   classes=spec.get("classes") or None, central=spec.get("central"), baselines=spec["baselines"],
                   evaluation=select(config["evaluation"], CURVE_KEYS))


@dataclass(frozen=True)
class FederatedTableOptions(StepOptions):
    """`dermsynth federated-table` (rule federated_table): the study's comparison from the FID curves.

    Fields: `run`; `hospitals`; `fid_threshold` (None: the worst final FID of the federated and hospital-alone
    models); `local_steps` — iterations per hospital per round (to express progress in rounds)."""

    step = "federated-table"
    wildcards = ("run",)
    run: str
    hospitals: list
    fid_threshold: float | None
    local_steps: int

    @classmethod
    def from_config(cls, config: dict, run: str) -> "FederatedTableOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        return cls(run=run, hospitals=run_hospitals(config, run), fid_threshold=spec["fid_threshold"],
                   local_steps=spec["local_steps"])


__all__ = ["EvaluateFederatedOptions", "FederatedTableOptions", "HospitalAloneOptions", "TrainFederatedOptions",
           "RESOURCE_KEYS", "iterations_per_evaluation", "run_hospitals"]
