"""Step options of the data stage (see `dermsynth.options`): what `demo-archives`, `ingest`, `split` and
`federated-split` read of the validated workflow config, and nothing else. (`check-config` validates a
whole config and `preview` reads none.) Light on purpose: the Snakefile imports this module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..options import Section, StepOptions, entry


@dataclass(frozen=True)
class DemoArchivesOptions(StepOptions):
    """`dermsynth data demo` (rule demo_archives): the `demo` section, read whole.

    Fields: `demo` — output folder, seed and the size of each archive (ham10000: lesions, isic2018_test_images,
    isic2018_validation_images; isic2020: patients, images, malignant_fraction, official_duplicates, max_side;
    isic2019: images, from_ham10000, downsampled_fraction; fitzpatrick17k: images; derm7pt: cases)."""

    step = "demo-archives"
    wildcards = ()
    demo: Section

    @classmethod
    def from_config(cls, config: dict) -> "DemoArchivesOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(demo=config["demo"])


@dataclass(frozen=True)
class IngestOptions(StepOptions):
    """`dermsynth data ingest` (rule ingest): one dataset's label scheme, resolution and sources, the sections of
    those sources, and the `ingest` settings that shape the store (not `ingest.workers`: the job's threads,
    passed as `--workers`, so that changing it re-runs nothing).

    Fields: `dataset` — the name under `datasets`; `labels` — `ham7` or `binary`; `resolution` — stored image
    side in pixels (8–2048); `sources` — the dataset's source entries in order (`source`: a name under
    `sources`, `split`: auto/train/validation/test), the first source keeping an id two sources share;
    `archives` — each of those sources' section by name (`type`, `path`, and the type's own keys: `part`,
    `include_diagnoses`, `csv`, `images`, `label_map`); `encoding` — `png` or `raw` pixels in LMDB; `shards` —
    LMDB shards (1–256); `grayscale` — `reject` or `replicate` single-channel images; `jpeg_draft` — let libjpeg
    decode large JPEGs at a reduced scale before the resize."""

    step = "ingest"
    wildcards = ("dataset",)
    dataset: str
    labels: str
    resolution: int
    sources: list
    archives: Section
    encoding: str
    shards: int
    grayscale: str
    jpeg_draft: bool

    @classmethod
    def from_config(cls, config: dict, dataset: str) -> "IngestOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "datasets", dataset, "dataset")
        names = [e["source"] for e in spec["sources"]]
        settings = config["ingest"]
        return cls(dataset=dataset, labels=spec["labels"], resolution=spec["resolution"],
                   sources=[dict(e) for e in spec["sources"]],
                   archives={name: entry(config, "sources", name) for name in names},
                   encoding=settings["encoding"], shards=settings["shards"], grayscale=settings["grayscale"],
                   jpeg_draft=settings["jpeg_draft"])


@dataclass(frozen=True)
class SplitOptions(StepOptions):
    """`dermsynth data split` (rule split): one dataset's `split` section, read whole.

    Fields: `dataset` — the name under `datasets`; `split` — `group_by` (patient/lesion/image), `fractions`
    (train/validation/test, summing to 1), `seed` (the project seed unless set), `require_all_classes`."""

    step = "split"
    wildcards = ("dataset",)
    dataset: str
    split: Section

    @classmethod
    def from_config(cls, config: dict, dataset: str) -> "SplitOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(dataset=dataset, split=entry(config, "datasets", dataset, "dataset")["split"])


@dataclass(frozen=True)
class FederatedSplitOptions(StepOptions):
    """`dermsynth data federated-split` (rule federated_split): one dataset's `federated` section, read whole.

    Fields: `dataset` — the name under `datasets`; `federated` — `hospitals` (name → number of images), `pool`
    (the splits whose images are shared out), `seed` (the project seed unless set).
    Raises ConfigError when the dataset has no `federated` section."""

    step = "federated-split"
    wildcards = ("dataset",)
    dataset: str
    federated: Section

    @classmethod
    def from_config(cls, config: dict, dataset: str) -> "FederatedSplitOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "datasets", dataset, "dataset")
        if "federated" not in spec:
            raise ConfigError(f"datasets.{dataset} has no 'federated' section (hospital sizes)")
        return cls(dataset=dataset, federated=spec["federated"])


def current_manifest(config: dict, dataset: str, root: str | Path = "results/data") -> str | None:
    """`<root>/<dataset>/manifest.csv` when it was written under `config` — its ingest.json and splits.json record
    the digests of this config's ingest and split options for `dataset` — else None (not split yet, or split from
    another config's archives or settings: its sizes say nothing about this config's data). Reads two small JSON
    files; never raises for a missing or unreadable one (None)."""
    folder = Path(root) / dataset
    expected = {"ingest.json": IngestOptions.from_config(config, dataset=dataset).digest,
                "splits.json": SplitOptions.from_config(config, dataset=dataset).digest}
    for name, digest in expected.items():
        try:
            recorded = json.loads((folder / name).read_text())["provenance"]["config_digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if recorded != digest:
            return None
    return str(folder / "manifest.csv")
