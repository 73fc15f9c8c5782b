"""Benchmarks (reported figures, never test assertions).

* ``dermsynth bench ingest``: images/s from a JPEG archive to LMDB, per resolution, number of
  worker processes and JPEG DCT-scaling on/off; source images are ISIC-2020-sized JPEGs.
* ``dermsynth bench lmdb-read``: images/s read back through a PyTorch DataLoader with N workers.
* ``dermsynth bench metrics``: images/s through each feature network, LPIPS pairs/s, FID/KID time.
* ``dermsynth bench gan-train``: StyleGAN2-ADA training sec/kimg and peak memory (ADA bgc, lazy R1,
  path length, style mixing) for reference vs fused ops, fp32 vs mixed precision, eager vs compiled.
"""

from __future__ import annotations

import json
import os
import platform
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .config import validate_config
from .outputs import write_json
from .provenance import package_versions


def _make_sources(workdir: Path, n_images: int, max_side: int) -> Path:
    """A folder source: a zip of large JPEGs (rendered small, upscaled) plus labels.csv."""
    from .data.demo.archives import encode_jpeg
    from .data.demo.draw import View, render, sample_lesion
    root = workdir / f"source-{n_images}-{max_side}"
    if (root / "labels.csv").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    with zipfile.ZipFile(root / "images.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(n_images):
            style = "mel" if i % 5 == 0 else "nv"
            small = render(sample_lesion(style, rng, 1), View(768, 512, frame=i % 3 == 0, hair=2, seed=i))
            big = cv2.resize(small, (max_side, max_side * 2 // 3), interpolation=cv2.INTER_CUBIC)
            archive.writestr(f"img_{i:05d}.jpg", encode_jpeg(big, quality=90))
            rows.append({"path": f"img_{i:05d}.jpg", "label": "malignant" if style == "mel" else "benign"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def _config(source: Path, resolution: int, draft: bool, encoding: str = "png") -> dict:
    return validate_config({
        "sources": {"bench": {"type": "folder", "path": str(source), "images": "images.zip"}},
        "ingest": {"shards": 4, "jpeg_draft": draft, "encoding": encoding},
        "datasets": {"bench": {"labels": "binary", "resolution": resolution, "sources": [{"source": "bench"}]}},
    })


def bench_ingest(args) -> list[dict]:
    from .data.ingest import ingest_dataset
    workdir = Path(args.workdir)
    source = _make_sources(workdir, args.images, args.max_side)
    rows = []
    for resolution in args.resolutions:
        for draft in (True, False):
            for workers in args.workers:
                out = workdir / f"ingest-{resolution}-{draft}-{workers}"
                if out.exists():
                    import shutil
                    shutil.rmtree(out)
                start = time.perf_counter()
                summary = ingest_dataset(_config(source, resolution, draft), "bench", out, workers=workers)
                seconds = time.perf_counter() - start
                rate = summary["images_ingested"] / seconds
                rows.append({"resolution": resolution, "jpeg_draft": draft, "workers": workers,
                             "images": summary["images_ingested"], "seconds": round(seconds, 2),
                             "images_per_s": round(rate, 1), "images_per_s_per_core": round(rate / workers, 1)})
                print(rows[-1], flush=True)
    return rows


def bench_lmdb_read(args) -> list[dict]:
    import torch
    from torch.utils.data import DataLoader

    from .data.dataset import LmdbImageDataset
    from .data.ingest import ingest_dataset
    workdir = Path(args.workdir)
    source = _make_sources(workdir, args.images, args.max_side)
    rows = []
    for resolution in args.resolutions:
        for encoding in ("png", "raw"):
            out = workdir / f"read-{resolution}-{encoding}"
            if not (out / "lmdb" / "index.json").exists():
                ingest_dataset(_config(source, resolution, True, encoding), "bench", out, workers=max(args.workers))
            manifest = pd.read_csv(out / "ingested.csv", dtype=str, keep_default_na=False).assign(split="train")
            dataset = LmdbImageDataset(out / "lmdb", manifest)
            for workers in sorted({0, *args.workers}):
                loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers,
                                    persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
                for _ in loader:  # warm-up epoch: worker start-up and page cache are not what we measure
                    pass
                start, seen = time.perf_counter(), 0
                for _ in range(3):  # epochs
                    for images, _labels in loader:
                        seen += images.shape[0]
                seconds = time.perf_counter() - start
                rows.append({"resolution": resolution, "encoding": encoding, "dataloader_workers": workers,
                             "images": seen, "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 1)})
                print(rows[-1], flush=True)
    return rows


def bench_metrics(args) -> list[dict]:
    """Feature-extraction throughput per network, LPIPS pairs/s, and FID/KID time from features."""
    import warnings

    import torch

    from .metrics import extractors, generative
    device = torch.device(args.device)
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
    for n in (2_500, 10_000):
        real, fake = rng.normal(size=(n, 2048)), rng.normal(size=(n, 2048)) + 0.05
        start = time.perf_counter()
        generative.fid(real, fake)
        fid_seconds = time.perf_counter() - start
        start = time.perf_counter()
        generative.kid(real, fake)
        rows.append({"what": "fid_kid_from_features", "samples": n, "fid_seconds": round(fid_seconds, 2),
                     "kid_seconds": round(time.perf_counter() - start, 2)})
        print(rows[-1], flush=True)
    return rows


GAN_TRAIN_VARIANTS = [  # (cuda_ops, num_fp16_res, compile)
    ("reference", 0, False), ("require", 0, False), ("require", 4, False), ("reference", 4, True),
]


def _time_training(trainer, steps: int, device) -> float:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_gan_train(args) -> list[dict]:
    """sec/kimg of the full training step at one resolution and batch, per ops/precision/compile variant."""
    import torch

    from .gan.training import GanTrainer, TrainingOptions
    device = torch.device(args.device)
    resolution = args.resolutions[0]
    variants = GAN_TRAIN_VARIANTS if device.type == "cuda" else [("reference", 0, False)]
    images = torch.randint(0, 256, (args.batch * 4, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    rows = []
    for cuda_ops, num_fp16_res, compiled in variants:
        options = TrainingOptions(batch=args.batch, augment="bgc", augment_p=0.2, r1_gamma=1.0, cuda_ops=cuda_ops,
                                  compile=compiled, network={"channel_base": args.channel_base,
                                                             "num_fp16_res": num_fp16_res})
        trainer = GanTrainer(options, images, device=device)
        _time_training(trainer, args.warmup, device)  # kernel builds, compilation, cuDNN autotuning
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = _time_training(trainer, args.steps, device)
        kimg = args.steps * args.batch / 1000
        rows.append({"what": "gan_train", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "resolution": resolution, "batch": args.batch, "channel_base": args.channel_base,
                     "ops": "fused" if cuda_ops == "require" else "reference",
                     "precision": f"mixed (top {num_fp16_res} res fp16)" if num_fp16_res else "fp32",
                     "compile": compiled, "steps": args.steps, "sec_per_kimg": round(seconds / kimg, 2),
                     "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                     if device.type == "cuda" else None})
        print(rows[-1], flush=True)
        del trainer
    return rows


def run_benchmark(args) -> None:
    runners = {"ingest": bench_ingest, "lmdb-read": bench_lmdb_read, "metrics": bench_metrics,
               "gan-train": bench_gan_train}
    results = runners[args.what](args)
    machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "platform": platform.platform()}
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    record = {"machine": machine, "results": results, "versions": package_versions()}
    if args.what in ("ingest", "lmdb-read"):
        record.update(source_images=args.images, source_size=f"{args.max_side}x{args.max_side * 2 // 3} JPEG q90")
    existing[args.what] = record
    write_json(out, existing)
    print(f"wrote {out}")
