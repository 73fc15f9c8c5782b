"""Shared machinery for archive readers: CSV validation and image↔row accounting.

A reader turns one published archive into a `SourceCatalog`: the records that can be used and a
rejection entry for everything else, so that every image file and every metadata row is
accounted for exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import pandas as pd

from ...errors import InputError
from ..containers import list_members
from ..records import Member, Record, Rejection


@dataclass
class SourceCatalog:
    source: str
    records: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)  # non-image files (licences, notes)


def read_metadata_csv(path: Path, required: Iterable[str], layout: str) -> pd.DataFrame:
    """Read a metadata CSV as strings; a missing file or column is an error naming both."""
    if not path.exists():
        raise InputError(f"{path} not found. A {layout} archive must contain this file as published; "
                         "check the source's `path` in the config.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path} cannot be read as CSV ({exc}); re-download the {layout} metadata.") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{path} is missing column(s) {', '.join(repr(c) for c in missing)} "
                         f"(found: {', '.join(frame.columns)}). This does not look like the published "
                         f"{layout} layout; check the file or the source's `type`.")
    return frame


def first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def stem_key(name: str) -> str:
    return PurePosixPath(name).stem


def isic_key(name: str) -> str:
    """ISIC ids are shared across releases; ISIC 2019 renamed some files `<id>_downsampled`."""
    stem = PurePosixPath(name).stem
    return stem[: -len("_downsampled")] if stem.endswith("_downsampled") else stem


def assemble(source: str, records: list[Record], rejections: list[Rejection],
             containers: list[Path], member_key: Callable[[str], str]) -> SourceCatalog:
    """Match metadata rows to image files and account for every row and every file once.

    `records` are the rows that passed row validation; `rejections` hold the rows that did not
    (their image files are attached to those entries rather than reported again).
    """
    catalog = SourceCatalog(source)
    by_key: dict[str, Record] = {}
    for record in records:
        if record.key in by_key:
            first = by_key[record.key]
            rejections.append(Rejection(
                source, "duplicate_id",
                f"{record.metadata_file} row {record.row} repeats image id '{record.image_id}' "
                f"(first at row {first.row}); the first row is used. Remove the duplicate row.",
                key=record.key, image_id=record.image_id, metadata_file=record.metadata_file,
                row=record.row))
        else:
            by_key[record.key] = record
    rejected_by_key = {r.key: r for r in rejections if r.key}

    found: dict[str, Member] = {}
    for container in containers:
        if not container.exists():
            raise InputError(f"{container} not found; the {source} archive is incomplete. "
                             "Check the source's `path`, or re-download the archive.")
        listing = list_members(container)
        catalog.ignored_files += [f"{container}:{n}" for n in listing.non_images]
        for name in listing.unsafe:
            key = member_key(name)
            record = by_key.pop(key, None)  # a listed image stored under an unsafe path: one entry for both
            where = (dict(image_id=record.image_id, metadata_file=record.metadata_file, row=record.row)
                     if record else {})
            rejections.append(Rejection(
                source, "unsafe_member_path",
                f"{container} contains '{name}', a path that escapes the archive; it is not read. "
                "Re-create the archive with relative member paths.",
                key=key, archive=str(container), member=name, **where))
        for name in listing.images:
            key = member_key(name)
            if key in found:
                rejections.append(Rejection(
                    source, "duplicate_member",
                    f"image '{key}' is stored twice: {found[key].container}:{found[key].name} and "
                    f"{container}:{name}; the first is used. Remove one copy.",
                    key=key, archive=str(container), member=name))
            elif key in by_key:
                found[key] = Member(str(container), name)
                by_key[key].member = found[key]
            elif key in rejected_by_key and not rejected_by_key[key].member:
                rejected_by_key[key].archive, rejected_by_key[key].member = str(container), name
                found[key] = Member(str(container), name)
            else:
                rejections.append(Rejection(
                    source, "not_in_metadata",
                    f"{container}:{name} is not listed in the metadata, so it has no label. "
                    "Add a row for it or remove the file.",
                    key=key, archive=str(container), member=name))

    for key, record in by_key.items():
        if record.member is None:
            rejections.append(Rejection(
                source, "missing_image",
                f"{record.metadata_file} row {record.row} lists '{record.image_id}' but no such image "
                f"is in {', '.join(str(c) for c in containers)}. Re-download the archive or drop the row.",
                key=key, image_id=record.image_id, metadata_file=record.metadata_file, row=record.row))
        else:
            catalog.records.append(record)
    catalog.rejections = rejections
    return catalog


def row_rejection(source: str, reason: str, message: str, metadata_file: Path, row: int,
                  image_id: str, key: str) -> Rejection:
    return Rejection(source, reason, message, key=key, image_id=image_id,
                     metadata_file=str(metadata_file), row=row)


def one_hot_label(row: pd.Series, columns: list[str]) -> tuple[str | None, str]:
    """The single column set to 1 in a one-hot ground-truth row, or (None, problem)."""
    chosen = []
    for column in columns:
        text = row[column].strip()
        try:
            value = float(text)
        except ValueError:
            return None, f"column {column} holds '{text}', not 0 or 1"
        if value not in (0.0, 1.0):
            return None, f"column {column} holds {text}, not 0 or 1"
        if value == 1.0:
            chosen.append(column)
    if len(chosen) != 1:
        return None, (f"{len(chosen)} diagnosis columns are set ({', '.join(chosen) or 'none'}); "
                      "exactly one must be 1")
    return chosen[0], ""
