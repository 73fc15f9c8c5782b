"""Data-stage benchmarks: ingest (archive → LMDB) and LMDB read throughput."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..config import validate_config
from ..data.dataset import LmdbImageDataset
from ..data.demo.archives import encode_jpeg
from ..data.demo.draw import View, render, sample_lesion
from ..data.ingest import ingest_dataset
from ..outputs import write_csv


def _make_sources(workdir: Path, n_images: int, max_side: int) -> Path:
    """A folder source: a zip of large JPEGs (rendered small, upscaled) plus labels.csv."""
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
    write_csv(root / "labels.csv", pd.DataFrame(rows))  # last, atomically: it marks a complete source
    return root


def _config(source: Path, resolution: int, draft: bool, encoding: str = "png") -> dict:
    return validate_config({
        "sources": {"bench": {"type": "folder", "path": str(source), "images": "images.zip"}},
        "ingest": {"shards": 4, "jpeg_draft": draft, "encoding": encoding},
        "datasets": {"bench": {"labels": "binary", "resolution": resolution, "sources": [{"source": "bench"}]}},
    })


def bench_ingest(args) -> list[dict]:
    """Ingest throughput (images/s, per core) from a zip of ISIC-2020-sized JPEGs to LMDB, per resolution, JPEG
    DCT-scaling on/off and worker count. Returns one row per combination."""
    workdir = Path(args.workdir)
    source = _make_sources(workdir, args.images, args.max_side)
    rows = []
    for resolution in args.resolutions:
        for draft in (True, False):
            for workers in args.workers:
                out = workdir / f"ingest-{resolution}-{draft}-{workers}"
                if out.exists():
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
    """Read throughput (images/s over three epochs, after a warm-up epoch) of the LMDB through a PyTorch
    DataLoader, per resolution, stored encoding (png | raw) and number of loader workers."""
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
