"""`dermsynth` verbs of the federated stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_verb, set_threads
from .options import EvaluateFederatedOptions, FederatedTableOptions, TrainFederatedOptions


def _train_federated(args) -> None:
    # deferred: the launcher loads torch — `dermsynth --help` and the Snakefile must not
    from .launch import run_federated
    options = options_from_args(TrainFederatedOptions, args, run=args.run)
    final = run_federated(options, args.lmdb, args.federated, args.out, device=args.device or "auto",
                          threads=args.threads or 0, gpus=args.gpus)
    print(f"train-federated {options.run}: {final}", file=sys.stderr)


def _evaluate_federated(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .evaluate import federated_curves
    options = options_from_args(EvaluateFederatedOptions, args, run=args.run)
    set_threads(args.threads)
    with exclusive(args.out, "evaluate-federated"):
        federated_curves(options, args.lmdb, args.federated, args.federated_network, args.alone, args.central,
                         args.out, device=args.device)


def _federated_table(args) -> None:
    # deferred: torch and matplotlib — `dermsynth --help` and the Snakefile must not load them
    from .evaluate import federated_table
    options = options_from_args(FederatedTableOptions, args, run=args.run)
    with exclusive(args.out, "federated-table"):
        federated_table(options, args.curves, args.rounds, args.out, args.figure, args.data_source)


def add_verbs(sub, top) -> None:
    """Declare the federated stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "train", _train_federated, "Train one federated StyleGAN2 run across the hospitals "
                 "of a federated split (Flower: a SuperLink and one SuperNode per hospital as processes on "
                 "127.0.0.1, or the Simulation Runtime); resumes from its last checkpoint.",
                 shared=("options", "lmdb", "device", "threads"))
    p.add_argument("--run", help="the run's name under `federated` (with --config)")
    p.add_argument("--federated", required=True, help="the dataset's federated.csv (which image is at which hospital)")
    p.add_argument("--out", required=True, help="output folder (results/federated/<run>)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs of the job's allocation, shared equally among the "
                   "SuperNodes, each its own (0: CPU, or --device)")

    p = add_verb(sub, "evaluate", _evaluate_federated, "FID/KID of every evaluated snapshot of a federated "
                 "run, of each hospital-alone baseline and of the central generator, against each hospital's real "
                 "images and the pooled set.", shared=("options", "lmdb", "device", "threads"))
    p.add_argument("--run", help="the run's name under `federated` (with --config)")
    p.add_argument("--federated", required=True, help="the dataset's federated.csv")
    p.add_argument("--federated-network", required=True, help="the run's network-final.pt (snapshots beside it)")
    p.add_argument("--alone", nargs="*", default=[], help="each hospital-alone baseline's network-final.pt")
    p.add_argument("--central", help="the central generator's network-final.pt (snapshots beside it)")
    p.add_argument("--out", required=True, help="CSV of the curves")

    p = add_verb(sub, "table", _federated_table, "The study's comparison: per hospital, iterations to reach "
                 "an FID alone vs federated, their ratio, best FIDs (+ a figure of the curves).", shared=("options",))
    p.add_argument("--run", help="the run's name under `federated` (with --config)")
    p.add_argument("--curves", required=True, help="the CSV of `dermsynth federated evaluate`")
    p.add_argument("--rounds", required=True, help="the run's rounds.csv")
    p.add_argument("--out", required=True, help="the table (CSV)")
    p.add_argument("--figure", required=True, help="the figure (PNG)")
    p.add_argument("--data-source", default="", help="what the images were (the table's `data` column)")
