"""Fused CUDA ops: the logic shared with the reference path is tested on CPU (the adjoint used for
gradients, the separable split, the fallback and its warning). The parity tests (fused vs reference:
output, gradients, double backward) run twice: on CPU with `ReferenceKernels` standing in for the
compiled extension (a test of the tests and of the autograd wrappers, in CI) and on a GPU with the
real kernels (`bench/gpu-check`)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dermsynth.gan.networks import Discriminator, Generator
from dermsynth.gan.ops import (bias_act, bias_act_reference, fused, setup_filter, upfirdn2d, upfirdn2d_reference,
                               upsample2d)

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


# --- fused vs reference: on a GPU the compiled kernels, on CPU a stand-in ---------------------------
ACT_CODES = {code: name for name, code in fused.FUSED_ACTIVATIONS.items()}
# largest |fused − reference| allowed, as a share of the largest |reference| value of that tensor
RELATIVE_TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
SEPARABLE = [1.0, 3.0, 3.0, 1.0]  # the networks' resampling filter, applied as two 1-D passes


class ReferenceKernels:
    """Stand-in for the compiled extension on CPU: the kernels' three entry points (same signatures,
    same conventions: integer activation codes, clamp < 0 = none, 2-D float32 filters, no autograd),
    computed with the reference ops and, for the gradient, with the explicit masked slope. The fused
    autograd wrappers (adjoint arguments, separable passes, first and second derivatives) then run in
    CI exactly as they do on a GPU; only the arithmetic inside the kernels differs."""

    @staticmethod
    def bias_act_forward(x, b, dim, act, alpha, gain, clamp):
        with torch.no_grad():
            return bias_act_reference(x, b if b.numel() else None, dim, ACT_CODES[act], alpha, gain,
                                      clamp if clamp >= 0 else None)

    @staticmethod
    def bias_act_backward(dy, x, b, dim, act, alpha, gain, clamp):
        shape = [1] * x.ndim
        shape[dim] = -1
        v = (x + b.reshape(shape)) if b.numel() else x
        positive = v > 0
        slope = {"linear": torch.ones_like(v), "relu": positive.to(v.dtype),
                 "lrelu": torch.where(positive, 1.0, alpha).to(v.dtype)}[ACT_CODES[act]] * gain
        if clamp >= 0:
            u = bias_act_reference(v, None, dim, ACT_CODES[act], alpha, gain)
            slope = torch.where(u.abs() > clamp, 0.0, slope).to(v.dtype)
        return (dy * slope).to(dy.dtype)

    @staticmethod
    def upfirdn2d(x, f, up_x, up_y, down_x, down_y, x0, x1, y0, y1, flip_filter, gain):
        assert f.ndim == 2 and f.dtype == torch.float32, "the kernel takes 2-D float32 filters"
        with torch.no_grad():
            return upfirdn2d_reference(x, f, (up_x, up_y), (down_x, down_y), (x0, x1, y0, y1), flip_filter, gain)


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch):
    """'cuda': the compiled kernels (built once per session). 'cpu': `ReferenceKernels` behind the same
    wrappers. Either way, mode 'reference' switches the ops to the plain PyTorch path."""
    saved = dict(fused._state)  # on CUDA the built module stays loaded for the next test (a reload costs ~1 s)
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (parity of the compiled kernels)")
        # exact fp32 convolutions on the reference path: TF32 alone would exceed the fp32 tolerance
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    else:
        stand_in = ReferenceKernels()
        monkeypatch.setattr(fused, "kernels_for", lambda x: None if fused.get_mode() == "reference" else stand_in)
        fused._state["module"] = stand_in
    yield torch.device(request.param)
    if request.param == "cpu":
        fused._state.update(saved)
    else:
        fused._state["mode"] = saved["mode"]


def _derivatives(fn, inputs, seed=0):
    """y = fn(*inputs); the gradients of <y, dy> for a random dy; and the double backward: the
    gradients of <grads, v> (random v) with respect to dy and to every input. The ops are linear in x
    (upfirdn2d) or piecewise linear (bias_act), so the informative second derivative is the one through
    dy — the backward pass of the backward pass; the one with respect to x is zero or absent."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    generator = torch.Generator(device=y.device).manual_seed(seed)
    dy = torch.randn(y.shape, generator=generator, device=y.device).to(y.dtype).requires_grad_(True)
    grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    v = [torch.randn(g.shape, generator=generator, device=g.device) for g in grads]
    inner = sum((g.float() * w).sum() for g, w in zip(grads, v))
    second = torch.autograd.grad(inner, [dy] + inputs, allow_unused=True)
    return {"y": [y], "grad": list(grads), "grad of grad": list(second)}


def _both_paths(fn, inputs):
    fused.set_mode("require")
    fast = _derivatives(fn, inputs)
    fused.set_mode("reference")
    slow = _derivatives(fn, inputs)
    fused.set_mode("auto")
    return fast, slow


def relative_error(actual, expected) -> float:
    """max |actual − expected| / max |expected|; an absent gradient counts as zeros (the fused wrappers
    leave out gradients that are structurally zero, autograd may return zero tensors for them)."""
    if actual is None and expected is None:
        return 0.0
    reference = expected if expected is not None else actual
    actual = torch.zeros_like(reference) if actual is None else actual
    expected = torch.zeros_like(reference) if expected is None else expected
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    difference = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return difference / scale if scale > 0 else difference


def _assert_parity(fast, slow, dtype):
    tol = RELATIVE_TOLERANCE[dtype]
    for kind in fast:
        for index, (a, b) in enumerate(zip(fast[kind], slow[kind])):
            error = relative_error(a, b)
            assert error <= tol, f"{kind}[{index}]: max |fused − reference| is {error:.2e} of the largest value " \
                                 f"(allowed {tol:.0e} for {dtype})"


def _away_from_clamp(x, b, act, gain, clamp):
    """Move elements whose activation lies within 1 % of ±clamp: rounding in reduced precision would
    decide on which side of the clamp they fall, and their gradient would differ by its whole value."""
    if clamp is None:
        return x
    for _ in range(20):
        u = bias_act_reference(x.double(), b.double(), 1, act, 0.2, gain)
        near = (u.abs() - clamp).abs() < 0.01 * clamp
        if not near.any():
            return x
        x = torch.where(near, x + 0.05, x).to(x.dtype)
    raise AssertionError("could not move the inputs away from the clamp")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act,clamp", [("linear", None), ("lrelu", None), ("lrelu", 0.5), ("relu", 1.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_act_parity(device, dtype, act, clamp, channels_last):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5, device=device).to(dtype)
    b = torch.randn(8, device=device).to(dtype)
    x = _away_from_clamp(x, b, act, 1.3, clamp)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast, slow = _both_paths(lambda x, b: bias_act(x, b, act=act, clamp=clamp, gain=1.3), [x, b])
    _assert_parity(fast, slow, dtype)


@pytest.mark.parametrize("up,down,padding,filter_hw", GEOMETRIES + [((2, 2), (1, 1), (2, 1, 2, 1), None),
                                                                   ((1, 1), (2, 2), (1, 1, 1, 1), None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upfirdn2d_parity(device, up, down, padding, filter_hw, dtype, channels_last):
    """2-D filters of every geometry, and the networks' separable 1-D filter (None) up and down by 2."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, device=device).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    f = setup_filter(SEPARABLE, device=device) if filter_hw is None else torch.randn(filter_hw, device=device)
    fast, slow = _both_paths(lambda x: upfirdn2d(x, f, up=up, down=down, padding=padding, gain=2.0), [x])
    _assert_parity(fast, slow, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_parity_at_a_realistic_size(device, dtype):
    """A 256²-generator layer: 2× upsampling then bias + lrelu + clamp on 128 channels at 128², channels_last."""
    torch.manual_seed(0)
    x = torch.randn(4, 128, 64, 64, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(128, device=device).to(dtype)
    f = setup_filter(SEPARABLE, device=device)

    def layer(x, b):
        return bias_act(upsample2d(x, f), b, act="lrelu", clamp=256.0)

    fast, slow = _both_paths(layer, [x, b])
    _assert_parity(fast, slow, dtype)


def _networks(device, num_fp16_res, like=None):
    torch.manual_seed(0)
    kwargs = dict(img_resolution=32, channel_base=512, channel_max=64, num_fp16_res=num_fp16_res)
    G = Generator(z_dim=32, w_dim=32, **kwargs).to(device)
    D = Discriminator(**kwargs).to(device)
    if like is not None:  # the same weights in another precision
        G.load_state_dict(like[0].state_dict())
        D.load_state_dict(like[1].state_dict())
    return G, D


def _network_gradients(G, D, z, mode: str) -> dict:
    """Every parameter's gradient of image + path-length + R1 terms (double backward through G and D)."""
    def loss():
        ws = G.mapping(z, None)
        img = G.synthesis(ws, noise_mode="const")
        pl_grad, = torch.autograd.grad(img.sum(), ws, create_graph=True)
        r1_grad, = torch.autograd.grad(D(img).sum(), img, create_graph=True)
        return img.sum() + pl_grad.square().sum() + r1_grad.square().sum()

    named = [(f"G.{n}", p) for n, p in G.named_parameters()] + [(f"D.{n}", p) for n, p in D.named_parameters()]
    fused.set_mode(mode)
    try:
        grads = torch.autograd.grad(loss(), [p for _, p in named], allow_unused=True)
    finally:
        fused.set_mode("auto")
    return {name: g for (name, _), g in zip(named, grads)}


def test_networks_parity_with_r1_and_path_length_gradients(device):
    """float32: every parameter's gradient agrees between the fused and reference ops, relative to that
    gradient's own scale (gradients here reach 1e5: an absolute tolerance would test nothing useful)."""
    G, D = _networks(device, 0)
    z = torch.randn(4, 32, device=device, generator=torch.Generator(device=device).manual_seed(1))
    fast, slow = _network_gradients(G, D, z, "require"), _network_gradients(G, D, z, "reference")
    errors = {name: relative_error(fast[name], slow[name]) for name in slow}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: max |fused − reference| is {errors[worst]:.2e} of its largest value"


def test_mixed_precision_is_as_accurate_with_fused_ops(device):
    """float16 in the top two resolutions: both paths round, so they are compared with the float32
    gradients of the same weights. The fused kernels must overflow only where the reference ops do
    (the trainer zeroes such values) and be no less accurate than the reference ops, parameter by
    parameter. (On the H200 a direct fused-vs-reference comparison differed by 25 % of the largest
    value for one discriminator bias: float16 cancellation in a sum, not a property of either path.)"""
    if device.type == "cpu":
        pytest.skip("CPU computes in float32 whatever num_fp16_res says (test_gan_networks)")
    G16, D16 = _networks(device, 2)
    G32, D32 = _networks(device, 0, like=(G16, D16))
    z = torch.randn(4, 32, device=device, generator=torch.Generator(device=device).manual_seed(1))
    truth = _network_gradients(G32, D32, z, "reference")
    fast, slow = _network_gradients(G16, D16, z, "require"), _network_gradients(G16, D16, z, "reference")
    report = []
    for name, exact in truth.items():
        if exact is None:
            continue
        a, b = fast[name], slow[name]
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), (
            f"{name}: {int((~torch.isfinite(a)).sum())} non-finite values on the fused path, "
            f"{int((~torch.isfinite(b)).sum())} on the reference path")
        finite = torch.isfinite(b)
        error_fused = relative_error(a[finite], exact[finite]) if finite.any() else 0.0
        error_reference = relative_error(b[finite], exact[finite]) if finite.any() else 0.0
        if error_fused > 2 * error_reference + 1e-3:
            report.append(f"{name}: fused {error_fused:.2e} vs reference {error_reference:.2e} of the float32 scale")
    assert not report, "fused ops less accurate than the reference ops in mixed precision:\n" + "\n".join(report)
