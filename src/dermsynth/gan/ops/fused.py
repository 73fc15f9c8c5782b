"""Fused CUDA kernels for bias_act and upfirdn2d, compiled on first use.

The kernels (`cuda/*.cu`) are built with `torch.utils.cpp_extension` + ninja the first time a CUDA
tensor reaches an op, into a cache folder named by the sources' hash, torch's and CUDA's versions and
the GPU architecture (`$DERMSYNTH_EXTENSIONS_DIR`, default `~/.cache/dermsynth/extensions`). An
exclusive file lock serialises concurrent builds by several jobs sharing the cache; the lock is a
`flock`, so a job killed mid-build leaves no stale lock behind.

Mode (`set_mode`, or `$DERMSYNTH_GAN_OPS`, or `cuda_ops` in a GAN's config):
    auto       fused kernels on CUDA tensors; if the build fails, one warning saying why and how to
               fix it, then the reference PyTorch ops (same results, slower)
    require    a build failure is an error
    reference  never build; always the reference ops
CPU tensors always take the reference path.

Gradients: bias_act's kernels cover the piecewise-linear activations (linear, relu, lrelu), whose
gradient is a masked scaling and whose second derivative vanishes almost everywhere, so R1 and
path-length regularisation (double backward) reuse the same kernel. upfirdn2d is linear in its input;
its adjoint is another upfirdn2d (up and down swapped, filter flipped, padding in
`adjoint_arguments`), so every order of derivative runs on the same kernel.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
from pathlib import Path

import torch

MODES = ("auto", "require", "reference")
FUSED_ACTIVATIONS = {"linear": 0, "relu": 1, "lrelu": 2}
SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu")
CUDA_FLAGS = ("-O3", "--expt-relaxed-constexpr")

_state = {"mode": os.environ.get("DERMSYNTH_GAN_OPS", "auto"), "module": None, "failure": None, "warned": False}


class FusedOpsError(RuntimeError):
    """The fused CUDA ops were required but could not be built or loaded."""


def set_mode(mode: str) -> None:
    """Choose the fused-ops mode (auto | require | reference, module docstring); ValueError otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown fused-ops mode {mode!r}; choose from {', '.join(MODES)}")
    _state["mode"] = mode


def get_mode() -> str:
    """The current fused-ops mode."""
    return _state["mode"]


# --- building ------------------------------------------------------------------------------------
def _source_dir() -> Path:
    return Path(__file__).with_name("cuda")


def build_tag() -> str:
    """Cache key: the kernel sources, build flags, torch/CUDA versions and the current GPU's architecture."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_source_dir() / name).read_bytes())
    digest.update(" ".join(CUDA_FLAGS).encode())
    major, minor = torch.cuda.get_device_capability()
    cuda = (torch.version.cuda or "none").replace(".", "")
    torch_version = torch.__version__.split("+")[0]
    return f"{digest.hexdigest()[:12]}-torch{torch_version}-cu{cuda}-sm{major}{minor}"


def cache_dir() -> Path:
    """Where compiled extensions are cached: $DERMSYNTH_EXTENSIONS_DIR or ~/.cache/dermsynth/extensions."""
    return Path(os.environ.get("DERMSYNTH_EXTENSIONS_DIR", Path.home() / ".cache" / "dermsynth" / "extensions"))


def toolkit_problem() -> str | None:
    """Why the CUDA toolkit torch found cannot build the kernels, or None if it looks complete."""
    # cpp_extension looks for the CUDA toolkit when imported (and warns on a GPU-less node that has one)
    # deferred: torch.utils.cpp_extension — only a kernel build needs it
    from torch.utils import cpp_extension
    home = cpp_extension.CUDA_HOME
    if home is None:
        return f"no CUDA toolkit found (nvcc; set CUDA_HOME to a toolkit matching torch's CUDA {torch.version.cuda})"
    folders = [Path(home) / "include"] + [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    missing = [h for h in ("cuda_runtime.h", "cusparse.h") if not any((f / h).exists() for f in folders)]
    if missing:
        return (f"the CUDA toolkit at {home} lacks {', '.join(missing)} (torch's CUDA headers need a full toolkit; "
                f"or add the folders holding them to CPATH)")
    return None


def compile_extension(build_dir: Path, name: str) -> object:
    """Run the torch/ninja build into `build_dir` (for the architectures in $TORCH_CUDA_ARCH_LIST) and import it."""
    # cpp_extension looks for the CUDA toolkit when imported (and warns on a GPU-less node that has one)
    # deferred: torch.utils.cpp_extension — only a kernel build needs it
    from torch.utils import cpp_extension
    if (problem := toolkit_problem()) is not None:
        raise FusedOpsError(problem)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other jobs wait here while one builds
        (build_dir / "lock").unlink(missing_ok=True)  # torch's own lock file, stale if a build was killed
        return cpp_extension.load(name=name, sources=[str(_source_dir() / s) for s in SOURCES],
                                  build_directory=str(build_dir), extra_cflags=["-O3"],
                                  extra_cuda_cflags=list(CUDA_FLAGS), verbose=False)


def build() -> object:
    """Compile (or load from the cache) the extension for the current GPU; raises on failure."""
    if not torch.cuda.is_available():
        raise FusedOpsError("torch sees no CUDA device")
    tag = build_tag()
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # only the GPU in hand: faster builds
    return compile_extension(cache_dir() / tag, f"dermsynth_gan_ops_{tag.split('-')[0]}")


def _explain(error: Exception) -> str:
    text = str(error).strip().splitlines()
    reason = text[-1] if text else type(error).__name__
    return (f"the fused CUDA ops could not be built ({type(error).__name__}: {reason[:300]}). "
            f"dermsynth uses the reference PyTorch ops instead: same results, slower training. To fix: install "
            f"a CUDA toolkit whose nvcc matches torch's CUDA {torch.version.cuda} (set CUDA_HOME) and ninja; "
            f"the build folder is under {cache_dir()}. Set `cuda_ops: require` in the GAN's config (or "
            f"DERMSYNTH_GAN_OPS=require) to make this an error, or `cuda_ops: reference` to skip the build.")


def kernels():
    """The compiled extension, or None when the reference path must be used (see the module doc)."""
    if _state["mode"] == "reference":
        return None
    if _state["module"] is None and _state["failure"] is None:
        try:
            _state["module"] = build()
        except Exception as error:  # noqa: BLE001 - any build failure falls back (or raises in require mode)
            _state["failure"] = _explain(error)
    if _state["failure"] is not None:
        if _state["mode"] == "require":
            raise FusedOpsError(_state["failure"])
        if not _state["warned"]:
            warnings.warn(_state["failure"], RuntimeWarning, stacklevel=3)
            _state["warned"] = True
        return None
    return _state["module"]


def kernels_for(x: torch.Tensor):
    """The compiled extension for ops on `x`, or None: CPU tensors and code being traced by torch.compile
    take the reference ops (inductor fuses those itself)."""
    if not x.is_cuda or torch.compiler.is_compiling():  # torch.compile fuses the reference ops itself
        return None
    return kernels()


# --- bias_act --------------------------------------------------------------------------------------
class _BiasActGrad(torch.autograd.Function):
    """dx = dy · gain · act′(x + b) · [not clamped]; linear in dy, constant in x and b (a.e.)."""

    @staticmethod
    def forward(ctx, dy, x, b, dim, act, alpha, gain, clamp):
        ctx.save_for_backward(x, b)
        ctx.args = (dim, act, alpha, gain, clamp)
        return _state["module"].bias_act_backward(dy, x, b, dim, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, ddx):
        x, b = ctx.saved_tensors
        return (_BiasActGrad.apply(ddx, x, b, *ctx.args),) + (None,) * 7


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):
        ctx.save_for_backward(x, b)
        ctx.args = (dim, act, alpha, gain, clamp)
        return _state["module"].bias_act_forward(x, b, dim, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dx = _BiasActGrad.apply(dy, x, b, *ctx.args)
        db = None
        if b.numel() and ctx.needs_input_grad[1]:
            dim = ctx.args[0]
            db = dx.sum(dim=[d for d in range(dx.ndim) if d != dim])
        return dx, db, None, None, None, None, None


def bias_act(x, b, dim, act, alpha, gain, clamp):
    """Fused path; the caller has checked that `act` is in FUSED_ACTIVATIONS and kernels are loaded."""
    b = x.new_empty([0]) if b is None else b
    return _BiasAct.apply(x, b, dim, FUSED_ACTIVATIONS[act], float(alpha), float(gain),
                          -1.0 if clamp is None else float(clamp))


# --- upfirdn2d -------------------------------------------------------------------------------------
def output_size(in_size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Output length of upfirdn2d along one axis: (in·up + pad0 + pad1 − taps) // down + 1 samples."""
    return (in_size * up + pad0 + pad1 - taps) // down + 1


def adjoint_arguments(in_hw, out_hw, filter_hw, up, down, padding, flip_filter):
    """Arguments of the upfirdn2d that maps an output gradient back to the input gradient.

    With U the upsampled input and y[m] = Σ_t g[t] U[m·down + t − p0] (g the flipped filter), the
    gradient dU[a] is a correlation of the `down`-upsampled dy with the unflipped filter, padded by
    taps − 1 − p0 in front; keeping every `up`-th sample gives dx, and the back padding is chosen so
    exactly in_size samples come out.
    """
    (in_h, in_w), (out_h, out_w), (fh, fw) = in_hw, out_hw, filter_hw
    (up_x, up_y), (down_x, down_y), (x0, _, y0, _) = up, down, padding
    pad = (fw - 1 - x0, in_w * up_x - out_w * down_x + x0,
           fh - 1 - y0, in_h * up_y - out_h * down_y + y0)
    return (down_x, down_y), (up_x, up_y), pad, not flip_filter


class _UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain):
        y = _state["module"].upfirdn2d(x, f, up[0], up[1], down[0], down[1], *padding, flip_filter, gain)
        ctx.save_for_backward(f)
        ctx.geometry = (tuple(x.shape[2:]), tuple(y.shape[2:]), up, down, padding, flip_filter, gain)
        return y

    @staticmethod
    def backward(ctx, dy):
        f, = ctx.saved_tensors
        in_hw, out_hw, up, down, padding, flip_filter, gain = ctx.geometry
        args = adjoint_arguments(in_hw, out_hw, tuple(f.shape), up, down, padding, flip_filter)
        return (_UpFirDn2d.apply(dy, f, *args, gain),) + (None,) * 6


def separable_passes(f: torch.Tensor, up, down, padding, gain: float):
    """(2-D filter, up, down, padding, gain) per pass: one pass for a 2-D filter, two (x then y) for a
    1-D one. Each axis is independent, so upsampling/padding/downsampling split between the passes."""
    (up_x, up_y), (down_x, down_y), (x0, x1, y0, y1) = up, down, padding
    if f.ndim == 2:
        return [(f, up, down, padding, gain)]
    scale = gain ** 0.5
    return [(f[None, :], (up_x, 1), (down_x, 1), (x0, x1, 0, 0), scale),
            (f[:, None], (1, up_y), (1, down_y), (0, 0, y0, y1), scale)]


def upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """Fused path of `ops.upfirdn2d` (same arguments, normalised): one kernel launch per separable pass."""
    for f2d, up_, down_, padding_, gain_ in separable_passes(f, up, down, padding, gain):
        x = _UpFirDn2d.apply(x, f2d.float().contiguous(), up_, down_, padding_, flip_filter, float(gain_))
    return x
