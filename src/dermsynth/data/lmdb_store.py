"""Images in LMDB shards: written in parallel by ingest, read by many DataLoader workers at once.

Layout of one store (a folder):

    index.json          resolution, encoding, number of shards, number of images
    shard-000/          an LMDB environment (data.mdb, lock.mdb)
    shard-001/ …

A key lives in shard `crc32(key) % shards`, so a reader needs nothing but the key. Inside a shard:
``img/<key>`` holds the encoded pixels, ``meta/<key>`` a JSON record of how they were made, and
``rej/<key>`` the reason an image was rejected (kept so that an interrupted ingest resumes exactly).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import zlib
from pathlib import Path

import cv2
import lmdb
import numpy as np

from ..errors import InputError
from ..labels import scheme_classes
from ..locks import LOCK_NAME
from ..outputs import OutputError, disk_error, temporary_name, write_csv, write_text

INDEX_FILE = "index.json"


def store_error(path: str | Path, exc: Exception) -> Exception:
    """The one-line `OutputError` for an LMDB or OS failure while writing the store file `path` (a full disk,
    an I/O error, a read-only or forbidden folder), or `exc` itself when it is none of these."""
    if "Input/output error" in str(exc) and _nearly_full(Path(path)):  # LMDB says EIO for a full disk
        exc = OSError(errno.ENOSPC, f"{exc} (the file system is full)")
    wrapped = disk_error(path, exc)
    if wrapped is None and "Permission denied" in str(exc):
        wrapped = disk_error(path, PermissionError(errno.EACCES, str(exc)))
    if wrapped is None and isinstance(exc, lmdb.Error) and not isinstance(exc, lmdb.MapFullError):
        wrapped = OutputError(f"cannot write {path}: {exc}; check that the file system has free space and "
                              "is writable, then run the same command again")
    return wrapped or exc


def shard_of(key: str, shards: int) -> int:
    """The shard (0 … shards−1) that holds image `key`: CRC-32 of its UTF-8 bytes modulo `shards`."""
    return zlib.crc32(key.encode()) % shards


def shard_path(root: str | Path, shard: int) -> Path:
    """The LMDB environment folder of shard `shard` under store folder `root` (`shard-007`)."""
    return Path(root) / f"shard-{shard:03d}"


def encode_pixels(pixels: np.ndarray, encoding: str) -> bytes:
    """uint8 RGB `pixels` (H, W, 3) as stored bytes: `raw` (the array's bytes, H·W·3) or `png` (lossless,
    compression level 3). Raises RuntimeError when OpenCV cannot encode them."""
    if encoding == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def decode_pixels(data: bytes, encoding: str, resolution: int) -> np.ndarray:
    """Stored bytes back to uint8 RGB pixels (H, W, 3): `raw` needs the store's `resolution` (square images),
    `png` carries its own size. The inverse of `encode_pixels`."""
    if encoding == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(resolution, resolution, 3).copy()
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _nearly_full(path: Path, margin: int = 4 << 20) -> bool:
    """True when the file system holding `path` has less than `margin` bytes free for this user."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < margin


class ShardWriter:
    """Batched writes to one shard; grows the map when full. Safe with several writer processes.
    Every method raises `OutputError` (one line naming the shard's file and the fix) when the operating
    system refuses the write (disk full, I/O error, read-only, no permission)."""

    def __init__(self, path: str | Path, map_size: int):
        self.path = Path(path)
        try:
            self.env = lmdb.open(str(path), map_size=map_size, subdir=True, lock=True, sync=True,
                                 max_dbs=0, meminit=False)
        except (lmdb.Error, OSError) as exc:
            raise store_error(self.path / "data.mdb", exc) from None

    def done_keys(self, keys: list[str]) -> set[str]:
        """Keys that already have an image or a rejection (work finished by an earlier run)."""
        with self.env.begin() as txn:
            return {k for k in keys
                    if txn.get(b"meta/" + k.encode()) is not None or txn.get(b"rej/" + k.encode()) is not None}

    def write(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Put every (key, value) in one transaction, doubling the map while it is full."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in entries:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self._grow()
            except (lmdb.Error, OSError) as exc:
                raise store_error(self.path / "data.mdb", exc) from None

    def _grow(self) -> None:
        try:
            self.env.set_mapsize(self.env.info()["map_size"] * 2)
        except (lmdb.Error, OSError) as exc:
            raise store_error(self.path / "data.mdb", exc) from None

    def delete(self, keys: list[bytes]) -> None:
        """Remove `keys` (absent ones are ignored) in one transaction."""
        try:
            with self.env.begin(write=True) as txn:
                for key in keys:
                    txn.delete(key)
        except (lmdb.Error, OSError) as exc:
            raise store_error(self.path / "data.mdb", exc) from None

    def close(self) -> None:
        """Close the shard's LMDB environment (its data is committed by each write)."""
        self.env.close()


# LMDB allows one open environment per file and process: every store object of a process shares them.
_OPEN_READERS: dict[tuple[int, str], lmdb.Environment] = {}


def close_readers_under(folder: str | Path) -> None:
    """Close this process's read handles on stores inside `folder` (before it is replaced or deleted)."""
    prefix = str(Path(folder).resolve()) + os.sep
    for key in [k for k in _OPEN_READERS if k[0] == os.getpid() and k[1].startswith(prefix)]:
        _OPEN_READERS.pop(key).close()


class ImageSetWriter:
    """Writes an image set folder — `lmdb/` (one shard + index.json) and `manifest.csv` — in a staging folder
    beside `<out>` whose name is unique to this process (`.<out>.<pid>.<random>.tmp`), which `finish` swaps in
    for `<out>` with two renames: a killed job leaves no half set under the final name, and two writers never
    share a staging folder. Staging folders of processes that no longer run are removed. A lock the caller
    holds on `<out>` (`locks.exclusive(out, …)`) moves with the folder, so it stays held.
    Used for generated, transformed and drawn synthetic sets.

    Raises `OutputError` (one line) when the disk refuses a write."""

    def __init__(self, out: str | Path, map_size: int = 256 << 20):
        self.out = Path(out)
        _remove_dead_staging(self.out)
        self.staging = temporary_name(self.out)
        try:
            (self.staging / "lmdb").mkdir(parents=True)
        except OSError as exc:
            raise store_error(self.staging, exc) from None
        self.writer = ShardWriter(shard_path(self.staging / "lmdb", 0), map_size)
        self.count = 0

    def add_many(self, items: list[tuple[str, bytes]]) -> None:
        """Store encoded images (key, bytes) in one transaction."""
        self.writer.write([(b"img/" + key.encode(), data) for key, data in items])
        self.count += len(items)

    def finish(self, manifest, labels: str, resolution: int, encoding: str = "png") -> Path:
        """Write index.json and manifest.csv (a DataFrame with one row per image), then publish.
        Raises ValueError when the manifest's rows do not match the stored images, OutputError on a disk error."""
        self.writer.close()
        if len(manifest) != self.count:
            raise ValueError(f"{self.out}: the manifest has {len(manifest)} rows for {self.count} stored images")
        write_text(self.staging / "lmdb" / INDEX_FILE, json.dumps({
            "dataset": self.out.name, "labels": labels, "classes": list(scheme_classes(labels)), "count": self.count,
            "resolution": int(resolution), "encoding": encoding, "shards": 1, "complete": True}))
        write_csv(self.staging / "manifest.csv", manifest)
        publish_folder(self.staging, self.out)
        return self.out


def publish_folder(staging: Path, out: Path) -> None:
    """Swap the finished folder `staging` in for `out` (a rename of the old one aside, a rename of the new one
    in, then the old one is deleted); a lock file held on `out` moves into the new folder first."""
    close_readers_under(out)
    try:
        if (out / LOCK_NAME).exists():
            os.replace(out / LOCK_NAME, staging / LOCK_NAME)
        old = None
        if out.exists():
            old = temporary_name(out)
            os.rename(out, old)
        os.rename(staging, out)
    except OSError as exc:
        raise store_error(out, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of `out` left by writers that were killed (their process no longer runs)."""
    if not out.parent.is_dir():
        return
    for folder in out.parent.glob(f".{glob.escape(out.name)}.*.*.tmp"):
        pid = folder.name[len(out.name) + 2:].split(".")[0]
        if folder.is_dir() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def iterate_prefix(path: str | Path, prefix: bytes):
    """(key, value) pairs of one shard whose key starts with `prefix` (prefix stripped)."""
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    yield key[len(prefix):].decode(), bytes(value)
    finally:
        env.close()


class LmdbImageStore:
    """Read-only access by key. Opens environments lazily in each process (after fork or spawn).
    Raises FileNotFoundError (no index.json: not a finished store) or InputError (an index.json that is not a
    store's)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_file = self.root / INDEX_FILE
        if not index_file.exists():
            raise FileNotFoundError(f"{index_file} not found: {self.root} is not a finished dermsynth LMDB "
                                    "store (re-run the ingest step)")
        try:
            self.index = json.loads(index_file.read_text())
            self.resolution = int(self.index["resolution"])
            self.encoding = self.index["encoding"]
            self.shards = int(self.index["shards"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{index_file} is not the index of a dermsynth LMDB store ({type(exc).__name__}: "
                             f"{exc}); it is truncated or of another program: re-run the step that wrote "
                             f"{self.root}") from None
    def _key(self, shard: int) -> tuple[int, str]:
        return os.getpid(), str(shard_path(self.root, shard).resolve())

    def _env(self, shard: int) -> lmdb.Environment:
        key = self._key(shard)  # keyed by process: an LMDB handle must not cross a fork
        env = _OPEN_READERS.get(key)
        if env is None:
            for inherited in [k for k in _OPEN_READERS if k[0] != key[0]]:  # a forked child drops its parent's
                del _OPEN_READERS[inherited]
            env = lmdb.open(key[1], readonly=True, lock=False, readahead=False, meminit=False, max_readers=1024,
                            subdir=True)
            _OPEN_READERS[key] = env
        return env

    def get_bytes(self, key: str) -> bytes:
        """The stored (encoded) bytes of image `key`. Raises KeyError naming the store when it holds no such image."""
        with self._env(shard_of(key, self.shards)).begin(buffers=False) as txn:
            data = txn.get(b"img/" + key.encode())
        if data is None:
            raise KeyError(f"image '{key}' is not in {self.root}")
        return data

    def get(self, key: str) -> np.ndarray:
        """(resolution, resolution, 3) uint8 RGB."""
        return decode_pixels(self.get_bytes(key), self.encoding, self.resolution)

    def keys(self) -> list[str]:
        """Every stored image key, sorted."""
        found = []
        for shard in range(self.shards):
            with self._env(shard).begin() as txn:
                cursor = txn.cursor()
                if cursor.set_range(b"img/"):
                    for key in cursor.iternext(values=False):
                        if not key.startswith(b"img/"):
                            break
                        found.append(key[4:].decode())
        return sorted(found)

    def meta(self, key: str) -> dict:
        """The JSON record ingest stored with image `key` (sha256 of the source file, its original width, height,
        mode and format, the conversions applied). Raises KeyError naming the store when it holds no such image."""
        with self._env(shard_of(key, self.shards)).begin() as txn:
            data = txn.get(b"meta/" + key.encode())
        if data is None:
            raise KeyError(f"image '{key}' is not in {self.root}")
        return json.loads(data)

    def close(self) -> None:
        """Close this store's handles (another store object on the same files reopens them when it reads)."""
        for shard in range(self.shards):
            env = _OPEN_READERS.pop(self._key(shard), None)
            if env is not None:
                env.close()
