"""StyleGAN2 training core (single process): losses, lazy regularisation, EMA, exact resume.

One `step()` runs the four phases of StyleGAN2 training on one minibatch:

    Gmain  non-saturating logistic loss, softplus(−D(G(z)))       (with style mixing)
    Greg   path-length regularisation, every `pl_interval` steps   (lazy: loss × interval)
    Dmain  logistic loss, softplus(D(G(z))) + softplus(−D(x))
    Dreg   R1 penalty γ/2·‖∇ₓD(x)‖², every `r1_interval` steps     (lazy: loss × interval)

D sees every image through the ADA pipeline (`augment.py`), whose p adapts towards r_t = 0.6.

Adam runs with β = (0, 0.99); with lazy regularisation its learning rate and betas are rescaled
by interval/(interval+1), as in the paper. G_ema follows G with a half-life of `ema_kimg`.

Several processes (torchrun) train data-parallel: each rank takes its slice of every global batch and
gradients are averaged across ranks (`distributed.py`). Options `cuda_ops` (fused kernels) and
`compile` (torch.compile of the main G and D passes; the regularisation passes differentiate through
gradients, which compiled graphs do not support, and stay eager) only change speed, not the maths.

A checkpoint holds every piece of state — G, D, G_ema, both optimisers, the path-length mean, the
counters, the data order position and all RNG states — as plain tensors and numbers (loadable with
`torch.load(weights_only=True)`), plus the run's `fingerprint` when the caller set one (what data, architecture
and recipe the state belongs to: `train-gan` and a federated hospital compare it before resuming), written to
a temporary name unique to the process and renamed (`outputs.save_torch`). Resuming continues
exactly: on CPU, N + M steps in one run and N steps, resume, M steps give bit-identical weights.

Randomness: `build_networks` draws the initial weights from its own seeded stream and leaves the caller's
global random state as it was. A `GanTrainer` seeds the global torch stream once, at the end of its
construction (its own run's latents, noise and augmentation); nothing else here reseeds it.

Fine-tuning (`init`, `freeze_d`; docs/transfer-learning.md): `build_networks` loads G and D from the checkpoint and
the trainer its G_ema (`gan.interop.checkpoint.initialise`); optimisers, the path-length mean and ADA start fresh.
Freeze-D keeps D's first `freeze_d` layers (`discriminator_layers`) without gradients, so Adam never moves them.

Host synchronisation: `step()` reads nothing back from the device. Its statistics are 0-d tensors on the device,
style mixing picks its cutoff on the device (`torch.where`), ADA sums the signs of D's logits and moves p there
(`augment.AdaptiveP`), and a step whose losses are all NaN or infinite is recorded there (the first such step).
So on a GPU the host queues the next kernels while the GPU works, as stylegan2-ada-pytorch does. Values are read
back only where outputs are written: the caller turns the statistics into numbers at its ticks and log lines,
and calls `check_diverged()` (one read) at each tick, before every checkpoint or snapshot it saves and at the
end; `state()` reads p and the ADA sums when a checkpoint is written. Each phase of `step()` runs inside a
`torch.profiler.record_function` label (`PHASES`), so a profile groups its time by phase.

Divergence: a step whose losses are all NaN or infinite stops the run at the next `check_diverged()`
(`TrainingDivergedError`, naming that step): the caller checks before it saves, so nothing of that step (or of
any later one) is saved.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..errors import ConfigError, DermsynthError
from ..outputs import save_torch
from .augment import AdaptiveP, AugmentPipe
from .distributed import World
from .interop.checkpoint import initialise
from .networks import Discriminator, Generator
from .options import TrainingOptions
from .ops import fused

PHASES = ("Gmain", "Greg", "Dmain", "Dreg", "ema", "ada")  # the profiler labels of `GanTrainer.step`


class TrainingDivergedError(DermsynthError):
    """Every loss of a training step is NaN or infinite: the networks have diverged and training cannot go on."""


LOSS_KEYS = ("loss_G", "loss_D", "pl_penalty", "r1_penalty")


def recorded_fingerprint(state: dict) -> dict | None:
    """The fingerprint a checkpoint was saved with (`GanTrainer.fingerprint`), or None when it has none."""
    text = state.get("fingerprint")
    return json.loads(text) if isinstance(text, str) else None


D_NETWORK_KEYS = ("channel_base", "channel_max", "conv_clamp", "num_fp16_res", "reduced_precision")


class ResumableBatches:
    """Seeded shuffled minibatches of dataset indices whose position can be saved and restored."""

    def __init__(self, size: int, batch: int, seed: int):
        if size < batch:
            raise ValueError(f"the dataset has {size} images, fewer than one batch of {batch}")
        self.size, self.batch, self.seed = size, batch, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))

    def next(self) -> torch.Tensor:
        """The next minibatch's dataset indices (int64 (batch,)), starting a new epoch when too few are left."""
        if self.position + self.batch > self.size:  # drop the incomplete tail, start the next epoch
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        indices = self._order[self.position:self.position + self.batch]
        self.position += self.batch
        return indices

    def state(self) -> dict:
        """{"epoch", "position"}: where the order is (the permutation itself follows from seed and epoch)."""
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict) -> None:
        """Continue from a `state()`: the same epoch's permutation, at the same position."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


def build_networks(options: TrainingOptions, c_dim: int, resolution: int, device: str | torch.device = "cpu"
                   ) -> tuple[Generator, Discriminator]:
    """G and D as training starts: weights drawn from the CPU stream seeded with `options.seed`, so every process
    that builds them with the same options (data-parallel ranks, the hospitals and server of a federated run)
    holds identical weights and identical constant buffers (noise, resampling filters). The caller's global
    random state is left as it was (the draws happen in a forked stream). `c_dim`: classes of a conditional GAN
    (0: unconditional); `resolution`: image side in pixels (a power of two ≥ 4). With `options.init`, G ← the
    checkpoint's G (its G_ema when it has none) and D ← its D after the architecture check (`initialise`; raises
    CheckpointImportError naming the hyper-parameter that differs)."""
    with torch.random.fork_rng(devices=[]):  # modules draw their initial weights from the global CPU stream
        torch.manual_seed(options.seed)
        G = Generator(c_dim=c_dim, img_resolution=resolution, **options.network)
        d_kwargs = {k: v for k, v in options.network.items() if k in D_NETWORK_KEYS}
        D = Discriminator(c_dim=c_dim, img_resolution=resolution, **d_kwargs)
    if options.init:  # fine-tuning: G and D start from the checkpoint (`gan.interop.imported.initialise`)
        initialise(options.init, G, D)
    return G.to(device), D.to(device)


def discriminator_layers(D: Discriminator) -> list[tuple[str, torch.nn.Module]]:
    """D's convolution layers in the order Freeze-D counts them, from the image: fromRGB, then each block's conv0,
    conv1, skip (stylegan2-ada-pytorch's `freeze_layers` order); the epilogue (conv, fc, out, projection) is not
    among them."""
    layers = [("from_rgb", D.from_rgb)]
    for k, block in enumerate(D.blocks):
        layers += [(f"blocks.{k}.{name}", getattr(block, name)) for name in ("conv0", "conv1", "skip")]
    return layers


def frozen_discriminator_parameters(D: Discriminator, freeze_d: int, init_source: dict | None) -> list:
    """The parameters of D's first `freeze_d` layers (`discriminator_layers`): Freeze-D, Mo et al. 2020, "Freeze the
    Discriminator: a Simple Baseline for Fine-Tuning GANs". Raises ConfigError when freeze_d exceeds the layers, or
    is set without a discriminator to keep (no `init`, or an init file without D)."""
    if not freeze_d:
        return []
    layers = discriminator_layers(D)
    if freeze_d > len(layers):
        raise ConfigError(f"freeze_d {freeze_d}: the discriminator has {len(layers)} layers below its epilogue "
                          f"(fromRGB + conv0, conv1, skip per block); set gans.<name>.freeze_d to at most {len(layers)}")
    if init_source is None or not init_source.get("has_discriminator"):
        raise ConfigError(f"freeze_d {freeze_d} keeps discriminator layers fixed, but "
                          f"{'no init is set' if init_source is None else init_source['file'] + ' holds no D'}: "
                          "Freeze-D fine-tunes a trained discriminator; set gans.<name>.init or freeze_d: 0")
    return [p for _, layer in layers[:freeze_d] for p in layer.parameters()]


def _adam(params, lr: float, betas: tuple[float, float], interval: int, device: torch.device) -> torch.optim.Adam:
    """Adam with lazy regularisation's rescaled learning rate and betas; one fused kernel on CUDA, the multi-tensor
    (foreach) implementation elsewhere — the same update formula either way."""
    ratio = interval / (interval + 1) if interval else 1.0  # lazy regularisation
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=1e-8,
                            **_adam_implementation(device))


def _adam_implementation(device: torch.device) -> dict:
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def _load_optimiser(optimiser: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """Load an optimiser's state (written by any Adam implementation: older checkpoints hold the per-parameter one)
    and keep this trainer's implementation (`_adam_implementation`), with its step counters where it wants them:
    the fused kernel on the parameters' device, the foreach one on the host (float32 0-d tensors, as Adam makes)."""
    optimiser.load_state_dict(state)
    chosen = _adam_implementation(device)
    for group in optimiser.param_groups:
        group.update(fused=chosen.get("fused"), foreach=chosen.get("foreach"))
        for p in group["params"]:
            saved = optimiser.state.get(p, {})
            if "step" in saved:
                saved["step"] = torch.as_tensor(saved["step"], dtype=torch.float32,
                                                device=p.device if chosen.get("fused") else "cpu").clone()


class GanTrainer:
    """One StyleGAN2 training run in memory: G, D, G_ema, their optimisers, ADA and the data order; `step()` runs
    one minibatch without reading anything back from the device, `check_diverged()` is the one read the caller
    makes before it saves, `state()`/`save()`/`load()` checkpoint everything (see the module docstring)."""

    def __init__(self, options: TrainingOptions, images, labels: torch.Tensor | None = None,
                 device: str | torch.device = "cpu", world: World | None = None):
        """`images`: uint8 (N, 3, R, R) training images — a tensor, or anything indexable by a tensor of
        indices with a `shape` (e.g. `LmdbTrainingImages`); `labels`: one-hot (N, C) for a conditional GAN."""
        self.options, self.device, self.world = options, torch.device(device), world or World()
        if options.batch % self.world.size:
            raise ValueError(f"batch {options.batch} is not divisible by the {self.world.size} processes")
        self.local_batch = options.batch // self.world.size
        self.images, self.labels = images, labels
        fused.set_mode(options.cuda_ops)
        c_dim = 0 if labels is None else labels.shape[1]
        self.G, self.D = build_networks(options, c_dim, images.shape[-1], self.device)  # same weights on every rank
        self.world.broadcast_module(self.G)
        self.world.broadcast_module(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.init_source = initialise(options.init, G_ema=self.G_ema) if options.init else None  # its G_ema
        self.frozen_d = frozen_discriminator_parameters(self.D, options.freeze_d, self.init_source)
        self.opt_G = _adam(self.G.parameters(), options.g_lr, options.betas, options.pl_interval, self.device)
        self.opt_D = _adam(self.D.parameters(), options.d_lr, options.betas, options.r1_interval, self.device)
        self.batches = ResumableBatches(len(images), options.batch, options.seed)
        self.pl_mean = torch.zeros([], device=self.device)
        self.step_index, self.nimg = 0, 0
        self.diverged_at = torch.zeros([], dtype=torch.int64, device=self.device)  # first all-non-finite step, 0: none
        self.augment = AugmentPipe(options.augment, options.augment_p).to(self.device)
        self.ada = (AdaptiveP(self.augment, options.ada_target, options.ada_interval, options.ada_kimg, options.batch,
                              reduce=self.world.mean)
                    if options.ada_target is not None and options.augment != "noaug" else None)
        # Main passes may run compiled; regularisation passes need double backward and stay eager.
        self._synthesis_main = torch.compile(self.G.synthesis) if options.compile else self.G.synthesis
        self._D_main = torch.compile(self.D) if options.compile else self.D
        self.fingerprint: dict | None = None  # what this run's state belongs to (set by the caller; saved with it)
        # The trainer seeds its own run (documented above): each rank its own latents and noise.
        torch.manual_seed(options.seed * 1_000_003 + self.world.rank)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the training device; to a GPU through pinned memory without waiting for the copy
        (a plain copy from pageable memory synchronises the stream)."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _discriminate(self, images: torch.Tensor, c: torch.Tensor | None, main: bool = True) -> torch.Tensor:
        return (self._D_main if main else self.D)(self.augment(images), c)

    # --- data and latents -----------------------------------------------------------------------
    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices = self.batches.next()  # the global batch; this rank takes its slice
        indices = indices[self.world.rank * self.local_batch:(self.world.rank + 1) * self.local_batch]
        real = self._to_device(self.images[indices]).float() / 127.5 - 1
        if self.options.mirror:
            flip = torch.rand(len(indices), device=self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        labels = None if self.labels is None else self._to_device(self.labels[indices]).float()
        return real, labels

    def _latents(self, n: int, labels: torch.Tensor | None):
        z = torch.randn(n, self.G.z_dim, device=self.device)
        if labels is None:
            return z, None
        picks = torch.randint(len(self.labels), (n,), device="cpu")  # labels drawn from the data's distribution
        return z, self._to_device(self.labels[picks]).float()

    def _generate(self, z: torch.Tensor, c: torch.Tensor | None, main: bool = True):
        ws = self.G.mapping(z, c, update_emas=True)
        if self.options.style_mixing_prob > 0:
            ws = self._mix_styles(ws, z, c)
        return (self._synthesis_main if main else self.G.synthesis)(ws), ws

    def _mix_styles(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Style mixing (Karras et al. 2020, StyleGAN2-ADA's loss.py): with probability `style_mixing_prob` the whole
        batch takes its ws from a second latent from a cutoff layer on, the cutoff drawn uniformly in [1, num_ws);
        decided on the device (cutoff = num_ws: no mixing), so nothing is read back. ws: float (N, num_ws, w_dim)."""
        num_ws = ws.shape[1]
        cutoff = torch.randint(1, num_ws, (), device=ws.device)
        mix = torch.rand([], device=ws.device) < self.options.style_mixing_prob
        cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
        mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
        later = torch.arange(num_ws, device=ws.device) >= cutoff  # (num_ws,) bool: the layers taken from `mixed`
        return torch.where(later[None, :, None], mixed, ws)

    # --- the four phases ------------------------------------------------------------------------
    def _g_main(self, c_real) -> torch.Tensor:
        z, c = self._latents(self.local_batch, c_real)
        fake, _ = self._generate(z, c)
        loss = F.softplus(-self._discriminate(fake, c)).mean()
        self._optimise(self.opt_G, loss)
        return loss.detach()

    def _g_reg(self, c_real) -> torch.Tensor:
        n = max(self.local_batch // self.options.pl_batch_shrink, 1)
        z, c = self._latents(n, c_real)
        fake, ws = self._generate(z, c, main=False)
        noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        grad, = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean.copy_(self.pl_mean.lerp(self.world.mean(lengths.mean().detach()), self.options.pl_decay))
        penalty = (lengths - self.pl_mean).square().mean()
        self._optimise(self.opt_G, penalty * self.options.pl_weight * self.options.pl_interval)
        return penalty.detach()

    def _d_main(self, real, c_real) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, c = self._latents(self.local_batch, c_real)
        with torch.no_grad():
            fake, _ = self._generate(z, c)
        logits_fake, logits_real = self._discriminate(fake, c), self._discriminate(real, c_real)
        loss = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        self._optimise(self.opt_D, loss)
        if self.ada is not None:
            self.ada.accumulate(logits_real)
        return loss.detach(), logits_real.detach().mean(), logits_fake.detach().mean()

    def _d_reg(self, real, c_real) -> torch.Tensor:
        real = real.detach().requires_grad_(True)
        grad, = torch.autograd.grad(self._discriminate(real, c_real, main=False).sum(), real, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3]).mean()
        self._optimise(self.opt_D, penalty * (self.options.r1_gamma / 2) * self.options.r1_interval)
        return penalty.detach()

    def _d_requires_grad(self) -> None:
        """D trains, but for its Freeze-D layers (`frozen_d`): they get no gradient, so Adam leaves them as they are."""
        self.D.requires_grad_(True)
        for p in self.frozen_d:
            p.requires_grad_(False)

    def _optimise(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimiser.param_groups for p in group["params"]]
        self.world.average_gradients(params, nan_to_num=True)  # and NaN/∞ → finite, in one flat buffer
        optimiser.step()

    def _update_ema(self) -> None:
        ema_nimg = self.options.ema_kimg * 1000
        if self.options.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * self.options.ema_rampup)
        beta = 0.5 ** (self.options.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():  # p_ema ← p + β·(p_ema − p), i.e. p_ema moves (1 − β) of the way to p: one launch group
            torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1.0 - beta)
            torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    def _regularises(self, step_index: int) -> tuple[bool, bool]:
        """(path length, R1): whether the step with 0-based index `step_index` runs each lazy regularisation."""
        o = self.options
        return (bool(o.pl_weight > 0 and o.pl_interval and step_index % o.pl_interval == 0),
                bool(o.r1_gamma > 0 and o.r1_interval and step_index % o.r1_interval == 0))

    def step(self) -> dict[str, torch.Tensor]:
        """One training step on the next minibatch: Gmain, lazy Greg, Dmain, lazy Dreg, G_ema update, ADA update,
        each under its profiler label (`PHASES`). Returns the step's statistics as 0-d tensors on the training
        device, not yet read back (`float()` them at a tick or log line): `loss_G`, `loss_D`, `logits_real`,
        `logits_fake` (mean D outputs), `pl_penalty` / `r1_penalty` when computed, `augment_p` (a copy of p after
        this step) and `ada_rt` (float64) when p was adjusted. A step whose losses are all NaN or infinite is
        recorded on the device; `check_diverged()` raises for it."""
        o = self.options
        pl_step, r1_step = self._regularises(self.step_index)
        real, c_real = self._real_batch()
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        with record_function("Gmain"):
            stats = {"loss_G": self._g_main(c_real)}
        if pl_step:
            with record_function("Greg"):
                stats["pl_penalty"] = self._g_reg(c_real)
        self.G.requires_grad_(False)
        self._d_requires_grad()
        with record_function("Dmain"):
            stats["loss_D"], stats["logits_real"], stats["logits_fake"] = self._d_main(real, c_real)
        if r1_step:
            with record_function("Dreg"):
                stats["r1_penalty"] = self._d_reg(real, c_real)
        self.D.requires_grad_(False)
        self._record_divergence(stats)
        if self.world.size > 1:  # keep the running w average identical on every rank
            self.G.mapping.w_avg.copy_(self.world.mean(self.G.mapping.w_avg))
        self.step_index += 1
        self.nimg += o.batch
        with record_function("ema"):
            self._update_ema()
        if self.ada is not None:
            with record_function("ada"):
                if (rt := self.ada.update(self.step_index)) is not None:
                    stats["ada_rt"] = rt
        stats["augment_p"] = self.augment.p.detach().clone()
        return stats

    def _record_divergence(self, stats: dict[str, torch.Tensor]) -> None:
        """On the device: when every loss of this step is NaN or infinite and no earlier step was, remember this
        step (1-based) in `diverged_at`."""
        losses = torch.stack([stats[k].float() for k in LOSS_KEYS if k in stats])
        first = (~torch.isfinite(losses)).all() & (self.diverged_at == 0)
        self.diverged_at.masked_fill_(first, self.step_index + 1)

    def check_diverged(self) -> None:
        """Raise TrainingDivergedError when a step so far had all its losses NaN or infinite, naming the first such
        step and its losses; one read back from the device. Call it before saving anything (a tick, a checkpoint,
        the end). With several processes every rank must call it at the same step (an all-reduce): all raise when
        any rank diverged, naming the earliest step."""
        at = self.diverged_at
        if self.world.size > 1:  # every rank's first diverged step, then the earliest (0: none)
            steps = torch.zeros(self.world.size, dtype=torch.float64, device=at.device)
            steps[self.world.rank] = at.double()
            steps = (self.world.mean(steps) * self.world.size).round()
            at = torch.where(steps > 0, steps, math.inf).min()
        self._raise_if_diverged(at.item())

    def _raise_if_diverged(self, step: float) -> None:
        if step == 0 or math.isinf(step):
            return
        step = int(step)
        pl_step, r1_step = self._regularises(step - 1)
        names = ["loss_D", "loss_G"] + ["pl_penalty"] * pl_step + ["r1_penalty"] * r1_step
        raise TrainingDivergedError(
            f"training diverged at step {step}: {', '.join(names)} are all NaN or infinite, so nothing from that "
            "step on was saved; lower the learning rates (g_lr, d_lr) or raise r1_gamma, and check the training "
            "images (blank or corrupt ones), then train again")

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue exactly, as plain tensors and numbers (`torch.load(weights_only=True)`)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "format": "dermsynth-stylegan2-checkpoint-v1",
            "options": json.dumps(asdict(self.options)),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "pl_mean": self.pl_mean.detach().cpu(), "step": self.step_index, "nimg": self.nimg,
            "batches": self.batches.state(), "rng": rng,
            "augment_p": float(self.augment.p), "ada": self.ada.state() if self.ada else {},
        }
        if self.fingerprint is not None:
            state["fingerprint"] = json.dumps(self.fingerprint, sort_keys=True)
        return state

    def save(self, path: str | Path) -> None:
        """Write `state()` to `path` atomically (a temporary name unique to this process, then rename).
        Raises OutputError (one line) when the disk is full or not writable, TrainingDivergedError when one of this
        process's steps diverged (its own record; with several processes call `check_diverged()` on every rank
        first, so that all stop together)."""
        self._raise_if_diverged(self.diverged_at.item())
        save_torch(path, self.state())

    def written_with_same_options(self, path: str | Path) -> bool:
        """Whether the checkpoint at `path` was written with this trainer's options (so it may be resumed)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return json.loads(state["options"]) == json.loads(json.dumps(asdict(self.options)))

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint `save()` wrote. Raises ValueError for another format or other options."""
        self.load_state(torch.load(path, map_location=self.device, weights_only=True), path)

    def load_state(self, state: dict, path: str | Path = "the checkpoint") -> None:
        """Continue from an already loaded `state()` (read from `path`). Raises ValueError for another format or
        other options."""
        if state.get("format") != "dermsynth-stylegan2-checkpoint-v1":
            raise ValueError(f"{path} is not a dermsynth StyleGAN2 checkpoint")
        if json.loads(state["options"]) != json.loads(json.dumps(asdict(self.options))):
            raise ValueError(f"{path} was written with other training options; resume with the same config")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        _load_optimiser(self.opt_G, state["opt_G"], self.device)
        _load_optimiser(self.opt_D, state["opt_D"], self.device)
        self.pl_mean.copy_(state["pl_mean"])
        self.step_index, self.nimg = int(state["step"]), int(state["nimg"])
        self.diverged_at.zero_()  # a checkpoint never holds a diverged step (`check_diverged` runs before saving)
        self.batches.restore(state["batches"])
        self.augment.p.fill_(float(state["augment_p"]))
        if self.ada is not None:
            self.ada.restore(state["ada"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        if self.world.size > 1:  # rank 0's saved stream on every rank would repeat latents: re-split
            torch.manual_seed((self.options.seed * 1_000_003 + self.world.rank) * 7919 + self.step_index)
