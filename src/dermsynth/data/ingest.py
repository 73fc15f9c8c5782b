"""Ingest one dataset: its sources' archives → validated records → LMDB shards + accounting.

Outputs, in `out_dir`:
    lmdb/            the image store (see lmdb_store)
    ingested.csv     one row per image in the store (the manifest before splits are assigned)
    rejections.csv   one row per input image or metadata row that is not in the store, with the reason
    ingest.json      counts per source and reason, class counts, timing, config, seed and versions

Work happens in `lmdb.partial/`; a killed ingest resumes from there, and the store appears under
its final name only when complete. The partial store records the fingerprint of what it was made from (the
decode settings, and each image's key, file and the file's size and modification time): a partial store of
other settings or other files is set aside (`superseded-<time>/`, one line) and the ingest starts afresh.
One ingest at a time writes an output folder (`locks.exclusive`); the folder is created and proved writable
before any work, and a full or read-only disk is one line naming the file being written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..labels import class_for, scheme_classes
from ..fingerprint import differences, digest, set_aside
from ..locks import exclusive
from ..progress import Progress
from ..outputs import check_writable, temporary_name, write_csv, write_json, write_text
from ..provenance import provenance
from .containers import ContainerReader
from .images import ImageRejected, decode_image
from .names import printable
from .options import IngestOptions
from .lmdb_store import (INDEX_FILE, ShardWriter, close_readers_under, encode_pixels, iterate_prefix, shard_of,
                         shard_path, store_error)
from .records import REJECTION_COLUMNS, Record, Rejection
from .sources import make_reader

INGESTED_COLUMNS = ["key", "source", "image_id", "label", "diagnosis", "raw_label", "patient_id", "lesion_id",
                    "split_rule", "archive", "member", "metadata_file", "row", "shard", "sha256",
                    "original_width", "original_height", "original_mode", "original_format", "conversions"]
CHUNK = 32


@dataclasses.dataclass
class Candidate:
    """A record that passed the label scheme and filters, with its class and split rule."""
    record: Record
    label: str
    split_rule: str  # auto | train | validation | test


def collect_candidates(options: IngestOptions) -> tuple[list[Candidate], list[Rejection], dict]:
    """Read every source of the dataset; apply the label scheme, filters and cross-source duplicates."""
    candidates: list[Candidate] = []
    rejections: list[Rejection] = []
    per_source: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for entry in options.sources:
        name = entry["source"]
        source_spec = options.archives[name]
        catalog = make_reader(name, source_spec).read()
        rejections += catalog.rejections
        per_source[name] = {"type": source_spec["type"], "path": source_spec["path"],
                            "records_with_image": len(catalog.records),
                            "ignored_non_image_files": catalog.ignored_files}
        include = set(source_spec.get("include_diagnoses", []))
        for record in catalog.records:
            member = record.member
            where = dict(key=record.key, image_id=record.image_id, metadata_file=record.metadata_file,
                         row=record.row, archive=member.container, member=member.name)
            if include and record.diagnosis not in include:
                rejections.append(Rejection(name, "excluded_by_filter",
                                            f"diagnosis '{record.diagnosis}' is not in sources.{name}.include_diagnoses "
                                            f"({', '.join(sorted(include))})", **where))
                continue
            label, why = class_for(options.labels, record.diagnosis, record.melanoma)
            if label is None:
                rejections.append(Rejection(name, "label_not_in_scheme",
                                            f"'{record.raw_label}': {why} (dataset labels: {options.labels})", **where))
                continue
            if record.key in seen:
                rejections.append(Rejection(name, "duplicate_id",
                                            f"image id '{record.key}' is also in source '{seen[record.key]}', which "
                                            "comes first in the dataset and is kept (avoids train/test leakage)",
                                            **where))
                continue
            seen[record.key] = name
            candidates.append(Candidate(record, label, entry["split"]))
    return candidates, rejections, per_source


def _process_chunk(job: dict) -> dict:
    """Decode, resize and store one chunk of images into one shard (runs in a worker process)."""
    writer = ShardWriter(job["shard_dir"], job["map_size"])
    reader = ContainerReader()
    done = writer.done_keys([item[0] for item in job["items"]])  # finished by an interrupted earlier run
    todo = [item for item in job["items"] if item[0] not in done]
    entries, stored, rejected = [], 0, 0
    for key, container, member in todo:
        try:
            data = reader.read(container, member)
            digest = hashlib.sha256(data).hexdigest()
            decoded = decode_image(data, job["resolution"], job["grayscale"], job["draft"], name=member)
        except ImageRejected as exc:
            message = f"{container}:{member}: {exc.message}"
            entries.append((b"rej/" + key.encode(), json.dumps({"reason": exc.reason, "message": message}).encode()))
            rejected += 1
            continue
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # unreadable zip member, CRC error, …
            fix = ("you may not read it: fix its permissions" if isinstance(exc, PermissionError) else
                   "the archive is damaged: re-copy or re-download it")
            message = f"{container}:{member} cannot be read ({exc}); {fix}"
            entries.append((b"rej/" + key.encode(), json.dumps({"reason": "unreadable_member", "message": message}).encode()))
            rejected += 1
            continue
        meta = {"sha256": digest, "original_width": decoded.original_size[0],
                "original_height": decoded.original_size[1], "original_mode": decoded.original_mode,
                "original_format": decoded.original_format,
                "conversions": ";".join(decoded.conversions)}
        entries += [(b"img/" + key.encode(), encode_pixels(decoded.pixels, job["encoding"])),
                    (b"meta/" + key.encode(), json.dumps(meta).encode())]
        stored += 1
    if entries:
        writer.write(entries)
    writer.close()
    reader.close()
    return {"items": len(job["items"]), "stored": stored, "rejected": rejected, "skipped": len(job["items"]) - len(todo)}


def _prepare_staging(staging: Path, settings: dict, inputs: str) -> None:
    """Reuse a partial store only if it was made with the same settings from the same files (`inputs`, see
    `_inputs_fingerprint`); otherwise set it aside and start afresh."""
    index = staging / INDEX_FILE
    expected = {"settings": settings, "inputs": inputs}
    if staging.exists():
        recorded = json.loads(index.read_text()) if index.exists() else None
        found = differences(None if recorded is None else
                            {"settings": recorded.get("settings"), "inputs": recorded.get("inputs")}, expected)
        if found:
            set_aside(staging.parent, [staging.name], f"{staging} was left by an ingest of other settings or files "
                      f"({'; '.join(found)})", "ingest")
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise store_error(staging, exc) from None
    write_text(index, json.dumps({**expected, "complete": False}))


def _inputs_fingerprint(candidates: list[Candidate]) -> str:
    """What the stored pixels are made from: each key with its container, member, and the size and
    modification time of the file holding it (the zip, or the image file of a folder source)."""
    stats: dict[str, list] = {}

    def identity(path: str) -> list:
        if path not in stats:
            try:
                info = os.stat(path)
                stats[path] = [info.st_size, info.st_mtime_ns]
            except OSError:
                stats[path] = ["unreadable"]
        return stats[path]

    return digest([[c.record.key, c.record.member.container, c.record.member.name,
                    identity(c.record.member.container) if not os.path.isdir(c.record.member.container) else
                    identity(os.path.join(c.record.member.container, c.record.member.name))]
                   for c in sorted(candidates, key=lambda c: c.record.key)])


def _jobs(candidates: list[Candidate], staging: Path, settings: dict) -> list[dict]:
    """Chunks of work, one shard each, taken round-robin over shards so that concurrent workers
    rarely wait for the same shard's write lock."""
    by_shard: dict[int, list] = defaultdict(list)
    for c in candidates:
        by_shard[shard_of(c.record.key, settings["shards"])].append(
            (c.record.key, c.record.member.container, c.record.member.name))
    bytes_per_image = settings["resolution"] ** 2 * 3 + 2048
    per_shard = []
    for shard, items in sorted(by_shard.items()):
        map_size = max(64 << 20, int(len(items) * bytes_per_image * 1.5))
        per_shard.append([{"shard_dir": str(shard_path(staging, shard)), "items": items[start:start + CHUNK],
                           "map_size": map_size, **settings} for start in range(0, len(items), CHUNK)])
    return [job for round_ in itertools.zip_longest(*per_shard) for job in round_ if job is not None]


def _run_jobs(jobs: list[dict], workers: int, desc: str) -> Counter:
    totals: Counter = Counter()
    progress = Progress(sum(len(j["items"]) for j in jobs), desc)
    if workers == 1:
        results = map(_process_chunk, jobs)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_process_chunk, jobs)
    try:
        for result in results:
            totals.update(result)
            progress.update(result["items"])
    except BaseException:
        if workers > 1:
            pool.terminate()  # a worker's error (a full disk) stops the others at once; finished chunks are kept
        raise
    progress.close()
    if workers > 1:
        pool.close()
        pool.join()
    return totals


def _finalise(candidates: list[Candidate], staging: Path, shards: int) -> tuple[list[dict], list[Rejection]]:
    """Read back what the workers stored; turn stored rejections and exact-content duplicates into entries."""
    by_key = {c.record.key: c for c in candidates}
    metas: dict[str, dict] = {}
    stored_rejections: dict[str, dict] = {}
    for shard in range(shards):
        path = shard_path(staging, shard)
        if not path.exists():
            continue
        metas.update({k: json.loads(v) for k, v in iterate_prefix(path, b"meta/") if k in by_key})
        stored_rejections.update({k: json.loads(v) for k, v in iterate_prefix(path, b"rej/") if k in by_key})
    rows, rejections, first_with_digest = [], [], {}
    for candidate in candidates:  # dataset order: the first copy of identical bytes is kept
        record, key = candidate.record, candidate.record.key
        where = dict(key=key, image_id=record.image_id, metadata_file=record.metadata_file, row=record.row,
                     archive=record.member.container, member=record.member.name)
        if key in stored_rejections:
            info = stored_rejections[key]
            rejections.append(Rejection(record.source, info["reason"], info["message"], **where))
            continue
        meta = metas[key]
        if meta["sha256"] in first_with_digest:
            rejections.append(Rejection(record.source, "duplicate_content",
                                        f"byte-identical to '{first_with_digest[meta['sha256']]}', which is kept; "
                                        "the same picture under two ids would leak between splits", **where))
            continue
        first_with_digest[meta["sha256"]] = key
        rows.append({"key": key, "source": record.source, "image_id": record.image_id, "label": candidate.label,
                     "diagnosis": record.diagnosis or "", "raw_label": record.raw_label,
                     "patient_id": record.patient_id, "lesion_id": record.lesion_id,
                     "split_rule": candidate.split_rule, "archive": record.member.container,
                     "member": printable(record.member.name), "metadata_file": record.metadata_file, "row": record.row,
                     "shard": shard_of(key, shards), **meta})
    _drop_from_store(staging, shards, [r.key for r in rejections if r.reason == "duplicate_content"])
    return rows, rejections


def _drop_from_store(staging: Path, shards: int, keys: list[str]) -> None:
    for shard in {shard_of(k, shards) for k in keys}:
        writer = ShardWriter(shard_path(staging, shard), 64 << 20)
        writer.delete([prefix + k.encode() for k in keys if shard_of(k, shards) == shard
                       for prefix in (b"img/", b"meta/")])
        writer.close()


def _table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame["row"] = frame["row"].astype("Int64")  # metadata line numbers; empty for unlisted files
    return frame


def ingest(options: IngestOptions, out_dir: str | Path, workers: int = 1) -> dict:
    """Ingest every source of dataset `options.dataset` into `out_dir` (see the module docstring) with
    `workers` decode processes (the result does not depend on them); returns the summary written to
    ingest.json (counts per source and reason, class counts, timing, provenance).

    Raises:
        InputError: an archive or metadata file cannot be used, or no image at all was stored.
        BusyError: another ingest is writing to `out_dir`.
        OutputError: `out_dir` cannot be written (read-only, no permission, disk full), checked before any
            work, or the disk refuses a write during the ingest (rerun to resume)."""
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "ingest"):
        return _ingest(options, out_dir, workers)


def _ingest(options: IngestOptions, out_dir: Path, workers: int) -> dict:
    started = time.monotonic()
    dataset = options.dataset
    _remove_leftovers(out_dir)
    candidates, rejections, per_source = collect_candidates(options)
    print(f"ingest {dataset}: {len(candidates)} images to store, {len(rejections)} rejected while reading "
          f"metadata and archives", file=sys.stderr)

    settings = {"resolution": options.resolution, "encoding": options.encoding, "shards": options.shards,
                "grayscale": options.grayscale, "draft": options.jpeg_draft}
    staging = out_dir / "lmdb.partial"
    _prepare_staging(staging, settings, _inputs_fingerprint(candidates))
    totals = _run_jobs(_jobs(candidates, staging, settings), workers, f"ingest {dataset}")
    rows, decode_rejections = _finalise(candidates, staging, settings["shards"])
    rejections += decode_rejections
    if not rows:
        _fail_empty(dataset, out_dir, rejections, staging)

    classes = scheme_classes(options.labels)
    index = {"dataset": dataset, "labels": options.labels, "classes": list(classes), "count": len(rows),
             "settings": settings, "complete": True, **settings}
    write_text(staging / INDEX_FILE, json.dumps(index, indent=2))
    _publish_store(staging, out_dir)

    rejection_rows = sorted((r.as_row() for r in rejections), key=lambda r: (r["source"], r["reason"], r["key"]))
    write_csv(out_dir / "ingested.csv", _table(sorted(rows, key=lambda r: r["key"]), INGESTED_COLUMNS))
    write_csv(out_dir / "rejections.csv", _table(rejection_rows, REJECTION_COLUMNS))
    summary = _summary(options, rows, rejections, per_source, totals, time.monotonic() - started, workers)
    write_json(out_dir / "ingest.json", summary)  # last: its presence says the folder is complete
    _print_summary(dataset, summary)
    return summary


ACCOUNTING_FILES = ("ingest.json", "ingested.csv", "rejections.csv")


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary files and old stores that a killed ingest of this folder left (this process holds the
    folder's lock, so no other writer owns them)."""
    for name in ("lmdb", *ACCOUNTING_FILES):
        for path in out_dir.glob(f".{name}.*.*.tmp"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _publish_store(staging: Path, out_dir: Path) -> None:
    """Put the finished store under its final name `lmdb/`: the accounting of an earlier run is removed first
    (it describes the old store), the old store is renamed aside, the new one renamed in, the old one deleted.
    A kill at any moment leaves either the old outputs, or the new store without (or with part of) its
    accounting files, each complete."""
    final = out_dir / "lmdb"
    try:
        for name in ACCOUNTING_FILES:
            if (out_dir / name).exists():
                (out_dir / name).unlink()
        old = None
        if final.exists():
            close_readers_under(final)
            old = temporary_name(final)
            os.rename(final, old)
        staging.rename(final)
    except OSError as exc:
        raise store_error(final, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fail_empty(dataset: str, out_dir: Path, rejections: list[Rejection], staging: Path) -> None:
    """An ingest that stores nothing is an error: write the rejection report, then say why."""
    report = out_dir / "rejections.csv"
    rows = sorted((r.as_row() for r in rejections), key=lambda r: (r["source"], r["reason"], r["key"]))
    write_csv(report, _table(rows, REJECTION_COLUMNS))
    shutil.rmtree(staging, ignore_errors=True)
    if not rejections:
        raise InputError(f"ingest {dataset}: no image was stored and nothing was rejected: the dataset's sources "
                         "list no images. Check datasets.{dataset}.sources and each source's path.")
    by_reason = Counter(r.reason for r in rejections)
    reason, count = by_reason.most_common(1)[0]
    example = next(r for r in rejections if r.reason == reason)
    raise InputError(f"ingest {dataset}: no image was stored; all {len(rejections)} files/rows were rejected "
                     f"({', '.join(f'{n} {k}' for k, n in by_reason.most_common())}). Most common, e.g.: "
                     f"{example.message} Every rejection is listed in {report}.")


def _summary(options, rows, rejections, per_source, totals, seconds, workers) -> dict:
    for name, info in per_source.items():
        info["ingested"] = sum(1 for r in rows if r["source"] == name)
        info["rejected"] = dict(Counter(r.reason for r in rejections if r.source == name))
    return {
        "dataset": options.dataset,
        "images_ingested": len(rows),
        "rejections": len(rejections),
        "rejections_by_reason": dict(Counter(r.reason for r in rejections)),
        "class_counts": dict(Counter(r["label"] for r in rows)),
        "per_source": per_source,
        "decode": {"workers": workers, "seconds": round(seconds, 2),
                   "decoded_this_run": totals["stored"] + totals["rejected"],
                   "resumed_from_partial": totals["skipped"]},
        "settings_digest": options.digest,
        "provenance": provenance(options.step, options.to_dict(), seed=None),
    }


def _print_summary(dataset: str, summary: dict) -> None:
    print(f"ingest {dataset}: {summary['images_ingested']} images stored, {summary['rejections']} rejected "
          f"{summary['rejections_by_reason']}; classes {summary['class_counts']}; "
          f"{summary['decode']['seconds']} s", file=sys.stderr)


def ingest_dataset(cfg: dict, dataset: str, out_dir: str | Path, workers: int | None = None) -> dict:
    """`ingest` from a whole validated config (tests, benchmarks): the options of `dataset`, and
    `ingest.workers` processes unless `workers` is given. Raises ConfigError for an unknown dataset."""
    return ingest(IngestOptions.from_config(cfg, dataset=dataset), out_dir, workers or cfg["ingest"]["workers"])
