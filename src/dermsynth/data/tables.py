"""Reading the CSV tables one stage hands to the next (ingested.csv, manifest.csv, federated.csv, a transformation's
manifest) with one clear line when the file is not the table asked for: empty, truncated, not CSV, or a table of
another kind (its columns named)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import InputError


def read_table(path: str | Path, required: Iterable[str], what: str, fix: str, **read_csv) -> pd.DataFrame:
    """The CSV at `path` (as strings, empty cells kept as '' unless `read_csv` says otherwise), which must hold
    the columns `required`.

    Raises:
        InputError: one line naming `path`, `what` it should be, what it is instead, and `fix`.
        FileNotFoundError / IsADirectoryError: the path is missing or a folder (the CLI says these in one line)."""
    options = {"dtype": str, "keep_default_na": False, **read_csv}
    try:
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty, not {what}; {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} cannot be read as {what} ({str(exc).strip().splitlines()[0]}): it is truncated "
                         f"or not a CSV table; {fix}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:12])) + (" …" if len(frame.columns) > 12 else "")
        raise InputError(f"{path} is not {what}: it lacks column(s) {', '.join(missing)} (it has {found}); {fix}")
    return frame
