"""PyTorch access to an ingested dataset: LMDB images + manifest rows (optionally one split)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..labels import scheme_classes
from .lmdb_store import LmdbImageStore
from .tables import read_table


class LmdbImageDataset(Dataset):
    """Items are (image, class index): image a uint8 tensor (3, H, W) unless `transform` changes it.
    Raises FileNotFoundError (no finished store) or InputError (the manifest is not one: columns named)."""

    def __init__(self, lmdb_root: str | Path, manifest: str | Path | pd.DataFrame,
                 splits: tuple[str, ...] | None = None, transform: Callable | None = None):
        self.store = LmdbImageStore(lmdb_root)
        frame = manifest if isinstance(manifest, pd.DataFrame) else read_table(
            manifest, ["key", "label"] + (["split"] if splits is not None else []), "a manifest of an image set",
            "give the dataset's manifest.csv (of `dermsynth data split`) or an image set's manifest.csv")
        if splits is not None:
            frame = frame[frame["split"].isin(splits)]
        self.frame = frame.reset_index(drop=True)
        self.classes = scheme_classes(self.store.index["labels"])
        index = {name: i for i, name in enumerate(self.classes)}
        self.keys = self.frame["key"].tolist()
        self.targets = [index[label] for label in self.frame["label"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.store.get(self.keys[i])).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]


def read_images(store: LmdbImageStore | str | Path, keys: list[str]) -> torch.Tensor:
    """uint8 images (N, 3, R, R) for `keys`, in that order."""
    store = store if isinstance(store, LmdbImageStore) else LmdbImageStore(store)
    return torch.from_numpy(np.stack([store.get(k) for k in keys])).permute(0, 3, 1, 2).contiguous()
