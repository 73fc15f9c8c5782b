"""Which generator (and data) a latent-stage component belongs to, and one line when it belongs to another.

Everything the latent stage writes for a generator — an e4e encoder, a HyperStyle hypernetwork (and their
resume checkpoints), SeFa directions, projections, inversions and their chunks — records the identity of the
generator's weights (`fingerprint.tensors_digest` of G_ema, the network that synthesises the images) and,
where it was trained on images, of those images (the LMDB store's identity, a digest of the chosen keys, the
classes, the resolution). A component is reused only with the generator it records: shapes may agree by
chance (two generators of one architecture), the weights never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..fingerprint import StateMismatchError, digest, store_identity, tensors_digest


class ForeignComponentError(StateMismatchError):
    """A component (encoder, directions, projection, inversion) was made for another generator or e4e."""


def generator_digest(G) -> str:
    """The identity of generator `G`'s weights (its state dict, buffers included)."""
    return tensors_digest(G.state_dict())


def data_fingerprint(lmdb_root: str | Path, keys: list[str], classes: list[str] | None, resolution: int) -> dict:
    """What identifies a training image set: the store, the chosen keys, the classes and the resolution."""
    return {"data.store": store_identity(lmdb_root), "data.selection": digest(sorted(keys)),
            "data.classes": sorted(classes) if classes else None, "data.resolution": int(resolution)}


def require_generator(path: str | Path, recorded: Any, expected: str, network: str | Path, fix: str,
                      what: str = "generator") -> None:
    """Raise `ForeignComponentError` (one line) unless `recorded` (the digest the component at `path` recorded)
    is `expected` (the digest of the `what` given now, `network`). `fix` says how to make a matching one."""
    if recorded == expected:
        return
    if not recorded:
        raise ForeignComponentError(f"{path} records no {what} (written by an older dermsynth), so it cannot be "
                                    f"shown to belong to {network}; {fix}")
    raise ForeignComponentError(f"{path} was made for another {what} ({recorded} ≠ {expected} of {network}); {fix}, "
                                f"or pass the {what} it was made for")


def recorded_digest(state: Mapping[str, Any], key: str = "generator") -> str | None:
    """The digest a saved component recorded under fingerprint[`key`] (None when it records none)."""
    fingerprint = state.get("fingerprint") if isinstance(state, Mapping) else None
    if isinstance(fingerprint, Mapping):
        value = fingerprint.get(key)
        return None if value is None else str(value)
    return None


def load_npz(path: str | Path, needed: str, fix: str, keys: tuple[str, ...]) -> dict:
    """Every array of the .npz file `path` (loaded, no pickles), which must hold `keys`.

    `needed` says what the verb needs ("SeFa directions"), `fix` where the right file comes from.
    Raises FileNotFoundError (missing), WrongFileError (one line: a folder, a truncated or foreign file, or an
    .npz without `keys`)."""
    import zipfile

    import numpy as np

    from ..checkpoints import WrongFileError
    path = Path(path)
    if path.is_dir():
        raise WrongFileError(f"{path} is a folder, not {needed}; {fix}")
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        size = path.stat().st_size
        text = str(exc).strip().splitlines()
        raise WrongFileError(f"{path} is not a readable .npz file ({size} bytes; truncated by an interrupted copy or "
                             f"write, or a file of another program: {text[0][:100] if text else type(exc).__name__}),"
                             f" not {needed}; {fix}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise WrongFileError(f"{path} is not {needed} (it holds no {', '.join(missing)}); {fix}")
    return arrays


def recorded_in_npz(arrays: dict, key: str = "generator") -> str | None:
    """The digest an .npz recorded under `key` (a 0-d string array), or None."""
    value = arrays.get(key)
    return None if value is None else str(value.item() if hasattr(value, "item") else value)
