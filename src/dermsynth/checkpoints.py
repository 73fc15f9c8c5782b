"""Reading a `.pt` file the user named: what it is, and one line when it is not what the verb needs.

Model folders hold several kinds of `.pt` files (a generator's `network-final.pt` and snapshots, a federated
run's `checkpoint.pt` and `network-round*.pt`, a classifier's `best.pt` and `resume.pt`, `e4e.pt`,
`hyperstyle.pt`). `load_checkpoint(path, kinds, ...)` loads one with `torch.load(weights_only=True)` (no code
is executed) and raises a `WrongFileError` naming the file, what it is and the fix when it is a folder, not a
PyTorch file (truncated, or of another program), or of another kind.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .errors import DermsynthError

# kind → (what it is, in words; where the right file usually is)
KINDS = {
    "generator": "a dermsynth generator checkpoint",
    "federated-snapshot": "a federated run's global-model snapshot (a generator checkpoint)",
    "federated-checkpoint": "a federated server's resume checkpoint (FedAvg arrays, not a generator)",
    "federated-client": "a federated hospital's local training state",
    "classifier": "a classifier checkpoint (best.pt)",
    "classifier-resume": "a classifier's resume checkpoint (resume.pt)",
    "e4e": "an e4e encoder checkpoint",
    "e4e-resume": "the resume checkpoint of an unfinished train-e4e (run train-e4e again to finish it)",
    "hyperstyle": "a HyperStyle hypernetwork checkpoint",
    "hyperstyle-resume": "the resume checkpoint of an unfinished train-hyperstyle (run it again to finish it)",
    "projection-chunk": "a part of a projection run",
    "state-dict": "a bare state dict (weights without options)",
    "unknown": "a PyTorch file of unknown content",
}
GENERATOR_KINDS = ("generator", "federated-snapshot")


class WrongFileError(DermsynthError):
    """A file or folder given to a verb is not of the kind it needs (or not readable at all)."""


def kind_of(state: Any) -> str:
    """The kind (a key of KINDS) of a loaded checkpoint dict."""
    if not isinstance(state, dict):
        return "unknown"
    fmt = str(state.get("format", ""))
    if fmt == "dermsynth-stylegan2-checkpoint-v1":
        return "generator"
    if fmt == "dermsynth-federated-snapshot-v1":
        return "federated-snapshot"
    if fmt.startswith("dermsynth-federated") and "client" in fmt:
        return "federated-client"
    if fmt.startswith("dermsynth-federated"):
        return "federated-checkpoint"
    if "step" in state and ("encoder" in state or "hypernetwork" in state):  # a trained model records no step
        return "hyperstyle-resume" if "hypernetwork" in state else "e4e-resume"
    if fmt in KINDS:
        return fmt
    if "encoder" in state and "options" in state:
        return "e4e"
    if "hypernetwork" in state and "options" in state:
        return "hyperstyle"
    if "architecture" in state and "model" in state:
        return "classifier"
    if "optimizer" in state and "model" in state:
        return "classifier-resume"
    if "G_ema" in state and "options" in state:
        return "generator"
    if state and all(hasattr(v, "shape") for v in state.values()):
        return "state-dict"
    return "unknown"


def load_checkpoint(path: str | Path, kinds: Iterable[str], needed: str, fix: str,
                    map_location: Any = "cpu") -> dict:
    """The checkpoint at `path`, loaded with weights_only=True, when its kind is one of `kinds`.

    `needed` says what the verb needs ("a generator checkpoint"), `fix` where the right file is.
    Raises:
        FileNotFoundError: `path` does not exist (the CLI turns it into one line).
        WrongFileError: `path` is a folder, not a readable PyTorch file, or a checkpoint of another kind."""
    path = _existing_file(path, needed, fix)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        size = path.stat().st_size
        reason = "an empty file" if size == 0 else f"not a readable PyTorch checkpoint ({size} bytes; truncated by " \
                                                   f"an interrupted copy or write, or a file of another program: " \
                                                   f"{_first_line(exc)})"
        raise WrongFileError(f"{path} is {reason}, not {needed}; {fix}") from None
    kind = kind_of(state)
    if kind not in tuple(kinds):
        raise WrongFileError(f"{path} is {KINDS[kind]}, not {needed}; {fix}")
    return state


def load_npz(path: str | Path, needed: str, fix: str, keys: tuple[str, ...] = ()) -> dict:
    """Every array of the .npz file `path` (loaded, no pickles), which must hold `keys`. `needed` says what the
    verb needs ("SeFa directions"), `fix` where the right file comes from.

    Raises:
        FileNotFoundError: `path` does not exist (the CLI says so in one line).
        WrongFileError: `path` is a folder, a truncated or foreign file, or an .npz without `keys`."""
    path = _existing_file(path, needed, fix)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise WrongFileError(f"{path} is not a readable .npz file ({path.stat().st_size} bytes; truncated by an "
                             f"interrupted copy or write, or a file of another program: {_first_line(exc)}), not "
                             f"{needed}; {fix}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise WrongFileError(f"{path} is not {needed} (it holds no {', '.join(missing)}); {fix}")
    return arrays


def recorded_in_npz(arrays: dict, key: str = "generator") -> str | None:
    """The identity an .npz recorded under `key` (a 0-d string array), or None when it records none."""
    value = arrays.get(key)
    if value is None:
        return None
    text = str(value.item() if hasattr(value, "item") else value)
    return text or None


def _existing_file(path: str | Path, needed: str, fix: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise WrongFileError(f"{path} is a folder, not {needed}; {fix}")
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
