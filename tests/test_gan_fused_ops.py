"""Fused CUDA ops: the logic shared with the reference path is tested on CPU (the adjoint used for
gradients, the separable split, the fallback and its warning); kernel parity runs wherever CUDA is."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dermsynth.gan.networks import Discriminator, Generator
from dermsynth.gan.ops import bias_act, fused, setup_filter, upfirdn2d, upfirdn2d_reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (parity of fused vs reference ops)")

GEOMETRIES = [  # up, down, padding (x0, x1, y0, y1), filter shape
    ((1, 1), (1, 1), (1, 2, 1, 2), (4, 4)),
    ((2, 2), (1, 1), (2, 1, 2, 1), (4, 4)),
    ((1, 1), (2, 2), (1, 1, 1, 1), (4, 4)),
    ((2, 1), (1, 2), (3, 0, -1, 2), (3, 5)),
    ((1, 1), (1, 1), (-1, 2, 0, -2), (1, 3)),
    ((4, 4), (2, 2), (0, 0, 5, 1), (6, 6)),
    ((1, 3), (3, 1), (2, 2, 2, 2), (2, 1)),
]


@pytest.fixture
def fused_state():
    """Run a test with a fresh fused-ops state and restore the session's afterwards."""
    saved = dict(fused._state)
    fused._state.update(module=None, failure=None, warned=False)
    yield fused._state
    fused._state.clear()
    fused._state.update(saved)


@pytest.mark.parametrize("up,down,padding,filter_hw", GEOMETRIES)
@pytest.mark.parametrize("flip", [False, True])
def test_adjoint_arguments_give_the_input_gradient(up, down, padding, filter_hw, flip):
    """The CUDA backward pass is upfirdn2d with `adjoint_arguments`: on CPU it must equal autograd's gradient."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    f = torch.randn(filter_hw, dtype=torch.float64)
    y = upfirdn2d_reference(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=1.7)
    dy = torch.randn_like(y)
    expected, = torch.autograd.grad(y, x, dy)
    up_b, down_b, pad_b, flip_b = fused.adjoint_arguments(tuple(x.shape[2:]), tuple(y.shape[2:]), filter_hw,
                                                          up, down, padding, flip)
    actual = upfirdn2d_reference(dy, f, up=up_b, down=down_b, padding=pad_b, flip_filter=flip_b, gain=1.7)
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("up,down,padding", [((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)),
                                             ((2, 1), (1, 2), (0, 3, 1, -1))])
def test_separable_passes_equal_one_call(up, down, padding):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 8, 6, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    expected = upfirdn2d_reference(x, f, up=up, down=down, padding=padding, gain=4.0)
    y = x
    for f2d, up_, down_, pad_, gain_ in fused.separable_passes(f, up, down, padding, 4.0):
        assert f2d.ndim == 2
        y = upfirdn2d_reference(y, f2d, up=up_, down=down_, padding=pad_, gain=gain_)
    torch.testing.assert_close(y, expected)


def test_cpu_tensors_never_build(fused_state):
    fused.set_mode("require")
    x = torch.randn(2, 3, 4, 4)
    assert fused.kernels_for(x) is None  # CPU: the reference path, even when fused ops are required
    # on CPU bias_act *is* the reference: compare with torch's own leaky ReLU instead
    torch.testing.assert_close(bias_act(x, act="lrelu"), F.leaky_relu(x, 0.2) * math.sqrt(2))
    assert fused_state["failure"] is None


def test_build_failure_warns_once_and_falls_back(fused_state, monkeypatch):
    def broken_build():
        raise RuntimeError("nvcc fatal: Unsupported gpu architecture 'compute_999'")
    monkeypatch.setattr(fused, "build", broken_build)
    fused.set_mode("auto")
    with pytest.warns(RuntimeWarning) as caught:
        assert fused.kernels() is None
    message = str(caught[0].message)
    assert "compute_999" in message and "cuda_ops: require" in message and "CUDA_HOME" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        assert fused.kernels() is None


def test_require_mode_turns_a_build_failure_into_an_error(fused_state):
    fused.set_mode("require")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the build may well succeed here")
    with pytest.raises(fused.FusedOpsError, match="could not be built"):
        fused.kernels()


def test_reference_mode_never_builds(fused_state, monkeypatch):
    monkeypatch.setattr(fused, "build", lambda: pytest.fail("reference mode must not build"))
    fused.set_mode("reference")
    assert fused.kernels() is None
    with pytest.raises(ValueError, match="choose from"):
        fused.set_mode("fast")


def test_build_tag_changes_with_the_sources(monkeypatch, tmp_path):
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    tag = fused.build_tag()
    for name in fused.SOURCES:
        (tmp_path / name).write_bytes((fused._source_dir() / name).read_bytes())
    (tmp_path / "upfirdn2d.cu").write_text((tmp_path / "upfirdn2d.cu").read_text() + "\n// edited\n")
    monkeypatch.setattr(fused, "_source_dir", lambda: tmp_path)
    assert fused.build_tag() != tag and fused.build_tag().endswith(tag.split("-", 1)[1])


@pytest.mark.skipif(fused.toolkit_problem() is not None, reason=f"cannot compile: {fused.toolkit_problem()}")
def test_kernels_compile(tmp_path, monkeypatch):
    """Compiles (and imports) the extension for one architecture; needs no GPU, only nvcc."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    module = fused.compile_extension(tmp_path / "build", "dermsynth_gan_ops_compile_test")
    assert {"bias_act_forward", "bias_act_backward", "upfirdn2d"} <= set(dir(module))


# --- on a GPU: fused vs reference ---------------------------------------------------------------
def _gradients(fn, inputs, seed=0):
    """Output, first-order gradients, and the gradient of a function of the gradients (double backward)."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    torch.manual_seed(seed)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    second = torch.autograd.grad(sum((g.float() ** 2).sum() for g in grads if g is not None), inputs[0],
                                 allow_unused=True)[0]
    return y, grads, second


def _both_paths(fn, inputs):
    fused.set_mode("require")
    fast = _gradients(fn, inputs)
    fused.set_mode("reference")
    try:
        slow = _gradients(fn, inputs)
    finally:
        fused.set_mode("auto")
    return fast, slow


def _assert_close(fast, slow, dtype):
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    (y1, g1, s1), (y2, g2, s2) = fast, slow
    torch.testing.assert_close(y1, y2, **tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol)
    if s2 is not None:
        torch.testing.assert_close(s1 if s1 is not None else torch.zeros_like(s2), s2, **tol)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("act,clamp", [("linear", None), ("lrelu", None), ("lrelu", 0.5), ("relu", 1.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_act_parity(dtype, act, clamp, channels_last):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn(8, device="cuda", dtype=dtype)
    fast, slow = _both_paths(lambda x, b: bias_act(x, b, act=act, clamp=clamp, gain=1.3), [x, b])
    _assert_close(fast, slow, dtype)


@cuda
@pytest.mark.parametrize("up,down,padding,filter_hw", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_upfirdn2d_parity(up, down, padding, filter_hw, dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, device="cuda", dtype=dtype)
    f = torch.randn(filter_hw, device="cuda")
    fast, slow = _both_paths(lambda x: upfirdn2d(x, f, up=up, down=down, padding=padding, gain=2.0), [x])
    _assert_close(fast, slow, dtype)


@cuda
def test_networks_parity_with_r1_and_path_length_gradients():
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=64).cuda()
    D = Discriminator(img_resolution=32, channel_base=512, channel_max=64).cuda()
    z = torch.randn(4, 32, device="cuda")

    def run(z):
        ws = G.mapping(z, None)
        img = G.synthesis(ws, noise_mode="const")
        pl_grad, = torch.autograd.grad(img.sum(), ws, create_graph=True)
        r1_grad, = torch.autograd.grad(D(img).sum(), img, create_graph=True)
        return img.sum() + pl_grad.square().sum() + r1_grad.square().sum()

    fused.set_mode("require")
    fast = torch.autograd.grad(run(z), list(G.parameters()) + list(D.parameters()), allow_unused=True)
    fused.set_mode("reference")
    slow = torch.autograd.grad(run(z), list(G.parameters()) + list(D.parameters()), allow_unused=True)
    fused.set_mode("auto")
    for a, b in zip(fast, slow):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
