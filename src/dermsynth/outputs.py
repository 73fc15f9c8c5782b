"""Atomic output writers (temp file + rename): a killed job never leaves half a file behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def write_json(path: str | Path, payload: Any) -> None:
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    path = Path(path)
    tmp = _temporary(path)
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def tile(images) -> np.ndarray:
    """uint8 images (rows, columns, 3, H, W) → one picture (rows·H, columns·W, 3)."""
    rows, columns, channels, height, width = images.shape
    return np.asarray(images).transpose(0, 3, 1, 4, 2).reshape(rows * height, columns * width, channels)


def write_png(path: str | Path, picture: np.ndarray) -> None:
    from PIL import Image
    path = Path(path)
    tmp = _temporary(path)
    Image.fromarray(picture).save(tmp, format="PNG")
    tmp.replace(path)
