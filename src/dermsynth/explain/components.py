"""What the explain stage reads that another stage made for one network, and one line when it is another's.

The explain verbs consume components made for one generator or one classifier: SeFa directions and
projections (made for a generator: the latent stage records `generator`, the digest of its weights), a
frame-moves proposal (for a generator), CRP's cached concept relevances (for a classifier). A component is
used only with the network it records, compared by the identity of the weights (`fingerprint.tensors_digest`),
never by tensor shapes, which two generators (or classifiers) of one architecture share.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints import WrongFileError
from ..fingerprint import StateMismatchError, tensors_digest


def generator_identity(G) -> str:
    """The identity of generator module `G`'s weights (its state dict, buffers included), as the latent stage
    records it in SeFa and projection files."""
    return tensors_digest(G.state_dict())


def classifier_identity(saved: dict) -> str:
    """The identity of a classifier checkpoint's (best.pt) weights."""
    return tensors_digest(saved["model"])


def load_npz(path: str | Path, needed: str, fix: str, keys: tuple[str, ...] = ()) -> dict:
    """Every array of the .npz file `path` (no pickles), which must hold `keys`.

    Raises:
        FileNotFoundError: `path` does not exist (the CLI says so in one line).
        WrongFileError: `path` is a folder, a truncated or foreign file, or an .npz without `keys` (one line
        naming it, what it is, `needed` and `fix`)."""
    path = Path(path)
    if path.is_dir():
        raise WrongFileError(f"{path} is a folder, not {needed}; {fix}")
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
        raise WrongFileError(f"{path} is not a readable .npz file ({path.stat().st_size} bytes; truncated by an "
                             f"interrupted copy or write, or a file of another program: {said}), not {needed}; "
                             f"{fix}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise WrongFileError(f"{path} is not {needed} (it holds no {', '.join(missing)}); {fix}")
    return arrays


def recorded(arrays: dict, key: str) -> str | None:
    """The identity an .npz recorded under `key` (a 0-d string array), or None when it records none."""
    value = arrays.get(key)
    if value is None:
        return None
    text = str(value.item() if hasattr(value, "item") else value)
    return text or None


def require_made_for(path: str | Path, recorded_identity: Any, expected: str, what: str, network: str | Path,
                     fix: str) -> None:
    """Raise `StateMismatchError` (one line) unless the component at `path` records `expected`, the identity of
    the `what` (generator, classifier) given now as `network`. `fix` says how to make a matching one."""
    if recorded_identity == expected:
        return
    if not recorded_identity:
        raise StateMismatchError(f"{path} records no {what} (written by an older dermsynth), so it cannot be shown "
                                 f"to belong to {network}; {fix}")
    raise StateMismatchError(f"{path} was made for another {what} ({recorded_identity} ≠ {expected} of {network}); "
                             f"{fix}, or pass the {what} it was made for")
