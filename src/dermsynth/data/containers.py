"""Read image files straight out of zip archives or folders, without extracting anything to disk."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .names import canonical_name, meant_on_disk

# Files that belong to an archive's published layout or a folder's paperwork: listed (one row each in
# rejections.csv, reason `not_an_image`), never decoded. Everything else is a candidate image, so a
# format nobody listed here (WebP, JFIF, GIF, HEIC, DICOM …) is matched to its metadata row and then
# decoded or rejected as `unsupported_format` — never skipped.
DOCUMENT_SUFFIXES = {".csv", ".tsv", ".txt", ".md", ".rst", ".json", ".yaml", ".yml", ".xml", ".html", ".htm",
                     ".pdf", ".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ods", ".log", ".sha256", ".md5"}
DOCUMENT_STEMS = {"license", "licence", "readme", "attribution", "copying", "notice", "citation", "authors"}
# Files that archive tools and desktops add on their own (macOS resource forks and Finder state,
# Windows thumbnail caches): listed with reason `archive_tool_file`, never data.
_TOOL_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".Spotlight-V100", ".Trashes"}


@dataclass
class MemberListing:
    """The files of a container, by what they are. Names are exactly as stored (read with these);
    match on `names.canonical_name(name)`."""

    images: list[str]        # candidate image files (anything that is not a document or tool file)
    unsafe: list[str]        # members whose path escapes the container ('..', absolute, drive letter)
    documents: list[str]     # licences, attribution notes, CSVs … of the published layout
    tool_files: list[str]    # __MACOSX/, ._*, .DS_Store, Thumbs.db …
    meant: dict[str, str] = field(default_factory=dict)  # stored name → the name its writer meant (see below)


def is_unsafe(name: str) -> bool:
    """True for a path that would escape its container: absolute, `..` anywhere, or a drive letter
    (with either separator, since Windows-made zips use `\\`)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return name.startswith(("/", "\\")) or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def is_tool_file(name: str) -> bool:
    """True for files archive tools and desktops add (`__MACOSX/`, `._*`, `.DS_Store`, `Thumbs.db` …)."""
    parts = PurePosixPath(canonical_name(name)).parts
    return any(p in _TOOL_PARTS or p.startswith("._") for p in parts)


def is_document(name: str) -> bool:
    """True for documents of an archive's layout (licence, notes, CSV, PDF …): listed, never decoded."""
    path = PurePosixPath(canonical_name(name))
    return path.suffix.lower() in DOCUMENT_SUFFIXES or path.stem.lower() in DOCUMENT_STEMS


def _classify(names: list[str]) -> MemberListing:
    listing = MemberListing([], [], [], [])
    for name in names:
        if is_unsafe(name):
            listing.unsafe.append(name)
        elif is_tool_file(name):
            listing.tool_files.append(name)
        elif is_document(name):
            listing.documents.append(name)
        else:
            listing.images.append(name)
    return listing


def list_members(container: str | Path) -> MemberListing:
    """Classify every file of a zip archive or folder (recursively). Zip directory entries are not
    files; every other member lands in exactly one list."""
    container = Path(container)
    if container.is_dir():
        names = sorted(str(p.relative_to(container).as_posix())
                       for p in container.rglob("*") if p.is_file())
        listing = _classify(names)
        listing.meant = {n: meant for n in names if (meant := meant_on_disk(n)) != n}
        return listing
    with zipfile.ZipFile(container) as archive:
        # a directory entry written on Windows ends in '\\', which zipfile does not see as a directory
        infos = [info for info in archive.infolist()
                 if not info.is_dir() and not (info.filename.endswith("\\") and info.file_size == 0)]
    listing = _classify([info.filename for info in infos])
    listing.meant = {info.filename: meant for info in infos if (meant := _utf8_name(info)) != info.filename}
    return listing


def _utf8_name(info: zipfile.ZipInfo) -> str:
    """The name a zip tool meant. Without the zip's UTF-8 flag, names are read as code page 437
    (the zip standard), but macOS Archive Utility and many other tools write UTF-8 bytes without
    setting the flag, so `lésion.jpg` would read as `lΓÇª`-style mojibake and match no row."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


class ContainerReader:
    """Reads member bytes; keeps zip files open. One instance per process (zip handles don't fork)."""

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._pid = os.getpid()

    def read(self, container: str, name: str) -> bytes:
        if is_unsafe(name):
            raise ValueError(f"refusing to read unsafe member path {name!r}")
        if os.path.isdir(container):
            return (Path(container) / name).read_bytes()
        if self._pid != os.getpid():  # forked: inherited handles share a file offset
            self._zips, self._pid = {}, os.getpid()
        archive = self._zips.get(container)
        if archive is None:
            archive = self._zips[container] = zipfile.ZipFile(container)
        return archive.read(name)

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()
