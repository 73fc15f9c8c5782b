"""Fused CUDA ops: the logic shared with the reference path is tested on CPU (the adjoint used for
gradients, the separable split, the fallback and its warning, the toolkit search, the upfirdn2d kernel
choice). The tiled upfirdn2d kernel's block code also runs on CPU (`tiled_emulation`: the same source
compiled for the host, blocks and threads stepped through) against the reference ops. The parity tests
(fused vs reference: output, gradients, double backward; for upfirdn2d each kernel) run twice: on CPU
with `ReferenceKernels` standing in for the compiled extension (a test of the tests and of the autograd
wrappers, in CI) and on a GPU with the real kernels (`bench/gpu-check`). The compile test needs only
nvcc (`pip install "dermsynth[cuda-build]"`)."""

from __future__ import annotations

import ctypes
import itertools
import math
import shutil
import subprocess
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


@pytest.mark.slow
@pytest.mark.workflow  # minutes: 4 CUDA sources × 2 architectures on the 2-core CPU machine (docs/benchmarks.md)
@pytest.mark.timeout(2400)
@pytest.mark.skipif(fused.toolkit_problem() is not None, reason=f"cannot compile: {fused.toolkit_problem()}")
def test_kernels_compile(tmp_path, monkeypatch):
    """Compiles (and imports) the extension for sm_80 (A100) and sm_90 (H100/H200) with the toolkit
    `fused.toolkit` picks — the cuda-build extra's pip wheels on a machine without a GPU; needs no GPU."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    module = fused.compile_extension(tmp_path / "build", "dermsynth_gan_ops_compile_test")
    assert {"bias_act_forward", "bias_act_backward", "upfirdn2d", "upfirdn2d_tiled"} <= set(dir(module))


def _fake_wheels(root, headers=fused.TORCH_CUDA_HEADERS, nvcc=True):
    """A site-packages/nvidia tree laid out as NVIDIA's CUDA 13 wheels install it (nvidia/cu13/…)."""
    home = root / f"cu{torch.version.cuda.split('.')[0]}"
    (home / "include" / "cccl").mkdir(parents=True)
    (home / "lib").mkdir()
    (home / "lib" / f"libcudart.so.{torch.version.cuda.split('.')[0]}").write_bytes(b"")
    for header in headers:
        (home / "include" / header).write_text("")
    if nvcc:
        (home / "bin").mkdir()
        (home / "bin" / "nvcc").write_text("")
    return home


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch build has no CUDA version to match")
def test_toolkit_from_the_pip_extra(tmp_path, monkeypatch):
    """The cuda-build extra's wheels are used when installed (nvcc, headers, cccl, a libcudart.so link for
    torch's -lcudart); $CUDA_HOME still wins; without them the problem names the pip command."""
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    home = _fake_wheels(tmp_path / "nvidia")
    monkeypatch.setattr(fused, "_nvidia_roots", lambda: [tmp_path / "nvidia"])
    assert fused.pip_toolkit() == home
    assert fused.toolkit() == (home, [home / "include" / "cccl"])
    assert fused.toolkit_problem() is None
    flags = fused._cudart_link_flags(home, tmp_path / "build")
    link = tmp_path / "build" / "cudart" / "libcudart.so"
    assert flags == [f"-L{link.parent}"] and link.resolve() == next((home / "lib").glob("libcudart.so.*")).resolve()

    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "elsewhere"))
    assert fused.toolkit()[0] == tmp_path / "elsewhere"
    assert 'pip install "dermsynth[cuda-build]"' in fused.toolkit_problem()


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch build has no CUDA version to match")
def test_headers_a_toolkit_lacks_come_from_the_wheels(tmp_path, monkeypatch):
    """A minimal toolkit (nvcc, cuda_runtime.h) borrows torch's CUDA library headers from the pip wheels;
    with none there the problem lists what is missing and the fix."""
    from torch.utils import cpp_extension
    system = tmp_path / "system"
    (system / "bin").mkdir(parents=True)
    (system / "bin" / "nvcc").write_text("")
    (system / "include").mkdir()
    (system / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CPATH", raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(system))
    wheels = _fake_wheels(tmp_path / "nvidia", nvcc=False)
    monkeypatch.setattr(fused, "_nvidia_roots", lambda: [tmp_path / "nvidia"])
    assert fused.toolkit() == (system, [wheels / "include"])
    assert fused.toolkit_problem() is None
    monkeypatch.setattr(fused, "_nvidia_roots", lambda: [])
    problem = fused.toolkit_problem()
    assert "lacks cusparse.h, cublas_v2.h" in problem and 'pip install "dermsynth[cuda-build]"' in problem
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert fused.toolkit_problem().startswith("no CUDA toolkit found: pip install")


# --- upfirdn2d: which kernel ------------------------------------------------------------------------
def test_upfirdn2d_kernel_choice(fused_state):
    """auto: the generic kernel until the tiled one has passed its parity tests on a GPU (fused's docstring);
    the tiled kernel covers StyleGAN2's calls (separable or 2-D filters, 2× up, 2× down, plain filtering) and
    nothing else; generic and tiled force one, and a forced tiled kernel refuses what it does not cover."""
    fused.set_upfirdn2d_kernel("auto")
    assert fused.upfirdn2d_kernel_for((4,), (2, 2), (1, 1)) == "generic"
    assert fused.tiled_supports((4,), (2, 2), (1, 1)) and fused.tiled_supports((4,), (1, 1), (2, 2))
    assert fused.tiled_supports((3, 5), (1, 1), (1, 1))
    assert not fused.tiled_supports((4,), (2, 1), (1, 1))  # x and y differ
    assert not fused.tiled_supports((6, 6), (4, 4), (2, 2))
    assert not fused.tiled_supports((fused.TILED_MAX_TAPS + 1,), (1, 1), (1, 1))
    fused.set_upfirdn2d_kernel("generic")
    assert fused.upfirdn2d_kernel_for((4,), (2, 2), (1, 1)) == "generic"
    fused.set_upfirdn2d_kernel("tiled", tile=(3, 2, 2))
    assert fused.upfirdn2d_kernel_for((4,), (2, 2), (1, 1)) == "tiled" and fused_state["tile"] == (3, 2, 2)
    with pytest.raises(fused.FusedOpsError, match="does not cover up=\\(2, 1\\)"):
        fused.upfirdn2d_kernel_for((4,), (2, 1), (1, 1))
    with pytest.raises(ValueError, match="choose from auto, generic, tiled"):
        fused.set_upfirdn2d_kernel("fast")
    fused_state["upfirdn2d_kernel"] = "tiles"  # as a mistyped $DERMSYNTH_UPFIRDN2D_KERNEL leaves it
    with pytest.raises(ValueError, match="DERMSYNTH_UPFIRDN2D_KERNEL"):
        fused.upfirdn2d_kernel_for((4,), (1, 1), (1, 1))


# --- the tiled kernel's block code, run on the CPU ----------------------------------------------------
@pytest.fixture(scope="session")
def tiled_emulation(tmp_path_factory):
    """upfirdn2d_tiled.cu's block code compiled for the host (cuda/upfirdn2d_tiled_emulation.cpp)."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("needs a C++ compiler (c++) to build the CPU emulation of the tiled kernel")
    library = tmp_path_factory.mktemp("emulation") / "upfirdn2d_tiled_emulation.so"
    source = fused._source_dir() / "upfirdn2d_tiled_emulation.cpp"
    subprocess.run([compiler, "-O1", "-std=c++17", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def _int64s(values):
    return (ctypes.c_int64 * len(values))(*values)


def _emulate(library, dtype, x, f, y, shape, x_stride, y_stride, up, down, padding, flip_filter, gain, channels_last,
             tile, threads):
    """One call of the emulation library (pointers as integers); returns the plan: tile w, h, c, input tile w,
    h, blocks, shared bytes."""
    taps_x, taps_y = (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])
    x0, x1, y0, y1 = padding
    out_hw = (fused.output_size(shape[2], up, down, y0, y1, taps_y), fused.output_size(shape[3], up, down, x0, x1, taps_x))
    plan = _int64s([0] * 7)
    run = {torch.float32: library.upfirdn2d_tiled_float, torch.float64: library.upfirdn2d_tiled_double}[dtype]
    status = run(ctypes.c_void_p(x), ctypes.c_void_p(f.data_ptr()), ctypes.c_void_p(y), _int64s(shape),
                 _int64s(x_stride), _int64s(y_stride), _int64s(out_hw), taps_x, taps_y, int(f.ndim == 1), up, down,
                 _int64s(padding), int(flip_filter), ctypes.c_float(gain), int(channels_last), (ctypes.c_int * 3)(*tile),
                 threads, plan)
    assert status == 0, f"emulation status {status}"
    return list(plan)


def emulate_tiled(library, x, f, up, down, padding, flip_filter=False, gain=1.0, tile=(0, 0, 0), threads=256):
    """The tiled kernel on (N, C, H, W) float32/float64 `x` (NCHW or channels_last), f 1-D (separable) or 2-D;
    returns (y in x's layout, plan: tile w, h, c, input tile w, h, blocks, shared bytes)."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    f = f.float().contiguous()
    taps_x, taps_y = (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])
    out_hw = (fused.output_size(x.shape[2], up, down, padding[2], padding[3], taps_y),
              fused.output_size(x.shape[3], up, down, padding[0], padding[1], taps_x))
    y = torch.full((*x.shape[:2], *out_hw), math.nan, dtype=x.dtype)
    y = y.contiguous(memory_format=torch.channels_last) if channels_last else y
    plan = _emulate(library, x.dtype, x.data_ptr(), f, y.data_ptr(), x.shape, x.stride(), y.stride(), up, down,
                    padding, flip_filter, gain, channels_last, tile, threads)
    return y, plan


def plan_tiled(library, shape, channels_last, dtype, f, up, down, padding):
    """The tiled kernel's plan for an input of `shape` (no data: nothing runs)."""
    def strides(n, c, h, w):
        return (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
    taps_x, taps_y = (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])
    out_h = fused.output_size(shape[2], up, down, padding[2], padding[3], taps_y)
    out_w = fused.output_size(shape[3], up, down, padding[0], padding[1], taps_x)
    plan = _emulate(library, dtype, 0, f.float().contiguous(), 0, shape, strides(*shape),
                    strides(shape[0], shape[1], out_h, out_w), up, down, padding, False, 1.0, channels_last,
                    (0, 0, 0), 0)
    return plan, (out_h, out_w)


EMULATED_FILTERS = [(4,), (5,), (1,), (4, 4), (3, 5), (2, 1)]  # 1-D: separable; 2-D: full
EMULATED_PADDINGS = [(1, 2, 1, 2), (2, 1, 2, 1), (-1, 2, 0, -2), (3, 0, -1, 2), (0, 0, 0, 0)]


@pytest.mark.parametrize("up,down", fused.TILED_FACTORS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiled_kernel_blocks_on_cpu(tiled_emulation, up, down, channels_last):
    """Every tile plan (the planner's, small tiles with edges inside the image, 1×1×1), thread count (256,
    and 7: the strided loops), filter, padding (negative crops) and flip agrees with the reference ops."""
    for f_shape, padding, flip, tile, threads in itertools.product(
            EMULATED_FILTERS, EMULATED_PADDINGS, [False, True], [(0, 0, 0), (3, 2, 2), (1, 1, 1)], [256, 7]):
        generator = torch.Generator().manual_seed(len(f_shape) * 100 + sum(padding))
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=generator)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        f = torch.randn(f_shape, dtype=torch.float64, generator=generator)
        expected = upfirdn2d_reference(x, f.float().double(), up, down, padding, flip, 1.5)  # float32 taps, gain
        actual, _ = emulate_tiled(tiled_emulation, x, f, up, down, padding, flip, 1.5, tile, threads)
        assert actual.is_contiguous(memory_format=torch.channels_last) == channels_last
        error = relative_error(actual, expected)
        assert error < 1e-12, f"filter {f_shape}, padding {padding}, flip {flip}, tile {tile}: error {error:.1e}"
    single, _ = emulate_tiled(tiled_emulation, x.float(), f, up, down, (1, 2, 1, 2), False, 2.0)
    torch.testing.assert_close(single, upfirdn2d_reference(x.float(), f.float(), up, down, (1, 2, 1, 2), False, 2.0))


@pytest.mark.parametrize("up,down", fused.TILED_FACTORS)
def test_tiled_kernel_gives_its_own_adjoint(tiled_emulation, up, down):
    """The backward pass runs the tiled kernel on `adjoint_arguments` (2× up ↔ 2× down): equal to autograd."""
    torch.manual_seed(3)
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64, requires_grad=True)
    f = setup_filter(SEPARABLE).double()
    padding = (2, 1, 2, 1)
    y = upfirdn2d_reference(x, f, up, down, padding, False, 4.0)
    dy = torch.randn_like(y)
    expected, = torch.autograd.grad(y, x, dy)
    up_b, down_b, pad_b, flip_b = fused.adjoint_arguments(x.shape[2:], y.shape[2:], (4, 4), (up, up), (down, down),
                                                          padding, False)
    actual, _ = emulate_tiled(tiled_emulation, dy, f, up_b[0], down_b[0], pad_b, flip_b, 4.0, tile=(3, 3, 3))
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_tiled_plans_fit_shared_memory(tiled_emulation, channels_last):
    """For StyleGAN2's layers (4² … 1024², 3 … 512 channels, the 4-tap filter and a 2-D 8×8 one, float32 and
    float64 accumulators) the plan fits 48 KiB of shared memory, covers the output exactly once, and gives a
    block about a thousand outputs (≥ 512 where the image and channels allow)."""
    for resolution, channels, (up, down), f_shape, dtype in itertools.product(
            [4, 8, 64, 256, 1024], [3, 512], fused.TILED_FACTORS, [(4,), (8, 8)], [torch.float32, torch.float64]):
        size = resolution // up
        taps = f_shape[0]  # the padding of upsample2d, downsample2d and filter2d
        padding = ((taps + up - 1) // 2, (taps - up) // 2) * 2 if up > 1 else ((taps - down + 1) // 2, (taps - down) // 2) * 2
        (tile_w, tile_h, tile_c, _, _, blocks, shared), (out_h, out_w) = plan_tiled(
            tiled_emulation, (1, channels, size, size), channels_last, dtype, torch.ones(f_shape), up, down, padding)
        case = f"{resolution}², {channels} channels, up {up}, down {down}, filter {f_shape}, {dtype}"
        assert shared <= 48 * 1024, case
        assert blocks == math.ceil(out_w / tile_w) * math.ceil(out_h / tile_h) * math.ceil(channels / tile_c), case
        if dtype == torch.float32 and out_h * out_w * channels >= 4096:
            assert tile_w * tile_h * tile_c >= 512, f"{case}: {tile_w}×{tile_h}×{tile_c}"


# --- fused vs reference: on a GPU the compiled kernels, on CPU a stand-in ---------------------------
ACT_CODES = {code: name for name, code in fused.FUSED_ACTIVATIONS.items()}
# largest |fused − reference| allowed, as a share of the largest |reference| value of that tensor
RELATIVE_TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
SEPARABLE = [1.0, 3.0, 3.0, 1.0]  # the networks' resampling filter, applied as two 1-D passes


class ReferenceKernels:
    """Stand-in for the compiled extension on CPU: the kernels' four entry points (same signatures,
    same conventions: integer activation codes, clamp < 0 = none, float32 filters — 2-D for the generic
    upfirdn2d, 1-D (separable) or 2-D for the tiled one — no autograd), computed with the reference ops
    and, for the gradient, with the explicit masked slope. The fused autograd wrappers (adjoint
    arguments, separable passes, first and second derivatives) then run in CI exactly as they do on a
    GPU; only the arithmetic inside the kernels differs. `calls` names the upfirdn2d entry points used."""

    def __init__(self):
        self.calls: list[str] = []

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

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, x0, x1, y0, y1, flip_filter, gain):
        assert f.ndim == 2 and f.dtype == torch.float32, "the kernel takes 2-D float32 filters"
        self.calls.append("generic")
        with torch.no_grad():
            return upfirdn2d_reference(x, f, (up_x, up_y), (down_x, down_y), (x0, x1, y0, y1), flip_filter, gain)

    def upfirdn2d_tiled(self, x, f, up, down, x0, x1, y0, y1, flip_filter, gain, tile_w, tile_h, tile_c):
        assert f.ndim in (1, 2) and f.dtype == torch.float32, "the kernel takes 1-D or 2-D float32 filters"
        assert (up, down) in fused.TILED_FACTORS and min(tile_w, tile_h, tile_c) >= 0
        self.calls.append("tiled")
        with torch.no_grad():
            return upfirdn2d_reference(x, f, up, down, (x0, x1, y0, y1), flip_filter, gain)


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
        fused._state.update(mode=saved["mode"], upfirdn2d_kernel=saved["upfirdn2d_kernel"], tile=saved["tile"])


# the upfirdn2d kernels the parity tests run: the generic one, the tiled one with its planner's tiles, and
# with 3×2-sample, 2-channel tiles (tile edges everywhere in small images, partial channel blocks)
KERNELS = {"generic": ("generic", None), "tiled": ("tiled", None), "tiled-small": ("tiled", (3, 2, 2))}


def _use_kernel(kernel: str) -> None:
    fused.set_upfirdn2d_kernel(*KERNELS[kernel])


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


UPFIRDN2D_CASES = GEOMETRIES + [  # and 1-D (separable) filters: the networks' (None), random ones (a length)
    ((2, 2), (1, 1), (2, 1, 2, 1), None),
    ((1, 1), (2, 2), (1, 1, 1, 1), None),
    ((1, 1), (1, 1), (2, 1, 2, 1), None),
    ((2, 2), (1, 1), (3, 2, 3, 2), (5,)),
    ((1, 1), (2, 2), (2, 1, -1, 3), (6,)),
]


def _upfirdn2d_cases():
    """Every case with the generic kernel; the tiled kernel (both tile plans) where it applies."""
    for up, down, padding, filter_hw in UPFIRDN2D_CASES:
        shape = (len(SEPARABLE),) if filter_hw is None else filter_hw
        kernels = ["generic"] + (["tiled", "tiled-small"] if fused.tiled_supports(shape, up, down) else [])
        for kernel in kernels:
            yield pytest.param(up, down, padding, filter_hw, kernel,
                               id=f"{kernel}-up{up}-down{down}-pad{padding}-f{filter_hw or 'sep4'}")


@pytest.mark.parametrize("up,down,padding,filter_hw,kernel", list(_upfirdn2d_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upfirdn2d_parity(device, up, down, padding, filter_hw, kernel, dtype, channels_last):
    """2-D filters of every geometry, the networks' separable 1-D filter (None) and random 1-D ones (a
    length), on each kernel that takes them; on CPU the stand-in also shows which entry point ran."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, device=device).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if filter_hw is None:
        f = setup_filter(SEPARABLE, device=device)
    else:
        f = torch.randn(filter_hw, device=device)
    _use_kernel(kernel)
    fast, slow = _both_paths(lambda x: upfirdn2d(x, f, up=up, down=down, padding=padding, gain=2.0), [x])
    _assert_parity(fast, slow, dtype)
    if device.type == "cpu":
        assert set(fused._state["module"].calls) == {KERNELS[kernel][0]}


@pytest.mark.parametrize("kernel", ["generic", "tiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_parity_at_a_realistic_size(device, dtype, kernel):
    """A 256²-generator layer: 2× upsampling then bias + lrelu + clamp on 128 channels at 128², channels_last."""
    _use_kernel(kernel)
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


@pytest.mark.parametrize("kernel", ["generic", "tiled"])
def test_networks_parity_with_r1_and_path_length_gradients(device, kernel):
    """float32: every parameter's gradient agrees between the fused and reference ops, relative to that
    gradient's own scale (gradients here reach 1e5: an absolute tolerance would test nothing useful)."""
    _use_kernel(kernel)
    G, D = _networks(device, 0)
    z = torch.randn(4, 32, device=device, generator=torch.Generator(device=device).manual_seed(1))
    fast, slow = _network_gradients(G, D, z, "require"), _network_gradients(G, D, z, "reference")
    errors = {name: relative_error(fast[name], slow[name]) for name in slow}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: max |fused − reference| is {errors[worst]:.2e} of its largest value"


@pytest.mark.parametrize("kernel", ["generic", "tiled"])
def test_mixed_precision_is_as_accurate_with_fused_ops(device, kernel):
    """float16 in the top two resolutions: both paths round, so they are compared with the float32
    gradients of the same weights. The fused kernels must overflow only where the reference ops do
    (the trainer zeroes such values) and be no less accurate than the reference ops, parameter by
    parameter. (On the H200 a direct fused-vs-reference comparison differed by 25 % of the largest
    value for one discriminator bias: float16 cancellation in a sum, not a property of either path.)"""
    if device.type == "cpu":
        pytest.skip("CPU computes in float32 whatever num_fp16_res says (test_gan_networks)")
    _use_kernel(kernel)
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
