"""Optimisation-based projection of real images into a generator's W or W+ space, many images at once.

The recipe of the StyleGAN2 paper's projector (Karras et al. 2020, appendix D), written for batches:

* start every image at the mean w (per class for a conditional generator), σ_w = the RMS distance of
  sampled w's from that mean;
* optimise w (one per image in W, one per layer in W+) and every layer's noise map with Adam
  (β 0.9, 0.999); learning rate ramps up over the first 5 % of steps and down with a cosine over the
  last 25 %; Gaussian noise of strength σ_w · 0.05 · max(0, 1 − t/0.75)² is added to w so the search
  starts broad and narrows;
* loss = LPIPS distance (VGG16 trunk) between the generated and target images at ≤ 256², plus
  1e5 × a noise regulariser: the squared autocorrelation of each noise map at shifts of one pixel,
  at every scale of a 2× pyramid down to 8², which keeps the noise from encoding the image; noise
  maps are renormalised to zero mean, unit variance after each step.

Each image's optimisation is independent of the others in its batch (per-image losses are summed,
so gradients do not mix), and the batch is seeded, so results do not depend on batch composition
beyond floating-point order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..options import Settings
from ..progress import Progress


@dataclass
class ProjectionOptions(Settings):
    """The projector's settings, mirroring `latent.projection` and `classifiers.isic.edge` (their `steps`, `space`,
    `w_avg_samples`, `seed`; build it with `ProjectionOptions.from_section`, the schema holds the defaults):
    `steps` — Adam steps per image; `space` — `w` (one w per image) or `w+` (one per layer); `w_avg_samples` —
    mapped z's for the mean w and σ_w; `seed` — of those z's and of the initial noise maps.

    Method constants (the StyleGAN2 projector's recipe, Karras et al. 2020, appendix D; see the module docstring):
    peak learning rate `initial_lr`, ramp-up over the first `lr_rampup` and cosine ramp-down over the last
    `lr_rampdown` of the steps; w noise σ_w · `initial_noise_factor`, gone after `noise_ramp_length` of the steps;
    noise-regulariser weight `regularize_noise_weight`."""

    schema_section = ("latent.projection", "classifiers.isic.edge")
    method_constants = ("initial_lr", "lr_rampup", "lr_rampdown", "initial_noise_factor", "noise_ramp_length",
                        "regularize_noise_weight")

    steps: int
    space: str
    w_avg_samples: int
    seed: int
    initial_lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5


def w_statistics(G, class_index: int | None, samples: int, seed: int, device) -> tuple[torch.Tensor, float]:
    """Mean w and σ_w (RMS distance to the mean) from `samples` mapped z's."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=generator).to(device)
    c = None
    if G.c_dim > 0:
        c = torch.zeros(samples, G.c_dim, device=device)
        c[:, class_index] = 1
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0]
    mean = w.mean(dim=0)
    return mean, float((w - mean).square().sum(dim=1).mean().sqrt())


def noise_regularization(noise_maps: list[torch.Tensor]) -> torch.Tensor:
    """Per image: Σ over maps and pyramid levels of the squared mean products with 1-pixel shifts."""
    total = 0
    for noise in noise_maps:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean(dim=[1, 2, 3]).square()
            total = total + (noise * noise.roll(1, dims=2)).mean(dim=[1, 2, 3]).square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


def learning_rate(options: ProjectionOptions, t: float) -> float:
    """The projector's learning rate at progress t ∈ [0, 1] (step / steps): `initial_lr` with a linear ramp-up over
    the first `lr_rampup` and a cosine ramp-down over the last `lr_rampdown` of the steps (Karras et al. 2020,
    StyleGAN2 Appendix D)."""
    ramp = min(1.0, (1.0 - t) / options.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return options.initial_lr * ramp * min(1.0, t / options.lr_rampup)


def _for_loss(images: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(images, 256) if images.shape[-1] > 256 else images


def project(G, targets: torch.Tensor, lpips, options: ProjectionOptions, class_indices: list[int] | None = None,
            device="cpu", label: str = "project", on_step=None) -> dict:
    """Project uint8 targets (N, 3, R, R). Returns ws (N, num_ws, w_dim), noise maps, and the loss curve.

    `on_step`, when given, is called after every step with (steps done, options.steps); an exception it raises
    ends the projection there (the review page's cancel: dermsynth.review.jobs)."""
    G = G.to(device).eval().requires_grad_(False)
    lpips = lpips.to(device).eval().requires_grad_(False)
    if options.space not in ("w", "w+"):
        raise ValueError("space is 'w' or 'w+'")
    n = len(targets)
    target = _for_loss(targets.to(device).float() / 127.5 - 1)
    classes = class_indices if G.c_dim > 0 else [None] * n
    stats = {c: w_statistics(G, c, options.w_avg_samples, options.seed, device) for c in sorted(set(classes), key=str)}
    w_start = torch.stack([stats[c][0] for c in classes])
    w_std = torch.tensor([stats[c][1] for c in classes], device=device)
    layers = G.num_ws if options.space == "w+" else 1
    w_opt = w_start[:, None, :].repeat(1, layers, 1).clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(options.seed)
    noise_maps = [torch.randn(n, 1, r, r, generator=generator).to(device).requires_grad_(True)
                  for r in G.synthesis.noise_resolutions()]
    optimizer = torch.optim.Adam([w_opt] + noise_maps, betas=(0.9, 0.999), lr=options.initial_lr)
    progress = Progress(options.steps, label, unit="step")
    curve = []
    for step in range(options.steps):
        t = step / options.steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(options, t)
        strength = w_std * options.initial_noise_factor * max(0.0, 1.0 - t / options.noise_ramp_length) ** 2
        w_noise = torch.randn(w_opt.shape, generator=generator).to(device) * strength[:, None, None]
        ws = (w_opt + w_noise).expand(-1, G.num_ws, -1) if layers == 1 else w_opt + w_noise
        images = _for_loss(G.synthesis(ws, noise=noise_maps))
        distance = lpips(images, target).flatten()
        loss = distance + options.regularize_noise_weight * noise_regularization(noise_maps)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # per-image losses: images do not influence each other's gradients
        optimizer.step()
        with torch.no_grad():
            for noise in noise_maps:
                noise -= noise.mean(dim=[1, 2, 3], keepdim=True)
                noise /= noise.square().mean(dim=[1, 2, 3], keepdim=True).sqrt()
        curve.append(distance.detach().cpu())
        progress.update()
        if on_step is not None:
            on_step(step + 1, options.steps)
    progress.close()
    ws = w_opt.detach().expand(-1, G.num_ws, -1).clone() if layers == 1 else w_opt.detach().clone()
    return {"ws": ws.cpu(), "noise": [m.detach().cpu() for m in noise_maps], "lpips_curve": torch.stack(curve)}
