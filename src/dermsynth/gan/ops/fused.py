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

Toolkit: nvcc and the CUDA headers come from $CUDA_HOME (or $CUDA_PATH) when set, else from the pip
wheels of the `cuda-build` extra (`pip install "dermsynth[cuda-build]"`: nvcc for CUDA 13.0, torch's CUDA
minor; see `toolkit`), else from the toolkit torch finds (nvcc on PATH, /usr/local/cuda). Headers the
toolkit lacks are taken from NVIDIA's pip wheels that torch depends on. Nothing here needs a GPU to
compile: `compile_extension` builds for the architectures in $TORCH_CUDA_ARCH_LIST.

upfirdn2d kernels (`set_upfirdn2d_kernel`, or `$DERMSYNTH_UPFIRDN2D_KERNEL`):
    auto       for now the generic kernel: the tiled one has only run emulated on the CPU so far, and becomes
               auto's choice where it applies (`tiled_supports`) once its parity tests pass on a GPU
               (bench/gpu-check; the GPU check section of docs/benchmarks.md)
    generic    the generic one-thread-per-output kernel (cuda/upfirdn2d.cu; two launches for a separable filter)
    tiled      the tiled kernel (cuda/upfirdn2d_tiled.cu: shared-memory tiles, polyphase 2× up, 2× down,
               separable 1-D filters in one launch); a geometry it does not cover is an error

Gradients: bias_act's kernels cover the piecewise-linear activations (linear, relu, lrelu), whose
gradient is a masked scaling and whose second derivative vanishes almost everywhere, so R1 and
path-length regularisation (double backward) reuse the same kernel. upfirdn2d is linear in its input;
its adjoint is another upfirdn2d (up and down swapped, filter flipped, padding in
`adjoint_arguments`), so every order of derivative runs on the same kernels (2× up's adjoint is 2× down:
both tiled).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch

MODES = ("auto", "require", "reference")
FUSED_ACTIVATIONS = {"linear": 0, "relu": 1, "lrelu": 2}
SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu", "upfirdn2d_tiled.cu")
CUDA_FLAGS = ("-O3", "--expt-relaxed-constexpr")
CUDA_BUILD_EXTRA = 'pip install "dermsynth[cuda-build]"'  # nvcc + headers for CUDA 13.0 from PyPI (pyproject.toml)
# headers that torch's CUDA headers include (ATen/cuda/CUDAContextLight.h); a minimal toolkit may lack them
TORCH_CUDA_HEADERS = ("cuda_runtime.h", "cusparse.h", "cublas_v2.h", "cublasLt.h", "cusolverDn.h")
UPFIRDN2D_KERNELS = ("auto", "generic", "tiled")
TILED_FACTORS = ((1, 1), (2, 1), (1, 2))  # the (up, down) pairs the tiled kernel specialises
TILED_MAX_TAPS = 32

_state = {"mode": os.environ.get("DERMSYNTH_GAN_OPS", "auto"), "module": None, "failure": None, "warned": False,
          "upfirdn2d_kernel": os.environ.get("DERMSYNTH_UPFIRDN2D_KERNEL", "auto"), "tile": (0, 0, 0)}


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


def _nvidia_roots() -> list[Path]:
    """The folders of the `nvidia` namespace package, where NVIDIA's pip wheels install (site-packages/nvidia)."""
    spec = importlib.util.find_spec("nvidia")
    return [Path(p) for p in spec.submodule_search_locations or []] if spec is not None else []


def pip_toolkit() -> Path | None:
    """The toolkit of the `cuda-build` extra when installed: site-packages/nvidia/cu<major> holding bin/nvcc
    (CUDA 13 wheels; nvidia/cuda_nvcc for CUDA 12's), else None."""
    major = (torch.version.cuda or "").split(".")[0]
    for root in _nvidia_roots():
        for name in (f"cu{major}", "cuda_nvcc"):
            if (root / name / "bin" / "nvcc").is_file():
                return root / name
    return None


def _holding(folders: list[Path], header: str) -> list[Path]:
    return [folder for folder in folders if (folder / header).exists()]


def toolkit() -> tuple[Path | None, list[Path]]:
    """(toolkit home, extra include folders) for a build: $CUDA_HOME or $CUDA_PATH when set, else the
    `cuda-build` extra's wheels (pinned to torch's CUDA minor), else the toolkit torch found (None: none).
    The include folders: include/cccl of a pip-wheel toolkit, and the NVIDIA pip wheels' include folders that hold
    one of TORCH_CUDA_HEADERS the toolkit lacks (torch's own CUDA dependencies bring them)."""
    # deferred: torch.utils.cpp_extension — only a kernel build needs it
    from torch.utils import cpp_extension
    found = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or pip_toolkit() or cpp_extension.CUDA_HOME
    if not found:
        return None, []
    home = Path(found)
    pip_layout = (home / "include" / "cccl").is_dir() and not (home / "targets").is_dir()
    includes = [home / "include" / "cccl"] if pip_layout else []  # a full toolkit's nvcc.profile adds it itself
    wheels = [d for root in _nvidia_roots() for d in sorted(root.glob("*/include")) if d != home / "include"]
    for header in TORCH_CUDA_HEADERS:
        if not (home / "include" / header).exists():
            includes += [d for d in _holding(wheels, header) if d not in includes]
    return home, includes


def toolkit_problem() -> str | None:
    """Why the kernels cannot be compiled here (no nvcc, headers missing: the fix named), or None."""
    home, includes = toolkit()
    if home is None or not (home / "bin" / "nvcc").is_file():
        where = "no CUDA toolkit found" if home is None else f"no nvcc in {home / 'bin'}"
        return (f"{where}: {CUDA_BUILD_EXTRA} installs nvcc and the headers for CUDA 13.0 from PyPI, or set "
                f"CUDA_HOME to a toolkit matching torch's CUDA {torch.version.cuda}")
    folders = [home / "include", *includes] + [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    missing = [h for h in TORCH_CUDA_HEADERS if not _holding(folders, h)]
    if missing:
        return (f"the CUDA toolkit at {home} lacks {', '.join(missing)} (torch's CUDA headers need them): "
                f"{CUDA_BUILD_EXTRA}, or add the folders holding them to CPATH")
    return None


def _cudart_link_flags(home: Path, build_dir: Path) -> list[str]:
    """torch links an extension with -lcudart from the toolkit's lib64 or lib; pip wheels ship only the
    versioned libcudart.so.<major>: link that through a libcudart.so in the build folder (same soname)."""
    if any((home / lib / "libcudart.so").exists() for lib in ("lib64", "lib")):
        return []
    major = (torch.version.cuda or "").split(".")[0]
    candidates = [p for lib in ("lib64", "lib") for p in sorted((home / lib).glob(f"libcudart.so.{major}*"))]
    candidates += [p for root in _nvidia_roots() for p in sorted(root.glob(f"*/lib/libcudart.so.{major}*"))]
    if not candidates:
        return []  # the link step names the missing library
    link = build_dir / "cudart" / "libcudart.so"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(candidates[0])
    return [f"-L{link.parent}"]


def compile_extension(build_dir: Path, name: str) -> object:
    """Run the torch/ninja build into `build_dir` for the architectures in $TORCH_CUDA_ARCH_LIST (no GPU needed)
    with the toolkit `toolkit` picks, and import it. Raises FusedOpsError when no usable toolkit is found."""
    # cpp_extension looks for the CUDA toolkit when imported (and warns on a GPU-less node that has one)
    # deferred: torch.utils.cpp_extension — only a kernel build needs it
    from torch.utils import cpp_extension
    if (problem := toolkit_problem()) is not None:
        raise FusedOpsError(problem)
    home, includes = toolkit()
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other jobs wait here while one builds
        (build_dir / "lock").unlink(missing_ok=True)  # torch's own lock file, stale if a build was killed
        found = cpp_extension.CUDA_HOME
        cpp_extension.CUDA_HOME = str(home)  # read when the ninja file is written (nvcc, include/, lib/)
        try:
            return cpp_extension.load(name=name, sources=[str(_source_dir() / s) for s in SOURCES],
                                      build_directory=str(build_dir), extra_cflags=["-O3"],
                                      extra_cuda_cflags=list(CUDA_FLAGS), extra_include_paths=[str(d) for d in includes],
                                      extra_ldflags=_cudart_link_flags(home, build_dir), verbose=False)
        finally:
            cpp_extension.CUDA_HOME = found


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
            f"dermsynth uses the reference PyTorch ops instead: same results, slower training. To fix: "
            f"{CUDA_BUILD_EXTRA} (nvcc and headers for CUDA 13.0), or install a CUDA toolkit whose nvcc matches "
            f"torch's CUDA {torch.version.cuda} (set CUDA_HOME); "
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


class _UpFirDn2dTiled(torch.autograd.Function):
    """The tiled kernel: f 1-D (separable, both axes) or 2-D; up and down equal along both axes."""

    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain):
        y = _state["module"].upfirdn2d_tiled(x, f, up[0], down[0], *padding, flip_filter, gain, *_state["tile"])
        ctx.save_for_backward(f)
        ctx.geometry = (tuple(x.shape[2:]), tuple(y.shape[2:]), up, down, padding, flip_filter, gain)
        return y

    @staticmethod
    def backward(ctx, dy):
        f, = ctx.saved_tensors
        in_hw, out_hw, up, down, padding, flip_filter, gain = ctx.geometry
        filter_hw = tuple(f.shape) if f.ndim == 2 else (f.shape[0], f.shape[0])
        args = adjoint_arguments(in_hw, out_hw, filter_hw, up, down, padding, flip_filter)
        return (_UpFirDn2dTiled.apply(dy, f, *args, gain),) + (None,) * 6  # 2× up ↔ 2× down: tiled too


def set_upfirdn2d_kernel(kernel: str, tile: tuple[int, int, int] | None = None) -> None:
    """Choose the upfirdn2d kernel (auto | generic | tiled, module docstring; ValueError otherwise).
    `tile`: (outputs along x, along y, channels) per block of the tiled kernel, None = its planner's choice
    (tests use small tiles to put many tile edges into small images; benchmarks may try sizes)."""
    if kernel not in UPFIRDN2D_KERNELS:
        raise ValueError(f"unknown upfirdn2d kernel {kernel!r}; choose from {', '.join(UPFIRDN2D_KERNELS)}")
    _state["upfirdn2d_kernel"] = kernel
    _state["tile"] = (0, 0, 0) if tile is None else tuple(int(t) for t in tile)


def get_upfirdn2d_kernel() -> str:
    """The upfirdn2d kernel choice (auto | generic | tiled)."""
    return _state["upfirdn2d_kernel"]


def tiled_supports(filter_shape, up, down) -> bool:
    """Whether the tiled kernel covers a call: a 1-D (separable) or 2-D filter of at most TILED_MAX_TAPS taps
    per axis, and (up, down), equal along x and y, one of TILED_FACTORS — StyleGAN2's filtering, 2× up, 2× down."""
    return (len(filter_shape) in (1, 2) and max(filter_shape) <= TILED_MAX_TAPS and up[0] == up[1]
            and down[0] == down[1] and (up[0], down[0]) in TILED_FACTORS)


def upfirdn2d_kernel_for(filter_shape, up, down) -> str:
    """'tiled' or 'generic': the kernel that runs a call with this filter shape and (up, down) pairs under the
    current choice (`set_upfirdn2d_kernel`). Raises FusedOpsError when 'tiled' is forced for a call it does
    not cover, ValueError for an unknown choice (e.g. in $DERMSYNTH_UPFIRDN2D_KERNEL)."""
    choice = _state["upfirdn2d_kernel"]
    if choice not in UPFIRDN2D_KERNELS:
        raise ValueError(f"unknown upfirdn2d kernel {choice!r} ($DERMSYNTH_UPFIRDN2D_KERNEL); "
                         f"choose from {', '.join(UPFIRDN2D_KERNELS)}")
    if choice == "tiled" and tiled_supports(filter_shape, up, down):  # auto: generic until GPU parity (docstring)
        return "tiled"
    if choice == "tiled":
        raise FusedOpsError(f"the tiled upfirdn2d kernel does not cover up={up}, down={down} with a filter of shape "
                            f"{tuple(filter_shape)} (it takes {TILED_FACTORS} as (up, down), equal along x and y, "
                            f"≤ {TILED_MAX_TAPS} taps); choose 'auto' to run such calls on the generic kernel")
    return "generic"


def upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """Fused path of `ops.upfirdn2d` (same arguments, normalised): one launch of the tiled kernel, or one
    launch of the generic kernel per separable pass (`upfirdn2d_kernel_for`)."""
    if upfirdn2d_kernel_for(tuple(f.shape), up, down) == "tiled":
        return _UpFirDn2dTiled.apply(x, f.float().contiguous(), up, down, padding, flip_filter, float(gain))
    for f2d, up_, down_, padding_, gain_ in separable_passes(f, up, down, padding, gain):
        x = _UpFirDn2d.apply(x, f2d.float().contiguous(), up_, down_, padding_, flip_filter, float(gain_))
    return x
