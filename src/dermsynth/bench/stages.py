"""Throughput of the GPU stages after GAN training, a few iterations each at the studies' settings.

* ``project``: batched projection (Karras et al. 2020's W/W+ optimisation with LPIPS-VGG): seconds per
  optimisation step for one image and for a batch, as images per hour at `--projection-steps` (1000 in
  the studies);
* ``invert``: e4e encoding and e4e + HyperStyle refinement (5 iterations), milliseconds per image;
* ``classify-train``: classifier training images/s per (architecture, resolution) with the trainer's own
  step (`classify.train.train_step`: AMP float16 + channels_last on CUDA).

Networks are random-init (speed does not depend on the weights) and every row says so. Timings exclude
a warm-up (cuDNN autotuning, allocator growth) and are synchronised with the GPU.
"""

from __future__ import annotations

import time
from functools import partial

import torch

from ..classify.train import Recipe, build_model, train_step
from ..config import schema_defaults
from ..devices import choose_device
from ..gan.networks import Generator
from ..latent.inversion import E4eOptions, HyperStyleOptions, build_e4e, build_hypernetwork, invert
from ..latent.project import ProjectionOptions, project
from ..metrics.extractors import lpips_model


def _timed(fn, device, repeats: int) -> float:
    """Seconds per call of `fn` (after one untimed call)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def _generator(args, device) -> Generator:
    torch.manual_seed(0)
    return Generator(img_resolution=args.resolutions[0], channel_base=args.channel_base).to(device).eval()


def _targets(n: int, resolution: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def bench_project(args) -> list[dict]:
    """Seconds per projection step for batch 1 and batch `--batch`; images/hour at `--projection-steps`.
    The per-step time is the difference of two runs (warm-up steps alone, then warm-up + timed steps,
    after one untimed run), so the w statistics and set-up are not counted."""
    device = choose_device(args.device)
    G = _generator(args, device)
    lpips_vgg, info = lpips_model(net="vgg")
    rows = []
    for batch in sorted({1, args.batch}):
        targets = _targets(batch, args.resolutions[0])

        def _run(steps):
            options = ProjectionOptions.from_section({**schema_defaults("latent.projection"), "steps": steps,
                                                      "space": "w+", "w_avg_samples": 1000})
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            project(G, targets, lpips_vgg, options, device=device, label=f"project batch {batch}")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        _run(args.warmup)  # cuDNN autotuning and allocator growth, not counted
        short = _run(args.warmup)
        per_step = max(_run(args.warmup + args.steps) - short, 1e-9) / args.steps
        rows.append({"what": "project", "device": str(device), "resolution": args.resolutions[0], "batch": batch,
                     "seconds_per_step": round(per_step, 4),
                     "images_per_hour": round(batch / (per_step * args.projection_steps) * 3600, 1),
                     "at_steps": args.projection_steps, "lpips_trunk": info["trunk_weights"],
                     "generator": "random-init"})
        print(rows[-1], flush=True)
    return rows


def bench_invert(args) -> list[dict]:
    """Milliseconds per image of e4e encoding (one pass) and of e4e + HyperStyle (5 refinements) on a
    batch of `--batch` images, encoders at their study input resolution."""
    device = choose_device(args.device)
    G = _generator(args, device)
    small = {"input_resolution": args.resolutions[0], "pretrained": False}
    e4e = build_e4e(G, E4eOptions.from_section({**schema_defaults("latent.e4e"), **small})).to(device)
    hyper_options = HyperStyleOptions.from_section({**schema_defaults("latent.hyperstyle"), **small})
    hyper = build_hypernetwork(G, hyper_options).to(device)
    images = _targets(args.batch, args.resolutions[0])
    rows = []
    for name, network, iterations in (("e4e", None, 0), ("e4e+hyperstyle", hyper, 5)):
        seconds = _timed(lambda: invert(G, e4e, images, network, iterations=iterations, device=device), device,
                         args.steps)
        rows.append({"what": "invert", "method": name, "device": str(device), "resolution": args.resolutions[0],
                     "batch": args.batch, "hyperstyle_iterations": iterations,
                     "ms_per_image": round(seconds / args.batch * 1000, 2), "encoders": "random-init"})
        print(rows[-1], flush=True)
    return rows


def bench_classify_train(args) -> list[dict]:
    """Classifier training images/s with the trainer's step, for each `--classifiers` ARCH:RESOLUTION."""
    device = choose_device(args.device)
    rows = []
    for spec in args.classifiers:
        architecture, resolution = spec.split(":")
        resolution = int(resolution)
        recipe = Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), "input_resolution": resolution,
                                      "batch": args.batch, "pretrained": False})
        torch.manual_seed(0)
        model, _ = build_model(architecture, 7, recipe)
        model = model.to(device).train()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
        images = torch.randn(args.batch, 3, resolution, resolution).to(device)
        targets = torch.randint(0, 7, (args.batch,)).to(device)
        step = partial(train_step, model, optimizer, scaler, images, targets, device)
        for _ in range(max(args.warmup - 1, 0)):  # cuDNN autotuning of every layer shape
            step()
        seconds = _timed(step, device, args.steps)
        rows.append({"what": "classify_train", "architecture": architecture, "resolution": resolution,
                     "device": str(device), "batch": args.batch,
                     "precision": "AMP float16, channels_last" if device.type == "cuda" else "float32",
                     "images_per_s": round(args.batch / seconds, 1), "weights": "random-init"})
        print(rows[-1], flush=True)
        del model, optimizer, step
    return rows
