"""SA-n synthetic datasets: n images drawn from the accepted transformed images, n/T per transformation.

Each size is its own seeded draw (seed, n), so SA-4k is not SA-2k plus 2000 more: the study draws
each set independently. The images are copied (encoded bytes, no re-encoding) into an LMDB store
of the same layout as an ingested dataset, with a manifest whose rows carry each image's label and
provenance (source key, transformation, magnitude, LPIPS) — ready to be concatenated with the real
training split. Every source image must belong to the real training split: a synthetic image derived
from a validation or test image would leak it into training, so that is an error, not a warning.

Filtered variants (SA-n-filter) need the unfiltered classifier's predictions: `filter_synthetic`
drops the synthetic images that model misclassifies; the classifier stage calls it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.lmdb_store import ImageSetWriter, LmdbImageStore
from ..data.tables import read_table
from ..errors import DermsynthError
from ..locks import exclusive
from ..outputs import check_writable, write_json
from ..provenance import provenance
from .options import SyntheticDatasetOptions


def per_transformation_counts(size: int, names: list[str]) -> dict[str, int]:
    """n/T each; when T does not divide n the first n mod T transformations get one more."""
    base, extra = divmod(size, len(names))
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(names)}


def draw_synthetic(pools: dict[str, pd.DataFrame], size: int, seed: int) -> pd.DataFrame:
    """Rows drawn without replacement from each transformation's accepted images."""
    names = sorted(pools)
    rng = np.random.default_rng([seed, size])
    parts = []
    for name, count in per_transformation_counts(size, names).items():
        accepted = pools[name][pools[name]["accepted"].astype(str).str.lower() == "true"].sort_values("key")
        if len(accepted) < count:
            raise DermsynthError(f"synthetic set of {size}: transformation {name} has {len(accepted)} accepted "
                                 f"images, {count} are needed. Raise latent.transform.variants (transformed "
                                 "versions per source image) or lower synthetic.sizes.")
        chosen = rng.choice(len(accepted), size=count, replace=False)
        parts.append(accepted.iloc[np.sort(chosen)])
    return pd.concat(parts, ignore_index=True)


def check_sources_in_train(drawn: pd.DataFrame, real_manifest: pd.DataFrame) -> None:
    """Refuse a synthetic set derived from real images outside the training split: every `source_key` of `drawn` must
    be a `train` key of `real_manifest`. Raises DermsynthError naming up to five leaked images and their split."""
    split_of = dict(zip(real_manifest["key"], real_manifest["split"]))
    leaked = drawn[drawn["source_key"].map(split_of) != "train"]
    if len(leaked):
        rows = ", ".join(f"{r.key} (source {r.source_key}: {split_of.get(r.source_key, 'not in the dataset')})"
                         for r in leaked.head(5).itertuples())
        raise DermsynthError(f"{len(leaked)} synthetic images derive from images outside the real training split, "
                             f"e.g. {rows}. Invert the training split only (latent.inversion.split: train).")


def build_synthetic_dataset(options: SyntheticDatasetOptions, transform_dirs: list[str | Path],
                            real_manifest: str | Path, out_dir: str | Path) -> dict:
    """Draw set `options.name` (`options.size` images, n/T per transformation, seeded by `options.seed` and the
    size) from the accepted images of the transformation folders `transform_dirs` (each: lmdb/ + manifest.csv)
    and copy them to `out_dir` (lmdb/ + manifest.csv, split train, synthetic true; summary.json).
    Raises DermsynthError when a transformation has too few accepted images or a source image is not in the
    real training split of `real_manifest`, BusyError when another process writes `out_dir`, OutputError when
    it cannot be written (checked first). Returns the summary."""
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "synthetic-dataset"):
        return _build(options, transform_dirs, real_manifest, out_dir)


def _build(options: SyntheticDatasetOptions, transform_dirs: list[str | Path], real_manifest: str | Path,
           out_dir: Path) -> dict:
    name, size, seed = options.name, options.size, options.seed
    pools = {}
    stores = {}
    for folder in map(Path, transform_dirs):
        frame = read_table(folder / "manifest.csv", ["key", "source_key", "label", "transformation", "accepted", "lpips"],
                           "the manifest of a transformation folder (`dermsynth latent transform`)",
                           "give the transformation output folders as --transformed",
                           dtype={"key": str, "source_key": str, "label": str}, keep_default_na=True)
        if not len(frame):
            raise DermsynthError(f"{folder / 'manifest.csv'} lists no transformed image; run the transformation "
                                 "again with more source images")
        transformation = frame["transformation"].iloc[0]
        pools[transformation], stores[transformation] = frame, LmdbImageStore(folder / "lmdb")
    drawn = draw_synthetic(pools, size, seed)
    check_sources_in_train(drawn, read_table(real_manifest, ["key", "split"], "a manifest.csv of `dermsynth data split`",
                                             "give the real dataset's manifest.csv as --manifest"))
    first = next(iter(stores.values()))
    drawn = drawn.assign(split="train", synthetic=True)
    writer = ImageSetWriter(out_dir)  # encoded bytes copied as they are: no re-encoding
    for start in range(0, len(drawn), 512):
        part = drawn.iloc[start:start + 512]
        writer.add_many([(row.key, stores[row.transformation].get_bytes(row.key)) for row in part.itertuples()])
    writer.finish(drawn, first.index["labels"], first.resolution, first.encoding)
    counts = drawn.groupby("transformation").size().to_dict()
    summary = {"name": name, "size": size, "seed": seed, "per_transformation": counts,
               "per_class": drawn.groupby("label").size().to_dict(), "sources": [str(p) for p in transform_dirs],
               "lpips_mean": float(drawn["lpips"].mean()),
               "provenance": provenance(options.step, options.to_dict(), seed=seed)}
    write_json(out_dir / "summary.json", summary)
    print(f"synthetic {name}: {size} images ({', '.join(f'{k} {v}' for k, v in counts.items())})", file=sys.stderr)
    return summary


def filter_synthetic(manifest: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): the synthetic rows whose predicted class (from the unfiltered model's
    `predictions`, columns key, predicted) equals their label are kept."""
    predicted = dict(zip(predictions["key"], predictions["predicted"]))
    missing = sorted(set(manifest["key"]) - set(predicted))
    if missing:
        raise DermsynthError(f"{len(missing)} synthetic images have no prediction (e.g. {missing[:3]}); predict the "
                             "whole synthetic set with the unfiltered model first")
    correct = manifest["key"].map(predicted) == manifest["label"]
    return manifest[correct].reset_index(drop=True), manifest[~correct].reset_index(drop=True)
