"""State belongs to its run: fingerprints recorded with reusable state and compared before reuse.

Anything a verb reuses instead of recomputing (GAN snapshots, a classifier's resume.pt, e4e/HyperStyle
checkpoints, a federated run's state, cached features, a generator's SeFa directions or projections) is
written with a *fingerprint*: a flat JSON dict of what makes it belong to its run, grouped by aspect —

    {"data.store": "3f2a…", "data.selection": "9c1d…", "data.classes": ["mel", "nv"], "data.resolution": 64,
     "architecture": {...}, "recipe": {...}, "generator": "a41e…"}

Before reuse the recorded fingerprint is compared with the one the current run would write
(`differences`). When they differ the state is either set aside (`set_aside`: moved to
`superseded-<time>/` with one line saying so, then the run starts afresh) or refused
(`require_same`: one `StateMismatchError` line naming the file and each aspect that differs).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import DermsynthError
from .locks import LOCK_NAME


class StateMismatchError(DermsynthError):
    """Saved state (a checkpoint, a cache, a component) belongs to another run than the one asking for it."""


class ForeignComponentError(StateMismatchError):
    """A component (encoder, directions, projection, inversion, concept relevances) was made for another network."""


def digest(value: Any, length: int = 16) -> str:
    """SHA-256 (first `length` hex digits) of `value` as canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path, length: int = 16) -> str:
    """SHA-256 (first `length` hex digits) of a file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


def tensors_digest(state_dict: Mapping[str, Any], length: int = 16) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, shapes and bytes, in name order): the identity of a
    network's weights, independent of the file or container they were saved in."""
    sha = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        sha.update(name.encode())
        if hasattr(tensor, "detach"):
            t = tensor.detach().cpu().contiguous()
            sha.update(f"{t.dtype}{tuple(t.shape)}".encode())
            sha.update(t.view(-1).view(_byte_dtype()).numpy().tobytes() if t.numel() else b"")
        else:
            sha.update(json.dumps(tensor, sort_keys=True, default=str).encode())
    return sha.hexdigest()[:length]


def network_identity(module) -> str:
    """The identity of a network module's weights: `tensors_digest` of its state dict (buffers included), as
    every component made for a generator or classifier records it."""
    return tensors_digest(module.state_dict())


def require_made_for(path: str | Path, recorded: Any, expected: str, network: str | Path, fix: str,
                     what: str = "generator") -> None:
    """Raise `ForeignComponentError` (one line) unless `recorded` — the identity the component at `path` recorded —
    is `expected`, the identity of the `what` (generator, classifier, e4e encoder) given now as `network`. `fix`
    says how to make a matching component."""
    if recorded == expected:
        return
    if not recorded:
        raise ForeignComponentError(f"{path} records no {what} (written by an older dermsynth), so it cannot be "
                                    f"shown to belong to {network}; {fix}")
    raise ForeignComponentError(f"{path} was made for another {what} ({recorded} ≠ {expected} of {network}); {fix}, "
                                f"or pass the {what} it was made for")


def _byte_dtype():
    # only tensors_digest needs torch, and a tensor to digest means it is loaded already
    # deferred: torch — data.ingest fingerprints its store with this module and does not need PyTorch
    import torch
    return torch.uint8


def store_identity(lmdb_root: str | Path) -> str:
    """The identity of an LMDB image store: the digest of its `index.json` (resolution, encoding, shards,
    the images' keys and provenance as ingest wrote them). Changes when the store is rebuilt differently."""
    index = Path(lmdb_root) / "index.json"
    return file_digest(index) if index.exists() else "no-index"


def differences(recorded: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> list[str]:
    """The aspects (keys) whose recorded value is not the expected one, each as `key: recorded → expected`
    (values shortened). A missing recorded fingerprint differs in every aspect ('written before fingerprints')."""
    if recorded is None:
        return ["no fingerprint recorded (written by an older dermsynth or another program)"]
    return _differing(recorded, expected, "")


def _differing(recorded: Mapping[str, Any], expected: Mapping[str, Any], prefix: str) -> list[str]:
    """Differing keys; inside two dicts, the differing sub-keys (`architecture.resolution: 64 → 32`)."""
    found = []
    for key in sorted(set(recorded) | set(expected)):
        old, new = recorded.get(key, "<absent>"), expected.get(key, "<absent>")
        if _canonical(old) == _canonical(new):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found += _differing(old, new, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}: {_short(old)} → {_short(new)}")
    return found


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else _canonical(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def require_same(path: str | Path, recorded: Mapping[str, Any] | None, expected: Mapping[str, Any],
                 what: str, fix: str) -> None:
    """Raise `StateMismatchError` (one line: `path`, `what` it is, every differing aspect, `fix`) unless the
    recorded fingerprint equals the expected one."""
    found = differences(recorded, expected)
    if found:
        raise StateMismatchError(f"{path} is {what} of another run ({'; '.join(found)}); {fix}")


def set_aside(folder: str | Path, names: Iterable[str] | None, reason: str, verb: str) -> Path | None:
    """Move the entries `names` of `folder` (None: every entry but earlier `superseded-*` folders and the
    lock file) into `folder/superseded-<time>/` and say so in one line on stderr. Returns that folder, or None
    when there was nothing to move. Nothing is deleted."""
    folder = Path(folder)
    entries = [folder / n for n in names] if names is not None else list(folder.iterdir())
    entries = [p for p in entries if p.exists() and not p.name.startswith("superseded-") and p.name != LOCK_NAME]
    if not entries:
        return None
    aside = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        n += 1
        aside = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    aside.mkdir()
    for path in entries:
        path.rename(aside / path.name)
    print(f"{verb}: {reason}; moved {len(entries)} file(s) from {folder} to {aside} and starting afresh",
          file=sys.stderr, flush=True)
    return aside
