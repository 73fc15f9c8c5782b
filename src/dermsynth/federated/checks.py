"""What the launcher checks before any Flower process starts: the data fit the run (`launch.run_federated`).

Each check raises `DermsynthError` with one message naming the mismatch and the fix, so a wrong input costs no
SuperLink start and no round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import DermsynthError
from .options import TrainFederatedOptions


def check_gpus(options: TrainFederatedOptions, gpus: int) -> None:
    """The job's `gpus` can be shared equally among the run's SuperNodes (one per hospital). Raises DermsynthError
    otherwise."""
    if gpus % len(options.hospitals):
        raise DermsynthError(f"{gpus} GPUs cannot be shared equally among {len(options.hospitals)} SuperNodes")


def check_store(options: TrainFederatedOptions, lmdb) -> None:
    """The LMDB store `lmdb` (a folder with index.json) is the run's dataset, at the run's resolution (pixels),
    with the run's classes (what every hospital's generator is built for). Raises DermsynthError naming the
    mismatch."""
    index = json.loads((Path(lmdb) / "index.json").read_text())
    found = (index.get("dataset"), int(index.get("resolution", 0)), list(index.get("classes") or []))
    wanted = (options.dataset, int(options.resolution), list(options.label_classes))
    if found != wanted:
        raise DermsynthError(f"{lmdb} holds dataset {found[0]} at {found[1]}² with classes {found[2]}; federated run "
                             f"{options.run} is configured for {wanted[0]} at {wanted[1]}² with classes {wanted[2]} "
                             "(pass the run's dataset's LMDB store, or re-ingest it with the configured resolution)")


def check_hospital_sizes(options: TrainFederatedOptions, federated_csv) -> None:
    """Every hospital of the run has at least one batch (`training.batch`) of training images of the run's
    classes in `federated_csv` (the federated split: key, hospital, label, …). Raises DermsynthError naming the
    hospitals, their counts and the fix."""
    table = pd.read_csv(federated_csv, dtype=str, keep_default_na=False)
    if options.training.get("classes"):
        table = table[table["label"].isin(options.training["classes"])]
    counts = table["hospital"].value_counts()
    batch = options.training["batch"]
    small = {h: int(counts.get(h, 0)) for h in options.hospitals if counts.get(h, 0) < batch}
    if small:
        listed = ", ".join(f"{h}: {n}" for h, n in small.items())
        raise DermsynthError(f"{federated_csv}: hospitals with fewer training images than one batch of {batch} "
                             f"({listed}); lower federated.{options.run}.batch or give those hospitals more images "
                             "(datasets.<dataset>.federated.hospitals)")


def check_run(options: TrainFederatedOptions, lmdb, federated_csv, gpus: int) -> None:
    """Every check above, in order (GPUs, store, hospital sizes)."""
    check_gpus(options, gpus)
    check_store(options, lmdb)
    check_hospital_sizes(options, federated_csv)


__all__ = ["check_gpus", "check_hospital_sizes", "check_run", "check_store"]
