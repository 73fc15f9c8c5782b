"""Read image files straight out of zip archives or folders, without extracting anything to disk."""

from __future__ import annotations

import os
import stat
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
_TOOL_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".Spotlight-V100", ".Trashes",
               ".dermsynth-lock"}  # the last: dermsynth's own output lock (locks.LOCK_NAME)


@dataclass
class MemberListing:
    """The files of a container, by what they are. Names are exactly as stored (read with these);
    match on `names.canonical_name(name)`."""

    images: list[str]        # candidate image files (anything that is not a document or tool file)
    unsafe: list[str]        # members whose path escapes the container ('..', absolute, drive letter)
    documents: list[str]     # licences, attribution notes, CSVs … of the published layout
    tool_files: list[str]    # __MACOSX/, ._*, .DS_Store, Thumbs.db …
    meant: dict[str, str] = field(default_factory=dict)  # stored name → the name its writer meant (see below)
    # entries that are not read, by name → (reason code, sentence): a link loop or a second link to a folder
    # already read, a broken link, an unreadable folder, a device/pipe, a symbolic link stored in a zip
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)


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
    files; every other member lands in exactly one list.

    In a folder, symbolic links to folders are followed (a shared drive linked in as `img/`), each real
    folder read once: a link back to a folder already read (a loop, or a second name for it), a broken link,
    a folder that cannot be listed and anything that is not a regular file land in `skipped` with the reason,
    so that nothing is left out silently. A symbolic link stored inside a zip is skipped too (it holds a path,
    not an image)."""
    container = Path(container)
    if container.is_dir():
        names, skipped = _walk_folder(container)
        listing = _classify(names)
        listing.meant = {n: meant for n in names if (meant := meant_on_disk(n)) != n}
        listing.skipped = skipped
        return listing
    with zipfile.ZipFile(container) as archive:
        # a directory entry written on Windows ends in '\\', which zipfile does not see as a directory
        infos = [info for info in archive.infolist()
                 if not info.is_dir() and not (info.filename.endswith("\\") and info.file_size == 0)]
        links = {info.filename: archive.read(info).decode("utf-8", "replace")
                 for info in infos if stat.S_ISLNK(info.external_attr >> 16)}
    infos = [info for info in infos if info.filename not in links]
    listing = _classify([info.filename for info in infos])
    listing.meant = {info.filename: meant for info in infos if (meant := _utf8_name(info)) != info.filename}
    listing.skipped = {name: ("symbolic_link_in_zip", f"{container}:{name} is a symbolic link stored in the zip "
                              f"(to '{target}'), not an image; re-create the zip without --symlinks (zip -y) so "
                              "that it holds the file itself")
                       for name, target in links.items()}
    return listing


def _walk_folder(root: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(every file under `root` as a sorted relative POSIX path, entries left out → (reason, sentence)).

    Real folders are walked first, then each linked folder (in name order) unless that real folder was
    already read — identified by (device, inode), which guards against loops."""
    files: list[str] = []
    skipped: dict[str, tuple[str, str]] = {}
    seen: set[tuple[int, int]] = set()
    links: list[tuple[str, Path]] = []
    try:
        top = root.stat()
    except OSError as exc:
        return [], {".": ("unreadable_folder", f"{root} cannot be read ({exc.strerror}); fix its permissions")}
    seen.add((top.st_dev, top.st_ino))
    _walk_real(root, "", seen, files, skipped, links)
    while links:
        relative, path = links.pop(0)
        try:
            target = path.stat()
        except OSError as exc:
            skipped[relative] = ("broken_link", f"{path} is a symbolic link to '{os.readlink(path)}', which cannot "
                                 f"be opened ({exc.strerror}); mount or copy the folder it points to, or fix the link")
            continue
        if (target.st_dev, target.st_ino) in seen:
            skipped[relative] = ("link_to_folder_read", f"{path} is a symbolic link to {path.resolve()}, a folder "
                                 "already read under another name (or a loop back to a folder above it); its "
                                 "files are read once, under that name")
            continue
        seen.add((target.st_dev, target.st_ino))
        found: list[tuple[str, Path]] = []
        _walk_real(path, relative + "/", seen, files, skipped, found)
        links = sorted(links + found)
    return sorted(files), skipped


def _walk_real(folder: Path, prefix: str, seen: set, files: list[str], skipped: dict,
               links: list[tuple[str, Path]]) -> None:
    """Add the files under `folder` (real sub-folders, not links) to `files` as `prefix` + relative path;
    links to folders go to `links` for `_walk_folder`; what cannot be read goes to `skipped`."""
    def unreadable(exc: OSError) -> None:
        name = prefix + Path(exc.filename).relative_to(folder).as_posix() if exc.filename else prefix or "."
        skipped[name.rstrip("/") or "."] = ("unreadable_folder", f"{exc.filename} cannot be listed "
                                            f"({exc.strerror}); fix its permissions so that its images are read")

    for directory, subfolders, names in os.walk(folder, onerror=unreadable):
        here = Path(directory)
        base = prefix + here.relative_to(folder).as_posix() + "/" if here != folder else prefix
        keep = []
        for sub in sorted(subfolders):
            path = here / sub
            if path.is_symlink():
                links.append((base + sub, path))
                continue
            info = path.stat()
            if (info.st_dev, info.st_ino) in seen:
                skipped[base + sub] = ("link_to_folder_read", f"{path} was already read under another name "
                                       "(a symbolic link above it loops back); its files are read once")
                continue
            seen.add((info.st_dev, info.st_ino))
            keep.append(sub)
        subfolders[:] = keep
        for name in names:
            _add_file(here / name, base + name, files, skipped)


def _add_file(path: Path, relative: str, files: list[str], skipped: dict) -> None:
    """A regular file (or a link to one) is listed; a broken link or a device, pipe or socket is skipped."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if path.is_symlink():
            skipped[relative] = ("broken_link", f"{path} is a symbolic link to '{os.readlink(path)}', which cannot "
                                 f"be opened ({exc.strerror}); copy the file it points to, or fix the link")
        else:
            skipped[relative] = ("unreadable_file", f"{path} cannot be inspected ({exc.strerror}); fix its "
                                 "permissions")
        return
    if stat.S_ISREG(mode):
        files.append(relative)
    else:
        skipped[relative] = ("not_a_file", f"{path} is not a regular file (a device, pipe or socket); it holds "
                             "no image")


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
        """The bytes of member `name` of `container` (a folder or a zip file, kept open for the next read; reopened
        after a fork). Raises ValueError for an unsafe member path (absolute, or leaving the container), OSError or
        KeyError when the member cannot be read."""
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
        """Close every zip file this reader holds open."""
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()
