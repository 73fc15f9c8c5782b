"""Perceptual path length (Karras et al. 2019/2020) in W: how much the image changes, in LPIPS-VGG
distance, for a tiny step ε along the line between two latents, scaled by 1/ε².

Endpoint sampling (t = 0) as in StyleGAN2's "ppl_wend", ε = 1e-4, the same noise at both ends, and
the mean over samples between the 1st and 99th percentiles. Images larger than 256² are
area-downsampled to 256² first (as in the reference protocol); no face-style crop is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..options import Settings
from .registry import register_metric


PPL_EPSILON = 1e-4
"""The step along the path (StyleGAN's ε): a constant of the method."""
PPL_SAMPLING = "end"
"""Where on the path the step is taken: "end" (t = 0, StyleGAN2's `ppl_wend`) or "full" (t ~ U[0, 1])."""


@dataclass(frozen=True)
class PplOptions(Settings):
    """Perceptual path length (Karras et al. 2019, StyleGAN, section 3.2), from the `evaluation` section: `samples`
    paths (`ppl_samples`), `batch` paths per forward pass, `seed` of the latents. Method constants: step `epsilon`
    and `sampling` "end" (t = 0; or "full"), as StyleGAN2's evaluation."""

    schema_section = "evaluation"
    schema_keys = {"samples": "ppl_samples"}
    method_constants = ("epsilon", "sampling")

    samples: int
    batch: int
    seed: int
    epsilon: float = PPL_EPSILON
    sampling: str = PPL_SAMPLING


def perceptual_path_length(G, lpips, *, samples: int, batch: int, seed: int, epsilon: float = PPL_EPSILON,
                           sampling: str = PPL_SAMPLING, device: str | torch.device = "cpu") -> dict:
    """Perceptual path length in W (Karras et al. 2019, StyleGAN §4.1; path end points as StyleGAN2 reports it):
    `samples` pairs of w from random z (a conditional G: one random class per pair), each at t (`sampling` "end":
    t = 0; "full": t ~ U[0, 1]) and t + `epsilon` on the lerp between them; distance = LPIPS(images) / ε²
    (images above 256² average-pooled to 256²), the values outside the 1st–99th percentiles dropped. `samples`
    (`evaluation.ppl_samples`), `batch` paths per forward pass and the `seed` of z (`evaluation.batch`, `.seed`) have
    no default: the caller passes them (`PplOptions`). Returns {ppl (the mean), samples, kept, epsilon, space,
    sampling}. Raises ValueError for another `sampling`."""
    with torch.no_grad():  # a context, not a decorator: mutation testing (docs/testing.md) skips decorated functions
        return _perceptual_path_length(G, lpips, samples, epsilon, sampling, batch, seed, device)


def _perceptual_path_length(G, lpips, samples, epsilon, sampling, batch, seed, device) -> dict:
    if sampling not in ("end", "full"):
        raise ValueError("sampling is 'end' (t = 0) or 'full' (t uniform in [0, 1])")
    generator = torch.Generator().manual_seed(seed)
    G, lpips = G.to(device), lpips.to(device)
    distances = []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        z = torch.randn(2 * n, G.z_dim, generator=generator).to(device)
        c = None
        if G.c_dim > 0:  # both ends of a path share a randomly drawn class
            classes = torch.randint(G.c_dim, (n,), generator=generator)
            c = F.one_hot(classes, G.c_dim).float().to(device)
        t = torch.zeros(n) if sampling == "end" else torch.rand(n, generator=generator)
        t = t.to(device)[:, None, None]
        w0, w1 = G.mapping(z[:n], c), G.mapping(z[n:], c)
        images = G.synthesis(torch.cat([w0.lerp(w1, t), w0.lerp(w1, t + epsilon)]), noise_mode="const")
        if images.shape[-1] > 256:
            images = F.adaptive_avg_pool2d(images, 256)
        distances.append((lpips(images[:n], images[n:]).flatten() / epsilon ** 2).double().cpu())
    values = torch.cat(distances).numpy()
    low, high = np.percentile(values, [1, 99], method="lower"), np.percentile(values, [1, 99], method="higher")
    kept = values[(values >= low[0]) & (values <= high[1])]
    return {"ppl": float(kept.mean()), "samples": samples, "kept": int(len(kept)), "epsilon": epsilon,
            "space": "w", "sampling": sampling}


@register_metric("ppl", options=PplOptions, spaces={"lpips_vgg": ("ppl",)}, kind="generator")
def ppl_metric(G, lpips, options: PplOptions, device: str | torch.device = "cpu") -> dict:
    """Perceptual path length of generator `G` in W, with LPIPS model `lpips` (the details dict; `ppl`: the value)."""
    return perceptual_path_length(G, lpips, samples=options.samples, epsilon=options.epsilon,
                                  sampling=options.sampling, batch=options.batch, seed=options.seed, device=device)
