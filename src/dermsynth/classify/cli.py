"""`dermsynth` verbs of the classify stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..errors import DermsynthError
from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_verb, set_threads
from .options import EdgeNeighboursOptions, IsicEdgeTableOptions, IsicSyntheticOptions, TrainClassifierOptions


def _train_classifier(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run import run_classifier
    options = options_from_args(TrainClassifierOptions, args, {"arch": "--architecture"}, study=args.study,
                                scenario=args.scenario, arch=args.architecture)
    set_threads(args.threads)
    run_classifier(options, args.lmdb, args.manifest, args.out, args.synthetic_lmdb, args.synthetic_manifest,
                   real_train=not args.no_real_train, predict_synthetic=args.predict_synthetic,
                   data_source=args.data_source, device=args.device)


def _filter_synthetic(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from ..classify.run import run_filter_synthetic
    with exclusive(args.out, "filter-synthetic"):
        run_filter_synthetic(args.manifest, args.predictions, args.out)


def _isic_synthetic(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run import isic_synthetic
    options = options_from_args(IsicSyntheticOptions, args, family=args.family, kind=args.kind)
    isic_synthetic(options, _networks(args.network), args.out, device=args.device)


def _networks(items: list[str]) -> dict[str, str]:
    """`--network class=path` flags → {class: path}."""
    networks = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DermsynthError(f"--network {item}: expected <class>=<network-final.pt>")
        networks[name] = path
    return networks


def _classifier_tables(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from ..classify.tables import write_ham_tables
    with exclusive(args.table2, "classifier-tables"):  # one lock for Table 2, Table 3 and the figures
        write_ham_tables(args.models, args.sizes, args.table2, args.table3, args.figures)


def _isic_table2(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from ..classify.tables import write_isic_table
    with exclusive(args.out, "isic-table2"):
        print(write_isic_table(args.models, args.out).to_string(index=False), file=sys.stderr)


def _edge_neighbours(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .edge import run_edge_neighbours
    options = options_from_args(EdgeNeighboursOptions, args)
    set_threads(args.threads)
    run_edge_neighbours(options, args.network, args.lmdb, args.manifest, args.classifier, args.baseline, args.out,
                        device=args.device)


def _isic_edge_table(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .edge import write_edge_table
    options = options_from_args(IsicEdgeTableOptions, args)
    with exclusive(args.out, "isic-edge-table"):
        write_edge_table(options, args.models, args.classifier, args.baseline, args.edge_set, args.manifest,
                         args.out)


def add_verbs(sub, top) -> None:
    """Declare the classify stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "train", _train_classifier, "Train one classifier (study, scenario, architecture) "
                 "with the study's recipe; evaluate on the real test split (resumable per epoch).",
                 shared=("options", "lmdb", "manifest", "device", "threads"))
    p.add_argument("--study", choices=["ham10000", "isic"], help="with --config: the study (a name under "
                   "classifiers; with --options: taken from the file)")
    p.add_argument("--scenario", help="with --config: e.g. baseline, SA-6k, SA-6k-filter, cgan-aug")
    p.add_argument("--architecture", help="with --config: a timm model name (or one registered in "
                   "dermsynth.classify.models)")
    p.add_argument("--synthetic-lmdb", help="the synthetic set's LMDB store (its images)")
    p.add_argument("--synthetic-manifest", help="synthetic rows to add (a filtered manifest for SA-n-filter)")
    p.add_argument("--no-real-train", action="store_true", help="train on the synthetic images only (ISIC synth)")
    p.add_argument("--predict-synthetic", action="store_true", help="also predict the synthetic images (for filtering)")
    p.add_argument("--data-source", default="", help="recorded in metrics.json and the tables")
    p.add_argument("--out", required=True, help="model folder")

    p = add_verb(sub, "filter-synthetic", _filter_synthetic, "SA-n-filter: drop the synthetic images the unfiltered "
             "model misclassifies.")
    p.add_argument("--manifest", required=True, help="the synthetic set's manifest.csv")
    p.add_argument("--predictions", required=True, help="the unfiltered model's predictions-synthetic.csv")
    p.add_argument("--out", required=True, help="filtered manifest CSV (a .json summary beside it)")

    p = add_verb(sub, "isic-synthetic", _isic_synthetic, "Generate an ISIC study synthetic set (synth: balanced; aug: "
                 "malignant) as LMDB + manifest.", shared=("options", "device"))
    p.add_argument("--family", help="with --config: a name under classifiers.isic.generators")
    p.add_argument("--kind", choices=["synth", "aug"], help="with --config: synth (balanced) or aug (malignant)")
    p.add_argument("--network", action="append", required=True, help="class=network-final.pt (one per class: "
                   "benign and malignant for synth, malignant for aug)")
    p.add_argument("--out", required=True, help="output folder (lmdb/ + manifest.csv)")

    p = add_verb(sub, "edge-neighbours", _edge_neighbours, "Scenario aug-edge's training images: neighbours at distance "
                 "d in W of the projected validation edge cases and baseline mistakes.",
                 shared=("options", "network", "lmdb", "manifest", "device", "threads"))
    p.add_argument("--classifier", required=True, help="model folder of the edge classifier (its validation margins)")
    p.add_argument("--baseline", required=True, help="model folder of the baseline (its validation mistakes)")
    p.add_argument("--out", required=True, help="output folder (lmdb/ + manifest.csv, sources.csv, edge.json, ...)")

    _add_table_verbs(sub)


def _add_table_verbs(sub) -> None:
    """The studies' tables: HAM10000 Tables 2 and 3, ISIC Table 2 (all test images, and its edge-case version)."""
    p = add_verb(sub, "tables", _classifier_tables, "The HAM10000 study's Table 2, Table 3 and per-class "
             "recall figures from model folders.")
    p.add_argument("--models", nargs="+", required=True, help="HAM10000 model folders (metrics.json, "
                   "predictions-test.csv), every scenario of every architecture")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in the order the tables show them "
                   "(e.g. SA-2k SA-4k SA-6k)")
    p.add_argument("--table2", required=True, help="Table 2 CSV to write (baseline balanced accuracy and SA − "
                   "baseline per size, per architecture)")
    p.add_argument("--table3", required=True, help="Table 3 CSV to write (per-class AUC-ROC of the baseline and "
                   "the chosen SA models, per architecture)")
    p.add_argument("--figures", required=True, help="folder for recall-per-class-<architecture>.png")

    p = add_verb(sub, "isic-table2", _isic_table2, "The ISIC study's Table 2 (accuracy, AUC per scenario).")
    p.add_argument("--models", nargs="+", required=True, help="ISIC model folders (metrics.json), every scenario "
                   "of every architecture")
    p.add_argument("--out", required=True, help="table CSV to write")

    p = add_verb(sub, "isic-edge-table", _isic_edge_table, "ISIC Table 2 on the test edge cases and the test images "
                 "the baseline misclassifies (accuracy, AUC per model).", shared=("options",))
    p.add_argument("--models", nargs="+", required=True, help="ISIC model folders")
    p.add_argument("--classifier", required=True, help="model folder of the edge classifier (its test margins)")
    p.add_argument("--baseline", required=True, help="model folder of the baseline (its test mistakes)")
    p.add_argument("--edge-set", required=True, help="aug-edge's neighbours' manifest.csv (checked: validation sources)")
    p.add_argument("--manifest", required=True, help="the ISIC dataset's manifest.csv (its splits)")
    p.add_argument("--out", required=True, help="table CSV (a .json beside it)")
