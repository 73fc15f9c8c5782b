"""Generator output as pictures: the one conversion from G's value range to 8-bit pixels.

A module of its own (below `run` and `generate`) because both need it and `generate` imports `run`.
"""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor, device: str | torch.device | None = "cpu") -> torch.Tensor:
    """Generator output → 8-bit pixels, as StyleGAN2-ADA's `generate.py` writes them.

    `images`: float (N, 3, R, R), nominally in [-1, 1] (values outside are clipped). Returns uint8 (N, 3, R, R),
    `round((x + 1) · 127.5)`, on `device` (default the CPU, for files; None keeps the images' device, e.g. to
    extract features where they were made)."""
    pixels = images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return pixels if device is None else pixels.to(device)


@torch.no_grad()
def render_ws(G, ws: torch.Tensor, noise: list[torch.Tensor] | None = None,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 3, R, R) images on the CPU (`to_uint8`) of W+ latents `ws` (float (N, num_ws, w_dim)), synthesised
    by generator `G` (moved to `device`) with the noise maps `noise` (each float (N, 1, r, r): a projection's
    optimised noise, a neighbour's centre's) when given, else with constant noise (`noise_mode="const"`)."""
    G = G.to(device)
    noise = None if noise is None else [m.to(device) for m in noise]
    images = G.synthesis(ws.to(device), noise=noise, noise_mode="const")
    return to_uint8(images)
