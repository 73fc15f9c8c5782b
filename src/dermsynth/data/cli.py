"""`dermsynth` verbs of the data stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

from ..options import options_from_args
from ..verbs import add_verb
from .options import DemoArchivesOptions, FederatedSplitOptions, IngestOptions, SplitOptions

# The handlers import their library when they run (`# deferred:`): `dermsynth --help` and every other verb
# must not load pandas, OpenCV, LMDB or matplotlib.


def _demo_archives(args) -> None:
    # deferred: pandas, OpenCV — the demo writers
    from .demo.archives import write_demo_archives
    options = options_from_args(DemoArchivesOptions, args)
    write_demo_archives(options.demo, workers=args.workers, output=args.output)


def _ingest(args) -> None:
    # deferred: OpenCV, LMDB — the ingest library
    from .ingest import ingest
    options = options_from_args(IngestOptions, args, dataset=args.dataset)
    ingest(options, args.out, workers=args.workers)


def _split(args) -> None:
    # deferred: pandas — the split library
    from .splits import write_split
    options = options_from_args(SplitOptions, args, dataset=args.dataset)
    write_split(options, args.ingested, args.manifest, args.summary)


def _federated_split(args) -> None:
    # deferred: pandas — the split library
    from .splits import write_federated_split
    options = options_from_args(FederatedSplitOptions, args, dataset=args.dataset)
    write_federated_split(options, args.manifest, args.out, args.summary)


def _preview(args) -> None:
    # deferred: matplotlib, LMDB — the preview library
    from .preview import preview_grid
    preview_grid(args.lmdb, args.manifest, args.out, per_class=args.per_class)


def _dataset_flag(p) -> None:
    p.add_argument("--dataset", help="a name under `datasets` in the config (with --options: taken from the file)")


def add_verbs(sub, top) -> None:
    """Declare the data stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "demo", _demo_archives, "Write the embedded demo archives in the published layouts.",
                 shared=("options",))
    p.add_argument("--output", help="folder to write to (default: demo.output of the options/config)")
    p.add_argument("--workers", type=int, default=1, help="processes (the archives do not depend on it)")

    p = add_verb(sub, "ingest", _ingest, "Read a dataset's archives, validate, and write LMDB shards + accounting.",
                 shared=("options",))
    _dataset_flag(p)
    p.add_argument("--out", required=True, help="output folder (lmdb/, ingested.csv, rejections.csv, ingest.json)")
    p.add_argument("--workers", type=int, default=1, help="decode processes (default: %(default)s; the workflow "
                   "passes ingest.workers; the result does not depend on it)")

    p = add_verb(sub, "split", _split, "Assign patient/lesion-disjoint, class-stratified train/validation/test splits.",
                 shared=("options",))
    _dataset_flag(p)
    p.add_argument("--ingested", required=True, help="the dataset's ingested.csv (one row per stored image)")
    p.add_argument("--manifest", required=True, help="manifest.csv to write (ingested rows + group, split)")
    p.add_argument("--summary", required=True, help="splits.json to write (counts and class ratios per split)")

    p = add_verb(sub, "federated-split", _federated_split, "Split a dataset's pool into hospitals (patient-disjoint).",
                 shared=("options",))
    _dataset_flag(p)
    p.add_argument("--manifest", required=True, help="the dataset's manifest.csv (with its split column)")
    p.add_argument("--out", required=True, help="federated.csv to write (key, hospital, split, label, group)")
    p.add_argument("--summary", required=True, help="federated.json to write (counts and class ratios per hospital)")

    p = add_verb(sub, "preview", _preview, "Grid of images per class read back from LMDB.", shared=("lmdb", "manifest"))
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--per-class", type=int, default=8, help="images per class (default: %(default)s)")
