"""Training e4e and HyperStyle on a generator's training images, inverting images, reporting reconstruction.

Both trainings are resumable and deterministic: each step's batch and latent draws come from a
generator seeded with (seed, step), so a run killed and resumed from its checkpoint sees the same
data as an uninterrupted one. The generator stays frozen throughout.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as msssim

from ..fingerprint import StateMismatchError, differences
from ..gan.pixels import to_uint8
from ..metrics.extractors import lpips_distance
from ..options import Settings
from ..outputs import save_torch
from ..progress import Progress
from .encoders import (E4eEncoder, HyperNetwork, LatentDiscriminator, accumulate, deltas_from_factors, hyper_layers,
                       ws_resolutions)


@dataclass
class E4eOptions(Settings):
    """e4e encoder training (Tov et al., 2021, "Designing an Encoder for StyleGAN Image Manipulation"), mirroring
    `latent.e4e` (build it with `E4eOptions.from_section`; the schema holds every default, the paper's).

    `backbone` — a timm model with features_only; `input_resolution` — encoder input side, px; `steps`, `batch`,
    Adam `lr`; loss weights `l2_weight`, `lpips_weight` (LPIPS-Alex), `offset_weight` (the Δ_i regulariser),
    `discriminator_weight` (latent discriminator; 0 = off) with its `discriminator_lr`, R1 weight `r1_gamma` every
    `r1_interval` steps; progressive training: the first offset switched on at step `progressive_start`, another
    every `progressive_every` steps; `checkpoint_steps`, `log_steps`; `pretrained` — ImageNet weights from the
    weights cache; `seed`."""

    schema_section = "latent.e4e"

    backbone: str
    input_resolution: int
    steps: int
    batch: int
    lr: float
    l2_weight: float
    lpips_weight: float
    offset_weight: float
    discriminator_weight: float
    discriminator_lr: float
    r1_gamma: float
    r1_interval: int
    progressive_start: int
    progressive_every: int
    checkpoint_steps: int
    log_steps: int
    pretrained: bool
    seed: int


@dataclass
class HyperStyleOptions(Settings):
    """HyperStyle hypernetwork training on top of an e4e encoder (Alaluf et al., 2022, "HyperStyle: StyleGAN
    Inversion with HyperNetworks for Real Image Editing"), mirroring `latent.hyperstyle` (build it with
    `HyperStyleOptions.from_section`; the schema holds every default).

    `backbone`, `input_resolution` (px), `steps`, `batch`, Adam `lr` as for e4e; `iterations` — refinement
    iterations (training and inversion); `rank` — of each iteration's kernel offset a·bᵀ; `layer_ranges` — whose
    3×3 convolutions get offsets (all | coarse | middle | fine); loss weights `l2_weight`, `lpips_weight`;
    `checkpoint_steps`, `log_steps`, `pretrained`, `seed`."""

    schema_section = "latent.hyperstyle"

    backbone: str
    input_resolution: int
    steps: int
    batch: int
    lr: float
    iterations: int
    rank: int
    layer_ranges: list
    l2_weight: float
    lpips_weight: float
    checkpoint_steps: int
    log_steps: int
    pretrained: bool
    seed: int


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU `torch.Generator` for training step `step` of a run seeded `seed`: each step draws the same numbers
    after a resume as in an uninterrupted run, without touching the global random state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, R, R) in 0–255 → float32 in [-1, 1], the generator's output range
    (inverse of `gan.pixels.to_uint8` up to rounding)."""
    return images.float() / 127.5 - 1


def progressive_offsets(options: E4eOptions, step: int, num_ws: int) -> int:
    """How many offsets Δ_1… are switched on at `step` (e4e's progressive training)."""
    if step < options.progressive_start:
        return 0
    return min(num_ws - 1, 1 + (step - options.progressive_start) // max(1, options.progressive_every))


class StaleCheckpointError(StateMismatchError, ValueError):
    """A resume checkpoint was written by another run (other options, generator or data)."""


def _save(path: Path, payload: dict) -> None:
    save_torch(path, payload)  # a unique temporary name, renamed when complete: a kill leaves no half file


@contextlib.contextmanager
def seeded(seed: int):
    """Draw from the CPU generator seeded with `seed` inside the block, then restore the global random state:
    a builder's initialisation is reproducible without reseeding anything outside it."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


# Options that only say how long to train or how often to write: a checkpoint resumes across them.
SCHEDULE_ONLY = ("steps", "checkpoint_steps", "log_steps")


def resume_options(options) -> dict:
    """The options a checkpoint must have been written with to be resumed (all but SCHEDULE_ONLY)."""
    return {k: v for k, v in asdict(options).items() if k not in SCHEDULE_ONLY}


def _load_resume(path: str | Path) -> dict | None:
    """A resume checkpoint's content, or None when it is not a readable checkpoint (a truncated file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 — unreadable in any way: not resumable, set aside by the caller
        return None
    return state if isinstance(state, dict) else None


def checkpoint_differences(path: str | Path, options, fingerprint: dict | None = None) -> list[str]:
    """Names of the options whose values differ between the checkpoint at `path` and `options`
    ('options' itself when the checkpoint records none; 'unreadable' for a truncated file), then, when
    `fingerprint` (generator and data of this run) is given, each differing aspect of the recorded one."""
    state = _load_resume(path)
    if state is None:
        return ["unreadable"]
    saved, wanted = state.get("options"), json.loads(json.dumps(resume_options(options)))
    if not isinstance(saved, dict):
        return ["options"]
    found = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if fingerprint is not None and not found:
        found = differences(state.get("fingerprint"), fingerprint)
    return found


def _resume(path: Path, modules: dict, optimizers: dict, options, fingerprint: dict | None = None) -> int:
    """The step to start from: 0 without a checkpoint, else the checkpoint's, after loading its states.

    Raises StaleCheckpointError (a ValueError) when the checkpoint was written with other options or, with
    `fingerprint`, for another generator or other data (like the GAN trainer)."""
    if not path.exists():
        return 0
    found = checkpoint_differences(path, options, fingerprint)
    if found:
        what = "by another run" if any(":" in f for f in found) else "with other training options"
        raise StaleCheckpointError(f"{path} was written {what} ({', '.join(found)}); resume with the same config, "
                                   "generator and data, or delete the checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, module in {**modules, **optimizers}.items():
        module.load_state_dict(state[name])
    print(f"resuming from {path} at step {state['step']}", flush=True)
    return int(state["step"])


def build_e4e(G, options: E4eOptions, weights_cache=None) -> E4eEncoder:
    """An e4e encoder for `G`, initialised from `options.seed` (the global random state is left alone)."""
    with seeded(options.seed):
        return _new_e4e(G, options, weights_cache)


def _new_e4e(G, options: E4eOptions, weights_cache=None) -> E4eEncoder:
    encoder = E4eEncoder(G.num_ws, G.w_dim, ws_resolutions(G), options.input_resolution, options.backbone,
                         weights_cache, options.pretrained)
    encoder.w_avg.copy_(G.mapping.w_avg.detach().cpu())
    return encoder


def train_e4e(G, images, options: E4eOptions, lpips, checkpoint: str | Path, device="cpu",
              weights_cache=None, fingerprint: dict | None = None) -> tuple[E4eEncoder, list[dict]]:
    """Train an e4e encoder on `images` (indexable by a LongTensor of positions → uint8 batch), resuming from
    `checkpoint` when it was written with the same options (and `fingerprint`: generator and data), which it
    records. Raises StaleCheckpointError for a checkpoint of another run."""
    G = G.to(device).eval().requires_grad_(False)
    lpips = lpips.to(device).eval().requires_grad_(False)
    with seeded(options.seed):  # the encoder, then the latent discriminator, from one seeded stream
        encoder = _new_e4e(G, options, weights_cache).to(device)
        discriminator = LatentDiscriminator(G.w_dim).to(device)
    opt_e = torch.optim.Adam(encoder.parameters(), lr=options.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=options.discriminator_lr, betas=(0.9, 0.999))
    checkpoint = Path(checkpoint)
    modules, optimizers = {"encoder": encoder, "discriminator": discriminator}, {"opt_e": opt_e, "opt_d": opt_d}
    start = _resume(checkpoint, modules, optimizers, options, fingerprint)
    history, progress = [], Progress(options.steps - start, "train e4e", unit="step")
    for step in range(start, options.steps):
        generator = step_generator(options.seed, step)
        encoder.active_offsets.fill_(progressive_offsets(options, step, G.num_ws))
        real = to_signed(images[torch.randint(len(images), (options.batch,), generator=generator)]).to(device)
        active = int(encoder.active_offsets) + 1
        ws, offsets = encoder(real)
        d_loss = torch.zeros(())
        if options.discriminator_weight > 0:
            z = torch.randn(options.batch, G.z_dim, generator=generator).to(device)
            d_loss = _discriminator_step(G, discriminator, opt_d, ws[:, :active].detach().flatten(0, 1), z, step,
                                         options)
        reconstruction = G.synthesis(ws, noise_mode="const")
        l2 = F.mse_loss(reconstruction, real)
        perceptual = lpips(reconstruction, real).mean()
        offset_norm = offsets.norm(dim=2).sum(dim=1).mean()
        adversarial = F.softplus(-discriminator(ws[:, :active].flatten(0, 1))).mean() \
            if options.discriminator_weight > 0 else torch.zeros((), device=device)
        loss = (options.l2_weight * l2 + options.lpips_weight * perceptual + options.offset_weight * offset_norm
                + options.discriminator_weight * adversarial)
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        if step % options.log_steps == 0 or step == options.steps - 1:
            history.append({"step": step, "l2": l2.item(), "lpips": perceptual.item(), "offset_norm": offset_norm.item(),
                            "adversarial": adversarial.item(), "discriminator": d_loss.item(), "active_ws": active})
        if (step + 1) % options.checkpoint_steps == 0 and step + 1 < options.steps:
            _save(checkpoint, {**{k: m.state_dict() for k, m in {**modules, **optimizers}.items()}, "step": step + 1,
                               "options": json.loads(json.dumps(resume_options(options))),
                               "fingerprint": fingerprint})
        progress.update()
    progress.close()
    encoder.active_offsets.fill_(progressive_offsets(options, options.steps - 1, G.num_ws))
    return encoder.eval(), history


def _discriminator_step(G, discriminator, opt_d, fake_w, z, step, options) -> torch.Tensor:
    """One latent-discriminator update: mapping-network w's are real, the encoder's (detached) are fake."""
    with torch.no_grad():
        real_w = G.mapping(z, None if G.c_dim == 0 else torch.zeros(len(z), G.c_dim, device=z.device))[:, 0]
    loss = F.softplus(discriminator(fake_w)).mean() + F.softplus(-discriminator(real_w)).mean()
    if step % options.r1_interval == 0:
        real_w = real_w.detach().requires_grad_(True)
        gradient, = torch.autograd.grad(discriminator(real_w).sum(), real_w, create_graph=True)
        loss = loss + options.r1_gamma / 2 * gradient.square().sum(dim=1).mean() * options.r1_interval
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return loss.detach()


def build_hypernetwork(G, options: HyperStyleOptions, weights_cache=None) -> HyperNetwork:
    """A HyperStyle hypernetwork for `G`, initialised from `options.seed` (the global random state is left
    alone). Raises ValueError when `G` has no 3×3 convolution in `options.layer_ranges`."""
    layers = hyper_layers(G, list(options.layer_ranges))
    if not layers:
        raise ValueError(f"the generator has no 3×3 convolutions in layer ranges {options.layer_ranges}")
    with seeded(options.seed):
        return HyperNetwork(layers, options.input_resolution, options.backbone, options.rank, weights_cache,
                            options.pretrained)


def train_hyperstyle(G, encoder: E4eEncoder, images, options: HyperStyleOptions, lpips, checkpoint: str | Path,
                     device="cpu", weights_cache=None,
                     fingerprint: dict | None = None) -> tuple[HyperNetwork, list[dict]]:
    """Train the hypernetwork on top of a frozen W-encoder; each iteration's loss is back-propagated
    on its own (earlier offsets and reconstructions are inputs, not part of the graph), one optimiser
    step per batch, as in HyperStyle. Resumes from `checkpoint` like `train_e4e` (same options and
    `fingerprint`, else StaleCheckpointError)."""
    G = G.to(device).eval().requires_grad_(False)
    encoder = encoder.to(device).eval().requires_grad_(False)
    lpips = lpips.to(device).eval().requires_grad_(False)
    hyper = build_hypernetwork(G, options, weights_cache).to(device)
    optimizer = torch.optim.Adam(hyper.parameters(), lr=options.lr)
    checkpoint = Path(checkpoint)
    start = _resume(checkpoint, {"hypernetwork": hyper}, {"optimizer": optimizer}, options, fingerprint)
    history, progress = [], Progress(options.steps - start, "train hyperstyle", unit="step")
    for step in range(start, options.steps):
        generator = step_generator(options.seed, step)
        real = to_signed(images[torch.randint(len(images), (options.batch,), generator=generator)]).to(device)
        with torch.no_grad():
            ws = encoder(real)[0]
            previous = G.synthesis(ws, noise_mode="const")
        optimizer.zero_grad(set_to_none=True)
        factors, losses = None, []
        for _ in range(options.iterations):
            current = accumulate(factors, hyper(real, previous))
            reconstruction = G.synthesis(ws, noise_mode="const", weight_deltas=deltas_from_factors(current))
            l2 = F.mse_loss(reconstruction, real)
            loss = options.l2_weight * l2 + options.lpips_weight * lpips(reconstruction, real).mean()
            loss.backward()
            losses.append(l2.item())
            factors = {name: (a.detach(), b.detach()) for name, (a, b) in current.items()}
            previous = reconstruction.detach()
        optimizer.step()
        if step % options.log_steps == 0 or step == options.steps - 1:
            history.append({"step": step, "l2_per_iteration": losses})
        if (step + 1) % options.checkpoint_steps == 0 and step + 1 < options.steps:
            _save(checkpoint, {"hypernetwork": hyper.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                               "options": json.loads(json.dumps(resume_options(options))),
                               "fingerprint": fingerprint})
        progress.update()
    progress.close()
    return hyper.eval(), history


@torch.no_grad()
def invert(G, encoder: E4eEncoder, images: torch.Tensor, hyper: HyperNetwork | None, iterations: int,
           device="cpu") -> dict:
    """Invert uint8 images (N, 3, R, R): ws (N, num_ws, w_dim) from the encoder, then `iterations` HyperStyle
    refinements by `hyper` (`latent.hyperstyle.iterations`; none without a hypernetwork). Returns ws, factors
    {layer: (A, B)} (Δ = A·Bᵀ) and the reconstructions (uint8) after each stage."""
    G, encoder = G.to(device).eval(), encoder.to(device).eval()
    real = to_signed(images).to(device)
    ws = encoder(real)[0]
    reconstruction = G.synthesis(ws, noise_mode="const")
    stages, factors = [to_uint8(reconstruction)], None
    if hyper is not None:
        hyper = hyper.to(device).eval()
        for _ in range(iterations):
            factors = accumulate(factors, hyper(real, reconstruction))
            reconstruction = G.synthesis(ws, noise_mode="const", weight_deltas=deltas_from_factors(factors))
            stages.append(to_uint8(reconstruction))
    return {"ws": ws.cpu(), "stages": stages,
            "factors": None if factors is None else {k: (a.cpu(), b.cpu()) for k, (a, b) in factors.items()}}


def ms_ssim(first: torch.Tensor, second: torch.Tensor) -> tuple[np.ndarray, int]:
    """Per-image five-scale MS-SSIM of uint8 batches (pytorch-msssim). The standard 11-pixel window
    needs images above 160²; smaller images use the largest odd window that fits the coarsest scale
    (3 pixels at 64²); at 32² and below it is undefined (NaN). Returns the values and the window."""
    side = min(first.shape[-2:])
    window = 11
    while window > 3 and (window - 1) * 16 >= side:
        window -= 2
    if (window - 1) * 16 >= side:  # four halvings leave less than the smallest window: undefined
        return np.full(len(first), np.nan), None
    values = msssim(first.float(), second.float(), data_range=255, size_average=False, win_size=window)
    return values.numpy(), window


def reconstruction_report(targets: torch.Tensor, reconstructions: torch.Tensor, lpips_alex) -> dict:
    """Mean L2 (MSE on [−1, 1] pixels), LPIPS-Alex and MS-SSIM between uint8 targets and reconstructions."""
    l2 = (to_signed(targets) - to_signed(reconstructions)).square().mean(dim=[1, 2, 3]).numpy()
    perceptual = lpips_distance(lpips_alex, targets, reconstructions)
    similarity, window = ms_ssim(targets, reconstructions)
    return {"images": len(targets), "l2": float(l2.mean()), "lpips_alex": float(perceptual.mean()),
            "ms_ssim": float(similarity.mean()), "ms_ssim_window": window}

