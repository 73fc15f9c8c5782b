"""Training sets made of real and synthetic images, the studies' augmentations, and class-balanced sampling.

A set is a table of rows (store, key, label, synthetic, source_key) over one or more LMDB stores: the
real dataset's store and, for augmented scenarios, a synthetic store. Images are read when a batch
asks for them. No image of the real validation or test split, nor any synthetic image derived from
one, may enter a training set: `assemble_training_set` refuses it. The one exception is scenario aug-edge, which
trains on neighbours of validation images (`derived_from=("train", "validation")`); a test image or anything
derived from one never enters any training set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data.lmdb_store import LmdbImageStore
from ..errors import DermsynthError
from ..metrics.extractors import IMAGENET_MEAN, IMAGENET_STD

AUGMENTATIONS = ("hflip", "vflip", "rotate", "cutout")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest CSV as strings (no NaN: empty cells stay ""). Raises FileNotFoundError when absent."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def assemble_training_set(real_manifest: pd.DataFrame, synthetic: pd.DataFrame | None = None,
                          real_train: bool = True, derived_from: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """Rows of a training set: the real training split (unless real_train=False: synthetic only)
    plus `synthetic` rows (columns key, label and source_key when derived from a real image), whose sources
    must lie in the splits `derived_from` (`check_no_leak`)."""
    rows = []
    if real_train:
        real = real_manifest[real_manifest["split"] == "train"]
        rows.append(pd.DataFrame({"store": "real", "key": real["key"], "label": real["label"], "synthetic": False,
                                  "source_key": ""}))
    if synthetic is not None and len(synthetic):
        source = synthetic["source_key"] if "source_key" in synthetic else ""
        rows.append(pd.DataFrame({"store": "synthetic", "key": synthetic["key"], "label": synthetic["label"],
                                  "synthetic": True, "source_key": source}))
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["store", "key", "label", "synthetic", "source_key"])
    check_no_leak(frame, real_manifest, derived_from)
    return frame


def check_no_leak(training: pd.DataFrame, real_manifest: pd.DataFrame,
                  derived_from: tuple[str, ...] = ("train",)) -> None:
    """Raise DermsynthError when a real row of `training` is not a training image, or a synthetic row derives
    (source_key) from an image outside the splits `derived_from` — train only, except for aug-edge, whose
    neighbours derive from validation images. A test image or a derivative of one is refused whatever
    `derived_from` says (ValueError when it names test)."""
    if "test" in derived_from:
        raise ValueError("no training set may hold derivatives of test images")
    held_out = set(real_manifest.loc[real_manifest["split"] != "train", "key"])
    allowed = set(real_manifest.loc[real_manifest["split"].isin(derived_from), "key"])
    real_leaks = training[(training["store"] == "real") & training["key"].isin(held_out)]
    derived_leaks = training[training["source_key"].isin(held_out - allowed)]
    if len(real_leaks) or len(derived_leaks):
        split = real_manifest.set_index("key")["split"]
        counts = pd.concat([real_leaks["key"], derived_leaks["source_key"]]).map(split).value_counts().to_dict()
        examples = real_leaks["key"].head(3).tolist() + derived_leaks["key"].head(3).tolist()
        raise DermsynthError(f"{len(real_leaks)} validation/test images and {len(derived_leaks)} synthetic images "
                             f"derived from them are in a training set (e.g. {examples}; by split {counts}); "
                             "synthetic sets must be built from training images only"
                             + (" (aug-edge: or validation images)" if "validation" in derived_from else ""))


def balanced_sample_weights(labels: list[str] | pd.Series) -> torch.Tensor:
    """Per-row weight 1 / (count of its class): every class is drawn equally often in expectation."""
    labels = pd.Series(list(labels))
    counts = labels.value_counts()
    return torch.tensor((1.0 / labels.map(counts)).to_numpy(), dtype=torch.double)


def augmentation(names: list[str]) -> v2.Transform:
    """The torchvision v2 pipeline of the named training augmentations (`AUGMENTATIONS`), in the given order. Raises
    ValueError naming unknown names."""
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; choose from {', '.join(AUGMENTATIONS)}")
    steps = []
    if "rotate" in names:
        steps.append(v2.RandomRotation(180))
    if "hflip" in names:
        steps.append(v2.RandomHorizontalFlip())
    if "vflip" in names:
        steps.append(v2.RandomVerticalFlip())
    if "cutout" in names:  # one square hole of up to a quarter of the side, as in Cutout (DeVries & Taylor)
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.0625), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps) if steps else v2.Identity()


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 image(s) (…, 3, R, R) at the classifier's input resolution (antialiased)."""
    if images.shape[-1] == resolution:
        return images
    return v2.functional.resize(images, [resolution, resolution], antialias=True)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 image(s) (…, 3, R, R) → the float input every classifier here was trained on."""
    return (images.float() / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]


class ImageRows(Dataset):
    """(normalised float image (3, R, R), class index) for each row; `stores` maps a row's store to its LMDB."""

    def __init__(self, rows: pd.DataFrame, stores: dict[str, str | Path], classes: list[str], resolution: int,
                 augment: list[str] | None = None):
        self.rows = rows.reset_index(drop=True)
        self.stores = {name: LmdbImageStore(root) for name, root in stores.items()}
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(self.rows["label"]) - set(index))
        if unknown:
            raise DermsynthError(f"labels {unknown} are not classes of this classifier ({', '.join(classes)})")
        self.targets = np.array([index[label] for label in self.rows["label"]], dtype=np.int64)
        self.resolution = resolution
        self.augment = augmentation(augment or [])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows.iloc[i]
        image = torch.from_numpy(self.stores[row["store"]].get(row["key"])).permute(2, 0, 1)
        return normalise(self.augment(resize(image, self.resolution))), int(self.targets[i])
