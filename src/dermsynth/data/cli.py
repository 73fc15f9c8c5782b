"""`dermsynth` verbs of the data stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb, set_threads


def _config(args):
    from ..config import load_config
    return load_config(args.config)


def _write_assignment(frame, table_path: str, summary_path: str, by: str, dataset: str, step: str,
                      section: dict, warnings: list[str] | None = None) -> dict:
    """Write a split/hospital assignment and its summary (counts, class ratios, provenance)."""
    from ..data.splits import check_disjoint, split_summary
    from ..outputs import write_csv, write_json
    from ..provenance import provenance
    check_disjoint(frame, by)
    write_csv(table_path, frame)
    summary = split_summary(frame, by)
    write_json(summary_path, {"dataset": dataset, **summary, "warnings": warnings or [],
                              "provenance": provenance(step, section, seed=section["seed"])})
    print(f"{step} {dataset}: images {summary['images']}, groups {summary['groups']}", file=sys.stderr)
    return summary


def _check_config(args) -> None:
    from ..config import load_config
    cfg = load_config(args.config, workflow=True)  # the checks Snakemake makes when it plans the workflow
    print(f"{args.config}: valid ({len(cfg['sources'])} sources, {len(cfg['datasets'])} datasets)")


def _demo_archives(args) -> None:
    from ..data.demo.archives import write_demo_archives
    cfg = _config(args)
    demo = dict(cfg["demo"])
    if args.output:
        demo["output"] = args.output
    write_demo_archives(demo, workers=args.workers)


def _ingest(args) -> None:
    from ..config import dataset_config
    from ..data.ingest import ingest_dataset
    cfg = _config(args)
    dataset_config(cfg, args.dataset)
    ingest_dataset(cfg, args.dataset, args.out, workers=args.workers)


def _split(args) -> None:
    import pandas as pd

    from ..config import dataset_config
    from ..data.splits import split_dataset
    cfg = _config(args)
    spec = dataset_config(cfg, args.dataset)
    ingested = pd.read_csv(args.ingested, dtype=str, keep_default_na=False)
    manifest = split_dataset(ingested, spec["split"])
    _write_assignment(manifest, args.manifest, args.summary, "split", args.dataset, "split", spec["split"],
                      manifest.attrs.get("warnings", []))


def _federated_split(args) -> None:
    import pandas as pd

    from ..config import dataset_config
    from ..data.splits import federated_split
    from ..errors import ConfigError
    cfg = _config(args)
    spec = dataset_config(cfg, args.dataset)
    if "federated" not in spec:
        raise ConfigError(f"datasets.{args.dataset} has no 'federated' section (hospital sizes)")
    manifest = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    assignment = federated_split(manifest, spec["federated"])
    _write_assignment(assignment, args.out, args.summary, "hospital", args.dataset, "federated-split",
                      spec["federated"])


def _preview(args) -> None:
    from ..data.preview import preview_grid
    preview_grid(args.lmdb, args.manifest, args.out, per_class=args.per_class)


def add_verbs(sub) -> None:
    """Declare the data stage's verbs on the `dermsynth` subparsers."""
    add_verb(sub, "check-config", _check_config, "Validate a config file against the schema.", shared=("config",))

    p = add_verb(sub, "demo-archives", _demo_archives, "Write the embedded demo archives in the published layouts.", shared=("config",))
    p.add_argument("--output", help="folder to write to (default: demo.output from the config)")
    p.add_argument("--workers", type=int, default=1, help="processes (the archives do not depend on it)")

    p = add_verb(sub, "ingest", _ingest, "Read a dataset's archives, validate, and write LMDB shards + accounting.", shared=("config",))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output folder (lmdb/, ingested.csv, rejections.csv, ingest.json)")
    p.add_argument("--workers", type=int, help="decode processes (default: ingest.workers)")

    p = add_verb(sub, "split", _split, "Assign patient/lesion-disjoint, class-stratified train/validation/test splits.", shared=("config",))
    p.add_argument("--dataset", required=True)
    p.add_argument("--ingested", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--summary", required=True)

    p = add_verb(sub, "federated-split", _federated_split, "Split a dataset's pool into hospitals (patient-disjoint).", shared=("config",))
    p.add_argument("--dataset", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)

    p = add_verb(sub, "preview", _preview, "Grid of images per class read back from LMDB.")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=8)
