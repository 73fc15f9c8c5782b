"""Shared machinery for archive readers: CSV validation and image↔row accounting.

A reader turns one published archive into a `SourceCatalog`: the records that can be used and a
rejection entry for everything else, so that every image file and every metadata row is
accounted for exactly once.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import pandas as pd

from ...errors import InputError
from ..containers import ContainerReader, list_members
from ..names import canonical_name, describe_difference, lookup_key, same_format
from ..records import Member, Record, Rejection


@dataclass
class SourceCatalog:
    """What a reader makes of one archive: usable records, and a rejection for every other file and row."""
    source: str
    records: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)  # non-image files (licences, notes)
    # entries of a container that were not read (see containers.MemberListing.skipped): "container:name" → sentence
    skipped: dict[str, str] = field(default_factory=dict)


READERS: dict[str, type] = {}
"""Every archive reader by its `type_name` (the `type` of a source in the config), filled by `register_reader`."""


def register_reader(reader: type) -> type:
    """Class decorator: register an archive reader under its `type_name` (as timm registers models).

    A reader is a class with `type_name` (str), `__init__(name, spec)` (the source's name and config section),
    `required_files() -> list[Path]` and `read() -> SourceCatalog`. Raises ValueError when another class already
    holds the name."""
    name = getattr(reader, "type_name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{reader.__name__} has no `type_name` (the source `type` it reads)")
    if READERS.get(name, reader) is not reader:
        raise ValueError(f"reader type '{name}' is registered twice ({READERS[name].__name__}, {reader.__name__})")
    READERS[name] = reader
    return reader


def read_metadata_csv(path: Path, required: Iterable[str], layout: str, own_file: bool = False) -> pd.DataFrame:
    """Read a metadata CSV (UTF-8, with or without a byte-order mark) as strings.

    `own_file` marks a CSV the user wrote (a folder source's labels): advice then says how to fix
    the file, not to re-download it.

    Raises:
        InputError: the file is missing, is not UTF-8 (names the line and byte, the encoding it
            probably is, and how to save it as UTF-8), is not valid CSV, or lacks a required column.
    """
    if not path.exists():
        raise InputError(f"{path} not found. The {layout} archive must contain this file as published; "
                         "check the source's `path` in the config (for the demo archives, run "
                         "`snakemake --cores 2` or `dermsynth data demo` first).")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(_encoding_advice(path, data, exc, own_file)) from None
    fix = ("correct the file" if own_file else f"re-download the {layout} metadata, or, if you edited it, "
           "correct it")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty; {fix}.") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{path} cannot be read as CSV ({str(exc).strip()}); a field that contains a comma must "
                         f"be quoted. {fix[0].upper() + fix[1:]}.") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = ""
        if len(frame.columns) == 1 and any(d in frame.columns[0] for d in ";\t|"):
            hint = (" The header looks separated by ';' or tabs (a spreadsheet's regional setting): save the "
                    "file with commas as separators.")
        raise InputError(f"{path} is missing column(s) {', '.join(repr(c) for c in missing)} "
                         f"(found: {', '.join(frame.columns)}). This does not look like the published "
                         f"{layout} layout; check the file or the source's `type`.{hint}")
    return frame


def _encoding_advice(path: Path, data: bytes, exc: UnicodeDecodeError, own_file: bool) -> str:
    line = data[:exc.start].count(b"\n") + 1
    byte = data[exc.start]
    try:
        data.decode("cp1252")
        guess = "Windows-1252 (the default of Excel on Windows)"
    except UnicodeDecodeError:
        guess = "Latin-1 or another legacy 8-bit encoding"
    how = ("Save it as UTF-8: in Excel choose 'CSV UTF-8 (Comma delimited)'; in LibreOffice tick 'Edit filter "
           f"settings' and choose 'Unicode (UTF-8)'; or run `iconv -f CP1252 -t UTF-8 {path.name} > "
           f"{path.stem}-utf8.csv`.")
    origin = "" if own_file else " The published file is UTF-8, so it was re-saved by another program; "\
        "re-download it or convert it."
    return (f"{path} is not UTF-8: line {line} holds byte 0x{byte:02x}, which is not valid UTF-8. It is probably "
            f"{guess}. dermsynth reads metadata as UTF-8. {how}{origin}")


def first_existing(*candidates: Path) -> Path:
    """The first of `candidates` that exists (a zip or its unpacked folder), else the first."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def stem_key(name: str) -> str:
    """The id of an archive image file: its name without folder and extension."""
    return PurePosixPath(name).stem


def isic_key(name: str) -> str:
    """ISIC ids are shared across releases; ISIC 2019 renamed some files `<id>_downsampled`."""
    stem = PurePosixPath(name).stem
    return stem[: -len("_downsampled")] if stem.endswith("_downsampled") else stem


def assemble(source: str, records: list[Record], rejections: list[Rejection], containers: list[Path],
             member_key: Callable[[str], str], ids_are_paths: bool = False) -> SourceCatalog:
    """Match metadata rows to image files and account for every row and every file exactly once.

    `records` are the rows that passed row validation; `rejections` hold the rows that did not
    (their image files are attached to those entries rather than reported again). `member_key`
    maps a file's canonical path (see `names.canonical_name`) to the id a row names; rows and files
    meet on the case-insensitive form of that id. With `ids_are_paths` (a folder's CSV, Derm7pt)
    a row names one file by its path, so among files with the same id the one with that path (then
    the same path in another letter case, then the same format under another extension spelling)
    is chosen; a row without an extension, or an archive id, must match exactly one file.

    Outcomes per row: stored, `missing_image`, `ambiguous_image` (several different files match),
    `unsafe_member_path`. Per file: stored with its row, `duplicate_member` (byte-identical second
    copy), `ambiguous_member`, `not_in_metadata`, `not_an_image` (documents of the layout),
    `archive_tool_file` (__MACOSX, .DS_Store …), `unsafe_member_path`.

    Raises:
        InputError: a container (zip or folder) does not exist.
    """
    catalog = SourceCatalog(source)
    accepted = _drop_duplicate_rows(source, records, rejections)
    index, unsafe = _index_files(source, catalog, rejections, containers, member_key)
    claimants = accepted + [r for r in rejections if r.key and r.metadata_file and not r.member]

    def lookup(entry) -> str:
        return lookup_key(member_key(canonical_name(entry.image_id)) if ids_are_paths else entry.key)

    claimed, unmatched = _match(source, claimants, index, lookup, ids_are_paths, rejections)
    _reject_unsafe(source, unsafe, unmatched, member_key, rejections)
    _reject_unlisted(source, index, claimed, member_key, rejections)
    for record in accepted:
        if record.attributes.pop("_absorbed", False) or record.attributes.get("_rejected"):
            record.attributes.pop("_near_misses", None)
            record.attributes.pop("_rejected", None)
            continue
        near = record.attributes.pop("_near_misses", [])
        if record.member is None:
            rejections.append(_missing(source, record, containers, near, catalog.skipped))
        else:
            catalog.records.append(record)
    catalog.rejections = rejections
    return catalog


def _match(source: str, claimants: list, index: dict[str, list[Member]], lookup: Callable, ids_are_paths: bool,
           rejections: list[Rejection]) -> tuple[dict[tuple[str, str], object], dict[str, list[Record]]]:
    """Give each row (record, or a rejected row still owning its file) the file it names, in row order:
    (file → row that claimed it, lookup id → records that found no file)."""
    claimed: dict[tuple[str, str], object] = {}
    unmatched: dict[str, list[Record]] = defaultdict(list)
    with _ByteDigests() as digests:
        for entry in sorted(claimants, key=lambda e: (e.row or 0)):
            candidates = index.get(lookup(entry), [])
            chosen = _choose(entry.image_id, candidates) if ids_are_paths else list(candidates)
            if len(chosen) > 1:
                chosen = _collapse_identical(source, entry, chosen, claimed, rejections, digests)
            if not chosen:
                if isinstance(entry, Record):
                    unmatched[lookup(entry)].append(entry)
                    entry.member = None
                    entry.attributes["_near_misses"] = candidates
            elif len(chosen) > 1:
                _reject_ambiguous(source, entry, chosen, claimed, rejections)
            elif chosen[0].key() in claimed:
                _reject_same_file(source, entry, chosen[0], claimed, rejections)
            else:
                claimed[chosen[0].key()] = entry
                if isinstance(entry, Record):
                    entry.member = chosen[0]
                else:
                    entry.archive, entry.member = chosen[0].container, chosen[0].name
    return claimed, unmatched


def _reject_unsafe(source: str, unsafe: list[tuple[Path, str]], unmatched: dict[str, list[Record]],
                   member_key: Callable[[str], str], rejections: list[Rejection]) -> None:
    """A member path that escapes its archive is never read; a row that named it takes the rejection."""
    for container, name in unsafe:
        waiting = unmatched.get(lookup_key(member_key(canonical_name(name))))
        record = waiting.pop(0) if waiting else None
        where = (dict(image_id=record.image_id, metadata_file=record.metadata_file, row=record.row)
                 if record else {})
        if record:
            record.attributes["_absorbed"] = True
        rejections.append(Rejection(
            source, "unsafe_member_path",
            f"{container} contains '{name}', a path that escapes the archive; it is not read. "
            "Re-create the archive with relative member paths.",
            key=record.key if record else member_key(canonical_name(name)), archive=str(container), member=name,
            **where))


def _reject_unlisted(source: str, index: dict[str, list[Member]], claimed: dict, member_key: Callable[[str], str],
                     rejections: list[Rejection]) -> None:
    """Image files that no row claimed have no label."""
    for members in index.values():
        for member in members:
            if member.key() not in claimed:
                rejections.append(Rejection(
                    source, "not_in_metadata",
                    f"{member.container}:{member.name} is not listed in the metadata, so it has no label. "
                    "Add a row for it or remove the file.",
                    key=member_key(canonical_name(member.spelled)), archive=member.container, member=member.name))


def _drop_duplicate_rows(source: str, records: list[Record], rejections: list[Rejection]) -> list[Record]:
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
    return list(by_key.values())


def _index_files(source: str, catalog: SourceCatalog, rejections: list[Rejection], containers: list[Path],
                 member_key: Callable[[str], str]) -> tuple[dict[str, list[Member]], list[tuple[Path, str]]]:
    """Candidate image files by lookup id; documents and tool files get their rejection rows here."""
    index: dict[str, list[Member]] = defaultdict(list)
    unsafe: list[tuple[Path, str]] = []
    for container in containers:
        if not container.exists():
            raise InputError(f"{container} not found; the {source} archive is incomplete. "
                             "Check the source's `path`, or re-download the archive.")
        listing = list_members(container)
        catalog.ignored_files += [f"{container}:{n}" for n in listing.documents]
        for name in listing.documents:
            rejections.append(Rejection(
                source, "not_an_image", f"{container}:{name} is a document of the archive layout (licence, "
                "notes, metadata), not an image; listed so that every file is accounted for.",
                archive=str(container), member=name))
        for name in listing.tool_files:
            rejections.append(Rejection(
                source, "archive_tool_file", f"{container}:{name} was added by an archive tool or desktop "
                "(macOS __MACOSX/._ resource forks, .DS_Store, Windows Thumbs.db); it holds no image data.",
                archive=str(container), member=name))
        unsafe += [(container, name) for name in listing.unsafe]
        for name, (reason, message) in listing.skipped.items():
            catalog.skipped[f"{container}:{name}"] = message
            rejections.append(Rejection(source, reason, f"{message}. Not read, listed so that nothing is left out "
                                        "silently.", archive=str(container), member=name))
        for name in listing.images:
            meant = listing.meant.get(name, "")
            index[lookup_key(member_key(canonical_name(meant or name)))].append(Member(str(container), name, meant))
    return index, unsafe


def _choose(listed: str, candidates: list[Member]) -> list[Member]:
    """Among files with a row's id, the ones its listed path names (see `assemble`)."""
    wanted = canonical_name(listed)
    for same in (lambda n: n == wanted, lambda n: n.casefold() == wanted.casefold()):
        hits = [m for m in candidates if same(canonical_name(m.spelled))]
        if hits:
            return hits
    if not PurePosixPath(wanted).suffix:
        return list(candidates)
    return [m for m in candidates if same_format(m.spelled, wanted)]


class _ByteDigests:
    """sha256 of member bytes, read only for the few files whose ids collide."""

    def __enter__(self):
        self.reader, self.cache = ContainerReader(), {}
        return self

    def __call__(self, member: Member) -> str:
        if member.key() not in self.cache:
            self.cache[member.key()] = hashlib.sha256(self.reader.read(member.container, member.name)).hexdigest()
        return self.cache[member.key()]

    def __exit__(self, *exc):
        self.reader.close()


def _collapse_identical(source, entry, chosen, claimed, rejections, digests) -> list[Member]:
    """Byte-identical copies (the same image in both HAM10000 zips) are one image: keep the first."""
    try:
        if len({digests(m) for m in chosen}) > 1:
            return chosen
    except (OSError, KeyError, ValueError):
        return chosen  # unreadable: let the ambiguity be reported
    first, *copies = chosen
    for copy in copies:
        claimed[copy.key()] = entry
        rejections.append(Rejection(
            source, "duplicate_member",
            f"{copy.container}:{copy.name} is a byte-identical copy of {first.container}:{first.name}, "
            f"which is used for '{entry.image_id}'. Remove one copy.",
            key=entry.key, archive=copy.container, member=copy.name))
    return [first]


def _reject_ambiguous(source, entry, chosen, claimed, rejections) -> None:
    """Several different files match one row: neither is stored, the row and each file say why."""
    names = [f"{m.container}:{m.name}" for m in chosen]
    differences = "; ".join(f"'{a.name}' vs '{b.name}': {describe_difference(a.spelled, b.spelled)}"
                            for a, b in zip(chosen, chosen[1:]))
    advice = ("list each file by its full name (with its extension) in its own row, or remove the files that are "
              "not this image")
    _reject_row(source, entry, "ambiguous_image",
                f"{entry.metadata_file} row {entry.row} names '{entry.image_id}', which matches {len(chosen)} "
                f"different files ({', '.join(names)}; they differ in {differences}); none is used, so that no "
                f"label lands on another file's pixels. To fix: {advice}.", rejections)
    for member in chosen:
        claimed[member.key()] = entry
        rejections.append(Rejection(
            source, "ambiguous_member",
            f"{member.container}:{member.name} is one of {len(chosen)} different files matching "
            f"'{entry.image_id}' ({entry.metadata_file} row {entry.row}); it is not used. To fix: {advice}.",
            key=entry.key, archive=member.container, member=member.name))


def _reject_same_file(source, entry, member, claimed, rejections) -> None:
    first = claimed[member.key()]
    _reject_row(source, entry, "duplicate_id",
                f"{entry.metadata_file} row {entry.row} names '{entry.image_id}', the same file "
                f"({member.container}:{member.name}) as row {first.row} ('{first.image_id}'), which is used. "
                "Remove the duplicate row.", rejections)


def _reject_row(source, entry, reason, message, rejections) -> None:
    """Turn a row into a rejection; a row already rejected for its own reason gets the text appended."""
    if isinstance(entry, Record):
        entry.attributes["_rejected"] = True
        rejections.append(Rejection(source, reason, message, key=entry.key, image_id=entry.image_id,
                                    metadata_file=entry.metadata_file, row=entry.row))
    else:
        entry.message += f" Also: {message}"


def _missing(source: str, record: Record, containers: list[Path], near: list[Member],
             skipped: dict[str, str] | None = None) -> Rejection:
    where = ", ".join(str(c) for c in containers)
    blocking = _skipped_on_path(record.image_id, containers, skipped or {})
    if blocking:
        message = (f"{record.metadata_file} row {record.row} lists '{record.image_id}', which was not read: "
                   f"{blocking}.")
    elif near:
        others = "; ".join(f"'{m.name}' differs in {describe_difference(m.spelled, record.image_id)}" for m in near)
        message = (f"{record.metadata_file} row {record.row} lists '{record.image_id}', which is not in {where}; "
                   f"files with the same name but another extension are ({others}). Correct the row's path "
                   "if one of them is this image.")
    else:
        message = (f"{record.metadata_file} row {record.row} lists '{record.image_id}' but no such image is in "
                   f"{where}. Check the path (or re-download the archive), or drop the row.")
    return Rejection(source, "missing_image", message, key=record.key, image_id=record.image_id,
                     metadata_file=record.metadata_file, row=record.row)


def _skipped_on_path(listed: str, containers: list[Path], skipped: dict[str, str]) -> str:
    """The reason a listed path was not read when it, or a folder on its way, was skipped (a broken or
    looping link, an unreadable folder), else ''."""
    parts = PurePosixPath(canonical_name(listed)).parts
    for container in containers:
        for depth in range(len(parts), 0, -1):
            message = skipped.get(f"{container}:{'/'.join(parts[:depth])}")
            if message:
                return message
    return ""


def row_rejection(source: str, reason: str, message: str, metadata_file: Path, row: int,
                  image_id: str, key: str) -> Rejection:
    """A rejection of one metadata row (its image file is attached later by `assemble`)."""
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
