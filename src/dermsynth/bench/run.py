"""`dermsynth bench WHAT`: run one benchmark and merge its record into a JSON file (see the package's docstring)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from ..errors import ConfigError
from ..locks import exclusive
from ..outputs import check_writable, write_json
from ..provenance import package_versions
from .data import bench_ingest, bench_lmdb_read
from .gan import bench_gan_train
from .metrics import bench_metrics
from .peer import bench_gan_peer
from .stages import bench_classify_train, bench_invert, bench_project

RUNNERS = {"ingest": bench_ingest, "lmdb-read": bench_lmdb_read, "metrics": bench_metrics,
           "gan-train": bench_gan_train, "gan-peer": bench_gan_peer, "project": bench_project, "invert": bench_invert,
           "classify-train": bench_classify_train}


def run_benchmark(args) -> None:
    """Run benchmark `args.what` and merge its record ({machine, results, versions}) into `args.out` (JSON).

    One bench at a time per work folder (`--workdir`, whose data each run rebuilds): another is refused with
    BusyError naming it. The merge re-reads `args.out` under its lock, so two benches writing one file keep both
    records. Raises OutputError when the folder or file cannot be written, ConfigError when `args.out` holds
    something other than a JSON object."""
    check_writable(Path(args.out).parent)  # before minutes of measuring, not after
    with exclusive(args.workdir, f"bench {args.what}"):
        results = RUNNERS[args.what](args)
    machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "platform": platform.platform()}
    out = Path(args.out)
    record = {"machine": machine, "results": results, "versions": package_versions()}
    if args.what in ("ingest", "lmdb-read"):
        record.update(source_images=args.images, source_size=f"{args.max_side}x{args.max_side * 2 // 3} JPEG q90")
    with exclusive(out, "bench", wait=True, timeout=60):
        existing = _records(out)
        existing[args.what] = record
        write_json(out, existing)
    print(f"wrote {out}")


def _records(path: Path) -> dict:
    """The benchmark records already in `path` ({} when it does not exist). Raises ConfigError (one line) when
    it is not a JSON object."""
    if not path.exists():
        return {}
    try:
        existing = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, IsADirectoryError):
        existing = None
    if not isinstance(existing, dict):
        raise ConfigError(f"{path} is not a benchmark record file (a JSON object); give another --out or move it")
    return existing
