"""GAN training benchmark: sec/kimg, peak memory, model FLOPs and the share of the GPU's peak.

One timed window is a whole number of lazy-regularisation cycles (R1 every 16 steps, path length every
4), so the figure averages the regularised and plain steps as StyleGAN2-ADA's `sec/kimg` does (Karras et
al. 2020, NVlabs' published table: 256², batch 32, one V100 21.6–24.2 s/kimg, one A100 ≈ 12.5).

Model FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` records every matrix
product and convolution (forward, backward and the double backward of R1 and path length) of one full
cycle of steps on the reference ops, in float32; the same work is what every variant does, so
achieved TFLOP/s = FLOPs per kimg / sec per kimg, and the share of peak compares it with the GPU's
dense float16/bfloat16 tensor-core peak (the physical limit; `DENSE_FP16_PEAK_TFLOPS`).
"""

from __future__ import annotations

import math
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..config import schema_defaults
from ..devices import choose_device
from ..gan.options import TrainingOptions
from ..gan.training import GanTrainer

# Dense (no sparsity) float16/bfloat16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
DENSE_FP16_PEAK_TFLOPS = {"H200": 989.5, "H100 SXM": 989.5, "H100 80GB HBM3": 989.5, "H100 PCIe": 756.0,
                          "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10": 125.0, "RTX 4090": 330.0}
# NVlabs' stylegan2-ada-pytorch README, 256², batch 32 (config paper256), seconds per kimg
PUBLISHED_SEC_PER_KIMG = {"1× V100": "21.6–24.2", "1× A100": "≈12.5"}

# name: (cuda_ops, num_fp16_res, compile); compiled variants last: they are the slowest to start
GAN_TRAIN_VARIANTS = {
    "fused-fp32": ("require", 0, False),
    "fused-mixed": ("require", 4, False),
    "reference-fp32": ("reference", 0, False),
    "reference-mixed": ("reference", 4, False),
    "fused-mixed-compiled": ("require", 4, True),
    "reference-mixed-compiled": ("reference", 4, True),
    "fused-fp32-compiled": ("require", 0, True),
    "reference-fp32-compiled": ("reference", 0, True),
}
CYCLE = 16  # least common multiple of the R1 and path-length intervals


def peak_tflops(device_name: str) -> float | None:
    """The dense fp16/bf16 tensor-core peak (TFLOP/s) of a GPU named like torch reports it, or None."""
    for key, value in DENSE_FP16_PEAK_TFLOPS.items():
        if all(part in device_name for part in key.split()):
            return value
    return None


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(trainer, steps: int, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    _sync(device)
    return time.perf_counter() - start


def time_training(trainer, warmup: int, steps: int, batch: int, device) -> dict:
    """The one clock of every GAN training benchmark (ours, and the peer's in `bench.peer`): `warmup` untimed
    steps of `trainer.step()` (kernel builds, cuDNN autotuning), then `steps` rounded up to whole regularisation
    cycles of `CYCLE`, timed with `time.perf_counter` between CUDA synchronisations. Returns {'steps',
    'warmup_seconds', 'seconds', 'sec_per_kimg' (seconds per 1000 images of `batch`), 'peak_memory_gb' (CUDA's
    peak allocation during the timed steps; None on CPU)}, unrounded."""
    steps = max(CYCLE, math.ceil(steps / CYCLE) * CYCLE)
    warm = _time_steps(trainer, warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _time_steps(trainer, steps, device)
    return {"steps": steps, "warmup_seconds": warm, "seconds": seconds,
            "sec_per_kimg": seconds / (steps * batch / 1000),
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def bench_options(args, cuda_ops: str, num_fp16_res: int, compiled: bool) -> TrainingOptions:
    """The benchmark's training settings: the schema's `gans.*` defaults with `args.batch`, ADA bgc at p = 0.2,
    γ = 1 (paper256), `args.channel_base`, and the variant's ops, fp16 resolutions and compilation."""
    return TrainingOptions.from_section({
        **schema_defaults("gans.*"), "seed": 0, "batch": args.batch, "augment": "bgc", "augment_p": 0.2,
        "r1_gamma": 1.0, "cuda_ops": cuda_ops, "compile": compiled,
        "network": {"channel_base": args.channel_base, "num_fp16_res": num_fp16_res}})


def _trainer(args, cuda_ops: str, num_fp16_res: int, compiled: bool, images, device):
    return GanTrainer(bench_options(args, cuda_ops, num_fp16_res, compiled), images, device=device)


class _FlopCount:
    """Counts the FLOPs of every matrix product and convolution dispatched while active, with the
    formulas of `torch.utils.flop_counter.flop_registry` (2·M·N·K per product; convolutions and their
    transposes likewise). FlopCounterMode itself also tracks modules with hooks that autograd.grad on a
    leaf input (R1) does not support, hence this dispatch mode without them."""

    def __init__(self):
        counter = self
        self.total = 0

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    counter.total += count(*args, **kwargs, out_val=out)
                return out

        self.mode = _Mode()


def count_flops_per_kimg(args, images, device) -> dict:
    """Model FLOPs of the full training step per 1000 images: one regularisation cycle (16 steps) on the
    reference ops in float32, counted as `torch.utils.flop_counter` counts them (matrix products and
    convolutions, forward and all backward passes). Returns {'flops_per_kimg', 'flops_per_step',
    'counted_steps'}."""
    trainer = _trainer(args, "reference", 0, False, images, device)
    trainer.step()  # the first step allocates optimiser state; count a steady-state cycle
    counter = _FlopCount()
    with counter.mode:
        for _ in range(CYCLE):
            trainer.step()
    per_step = counter.total / CYCLE
    return {"flops_per_step": per_step, "flops_per_kimg": per_step * 1000 / args.batch, "counted_steps": CYCLE}


def bench_gan_train(args) -> list[dict]:
    """sec/kimg and peak memory of the full StyleGAN2-ADA training step (ADA bgc, lazy R1, path length,
    style mixing) at one resolution and batch, per variant of ops × precision × compilation
    (`--variants`; default all on CUDA, the reference fp32 variant on CPU; none: only the FLOP count).
    With `--flops`, first a row with the counted model FLOPs per kimg, then per variant the achieved
    TFLOP/s and its share of the GPU's dense fp16 peak. Variants that would start after
    `--time-budget` seconds are recorded as skipped."""
    device = choose_device(args.device)
    resolution = args.resolutions[0]
    default = list(GAN_TRAIN_VARIANTS) if device.type == "cuda" else ["reference-fp32"]
    names = default if args.variants is None else args.variants  # an empty list: the FLOP count alone
    unknown = [n for n in names if n not in GAN_TRAIN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(GAN_TRAIN_VARIANTS)}")
    images = torch.randint(0, 256, (args.batch * 4, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    started = time.perf_counter()
    flops = count_flops_per_kimg(args, images, device) if args.flops else None
    rows = []
    if flops:
        rows.append({"what": "gan_train_flops", "device": device_name, "resolution": resolution,
                     "batch": args.batch, "channel_base": args.channel_base, **flops})
        print(rows[-1], flush=True)
    peak = peak_tflops(device_name)
    for name in names:
        cuda_ops, num_fp16_res, compiled = GAN_TRAIN_VARIANTS[name]
        row = {"what": "gan_train", "variant": name, "device": device_name, "resolution": resolution,
               "batch": args.batch, "channel_base": args.channel_base,
               "ops": "fused" if cuda_ops == "require" else "reference",
               "precision": f"mixed (top {num_fp16_res} res fp16)" if num_fp16_res else "fp32",
               "compile": compiled}
        if args.time_budget and time.perf_counter() - started > args.time_budget:
            rows.append({**row, "status": "skipped", "reason": f"time budget of {args.time_budget} s spent"})
            print(rows[-1], flush=True)
            continue
        trainer = _trainer(args, cuda_ops, num_fp16_res, compiled, images, device)
        timed = time_training(trainer, args.warmup, args.steps, args.batch, device)  # warm-up: builds, compilation
        sec_per_kimg = timed["sec_per_kimg"]
        row.update(status="ok", steps=timed["steps"], warmup_seconds=round(timed["warmup_seconds"], 1),
                   sec_per_kimg=round(sec_per_kimg, 2), peak_memory_gb=None if timed["peak_memory_gb"] is None
                   else round(timed["peak_memory_gb"], 2))
        if flops:
            achieved = flops["flops_per_kimg"] / sec_per_kimg / 1e12
            row.update(model_flops_per_kimg=flops["flops_per_kimg"],
                       model_tflop_per_kimg=round(flops["flops_per_kimg"] / 1e12, 2),
                       achieved_tflops=round(achieved, 2),
                       share_of_dense_fp16_peak=round(achieved / peak, 4) if peak else None)
        rows.append(row)
        print(rows[-1], flush=True)
        del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
