"""Step options of the GAN stage (see `dermsynth.options`), and the typed training settings of a `gans` entry
(`TrainingOptions`). Light: the Snakefile imports this module (the federated stage's options derive their training
keys from `TrainingOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import RESOURCE_KEYS, Section, Settings, StepOptions, entry, without


@dataclass(frozen=True)
class TrainGanOptions(StepOptions):
    """`dermsynth gan train` (rule train_gan): one generator's section of `gans`, less its job resources.

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


@dataclass
class TrainingOptions(Settings):
    """Hyper-parameters of one StyleGAN2(-ADA) training run (Karras et al., 2020a/b), mirroring a `gans` entry of the
    config (`gans.*`, and the training keys of a `federated.*` run): build it with `TrainingOptions.from_section`
    from the validated section; the schema holds every default and description.

    Settings (schema keys): minibatch `batch` (global, across processes); Adam learning rates `g_lr`/`d_lr`; R1
    weight `r1_gamma`; path-length weight `pl_weight`; `style_mixing_prob`; G_ema half-life `ema_kimg` (thousands of
    images); `mirror` (random horizontal flips of real images); the ADA pipeline `augment` (bgc | bg, no colour |
    noaug) with initial (or, without a target, fixed) probability `augment_p`, target r_t `ada_target` (None: p
    fixed) and adjustment speed `ada_kimg`; `seed`; `cuda_ops` (fused CUDA kernels: auto | require | reference);
    `compile` (torch.compile the main passes); `network` (Generator/Discriminator keyword arguments); `init` (a
    checkpoint the networks start from, or None; `gan.interop.imported.initialise`) and `freeze_d` (Freeze-D: the
    discriminator's first K layers kept fixed).

    Method constants (StyleGAN2-ADA's fixed values, not configuration): Adam `betas`; R1 every `r1_interval`
    steps, path length every `pl_interval` steps (decay `pl_decay`, batch ÷ `pl_batch_shrink`) — lazy
    regularisation; G_ema ramp-up `ema_rampup` (of the images shown); p adjusted every `ada_interval` steps."""

    schema_section = ("gans.*", "federated.*")
    method_constants = ("betas", "r1_interval", "pl_interval", "pl_decay", "pl_batch_shrink", "ema_rampup",
                        "ada_interval")

    batch: int
    g_lr: float
    d_lr: float
    r1_gamma: float
    pl_weight: float
    style_mixing_prob: float
    ema_kimg: float
    mirror: bool
    augment: str
    augment_p: float
    ada_target: float | None
    ada_kimg: float
    seed: int
    cuda_ops: str
    compile: bool
    network: dict
    init: str | None
    freeze_d: int
    betas: tuple[float, float] = (0.0, 0.99)
    r1_interval: int = 16
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    ema_rampup: float | None = 0.05
    ada_interval: int = 4
