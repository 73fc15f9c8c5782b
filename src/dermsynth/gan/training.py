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

A step whose losses are all NaN or infinite stops the run at once (`TrainingDivergedError`): nothing of that
step is saved.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DermsynthError
from ..outputs import save_torch
from .augment import AdaptiveP, AugmentPipe
from .distributed import World
from .interop.checkpoint import initialise
from .networks import Discriminator, Generator
from .options import TrainingOptions
from .ops import fused


class TrainingDivergedError(DermsynthError):
    """Every loss of a training step is NaN or infinite: the networks have diverged and training cannot go on."""


LOSS_KEYS = ("loss_G", "loss_D", "pl_penalty", "r1_penalty")


def diverged_losses(stats: dict) -> list[str]:
    """The names of the losses in `stats` (`LOSS_KEYS`) when every one of them is NaN or infinite, else []."""
    losses = {k: stats[k] for k in LOSS_KEYS if k in stats}
    if losses and not any(math.isfinite(v) for v in losses.values()):
        return sorted(losses)
    return []


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


def _adam(params, lr: float, betas: tuple[float, float], interval: int) -> torch.optim.Adam:
    ratio = interval / (interval + 1) if interval else 1.0  # lazy regularisation
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=1e-8)


class GanTrainer:
    """One StyleGAN2 training run in memory: G, D, G_ema, their optimisers, ADA and the data order; `step()` runs
    one minibatch, `state()`/`save()`/`load()` checkpoint everything (see the module docstring)."""

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
        self.opt_G = _adam(self.G.parameters(), options.g_lr, options.betas, options.pl_interval)
        self.opt_D = _adam(self.D.parameters(), options.d_lr, options.betas, options.r1_interval)
        self.batches = ResumableBatches(len(images), options.batch, options.seed)
        self.pl_mean = torch.zeros([], device=self.device)
        self.step_index, self.nimg = 0, 0
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

    def _discriminate(self, images: torch.Tensor, c: torch.Tensor | None, main: bool = True) -> torch.Tensor:
        return (self._D_main if main else self.D)(self.augment(images), c)

    # --- data and latents -----------------------------------------------------------------------
    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices = self.batches.next()  # the global batch; this rank takes its slice
        indices = indices[self.world.rank * self.local_batch:(self.world.rank + 1) * self.local_batch]
        real = self.images[indices].to(self.device).float() / 127.5 - 1
        if self.options.mirror:
            flip = torch.rand(len(indices), device=self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        labels = None if self.labels is None else self.labels[indices].to(self.device).float()
        return real, labels

    def _latents(self, n: int, labels: torch.Tensor | None):
        z = torch.randn(n, self.G.z_dim, device=self.device)
        if labels is None:
            return z, None
        picks = torch.randint(len(self.labels), (n,), device="cpu")  # labels drawn from the data's distribution
        return z, self.labels[picks].to(self.device).float()

    def _generate(self, z: torch.Tensor, c: torch.Tensor | None, main: bool = True):
        ws = self.G.mapping(z, c, update_emas=True)
        if self.options.style_mixing_prob > 0 and torch.rand([]).item() < self.options.style_mixing_prob:
            cutoff = int(torch.randint(1, ws.shape[1], ()).item())
            mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            ws = torch.cat([ws[:, :cutoff], mixed[:, cutoff:]], dim=1)
        return (self._synthesis_main if main else self.G.synthesis)(ws), ws

    # --- the four phases ------------------------------------------------------------------------
    def _g_main(self, c_real) -> float:
        z, c = self._latents(self.local_batch, c_real)
        fake, _ = self._generate(z, c)
        loss = F.softplus(-self._discriminate(fake, c)).mean()
        self._optimise(self.opt_G, loss)
        return loss.item()

    def _g_reg(self, c_real) -> float:
        n = max(self.local_batch // self.options.pl_batch_shrink, 1)
        z, c = self._latents(n, c_real)
        fake, ws = self._generate(z, c, main=False)
        noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        grad, = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean.copy_(self.pl_mean.lerp(self.world.mean(lengths.mean().detach()), self.options.pl_decay))
        penalty = (lengths - self.pl_mean).square().mean()
        self._optimise(self.opt_G, penalty * self.options.pl_weight * self.options.pl_interval)
        return penalty.item()

    def _d_main(self, real, c_real) -> tuple[float, float, float]:
        z, c = self._latents(self.local_batch, c_real)
        with torch.no_grad():
            fake, _ = self._generate(z, c)
        logits_fake, logits_real = self._discriminate(fake, c), self._discriminate(real, c_real)
        loss = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        self._optimise(self.opt_D, loss)
        if self.ada is not None:
            self.ada.accumulate(logits_real)
        return loss.item(), logits_real.mean().item(), logits_fake.mean().item()

    def _d_reg(self, real, c_real) -> float:
        real = real.detach().requires_grad_(True)
        grad, = torch.autograd.grad(self._discriminate(real, c_real, main=False).sum(), real, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3]).mean()
        self._optimise(self.opt_D, penalty * (self.options.r1_gamma / 2) * self.options.r1_interval)
        return penalty.item()

    def _d_requires_grad(self) -> None:
        """D trains, but for its Freeze-D layers (`frozen_d`): they get no gradient, so Adam leaves them as they are."""
        self.D.requires_grad_(True)
        for p in self.frozen_d:
            p.requires_grad_(False)

    def _optimise(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimiser.param_groups for p in group["params"]]
        self.world.average_gradients(params)
        for p in params:  # a rare overflow in reduced precision must not poison the weights
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        optimiser.step()

    def _update_ema(self) -> None:
        ema_nimg = self.options.ema_kimg * 1000
        if self.options.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * self.options.ema_rampup)
        beta = 0.5 ** (self.options.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def step(self) -> dict:
        """One training step on the next minibatch: Gmain, lazy Greg, Dmain, lazy Dreg, G_ema update, ADA update.
        Returns scalar statistics (losses, penalties when computed, logits, `augment_p`, `ada_rt` when updated).
        Raises TrainingDivergedError (counters unchanged) when every loss of the step is NaN or infinite."""
        o = self.options
        real, c_real = self._real_batch()
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        stats = {"loss_G": self._g_main(c_real)}
        if o.pl_weight > 0 and o.pl_interval and self.step_index % o.pl_interval == 0:
            stats["pl_penalty"] = self._g_reg(c_real)
        self.G.requires_grad_(False)
        self._d_requires_grad()
        stats["loss_D"], stats["logits_real"], stats["logits_fake"] = self._d_main(real, c_real)
        if o.r1_gamma > 0 and o.r1_interval and self.step_index % o.r1_interval == 0:
            stats["r1_penalty"] = self._d_reg(real, c_real)
        self.D.requires_grad_(False)
        diverged = diverged_losses(stats)
        if diverged:
            raise TrainingDivergedError(
                f"training diverged at step {self.step_index + 1}: {', '.join(diverged)} are all NaN or infinite, "
                "so nothing of this step was saved; lower the learning rates (g_lr, d_lr) or raise r1_gamma, and "
                "check the training images (blank or corrupt ones), then train again")
        if self.world.size > 1:  # keep the running w average identical on every rank
            self.G.mapping.w_avg.copy_(self.world.mean(self.G.mapping.w_avg))
        self.step_index += 1
        self.nimg += o.batch
        self._update_ema()
        if self.ada is not None and (rt := self.ada.update(self.step_index)) is not None:
            stats["ada_rt"] = rt
        stats["augment_p"] = float(self.augment.p)
        return stats

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
        Raises OutputError (one line) when the disk is full or not writable."""
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
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.pl_mean.copy_(state["pl_mean"])
        self.step_index, self.nimg = int(state["step"]), int(state["nimg"])
        self.batches.restore(state["batches"])
        self.augment.p.fill_(float(state["augment_p"]))
        if self.ada is not None:
            self.ada.restore(state["ada"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        if self.world.size > 1:  # rank 0's saved stream on every rank would repeat latents: re-split
            torch.manual_seed((self.options.seed * 1_000_003 + self.world.rank) * 7919 + self.step_index)
