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


# --- alignment against a known sub-pixel reference (random, non-constant inputs) ------------------------
# Pixel k of an image covers [k, k+1) in continuous coordinates, so its centre sits at k + ½. Resampling by 2
# must keep every point where it is: input pixel j (centre j + ½) lands at output index 2j + ½ after ×2, and
# output pixel o of a ÷2 image is centred on input index 2o + ½. A symmetric filter reproduces linear
# functions exactly, so a ramp comes out as the ramp sampled at the new centres — off by a whole slope
# when the padding is off by one, which a constant image cannot show.

F4 = [1.0, 3.0, 3.0, 1.0]


def _ramp(height: int, width: int, slope_y: float = -0.21, slope_x: float = 0.37, offset: float = 1.5):
    """(1, 1, H, W) float64 image a·y + b·x + c, different slopes so that x and y cannot be confused."""
    y, x = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    return torch.from_numpy(slope_y * y + slope_x * x + offset)[None, None]


def _scipy_2d(x: np.ndarray, f: np.ndarray, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), gain=1.0) -> np.ndarray:
    """The documented semantics with separate factors along x (columns) and y (rows), via scipy."""
    (ux, uy), (dx, dy), (x0, x1, y0, y1) = up, down, pad
    rows = np.stack([_upfirdn_1d(r, f, ux, dx, x0, x1, math.sqrt(gain)) for r in x])
    return np.stack([_upfirdn_1d(c, f, uy, dy, y0, y1, math.sqrt(gain)) for c in rows.T]).T


def test_upsample2d_keeps_an_impulse_centre_of_mass_at_its_pixel_centre():
    from scipy import ndimage
    f = setup_filter(F4).double()
    for i, j in [(3, 5), (6, 2), (1, 10)]:
        x = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
        x[0, 0, i, j] = 1
        y = upsample2d(x, f)[0, 0].numpy()
        assert y.sum() == pytest.approx(4.0)  # gain up² keeps the mean
        assert ndimage.center_of_mass(y) == pytest.approx((2 * i + 0.5, 2 * j + 0.5), abs=1e-12)


def test_upsample2d_and_downsample2d_of_a_ramp_sample_it_at_the_new_pixel_centres():
    f = setup_filter(F4).double()
    x = _ramp(12, 14)
    up = upsample2d(x, f)[0, 0].numpy()
    k_y, k_x = np.meshgrid(np.arange(24.0), np.arange(28.0), indexing="ij")
    expected_up = -0.21 * (k_y - 0.5) / 2 + 0.37 * (k_x - 0.5) / 2 + 1.5
    np.testing.assert_allclose(up[2:-2, 2:-2], expected_up[2:-2, 2:-2], atol=1e-12)
    down = downsample2d(x, f)[0, 0].numpy()
    o_y, o_x = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
    expected_down = -0.21 * (2 * o_y + 0.5) + 0.37 * (2 * o_x + 0.5) + 1.5
    np.testing.assert_allclose(down[1:-1, 1:-1], expected_down[1:-1, 1:-1], atol=1e-12)
    # up then down by 2 is the identity on a ramp, away from the borders
    np.testing.assert_allclose(downsample2d(upsample2d(x, f), f)[0, 0, 2:-2, 2:-2].numpy(),
                               x[0, 0, 2:-2, 2:-2].numpy(), atol=1e-12)


def test_filter2d_of_a_ramp_shifts_it_by_half_the_even_filter_length_and_not_at_all_for_odd():
    x = _ramp(9, 11)
    even, odd = setup_filter(F4).double(), setup_filter([1.0, 2.0, 1.0]).double()
    y, xx = np.meshgrid(np.arange(9.0), np.arange(11.0), indexing="ij")
    np.testing.assert_allclose(filter2d(x, odd)[0, 0, 1:-1, 1:-1].numpy(), x[0, 0, 1:-1, 1:-1].numpy(), atol=1e-12)
    shifted = -0.21 * (y - 0.5) + 0.37 * (xx - 0.5) + 1.5  # the StyleGAN2 convention: pads fw//2 before
    np.testing.assert_allclose(filter2d(x, even)[0, 0, 2:-2, 2:-2].numpy(), shifted[2:-2, 2:-2], atol=1e-12)


@pytest.mark.parametrize("extra", [(0, 0, 0, 0), (1, 2, 0, 3), (-1, 0, 2, -1)])
def test_resampling_helpers_on_random_images_match_scipy(extra):
    rng = np.random.default_rng(sum(extra) + 7)
    x = rng.normal(size=(9, 13))
    f = np.array(F4) / 8
    t, tf = torch.from_numpy(x)[None, None], torch.from_numpy(f)
    e0, e1, e2, e3 = extra
    # upsample2d pads (fw + up − 1)//2 = 2 before and (fw − up)//2 = 1 after (the impulse test above pins this)
    up = upsample2d(t, tf, padding=extra, gain=1.5)[0, 0].numpy()
    np.testing.assert_allclose(up, _scipy_2d(x, f, (2, 2), (1, 1), (2 + e0, 1 + e1, 2 + e2, 1 + e3), 6.0),
                               atol=1e-12)
    down = downsample2d(t, tf, padding=extra, gain=0.5)[0, 0].numpy()
    np.testing.assert_allclose(down, _scipy_2d(x, f, (1, 1), (2, 2), (1 + e0, 1 + e1, 1 + e2, 1 + e3), 0.5),
                               atol=1e-12)
    same = filter2d(t, tf, padding=extra, gain=2.0)[0, 0].numpy()
    np.testing.assert_allclose(same, _scipy_2d(x, f, (1, 1), (1, 1), (2 + e0, 1 + e1, 2 + e2, 1 + e3), 2.0),
                               atol=1e-12)


def test_different_factors_along_x_and_y_and_a_non_square_2d_filter_match_scipy():
    from scipy import signal as sig
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 10))
    f = np.array([1.0, 2.0, 4.0, 1.0]) / 8  # asymmetric: a flip or an x/y swap shows
    ours = upfirdn2d(torch.from_numpy(x)[None, None], torch.from_numpy(f), up=(2, 1), down=(1, 2),
                     padding=(1, 2, 0, 3), gain=3.0)[0, 0].numpy()
    np.testing.assert_allclose(ours, _scipy_2d(x, f, (2, 1), (1, 2), (1, 2, 0, 3), 3.0), atol=1e-12)
    f2 = rng.normal(size=(3, 5))  # fh = 3 rows, fw = 5 columns
    same = filter2d(torch.from_numpy(x)[None, None], torch.from_numpy(f2))[0, 0].numpy()
    np.testing.assert_allclose(same, sig.convolve2d(x, f2, mode="same"), atol=1e-12)
    flipped = filter2d(torch.from_numpy(x)[None, None], torch.from_numpy(f2), flip_filter=True)[0, 0].numpy()
    np.testing.assert_allclose(flipped, sig.correlate2d(x, f2, mode="same"), atol=1e-12)
    f3 = rng.normal(size=(2, 4))  # even sizes: upsample2d/downsample2d pad by the filter's own width and height
    t3 = torch.from_numpy(f3)
    up = upsample2d(torch.from_numpy(x)[None, None], t3)[0, 0].numpy()
    full = sig.convolve2d(np.kron(x, [[1, 0], [0, 0]]), f3 * 4)  # zero insertion, then full convolution
    # upsample2d pads (fw+1)//2 = 2 columns before and (fh+1)//2 = 1 row before: output (r, c) ↔ full (r+fh−1−1, c+fw−1−2)
    np.testing.assert_allclose(up, full[0:14, 1:21], atol=1e-12)
    down = downsample2d(torch.from_numpy(x)[None, None], t3)[0, 0].numpy()
    # pads (fw−1)//2 = 1 column and (fh−1)//2 = 0 rows before: output (r, c) ↔ full (2r+fh−1, 2c+fw−1−1)
    full = sig.convolve2d(x, f3)
    np.testing.assert_allclose(down, full[1:1 + 2 * 3:2, 2:2 + 2 * 5:2][:3, :5], atol=1e-12)


def test_setup_filter_normalises_and_builds_the_separable_product():
    f = setup_filter([1, 3, 3, 1])
    assert f.ndim == 1 and torch.allclose(f, torch.tensor([1, 3, 3, 1]) / 8)
    full = setup_filter([1, 3, 3, 1], separable=False)
    assert full.shape == (4, 4) and torch.allclose(full, torch.outer(f, f)) and full.sum().item() == pytest.approx(1)
    assert torch.equal(setup_filter([1, 3, 3, 1], normalize=False), torch.tensor([1.0, 3.0, 3.0, 1.0]))
    assert torch.equal(setup_filter(None), torch.tensor([1.0])) and setup_filter(2.0).shape == (1,)
    assert torch.equal(setup_filter(None, normalize=False), torch.tensor([1.0]))  # no filter: the identity
    assert setup_filter([1, 2, 1]).dtype == torch.float32
    with pytest.raises(ValueError, match="expected \\(N, C, H, W\\)"):
        upfirdn2d(torch.zeros(3, 4, 4), f)


@pytest.mark.parametrize("act,reference", [
    ("elu", F.elu), ("selu", F.selu), ("relu", lambda v: torch.clamp(v, min=0) * math.sqrt(2))])
def test_bias_act_remaining_activations_and_default_gains(act, reference):
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    assert torch.allclose(bias_act(x, b, act=act), reference(x + b[None, :, None]), atol=1e-12)


def test_bias_act_alpha_dim_gain_and_clamp_against_numpy():
    rng = np.random.default_rng(5)
    x, b = rng.normal(size=(3, 4, 5)), rng.normal(size=5)
    v = x + b[None, None, :]  # bias along the last dimension
    lrelu = np.where(v > 0, v, 0.05 * v)
    for dim in (2, -1):
        ours = bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=dim, act="lrelu", alpha=0.05).numpy()
        np.testing.assert_allclose(ours, lrelu * math.sqrt(2), atol=1e-12)
    ours = bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=2, act="lrelu", alpha=0.05, gain=1.0).numpy()
    np.testing.assert_allclose(ours, lrelu, atol=1e-12)  # an explicit gain 1 overrides the default √2
    no_bias = bias_act(torch.from_numpy(x), act="linear", gain=-2.5).numpy()
    np.testing.assert_allclose(no_bias, -2.5 * x, atol=1e-12)
    assert np.all(bias_act(torch.from_numpy(x), act="linear", clamp=0.0).numpy() == 0)  # clamp 0 is a clamp
    unclamped = bias_act(torch.from_numpy(x * 100), act="linear", clamp=-1.0).numpy()  # negative: no clamp
    np.testing.assert_allclose(unclamped, x * 100)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        bias_act(torch.from_numpy(x), act="gelu")


def test_downsample2d_with_a_long_asymmetric_filter_matches_scipy():
    """Six taps: downsample2d pads (fw − down + 1)//2 = 2 before and (fw − down)//2 = 2 after; flip_filter
    correlates instead of convolving."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(10, 12))
    f = np.array([1.0, 2.0, 5.0, 3.0, 1.0, 0.5])
    t, tf = torch.from_numpy(x)[None, None], torch.from_numpy(f)
    np.testing.assert_allclose(downsample2d(t, tf)[0, 0].numpy(), _scipy_2d(x, f, (1, 1), (2, 2), (2, 2, 2, 2)),
                               atol=1e-12)
    np.testing.assert_allclose(downsample2d(t, tf, flip_filter=True)[0, 0].numpy(),
                               _scipy_2d(x, f[::-1].copy(), (1, 1), (2, 2), (2, 2, 2, 2)), atol=1e-12)
    np.testing.assert_allclose(upsample2d(t, tf, flip_filter=True)[0, 0].numpy(),
                               _scipy_2d(x, f[::-1].copy(), (2, 2), (1, 1), (3, 2, 3, 2), 4.0), atol=1e-12)


def test_bias_act_reference_defaults_and_a_gain_of_two():
    """The reference is public (the fused kernels are checked against it): its defaults are bias along
    dimension 1, linear, α = 0.2 for lrelu with the activation's default gain."""
    from dermsynth.gan.ops import bias_act_reference
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    assert torch.allclose(bias_act_reference(x, b), x + b[None, :, None], atol=1e-12)
    assert torch.allclose(bias_act_reference(x, act="lrelu"), F.leaky_relu(x, 0.2) * math.sqrt(2), atol=1e-12)
    assert torch.allclose(bias_act(x, act="linear", gain=2.0), 2 * x, atol=1e-12)
    with pytest.raises(ValueError, match="unknown activation 'gelu'; choose from linear, relu, lrelu, tanh"):
        bias_act(x, act="gelu")


def test_two_element_padding_is_x_then_y_and_upsampling_along_y_alone_matches_scipy():
    """padding=(px, py) pads px on both sides along x and py along y; up=(1, 2) inserts zeros along y only."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(7, 9))
    f = np.array([1.0, 2.0, 4.0, 1.0]) / 8  # asymmetric
    t, tf = torch.from_numpy(x)[None, None], torch.from_numpy(f)
    np.testing.assert_allclose(upfirdn2d(t, tf, padding=(1, 3))[0, 0].numpy(), _scipy_2d(x, f, pad=(1, 1, 3, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(upfirdn2d(t, tf, up=(1, 2), padding=(2, 1, 0, 3), gain=2.0)[0, 0].numpy(),
                               _scipy_2d(x, f, (1, 2), (1, 1), (2, 1, 0, 3), 2.0), atol=1e-12)


def test_setup_filter_is_float32_whatever_it_is_given():
    """Integers stay integers in torch.as_tensor, and numpy float64 stays float64: the filter is float32 anyway."""
    assert setup_filter([1, 3, 3, 1], normalize=False).dtype == torch.float32
    assert setup_filter(np.array([1.0, 2.0, 1.0]), normalize=False).dtype == torch.float32
    assert setup_filter(np.array([1.0, 2.0, 1.0])).dtype == torch.float32


def test_upsample2d_with_an_odd_filter_puts_an_impulse_half_a_pixel_late():
    """An odd filter cannot keep a pixel centre after ×2 (the centre 2j + ½ falls between taps); StyleGAN2's padding
    ((fw + up − 1)//2 before) rounds it to 2j + 1 along both axes, for every odd length."""
    from scipy import ndimage
    for taps in ([1.0, 2.0, 1.0], [1.0, 4.0, 6.0, 4.0, 1.0]):
        f = setup_filter(taps).double()
        x = torch.zeros(1, 1, 8, 11, dtype=torch.float64)
        x[0, 0, 3, 6] = 1
        y = upsample2d(x, f)[0, 0].numpy()
        assert y.shape == (16, 22) and y.sum() == pytest.approx(4.0)
        assert ndimage.center_of_mass(y) == pytest.approx((2 * 3 + 1, 2 * 6 + 1), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_setup_filter_on_the_device_asked_for():
    assert setup_filter([1, 3, 3, 1], device="cuda").device.type == "cuda"
    assert setup_filter(None, device="cuda").device.type == "cuda"


def test_defaults_are_plain_filtering_and_a_float32_filter_works_on_float64_images():
    """upfirdn2d and the public reference default to no resampling, no padding, convolution, gain 1; the float32
    filter setup_filter returns is applied to float64 images in float64 (its taps, eighths, are exact in both)."""
    from dermsynth.gan.ops import upfirdn2d_reference
    rng = np.random.default_rng(12)
    x = rng.normal(size=(6, 9))
    f = setup_filter([1.0, 2.0, 4.0, 1.0])  # float32, asymmetric
    assert f.dtype == torch.float32
    expected = _scipy_2d(x, np.array([1.0, 2.0, 4.0, 1.0]) / 8)
    assert expected.shape == (3, 6)
    for fn in (upfirdn2d, upfirdn2d_reference):
        ours = fn(torch.from_numpy(x)[None, None], f)
        assert ours.dtype == torch.float64
        np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=1e-12)
