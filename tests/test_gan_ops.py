"""Reference StyleGAN2 operators against independent computations (scipy.signal.upfirdn, torch.nn.functional)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal

from dermsynth.gan.ops import bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d


def _upfirdn_1d(x: np.ndarray, f: np.ndarray, up: int, down: int, pad0: int, pad1: int, gain: float) -> np.ndarray:
    """The documented semantics along one axis, built on scipy's (full-convolution) upfirdn."""
    full = signal.upfirdn(f * gain, x, up=up)  # zero insertion + full convolution, length (L-1)·up + len(f)
    length = len(x) * up + pad0 + pad1 - len(f) + 1
    out = np.zeros(length)
    for i in range(length):
        j = i + len(f) - 1 - pad0
        if 0 <= j < len(full):
            out[i] = full[j]
    return out[::down]


def _upfirdn_2d_scipy(x: np.ndarray, f: np.ndarray, up: int, down: int, pad: tuple, gain: float) -> np.ndarray:
    x0, x1, y0, y1 = pad
    rows = np.stack([_upfirdn_1d(r, f, up, down, x0, x1, math.sqrt(gain)) for r in x])
    return np.stack([_upfirdn_1d(c, f, up, down, y0, y1, math.sqrt(gain)) for c in rows.T]).T


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 1, 2)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)),
                                         (2, 2, (3, 0, 1, 2)), (1, 1, (-1, 2, 0, -2)), (4, 1, (0, 0, 0, 0))])
def test_upfirdn2d_matches_scipy(up, down, pad):
    rng = np.random.default_rng(up * 10 + down)
    x = rng.normal(size=(9, 11))
    f = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    expected = _upfirdn_2d_scipy(x, f, up, down, pad, gain=up * up)
    ours = upfirdn2d(torch.tensor(x)[None, None], torch.tensor(f), up=up, down=down, padding=pad, gain=up * up)
    assert ours.shape[-2:] == expected.shape
    assert np.allclose(ours[0, 0].numpy(), expected, atol=1e-12)


def test_separable_and_full_2d_filters_agree():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f1 = setup_filter([1, 3, 3, 1]).double()
    f2 = setup_filter([1, 3, 3, 1], separable=False).double()
    for kwargs in ({"up": 2, "padding": (2, 1, 2, 1), "gain": 4}, {"down": 2, "padding": 1}):
        assert torch.allclose(upfirdn2d(x, f1, **kwargs), upfirdn2d(x, f2, **kwargs), atol=1e-12)


def test_convolution_flips_the_filter_and_flip_filter_correlates():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1  # an impulse reproduces the filter (convolution) or its mirror (correlation)
    f = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    assert torch.equal(filter2d(x, f)[0, 0, 1:4, 1:4], f)
    assert torch.equal(filter2d(x, f, flip_filter=True)[0, 0, 1:4, 1:4], f.flip([0, 1]))


def test_resampling_shapes_and_mean_preservation():
    f = setup_filter([1, 3, 3, 1])
    x = torch.rand(2, 4, 16, 16, dtype=torch.float64) + 1
    up, down = upsample2d(x, f.double()), downsample2d(x, f.double())
    assert up.shape == (2, 4, 32, 32) and down.shape == (2, 4, 8, 8)
    constant = torch.full((1, 1, 16, 16), 3.0, dtype=torch.float64)
    assert torch.allclose(upsample2d(constant, f.double())[..., 4:-4, 4:-4], torch.tensor(3.0, dtype=torch.float64))
    assert torch.allclose(downsample2d(constant, f.double())[..., 2:-2, 2:-2], torch.tensor(3.0, dtype=torch.float64))


def test_downsample_with_box_filter_is_average_pooling():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    box = setup_filter([1, 1]).double()
    assert torch.allclose(downsample2d(x, box), F.avg_pool2d(x, 2), atol=1e-12)


def test_upfirdn2d_gradients():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    assert torch.autograd.gradcheck(lambda t: upfirdn2d(t, f, up=2, down=1, padding=(2, 1, 2, 1), gain=4), (x,))
    assert torch.autograd.gradcheck(lambda t: downsample2d(t, f), (x,))


@pytest.mark.parametrize("act,reference", [
    ("linear", lambda v: v), ("relu", lambda v: F.relu(v) * math.sqrt(2)),
    ("lrelu", lambda v: F.leaky_relu(v, 0.2) * math.sqrt(2)), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid),
    ("swish", lambda v: v * torch.sigmoid(v) * math.sqrt(2)), ("softplus", F.softplus)])
def test_bias_act_against_torch(act, reference):
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(bias_act(x, b, act=act), reference(x + b[None, :, None, None]), atol=1e-12)


def test_bias_act_gain_clamp_dim_and_gradients():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    y = bias_act(x, b, act="lrelu", gain=3.0, clamp=0.5)
    assert y.abs().max() <= 0.5
    assert torch.allclose(y, (F.leaky_relu(x + b, 0.2) * 3).clamp(-0.5, 0.5))
    assert torch.autograd.gradcheck(lambda t, c: bias_act(t, c, act="lrelu"), (x, b))
    with pytest.raises(ValueError, match="does not match dimension"):
        bias_act(x, torch.zeros(4, dtype=torch.float64))
