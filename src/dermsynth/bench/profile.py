"""Where the GAN training step's time goes (`dermsynth bench gan-profile`; issue 32).

`torch.profiler` over ONE full lazy-regularisation cycle of `GanTrainer.step()` — 16 steps (R1 once, path length
four times), started where a cycle starts, after at least `--warmup` untimed steps — with CPU and, on CUDA, device
activity. Written to the `--out` folder:

* `profile.json`, `profile.md`: the top kernels by self device time (CUDA) or ops by self CPU time (CPU); kernel
  launches per step (CPU: aten op calls per step); the shares of the window's device time (CPU: self CPU time) by
  kernel category and by phase; host↔device synchronisations per step and the Python lines they come from; on
  CUDA the GPU's idle time inside the window;
* `trace.json` (`trace.json.gz` when large): the window's Chrome trace (chrome://tracing, ui.perfetto.dev).

Phases are the `torch.profiler.record_function` labels of `GanTrainer.step` (`PHASES`); time outside them — all
of it when the trainer sets none — is "unlabelled". Categories follow the names of kernels and ops, of the ops
that launched them and of those ops' callers (`category`; first rule that matches wins): our own kernels by the
names declared in `gan/ops/cuda/*.cu`, the reference ops by their signature (an FIR filter is a depthwise
convolution with one input channel per group; bias_act's activation is `leaky_relu`), the optimiser by the
`Optimizer.step#…` label PyTorch records, EMA by the "ema" phase (or `lerp` outside it when unlabelled), ADA by
the "ada" phase and the label "augment" this module puts on the augmentation pipe's calls (forward hooks, removed
afterwards; its backward found through the autograd link, `sequence_nr`).

Synchronisations: every `aten::_local_scalar_dense` (what `.item()`, `float(t)`, `int(t)`, `bool(t)` dispatch:
a read of one value back to Python — from the GPU a full stream synchronisation; of a CPU tensor, such as Adam's
step count, none) and every CUDA runtime synchronisation (`SYNC_RUNTIME`). Their sources come from a second,
shorter window recorded `with_stack=True` (`STACK_STEPS` steps from a cycle start: one R1, one path-length step).
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import re
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ..devices import choose_device
from ..errors import ConfigError
from ..gan.ops import fused
from ..gan.training import PHASES  # the labels GanTrainer.step puts on its phases
from ..locks import exclusive
from ..outputs import check_writable, write_json, write_text
from .gan import CYCLE, GAN_TRAIN_VARIANTS, _trainer

UNLABELLED = "unlabelled"
STEP_LABEL, WINDOW_LABEL, AUGMENT_LABEL = "dermsynth.step", "dermsynth.window", "augment"
STACK_STEPS = 4
TOP = 25
CATEGORIES = ("upfirdn2d", "bias_act", "convolution", "matmul", "optimizer (Adam)", "EMA", "ADA augmentation",
              "other")
SCALAR_READ = "aten::_local_scalar_dense"
SYNC_RUNTIME = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"})
LAUNCH_RUNTIME = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                            "cudaLaunchCooperativeKernel"})
CONV_OPS = frozenset({"aten::conv2d", "aten::convolution", "aten::_convolution", "aten::convolution_backward",
                      "aten::cudnn_convolution", "aten::mkldnn_convolution", "aten::_conv_depthwise2d",
                      "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_nnpack_spatial_convolution"})
CONVOLUTION = re.compile(r"conv|cudnn|implicit_gemm|fprop|dgrad|wgrad|winograd|im2col|col2im", re.IGNORECASE)
MATMUL = re.compile(r"gemm|aten::(mm|addmm|bmm|matmul|linear|baddbmm)\b|cublas|cutlass|MmBackward|AddmmBackward",
                    re.IGNORECASE)
ADAM = re.compile(r"adam|Optimizer\.(step|zero_grad)#", re.IGNORECASE)
FRAME = re.compile(r"^(?P<path>.*)\((?P<line>\d+)\): (?P<func>.*)$")


# --- running the window --------------------------------------------------------------------------------------
def our_kernels() -> dict[re.Pattern, str]:
    """{pattern of a kernel name: category} of the CUDA kernels this package compiles: every `__global__` function
    of `gan/ops/cuda/<op>*.cu` belongs to category <op> (upfirdn2d, bias_act), so renamed or new kernels count."""
    names = {}
    declaration = re.compile(r"__global__\s+(?:void\s+)?(?:__launch_bounds__\s*\([^)]*\)\s+)?(?:void\s+)?(\w+)\s*\(")
    for source in sorted(Path(fused.__file__).with_name("cuda").glob("*.cu")):
        op = next((c for c in CATEGORIES if source.stem.startswith(c)), source.stem)
        for name in declaration.findall(source.read_text()):
            names[re.compile(rf"\b{name}\b")] = op
    return names


def _variant(args, device: torch.device) -> str:
    names = args.variants or (["fused-fp32"] if device.type == "cuda" else ["reference-fp32"])
    if len(names) != 1 or names[0] not in GAN_TRAIN_VARIANTS:
        raise ConfigError(f"gan-profile profiles one variant: got --variants {' '.join(names)}; choose one of "
                          f"{', '.join(GAN_TRAIN_VARIANTS)}")
    return names[0]


def _label_calls(module: torch.nn.Module, label: str) -> list:
    """Forward hooks that wrap every call of `module` in `record_function(label)`; returns the hook handles."""
    open_labels = []

    def enter(_module, _inputs):
        """Forward pre-hook: opens the `label` range before the module runs."""
        open_labels.append(record_function(label).__enter__())

    def leave(_module, _inputs, _output):
        """Forward hook: closes the range its pre-hook opened."""
        open_labels.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def _run_steps(trainer, steps: int, device: torch.device) -> None:
    """`steps` training steps, each labelled STEP_LABEL, inside WINDOW_LABEL that ends after the device is idle."""
    with record_function(WINDOW_LABEL):
        for _ in range(steps):
            with record_function(STEP_LABEL):
                trainer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def _activities(device: torch.device) -> list:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def profile_gan_step(args, out: Path) -> dict:
    """Profile one regularisation cycle of the full training step and write profile.json, profile.md and the
    Chrome trace into folder `out`. `args`: the bench flags (`--device`, `--resolutions` (the first), `--batch`,
    `--channel-base`, `--warmup`, `--variants`: one of `bench.gan.GAN_TRAIN_VARIANTS`, default fused-fp32 on CUDA
    and reference-fp32 on CPU). Returns the profile (the dict profile.json holds). Raises ConfigError for more than
    one or an unknown variant; what building the trainer raises (e.g. FusedOpsError without a CUDA toolkit)."""
    device = choose_device(args.device)
    variant = _variant(args, device)
    resolution = args.resolutions[0]
    images = torch.randint(0, 256, (args.batch * 4, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    trainer = _trainer(args, *GAN_TRAIN_VARIANTS[variant], images, device)
    started = time.perf_counter()
    warmup = max(args.warmup, 1)
    warmup += -warmup % CYCLE  # the window starts with an R1 + path-length step
    for _ in range(warmup):
        trainer.step()
    warm_seconds = time.perf_counter() - started
    first_step = trainer.step_index
    hooks = _label_calls(trainer.augment, AUGMENT_LABEL)
    shapes = GAN_TRAIN_VARIANTS[variant][0] == "reference"  # only the reference upfirdn2d is known by its shapes
    try:
        with profile(activities=_activities(device), record_shapes=shapes) as window:
            _run_steps(trainer, CYCLE, device)
        report = summarise(window.events(), CYCLE, device.type == "cuda")
        report["trace"] = write_trace(window, out)
        del window  # the stack window starts where the next cycle does
        with profile(activities=_activities(device), with_stack=True) as stacks:
            _run_steps(trainer, STACK_STEPS, device)
        report["syncs"]["sites"] = sync_sites(stacks.events(), STACK_STEPS)
        report["syncs"]["sites_window"] = (f"steps {trainer.step_index - STACK_STEPS}–{trainer.step_index - 1} "
                                           f"(R1 and path length in the first), recorded with_stack=True")
    finally:
        for hook in hooks:
            hook.remove()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"what": "gan_profile", "device": device_name, "variant": variant, "resolution": resolution,
            "batch": args.batch, "channel_base": args.channel_base, "torch": torch.__version__,
            "warmup_steps": warmup, "warmup_seconds": round(warm_seconds, 1),
            "window_steps": f"{first_step}–{first_step + CYCLE - 1}", **report}


# --- reading the events --------------------------------------------------------------------------------------
class Intervals:
    """Labelled time intervals [start, end) (µs) of one kind of label; `at(t)` names the innermost that holds t."""

    def __init__(self, spans: list[tuple[float, float, str]]):
        self.spans = sorted(spans)
        self.starts = [s for s, _, _ in self.spans]

    def at(self, t: float) -> str | None:
        """The label of the latest-starting span that holds time `t` (the spans' unit, µs in a trace), or None."""
        i = bisect.bisect_right(self.starts, t) - 1
        while i >= 0:  # labels may nest: the latest-starting one that still holds t
            start, end, name = self.spans[i]
            if start <= t < end:
                return name
            if t - start > 6e8:  # nothing starts more than ten minutes before t and still holds it
                return None
            i -= 1
        return None


def _spans(events, names) -> Intervals:
    return Intervals([(e.time_range.start, e.time_range.end, e.name) for e in events if e.name in names
                      and e.device_type == DeviceType.CPU])


def device_kind(event) -> str | None:
    """'kernel', 'memcpy', 'memset' for device activity, None for everything else (annotations mirrored on the
    device, synchronisation records)."""
    kind = getattr(event, "activity_type", None)
    if kind:
        return {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}.get(kind)
    if getattr(event, "is_user_annotation", False):
        return None
    return "memcpy" if event.name.startswith("Memcpy") else "memset" if event.name.startswith("Memset") else "kernel"


def _chain(event) -> list:
    """The event and its callers (CPU parents), innermost first."""
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    return chain


def _fir_convolution(event) -> bool:
    """A convolution op whose weight is (C, 1, fh, fw) over C input channels: the reference upfirdn2d's filter."""
    if event.name not in CONV_OPS or not event.input_shapes:
        return False
    backward = "backward" in event.name
    shapes = event.input_shapes
    x, w = (shapes[1], shapes[2]) if backward else (shapes[0], shapes[1])
    return len(w) == 4 and len(x) == 4 and w[1] == 1 and w[0] == x[1]


def _own_flags(event) -> set[str]:
    """What one op's (or label's) own name and shapes say about the work under it (see `category`)."""
    name, flags = event.name, set()
    lowered = name.lower()
    if ADAM.search(name):
        flags.add("adam")
    if "lerp" in lowered:
        flags.add("lerp")
    if name == AUGMENT_LABEL or "grid_sampler" in lowered or "gridsample" in lowered:
        flags.add("augment")
    if "upfirdn2d" in lowered or _fir_convolution(event):
        flags.add("upfirdn2d")
    if "biasact" in lowered or "bias_act" in lowered or "leaky_relu" in lowered or "leakyrelu" in lowered:
        flags.add("bias_act")
    if CONVOLUTION.search(name):
        flags.add("convolution")
    if MATMUL.search(name):
        flags.add("matmul")
    return flags


class Flags:
    """The flags of an op and all its callers (CPU parents), memoised per event; backward work (under an
    `autograd::engine::evaluate_function` node) also takes the "augment" flag of the forward op that recorded its
    node (same thread and `sequence_nr`), so the augmentation's backward counts as ADA."""

    def __init__(self, cpu_events):
        self.memo: dict[int, frozenset] = {}
        self.plain: dict[int, frozenset] = {}  # without the backward → forward link
        self.forwards = {}
        for e in cpu_events:
            seq = getattr(e, "sequence_nr", -1)
            if seq is not None and seq >= 0 and not e.name.startswith("autograd::engine"):
                self.forwards.setdefault((e.thread, seq), e)

    def of(self, event, link: bool = True) -> frozenset:
        """The flags of `event` (None: none) and its callers; `link`: follow backward nodes to their forward op."""
        memo = self.memo if link else self.plain
        pending = []
        while event is not None and id(event) not in memo:
            pending.append(event)
            event = event.cpu_parent
        inherited = memo[id(event)] if event is not None else frozenset()
        for e in reversed(pending):  # outermost first
            flags = set(inherited) | _own_flags(e)
            if link and e.name.startswith("autograd::engine::evaluate_function"):
                forward = self.forwards.get((getattr(e, "fwd_thread", e.thread), getattr(e, "sequence_nr", -1)))
                if forward is not None and "augment" in self.of(forward, link=False):
                    flags.add("augment")
            inherited = memo[id(e)] = frozenset(flags)
        return inherited


def category(kernel: str | None, flags: frozenset, kernels: dict[re.Pattern, str], phase: str | None) -> str:
    """The category (one of CATEGORIES) of a kernel (its name; None for a CPU op's own time) launched under ops whose
    names flag the work (`Flags.of`), in `phase` (a PHASES label; None outside them or without labels). The rules,
    first match wins: optimizer (`Optimizer.step#…` label, Adam kernels), EMA (the "ema" phase; without it `lerp`),
    ADA (the "ada" phase, the "augment" label, grid sampling), our own kernels (`our_kernels`), upfirdn2d
    (the name, or the reference FIR convolution), bias_act (the name, or the reference leaky_relu), convolution,
    matmul, other."""
    kernel = kernel or ""
    if "adam" in flags or ADAM.search(kernel):
        return "optimizer (Adam)"
    if phase == "ema" or (phase is None and "lerp" in flags):
        return "EMA"
    if phase == "ada" or "augment" in flags or "grid_sampler" in kernel:
        return "ADA augmentation"
    own = next((cat for pattern, cat in kernels.items() if pattern.search(kernel)), None) if kernel else None
    if own in CATEGORIES:
        return own
    lowered = kernel.lower()
    if "upfirdn2d" in flags or "upfirdn2d" in lowered:
        return "upfirdn2d"
    if "bias_act" in flags or "bias_act" in lowered:
        return "bias_act"
    if "convolution" in flags or CONVOLUTION.search(kernel):
        return "convolution"
    if "matmul" in flags or MATMUL.search(kernel):
        return "matmul"
    return "other"


def _in_window(events) -> tuple[float, float]:
    windows = [e for e in events if e.name == WINDOW_LABEL and e.device_type == DeviceType.CPU]
    if not windows:
        raise RuntimeError("the profile holds no window label: the profiler recorded nothing")
    return windows[0].time_range.start, windows[0].time_range.end


def _shares(amounts: dict[str, float], order) -> dict:
    total = sum(amounts.values()) or 1.0
    return {name: {"ms": round(amounts.get(name, 0.0) / 1000, 3), "share": round(amounts.get(name, 0.0) / total, 4)}
            for name in order if name in amounts or name in CATEGORIES}


def summarise(events, steps: int, cuda: bool) -> dict:
    """The profile of one window of `steps` steps from the profiler's events (`prof.events()`): top kernels or ops,
    launches per step, shares by category and phase, synchronisation counts, GPU idle time (CUDA)."""
    begin, end = _in_window(events)
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_async", False)
           and begin <= e.time_range.start < end]
    phases, step_spans = _spans(cpu, PHASES), _spans(cpu, {STEP_LABEL})
    labelled = bool(phases.spans)
    flags, kernels, categorised = Flags(cpu), our_kernels(), {}
    by_cat, by_phase, top, calls = defaultdict(float), defaultdict(float), defaultdict(float), Counter()
    other = defaultdict(float)

    def add(name: str, kernel: str | None, launcher, phase: str | None, us: float) -> None:
        """Count `us` microseconds of op `name` (our `kernel` or None, its `launcher` event, its training `phase`) in
        the category, phase, top-op and call tallies."""
        key = (kernel, flags.of(launcher), phase)
        if key not in categorised:
            categorised[key] = category(kernel, key[1], kernels, phase)
        by_cat[categorised[key]] += us
        by_phase[phase or UNLABELLED] += us
        top[name] += us
        calls[name] += 1
        if categorised[key] == "other":
            other[name] += us

    at = phases.at if labelled else (lambda t: None)
    launches, idle, basis = (_walk_device(events, cpu, begin, end, steps, add, at) if cuda
                             else _walk_cpu(cpu, steps, add, at))
    total = sum(top.values()) or 1.0
    ranked = sorted(top, key=top.get, reverse=True)[:TOP]
    in_steps = [e for e in cpu if step_spans.at(e.time_range.start)]
    runtime_syncs = Counter(e.name for e in in_steps if e.name in SYNC_RUNTIME)
    reads = sum(e.name == SCALAR_READ for e in in_steps)
    return {
        "window": {"steps": steps, "wall_ms": round((end - begin) / 1000, 1),
                   "ms_per_step": round((end - begin) / 1000 / steps, 2),
                   "note": "under the profiler (record_shapes=True): slower than `bench gan-train`'s timing"},
        "basis": basis,
        "top": [{"name": name[:200], "calls": calls[name], "total_ms": round(top[name] / 1000, 3),
                 "share": round(top[name] / total, 4)} for name in ranked],
        "launches": launches,
        "phase_labels": "present" if labelled else f"absent: every phase reported as {UNLABELLED!r}",
        "by_category": _shares(by_cat, CATEGORIES),
        "other_top": [{"name": name[:200], "share_of_all": round(other[name] / total, 4)}
                      for name in sorted(other, key=other.get, reverse=True)[:10]],
        "by_phase": _shares(by_phase, (*PHASES, UNLABELLED)),
        "regularisation_share": round((by_phase["Greg"] + by_phase["Dreg"]) / total, 4) if labelled else None,
        "syncs": {"scalar_reads_total": reads, "scalar_reads_per_step": round(reads / steps, 2),
                  "scalar_reads_from_device": sum(e.name == SCALAR_READ and _reads_device(e) for e in in_steps)
                  if cuda else None,
                  "runtime_syncs_total": sum(runtime_syncs.values()),
                  "runtime_syncs_per_step": round(sum(runtime_syncs.values()) / steps, 2),
                  "runtime_syncs_by_name": dict(runtime_syncs)},
        "gpu_idle": idle,
    }


def _walk_device(events, cpu, begin: float, end: float, steps: int, add, at) -> tuple[dict, dict, str]:
    """CUDA: each kernel, memcpy and memset of the window to `add`, under the phase of the CPU op that launched it;
    (launches per step, GPU idle, the basis of the shares)."""
    device_events = [(e, device_kind(e)) for e in events if e.device_type == DeviceType.CUDA]
    device_events = [(e, k) for e, k in device_events if k and begin <= e.time_range.start < end]
    ops = {e.id: e for e in cpu if getattr(e, "linked_correlation_id", 0) == 0}
    runtime = {e.id: e for e in cpu if e.name in LAUNCH_RUNTIME}
    for e, _kind in device_events:
        linked = getattr(e, "linked_correlation_id", 0)
        launcher = (ops.get(linked) if linked else None) or runtime.get(e.id)
        t = launcher.time_range.start if launcher is not None else e.time_range.start
        add(e.name, e.name, launcher, at(t), e.time_range.end - e.time_range.start)
    kinds = Counter(k for _, k in device_events)
    launches = {"kernels_per_step": round(kinds["kernel"] / steps, 1),
                "runtime_launch_calls_per_step": round(sum(e.name in LAUNCH_RUNTIME for e in cpu) / steps, 1),
                "memcpy_per_step": round(kinds["memcpy"] / steps, 1),
                "memset_per_step": round(kinds["memset"] / steps, 1)}
    idle = gpu_idle([(e.time_range.start, e.time_range.end) for e, _ in device_events], begin, end)
    return launches, idle, "self device time (CUDA kernels, memcpy, memset)"


def _walk_cpu(cpu, steps: int, add, at) -> tuple[dict, None, str]:
    """CPU: each op's self time to `add`; (aten op calls per step, no GPU idle, the basis of the shares)."""
    for e in cpu:
        add(e.name, None, e, at(e.time_range.start), e.self_cpu_time_total)
    aten = [e for e in cpu if e.name.startswith("aten::")]
    outer = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    launches = {"aten_ops_per_step": round(len(aten) / steps, 1),
                "top_level_aten_ops_per_step": round(len(outer) / steps, 1)}
    return launches, None, "self CPU time"


def gpu_idle(busy: list[tuple[float, float]], begin: float, end: float) -> dict:
    """The GPU's idle time inside [begin, end) (µs): the window minus the union of the device intervals `busy`
    (clipped to the window). Returns {'window_ms', 'busy_ms', 'idle_ms', 'idle_share'}."""
    covered, reach = 0.0, begin
    for start, stop in sorted(busy):
        start, stop = max(start, reach), min(stop, end)
        if stop > start:
            covered += stop - start
            reach = stop
    window = max(end - begin, 1e-9)
    return {"window_ms": round(window / 1000, 3), "busy_ms": round(covered / 1000, 3),
            "idle_ms": round((window - covered) / 1000, 3), "idle_share": round(1 - covered / window, 4)}


def _frames(event) -> list[tuple[str, int, str]]:
    """The Python frames (file, line, function), innermost first, above `event`: the stack of the nearest caller
    that recorded one (`with_stack=True` in older PyTorch), or its Python-function callers (newer PyTorch records
    each frame as an event of its own)."""
    caller = event
    while caller is not None and not caller.stack:
        caller = caller.cpu_parent
    entries = caller.stack if caller is not None else [e.name for e in _chain(event)]
    frames = [FRAME.match(entry) for entry in entries]
    return [(m["path"], int(m["line"]), m["func"]) for m in frames if m]


OURS = re.compile(r"(?:^|/)dermsynth/(?P<rest>.*)$")


def _short(path: str) -> str:
    ours = OURS.search(path)
    return ours["rest"] if ours else path.rsplit("/site-packages/", 1)[-1]


def _ours(path: str) -> bool:
    return OURS.search(path) is not None and not path.endswith("dermsynth/bench/profile.py")


def _reads_device(event) -> bool:
    """A scalar read that copied from the GPU (a CUDA memcpy or synchronisation under it), not a host tensor's."""
    return any(c.name in SYNC_RUNTIME or c.name.startswith("cudaMemcpy") or _reads_device(c)
               for c in event.cpu_children)


def sync_sites(events, steps: int) -> list[dict]:
    """Where the window's scalar reads and runtime synchronisations come from, from events recorded with_stack:
    one row per innermost line of this package, the library line under it (`via`) and its two callers; on CUDA
    `device_reads` counts the reads that waited for the GPU (the others read host tensors, such as the foreach
    Adam's step counters)."""
    step_spans = _spans(events, {STEP_LABEL})
    rows: dict[tuple[str, str, str], dict] = {}
    for e in events:
        if e.device_type != DeviceType.CPU or (e.name != SCALAR_READ and e.name not in SYNC_RUNTIME):
            continue
        if not step_spans.at(e.time_range.start):
            continue
        frames = _frames(e)
        ours = [f for f in frames if _ours(f[0])]
        site = f"{_short(ours[0][0])}:{ours[0][1]} ({ours[0][2]})" if ours else "outside this package"
        via = f"{_short(frames[0][0])}:{frames[0][1]} ({frames[0][2]})" if frames and not _ours(frames[0][0]) else ""
        callers = " ← ".join(f"{_short(p)}:{n} ({fn})" for p, n, fn in ours[1:3])
        row = rows.setdefault((site, via, callers), {"site": site, "via": via, "callers": callers,
                                                     "scalar_reads": 0, "device_reads": 0, "runtime_syncs": 0})
        row["scalar_reads" if e.name == SCALAR_READ else "runtime_syncs"] += 1
        row["device_reads"] += e.name == SCALAR_READ and _reads_device(e)
    for row in rows.values():
        row["reads_per_step"] = round(row["scalar_reads"] / steps, 2)
        row["syncs_per_step"] = round(row["runtime_syncs"] / steps, 2)
    return sorted(rows.values(), key=lambda r: -(r["scalar_reads"] + r["runtime_syncs"]))


# --- files ---------------------------------------------------------------------------------------------------
TRACE_PLAIN_LIMIT = 5 * 2**20  # a larger trace is gzipped
TRACE_LIMIT = 15 * 2**20  # a larger gzipped trace keeps only its first steps


def write_trace(prof, out: Path) -> dict:
    """The window's Chrome trace as out/trace.json, gzipped to trace.json.gz when over 5 MiB, and cut to its first
    steps when even that is over 15 MiB (the files a GPU run returns stay small). Returns {'file', 'bytes', 'steps'}."""
    plain = out / "trace.json"
    for stale in (plain, out / "trace.json.gz"):
        stale.unlink(missing_ok=True)
    prof.export_chrome_trace(str(plain))
    if plain.stat().st_size <= TRACE_PLAIN_LIMIT:
        return {"file": plain.name, "bytes": plain.stat().st_size, "steps": "all"}
    packed = out / "trace.json.gz"
    with open(plain, "rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target)
    steps = "all"
    if packed.stat().st_size > TRACE_LIMIT:
        trace = json.loads(plain.read_text())
        step_ends = sorted(ev["ts"] + ev.get("dur", 0) for ev in trace.get("traceEvents", [])
                           if ev.get("name") == STEP_LABEL and ev.get("ph") == "X"
                           and ev.get("cat") != "gpu_user_annotation")  # the label, not its mirror on the GPU
        keep = max(1, int(len(step_ends) * TRACE_LIMIT / packed.stat().st_size))
        cutoff = step_ends[keep - 1] if step_ends else math.inf
        trace["traceEvents"] = [ev for ev in trace["traceEvents"] if ev.get("ts", 0) <= cutoff]
        with gzip.open(packed, "wt", compresslevel=6) as target:
            json.dump(trace, target)
        steps = f"the first {keep}"
    plain.unlink()
    return {"file": packed.name, "bytes": packed.stat().st_size, "steps": steps}


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def markdown(p: dict) -> str:
    """profile.md: the profile's sections as Markdown tables."""
    shares = lambda d: [{"": k, "ms": v["ms"], "share": f"{v['share']:.1%}"} for k, v in d.items()]  # noqa: E731
    syncs = p["syncs"]
    parts = [
        f"# GAN step profile: {p['variant']}, {p['resolution']}², batch {p['batch']}, channel_base "
        f"{p['channel_base']}, {p['device']} (torch {p['torch']})",
        f"One regularisation cycle, steps {p['window_steps']} after {p['warmup_steps']} warm-up steps: "
        f"{p['window']['wall_ms']} ms, {p['window']['ms_per_step']} ms/step under the profiler. Shares of "
        f"{p['basis']}. Phase labels: {p['phase_labels']}.",
        "## Top kernels" if "device" in p["basis"] else "## Top ops", _table(
            [{**r, "share": f"{r['share']:.1%}"} for r in p["top"]], ["name", "calls", "total_ms", "share"]),
        "## Launches per step", _table([p["launches"]], list(p["launches"])),
        "## By category", _table(shares(p["by_category"]), ["", "ms", "share"]),
        "Largest in other: " + (", ".join(f"{r['name'][:80]} {r['share_of_all']:.1%}" for r in p["other_top"])
                                or "nothing"),
        "## By phase", _table(shares(p["by_phase"]), ["", "ms", "share"]),
        f"Regularisation passes (Greg + Dreg): {p['regularisation_share']:.1%}" if p["regularisation_share"]
        is not None else "Regularisation passes: unknown (no phase labels)",
        "## Host↔device synchronisations",
        f"{syncs['scalar_reads_per_step']} scalar reads (`aten::_local_scalar_dense`) and "
        f"{syncs['runtime_syncs_per_step']} CUDA runtime synchronisations per step"
        + (f", {syncs['scalar_reads_from_device']} of the reads from the GPU " if p["gpu_idle"] else " ") +
        f"({syncs['scalar_reads_total']} and {syncs['runtime_syncs_total']} in {p['window']['steps']} steps; "
        f"by name: {syncs['runtime_syncs_by_name'] or 'none'}). Sources ({syncs.get('sites_window', '')}):",
        _table(syncs.get("sites", []), ["site", "via", "callers", "reads_per_step", "syncs_per_step"] +
               (["device_reads"] if p["gpu_idle"] else [])),
        "## GPU idle inside the window",
        _table([p["gpu_idle"]], list(p["gpu_idle"])) if p["gpu_idle"] else "Not measured (CPU run).",
        f"Chrome trace: {p['trace']['file']} ({p['trace']['bytes']} bytes, {p['trace']['steps']} steps).",
    ]
    return "\n\n".join(parts) + "\n"


def folder_for(args) -> Path:
    """The output folder of a folder-writing bench (`gan-profile`, `gan-graph-breaks`): `--out`, or, when `--out`
    names a .json file (the record file other benches merge into; the default), <its folder>/<what>."""
    out = Path(args.out)
    return out.parent / args.what if out.suffix == ".json" else out


def run_profile(args) -> None:
    """`dermsynth bench gan-profile`: write profile.json, profile.md and the trace into `folder_for(args)`."""
    out = check_writable(folder_for(args))
    with exclusive(out, f"bench {args.what}"):
        report = profile_gan_step(args, out)
        write_json(out / "profile.json", report)
        write_text(out / "profile.md", markdown(report))
    print(f"wrote {out / 'profile.json'}, {out / 'profile.md'} and {out / report['trace']['file']}")
