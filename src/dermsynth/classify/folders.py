"""A finished classifier folder's metrics.json, read without importing torch (the table jobs are light)."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import WrongFileError


def model_info(folder: str | Path) -> dict:
    """The metrics.json of a finished classifier folder.

    Raises:
        WrongFileError: `folder` is not a folder, holds no metrics.json (training has not finished), or its
        metrics.json is not readable JSON (one line naming it and the fix)."""
    folder = Path(folder)
    fix = "give the model folders that train-classifier finished (results/classifiers/<study>/<scenario>/<arch>)"
    if not folder.is_dir():
        raise WrongFileError(f"{folder} is {'a file' if folder.exists() else 'missing'}, not a classifier folder; {fix}")
    path = folder / "metrics.json"
    if not path.is_file():
        raise WrongFileError(f"{folder} holds no metrics.json: its classifier has not finished training; {fix}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise WrongFileError(f"{path} is not readable JSON ({exc}); {fix}") from None
