"""Read image files straight out of zip archives or folders, without extracting anything to disk."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
# Files every archive tool adds: never images, never worth a rejection entry.
_NOISE_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db"}


@dataclass
class MemberListing:
    images: list[str]        # image members, posix paths inside the container
    unsafe: list[str]        # members whose path escapes the container ('..', absolute)
    non_images: list[str]    # other files (licences, attribution notes, …)


def is_unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return name.startswith(("/", "\\")) or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _classify(names: list[str]) -> MemberListing:
    listing = MemberListing([], [], [])
    for name in names:
        parts = PurePosixPath(name).parts
        if any(p in _NOISE_PARTS or p.startswith("._") for p in parts):
            continue
        if is_unsafe(name):
            listing.unsafe.append(name)
        elif PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            listing.images.append(name)
        else:
            listing.non_images.append(name)
    return listing


def list_members(container: str | Path) -> MemberListing:
    """Classify the files of a zip archive or folder (recursively)."""
    container = Path(container)
    if container.is_dir():
        names = sorted(str(p.relative_to(container).as_posix())
                       for p in container.rglob("*") if p.is_file())
        return _classify(names)
    with zipfile.ZipFile(container) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
    return _classify(names)


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
