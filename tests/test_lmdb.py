"""LMDB shards: exact round trip, concurrent readers, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

from dermsynth.config import validate_config
from dermsynth.data.dataset import LmdbImageDataset
from dermsynth.data.images import decode_image
from dermsynth.data.ingest import ingest
from dermsynth.data.options import IngestOptions
from dermsynth.data.lmdb_store import LmdbImageStore, iterate_prefix

from .conftest import demo_config


def _source_bytes(row: pd.Series) -> bytes:
    container = Path(row["archive"])
    if container.is_dir():
        return (container / row["member"]).read_bytes()
    with zipfile.ZipFile(container) as z:
        return z.read(row["member"])


def test_round_trip_equals_the_resized_source(demo_cfg, ingested_ham):
    store = LmdbImageStore(ingested_ham / "lmdb")
    ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    assert store.index["count"] == len(ingested) > 0
    for _, row in ingested.sample(25, random_state=0).iterrows():
        expected = decode_image(_source_bytes(row), store.resolution, demo_cfg["ingest"]["grayscale"],
                                draft=demo_cfg["ingest"]["jpeg_draft"]).pixels
        assert np.array_equal(store.get(row["key"]), expected)
        assert store.meta(row["key"])["sha256"] == row["sha256"]


def test_raw_encoding_round_trip(demo_root, tmp_path):
    cfg = demo_config(demo_root)
    cfg["ingest"]["encoding"] = "raw"
    cfg = validate_config(cfg)
    ingest(IngestOptions.from_config(cfg, dataset="ham10000_gan"), tmp_path)
    store = LmdbImageStore(tmp_path / "lmdb")
    row = pd.read_csv(tmp_path / "ingested.csv", dtype=str, keep_default_na=False).iloc[0]
    assert np.array_equal(store.get(row["key"]),
                          decode_image(_source_bytes(row), store.resolution, "reject", draft=True).pixels)


def _collate(batch):
    return batch


def test_many_dataloader_workers_read_the_same_images(ingested_ham):
    manifest = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False).assign(split="train")
    dataset = LmdbImageDataset(ingested_ham / "lmdb", manifest)
    single = [dataset[i][0] for i in range(len(dataset))]
    for context in ("fork", "spawn"):
        loader = DataLoader(dataset, batch_size=16, num_workers=3, multiprocessing_context=context)
        images = torch.cat([batch[0] for batch in loader])
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
        assert torch.equal(images, torch.stack(single))
        targets = torch.cat([batch[1] for batch in loader])
        assert targets.tolist() == dataset.targets


def test_dataset_selects_splits_and_maps_labels(ingested_ham):
    manifest = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    manifest["split"] = np.where(np.arange(len(manifest)) % 3 == 0, "validation", "train")
    dataset = LmdbImageDataset(ingested_ham / "lmdb", manifest, splits=("validation",))
    assert len(dataset) == (manifest["split"] == "validation").sum()
    assert [dataset.classes[t] for t in dataset.targets] == manifest.loc[manifest["split"] == "validation", "label"].tolist()


def test_ingest_resumes_after_being_killed(demo_root, tmp_path):
    """SIGKILL mid-way, run again: the rerun skips finished work and the result equals a clean run."""
    raw = demo_config(demo_root)
    raw["datasets"]["isic"]["resolution"] = 384  # slow enough to be caught mid-way
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "dermsynth.cli", "data", "ingest", "--config", str(config), "--dataset", "isic",
               "--out", str(out), "--workers", "1"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        partial = [p for p in (out / "lmdb.partial").glob("shard-*") if (p / "data.mdb").exists()]
        if any(sum(1 for _ in iterate_prefix(p, b"meta/")) for p in partial):
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "lmdb").exists(), "the store must only appear under its final name when complete"

    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["decode"]["resumed_from_partial"] > 0
    assert summary["decode"]["resumed_from_partial"] + summary["decode"]["decoded_this_run"] == summary["images_ingested"]

    clean = tmp_path / "clean"
    ingest(IngestOptions.from_config(validate_config(raw), dataset="isic"), clean)
    assert (out / "ingested.csv").read_text() == (clean / "ingested.csv").read_text()
    killed, fresh = LmdbImageStore(out / "lmdb"), LmdbImageStore(clean / "lmdb")
    keys = pd.read_csv(clean / "ingested.csv")["key"]
    assert all(killed.get_bytes(k) == fresh.get_bytes(k) for k in keys)
