"""A picture of an ingested dataset: a grid of images per class and split, read back from LMDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import pyplot as plt
from ..locks import exclusive
from ..outputs import check_writable, save_figure
from .lmdb_store import LmdbImageStore
from .tables import read_table


def preview_grid(lmdb_root: str | Path, manifest: str | Path, out_png: str | Path, per_class: int = 8,
                 seed: int = 0) -> None:
    """`per_class` images of each class of the store `lmdb_root` (rows of `manifest`, drawn with `seed`) as one
    PNG at `out_png`, written atomically while holding its lock. Raises FileNotFoundError (no finished store),
    BusyError (another process writes `out_png`) or OutputError (it cannot be written)."""
    check_writable(Path(out_png).parent)
    with exclusive(out_png, "preview"):
        _preview_grid(lmdb_root, manifest, out_png, per_class, seed)


def _preview_grid(lmdb_root, manifest, out_png, per_class: int, seed: int) -> None:
    store = LmdbImageStore(lmdb_root)
    frame = read_table(manifest, ["key", "label", "split"], "a manifest.csv of `dermsynth data split`",
                       "give the dataset's manifest.csv")
    classes = list(store.index["classes"])
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.3, len(classes) * 1.45), squeeze=False)
    for row, label in enumerate(classes):
        rows = frame[frame["label"] == label]
        picks = rows.iloc[rng.permutation(len(rows))[:per_class]]
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(picks):
                item = picks.iloc[col]
                ax.imshow(store.get(item["key"]))
                ax.set_title(f"{item['split']}", fontsize=6)
        axes[row][0].text(-0.1, 0.5, f"{label}\n(n={len(rows)})", transform=axes[row][0].transAxes,
                          ha="right", va="center", fontsize=8)
    fig.suptitle(f"{store.index['dataset']}: {len(frame)} images at {store.resolution}²", fontsize=10)
    fig.tight_layout()
    try:
        save_figure(out_png, fig, dpi=110)
    finally:
        plt.close(fig)
