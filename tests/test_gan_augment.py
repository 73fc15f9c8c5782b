"""ADA pipeline: identity at p = 0, colour untouched without the colour group, differentiable, adaptive p."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dermsynth.gan.augment import AdaptiveP, AugmentPipe


def _images(n=8, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_and_noaug_are_the_identity():
    x = _images()
    assert torch.equal(AugmentPipe("bgc", 0.0)(x), x)
    assert torch.equal(AugmentPipe("noaug", 1.0)(x), x)


def test_geometry_without_colour_keeps_a_uniform_image_uniform():
    torch.manual_seed(0)
    uniform = torch.ones(16, 3, 16, 16) * torch.tensor([0.3, -0.2, 0.5]).view(1, 3, 1, 1)
    out = AugmentPipe("bg", 1.0)(uniform)
    assert torch.allclose(out, uniform, atol=1e-5)  # reflection padding: no border leaks in
    coloured = AugmentPipe("bgc", 1.0)(uniform)
    assert (coloured - uniform).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image's colours moved


def test_geometry_moves_pixels_and_colour_keeps_positions():
    torch.manual_seed(1)
    x = _images()
    moved = AugmentPipe("bg", 1.0)(x)
    assert (moved - x).abs().mean() > 0.1
    gray = x.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    out = AugmentPipe("bgc", 1.0)._color(gray, 1.0)
    # a colour matrix acts per pixel: correlation with the source layout survives
    assert torch.corrcoef(torch.stack([out.flatten(), gray.flatten()]))[0, 1].abs() > 0.3


def test_pipeline_is_differentiable():
    x = _images().requires_grad_(True)
    torch.manual_seed(2)
    AugmentPipe("bgc", 0.8)(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_adaptive_p_follows_the_overfitting_signal():
    pipe = AugmentPipe("bgc", 0.0)
    ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=1, batch=32)
    for step in range(1, 41):
        ada.accumulate(torch.ones(32))  # D calls every real image real: overfitting, r_t = 1
        ada.update(step)
    high = float(pipe.p)
    assert high > 0.9
    for step in range(41, 81):
        ada.accumulate(-torch.ones(32))  # r_t = −1: less augmentation needed
        ada.update(step)
    assert float(pipe.p) < high and float(pipe.p) >= 0


def _sampling_matrix(grid, shape):
    """S with grid_sample(x) = S·x, built column by column from basis images (independent of autograd)."""
    n, c, h, w = shape
    columns = []
    for i in range(h * w):
        basis = torch.zeros(1, 1, h * w, dtype=torch.float64)
        basis[0, 0, i] = 1
        columns.append(F.grid_sample(basis.reshape(1, 1, h, w), grid, mode="bilinear", padding_mode="reflection",
                                     align_corners=False).flatten())
    return torch.stack(columns, dim=1)  # (H'·W', H·W)


def test_grid_sample_gradients_of_every_order_are_the_sampling_matrix():
    """y = S·x: the input gradient is Sᵀ·dy, and the gradient of <Sᵀ·dy, v> with respect to dy is S·v
    (what R1 on augmented images needs; CUDA's grid_sampler_2d_backward has no derivative)."""
    from dermsynth.gan.augment import grid_sample
    torch.manual_seed(0)
    theta = torch.tensor([[[0.9, 0.3, 0.1], [-0.2, 1.1, -0.05]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 1, 5, 6], align_corners=False)
    S = _sampling_matrix(grid, (1, 1, 5, 6))
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    y = grid_sample(x, grid)
    torch.testing.assert_close(y.flatten(), S @ x.detach().flatten())
    dy = torch.randn_like(y, requires_grad=True)
    dx, = torch.autograd.grad(y, x, dy, create_graph=True)
    torch.testing.assert_close(dx.flatten(), S.T @ dy.detach().flatten())
    v = torch.randn_like(dx)
    ddy, = torch.autograd.grad((dx * v).sum(), dy, create_graph=True)
    torch.testing.assert_close(ddy.flatten(), S @ v.flatten())


def test_r1_through_the_augmentation_differentiates_twice():
    """The R1 penalty's backward pass runs through the geometric augmentation (a second derivative)."""
    pipe = AugmentPipe("bg", p=1.0)
    torch.manual_seed(1)
    real = torch.randn(2, 3, 16, 16, requires_grad=True)
    weight = torch.randn(3, 3, 3, 3, requires_grad=True)
    score = F.conv2d(pipe(real), weight).square().sum()
    grad, = torch.autograd.grad(score, real, create_graph=True)
    grad.square().sum().backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
