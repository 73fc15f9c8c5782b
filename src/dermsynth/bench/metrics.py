"""Metric benchmarks: feature-extraction throughput per network, LPIPS pairs/s, FID/KID from features."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..config import schema_defaults
from ..devices import choose_device
from ..metrics import extractors, generative


def bench_metrics(args) -> list[dict]:
    """Feature-extraction throughput per network, LPIPS pairs/s, and FID/KID time from features."""
    device = choose_device(args.device)
    rows = []
    for resolution in args.resolutions:
        images = torch.randint(0, 256, (args.images, 3, resolution, resolution), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nets = [extractors.inception(), extractors.vgg16()]
            lpips_model, lpips_info = extractors.lpips_alex()
        for net in nets:
            net.features(images[:4], device=device)  # warm-up
            start = time.perf_counter()
            net.features(images, batch_size=32, device=device)
            seconds = time.perf_counter() - start
            rows.append({"what": f"features:{net.name}", "weights": net.weights, "resolution": resolution,
                         "device": str(device), "images": len(images), "seconds": round(seconds, 2),
                         "images_per_s": round(len(images) / seconds, 1)})
            print(rows[-1], flush=True)
        lpips_model.to(device)
        start = time.perf_counter()
        extractors.lpips_distance(lpips_model, images.to(device), images.flip(-1).to(device))
        seconds = time.perf_counter() - start
        rows.append({"what": "lpips_alex_pairs", "weights": lpips_info["trunk_weights"], "resolution": resolution,
                     "device": str(device), "images": len(images), "seconds": round(seconds, 2),
                     "images_per_s": round(len(images) / seconds, 1)})
        print(rows[-1], flush=True)
    rng = np.random.default_rng(0)
    for n in args.fid_samples:
        real, fake = rng.normal(size=(n, 2048)), rng.normal(size=(n, 2048)) + 0.05
        start = time.perf_counter()
        generative.fid(real, fake)
        fid_seconds = time.perf_counter() - start
        start = time.perf_counter()
        generative.kid(real, fake, subset_size=schema_defaults("evaluation")["kid_subset"])
        rows.append({"what": "fid_kid_from_features", "samples": n, "fid_seconds": round(fid_seconds, 2),
                     "kid_seconds": round(time.perf_counter() - start, 2)})
        print(rows[-1], flush=True)
    return rows
