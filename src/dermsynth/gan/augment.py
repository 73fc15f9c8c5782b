"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited data").

Every image shown to the discriminator — real or generated — goes through the same stochastic,
differentiable pipeline; each transformation is applied independently with probability p:

    blit   x-flip, 90° rotations, integer translation (±12.5 %)
    geom   isotropic scaling (log-normal, σ = 0.2·ln 2), rotation (applied before and after the
           anisotropic scaling, each with probability 1 − √(1 − p)), anisotropic scaling,
           fractional translation (σ = 0.125)
    color  brightness (σ = 0.2), contrast (log-normal, σ = 0.5·ln 2), luma flip, hue rotation
           (uniform ±π about the luma axis), saturation (log-normal, σ = ln 2)

Geometric transformations are composed into one matrix per image and resampled with bilinear
interpolation and reflection padding (the paper's wavelet-based upsampling is not reproduced);
colour transformations are one 4×4 matrix per image. Modes: `bgc` (all), `bg` (no colour: the
ISIC study's "cGAN w/o colour"), `noaug`.

`AdaptiveP` adjusts p so that r_t = E[sign(D(real))] approaches the target (0.6).

Nothing here reads a value back from the device: p is a 0-d buffer the pipeline uses as a tensor (every draw is
compared with it; no Python branch on its value), and `AdaptiveP` sums the signs and moves p on the device, so a
training step launches its GPU work without waiting for it (stylegan2-ada-pytorch likewise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MODES = {"bgc": ("blit", "geom", "color"), "bg": ("blit", "geom"), "noaug": ()}
BILINEAR, REFLECTION = 0, 2  # aten's codes for grid_sampler's interpolation and padding modes


class _GridSample(torch.autograd.Function):
    """Bilinear `grid_sample` (reflection padding, align_corners=False) whose input gradient can be
    differentiated again. R1 on augmented reals differentiates a function of ∂D/∂x, and PyTorch's CUDA
    `grid_sampler_2d_backward` has no derivative (seen on an H200, torch 2.11). grid_sample is linear in
    the image (y = S·x for a sampling matrix S fixed by the grid), so the input gradient is Sᵀ·dy and its
    derivative with respect to dy is S again: every order is a grid_sample or its transpose. The grid is
    a constant here (the pipeline draws it), so no gradient flows to it."""

    @staticmethod
    def forward(ctx, images, grid):
        ctx.save_for_backward(grid)
        ctx.image_shape = images.shape
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    @staticmethod
    def backward(ctx, dy):
        grid, = ctx.saved_tensors
        return _GridSampleTranspose.apply(dy, grid, ctx.image_shape), None


class _GridSampleTranspose(torch.autograd.Function):
    """dx = Sᵀ·dy (aten's grid_sampler_2d_backward, input gradient only); its own gradient is S·ddx."""

    @staticmethod
    def forward(ctx, dy, grid, image_shape):
        ctx.save_for_backward(grid)
        placeholder = dy.new_empty(image_shape)  # read for its shape only: the grid gradient is not asked for
        dx, _ = torch.ops.aten.grid_sampler_2d_backward(dy, placeholder, grid, BILINEAR, REFLECTION, False,
                                                        [True, False])
        return dx

    @staticmethod
    def backward(ctx, ddx):
        grid, = ctx.saved_tensors
        return _GridSample.apply(ddx, grid), None, None


def grid_sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of images (N, C, H, W) at `grid` (N, H', W', 2) in normalised [−1, 1]
    coordinates, reflection padding, align_corners=False: `F.grid_sample`'s values, with gradients of
    every order with respect to the images (none with respect to the grid)."""
    return _GridSample.apply(images, grid.detach())
LUMA = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)


def _cross_matrix(axis: torch.Tensor) -> torch.Tensor:
    """K with K·v = axis × v (Rodrigues' formula), float32 (3, 3)."""
    x, y, z = axis.tolist()
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def _translate(tx, ty):
    m = torch.eye(3, device=tx.device).repeat(len(tx), 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale(sx, sy):
    m = torch.eye(3, device=sx.device).repeat(len(sx), 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta):
    m = torch.eye(3, device=theta.device).repeat(len(theta), 1, 1)
    m[:, 0, 0], m[:, 0, 1] = torch.cos(theta), -torch.sin(theta)
    m[:, 1, 0], m[:, 1, 1] = torch.sin(theta), torch.cos(theta)
    return m


def _where(mask, value, neutral):
    return torch.where(mask, value, torch.full_like(value, neutral))


class AugmentPipe(torch.nn.Module):
    """The ADA pipeline (module docstring) as a module: images float (N, 3, H, W) in [−1, 1] in, the same
    shape out; `mode` one of `MODES` (`gans.<name>.augment`), `p` (a buffer, 0…1; its start is
    `gans.<name>.augment_p`) the probability of each transformation; raises ValueError for an unknown mode."""
    def __init__(self, mode: str, p: float):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown augmentation mode {mode!r}; choose from {', '.join(MODES)}")
        self.mode = mode
        self.register_buffer("p", torch.tensor(float(p)))
        # constants of the colour transformations, moved with the module (not part of its state_dict)
        self.register_buffer("luma", LUMA.clone(), persistent=False)
        self.register_buffer("luma_cross", _cross_matrix(LUMA), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch: float (N, 3, H, W) in [−1, 1] → the same shape; each image draws its own transformations
        (each applied with probability `p`); the geometric ones composed into one matrix and resampled once, the
        colour ones as one 4×4 matrix (Karras et al. 2020, ADA). Mode `noaug` returns `images` itself; with p = 0
        the values come back unchanged (no image draws a transformation: the resampling is skipped by a device-side
        select, and the identity colour matrix is exact). The draws happen whatever p is, so p is never read
        back to the host."""
        groups = MODES[self.mode]
        if not groups:
            return images
        p = self.p
        n, device = len(images), images.device
        matrix = torch.eye(3, device=device).repeat(n, 1, 1)  # maps output coordinates to input coordinates
        if "blit" in groups:
            matrix = matrix @ self._blit(n, p, device)
        if "geom" in groups:
            matrix = matrix @ self._geom(n, p, device)
        moved = (matrix != torch.eye(3, device=device)).any()  # 0-d bool on the device: some image is transformed
        images = torch.where(moved, self._resample(images, matrix), images)
        if "color" in groups:
            images = self._color(images, p)
        return images

    @staticmethod
    def _draw(n, p, device):
        return torch.rand(n, device=device) < p

    def _blit(self, n, p, device):
        flip = _where(self._draw(n, p, device), 1 - 2 * torch.randint(0, 2, (n,), device=device).float(), 1.0)
        quarter = _where(self._draw(n, p, device), torch.randint(0, 4, (n,), device=device).float(), 0.0)
        shift = torch.rand(n, 2, device=device) * 2 - 1
        shift = _where(self._draw(n, p, device)[:, None].expand(n, 2), shift * 0.125, 0.0)
        # normalised coordinates span [−1, 1], so a shift of 0.125 of the image is 0.25 units
        return _scale(flip, torch.ones_like(flip)) @ _rotate(quarter * math.pi / 2) @ _translate(shift[:, 0] * 2, shift[:, 1] * 2)

    def _geom(self, n, p, device):
        iso = _where(self._draw(n, p, device), torch.exp2(torch.randn(n, device=device) * 0.2), 1.0)
        p = torch.as_tensor(p, device=device)
        p_rot = 1 - torch.sqrt(1 - p.double().clamp(max=1.0))  # in float64, as the Python float it once was
        rot1 = _where(self._draw(n, p_rot, device), (torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0)
        aniso = _where(self._draw(n, p, device), torch.exp2(torch.randn(n, device=device) * 0.2), 1.0)
        rot2 = _where(self._draw(n, p_rot, device), (torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0)
        shift = _where(self._draw(n, p, device)[:, None].expand(n, 2), torch.randn(n, 2, device=device) * 0.125, 0.0)
        return (_scale(iso, iso) @ _rotate(rot1) @ _scale(aniso, 1 / aniso) @ _rotate(rot2)
                @ _translate(shift[:, 0] * 2, shift[:, 1] * 2))

    @staticmethod
    def _resample(images, matrix):
        grid = F.affine_grid(matrix[:, :2, :].to(images.dtype), list(images.shape), align_corners=False)
        return grid_sample(images, grid)

    def _color(self, images, p):
        n, device = len(images), images.device
        luma = self.luma
        eye = torch.eye(4, device=device).repeat(n, 1, 1)
        brightness = _where(self._draw(n, p, device), torch.randn(n, device=device) * 0.2, 0.0)
        contrast = _where(self._draw(n, p, device), torch.exp2(torch.randn(n, device=device) * 0.5), 1.0)
        lumaflip = _where(self._draw(n, p, device), torch.randint(0, 2, (n,), device=device).float(), 0.0)
        hue = _where(self._draw(n, p, device), (torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0)
        saturation = _where(self._draw(n, p, device), torch.exp2(torch.randn(n, device=device)), 1.0)
        outer = torch.outer(luma, luma)
        c = eye.clone()
        c[:, :3, 3] = brightness[:, None]
        c = _scale4(contrast) @ c
        c = _householder(outer, lumaflip) @ c
        c = _rotate_about(self.luma_cross, hue) @ c
        c = _saturate(outer, saturation) @ c
        flat = images.reshape(n, 3, -1)
        return (c[:, :3, :3] @ flat + c[:, :3, 3:]).reshape(images.shape)


def _scale4(s):
    m = torch.eye(4, device=s.device).repeat(len(s), 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _householder(outer, flip):
    m = torch.eye(4, device=flip.device).repeat(len(flip), 1, 1)
    m[:, :3, :3] = torch.eye(3, device=flip.device) - 2 * outer * flip[:, None, None]
    return m


def _rotate_about(k, theta):
    """Rodrigues' rotation about a unit axis (`k` its cross-product matrix, `_cross_matrix`), per image."""
    eye = torch.eye(3, device=theta.device)
    rotation = eye + torch.sin(theta)[:, None, None] * k + (1 - torch.cos(theta))[:, None, None] * (k @ k)
    m = torch.eye(4, device=theta.device).repeat(len(theta), 1, 1)
    m[:, :3, :3] = rotation
    return m


def _saturate(outer, s):
    m = torch.eye(4, device=s.device).repeat(len(s), 1, 1)
    m[:, :3, :3] = outer + (torch.eye(3, device=s.device) - outer) * s[:, None, None]
    return m


class AdaptiveP:
    """p ← p + sign(r_t − target) · (batch · interval) / (ada_kimg · 1000), clamped to [0, 1] (Karras et al. 2020,
    ADA, section 2.3): r_t = E[sign(D(real))] over the last `interval` steps.

    All on the device: the signs are summed into a float64 tensor beside p, and every `interval` steps the sums are
    averaged over data-parallel ranks (`reduce`, an all-reduce that does not wait on the host) and p moves — no
    value is read back (`float(p)`, `state()` read it when asked, e.g. at a tick or a checkpoint)."""

    def __init__(self, pipe: AugmentPipe, target: float, interval: int, ada_kimg: float, batch: int, reduce=None):
        """`target` the r_t aimed at (`gans.<name>.ada_target`, 0.6 in the paper), `interval` steps between
        adjustments (`TrainingOptions.ada_interval`, 4), `ada_kimg` thousands of images for p to move by 1
        (`gans.<name>.ada_kimg`), `batch` the global batch; `reduce` averages a tensor over data-parallel ranks."""
        self.pipe, self.target, self.interval = pipe, target, interval
        self.reduce = reduce or (lambda t: t)
        self.step_size = batch * interval / (ada_kimg * 1000)
        # [sum of signs, number of logits] since the last adjustment, on p's device; `count` mirrors the second on
        # the host (shapes are known there), so an empty window is skipped without a read-back
        self.sums = torch.zeros(2, dtype=torch.float64, device=pipe.p.device)
        self.count = 0

    @property
    def signs_sum(self) -> float:
        """The sum of the signs since the last adjustment (reads it back from the device)."""
        return float(self.sums[0])

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's logits on real images (any shape) to the running r_t estimate (on the device)."""
        if self.sums.device != real_logits.device:  # the pipe was moved after this was built
            self.sums = self.sums.to(real_logits.device)
        self.sums[0].add_(torch.sign(real_logits.detach()).sum(dtype=torch.float64))
        self.sums[1].add_(real_logits.numel())
        self.count += real_logits.numel()

    def update(self, step_index: int) -> torch.Tensor | None:
        """At every `interval`-th step: adjust p on the device; returns r_t (a 0-d float64 tensor on the device)
        when it did, None otherwise (not an adjustment step, or no logits since the last one)."""
        if step_index % self.interval or self.count == 0:
            return None
        signs_sum, count = self.reduce(self.sums).unbind()
        rt = signs_sum / count
        step = torch.copysign(torch.full_like(rt, self.step_size), rt - self.target)
        self.pipe.p.copy_((self.pipe.p.double() + step).clamp(0.0, 1.0))
        self.sums.zero_()
        self.count = 0
        return rt

    def state(self) -> dict:
        """p and the running r_t sums, for a checkpoint (plain floats and ints; read back from the device)."""
        return {"p": float(self.pipe.p), "signs_sum": self.signs_sum, "count": self.count}

    def restore(self, state: dict) -> None:
        """Set p and the running r_t sums from `state()`'s dict (a resumed run continues exactly)."""
        self.pipe.p.fill_(float(state["p"]))
        self.count = int(state["count"])
        self.sums = torch.tensor([float(state["signs_sum"]), float(self.count)], dtype=torch.float64,
                                 device=self.pipe.p.device)
