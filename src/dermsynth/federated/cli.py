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

    p = add_verb(sub, "certs", _certs, "Certificates and keys of a test consortium (docs/federated.md, Across "
                 "sites): a CA, the SuperLink's TLS certificate with its addresses, a SuperNode key pair per site and "
                 "(--site-kits) each site's kit: ca.crt, its key, site.yaml. With --keys-only: only key pairs (a "
                 "site making its own; it sends the coordinator the .pub).")
    p.add_argument("--out", required=True, help="folder to write into (existing files of the same names are replaced)")
    p.add_argument("--superlink-address", nargs="+", default=[], help="the host names or IP addresses (no port) the "
                   "sites dial; each becomes a subject alternative name (127.0.0.1, ::1 and localhost are added: the "
                   "SuperLink's own SuperExec dials it there)")
    p.add_argument("--port", type=int, default=9092, help="the SuperLink's port, written into the site kits")
    p.add_argument("--sites", nargs="+", required=True, help="the sites' names (the run's hospital names)")
    p.add_argument("--days", type=int, default=365, help="how long the certificates are valid")
    p.add_argument("--site-kits", action="store_true", help="also write <out>/sites/<site>/: ca.crt, the site's key "
                   "pair and a site.yaml for `dermsynth federated join`")
    p.add_argument("--keys-only", action="store_true", help="write only the sites' key pairs (no CA, no certificate)")

    p = add_verb(sub, "join", _join, "Run one site's SuperNode from its site file (the site kit): its hospital, the "
                 "SuperLink address, the consortium's CA certificate, its private key, its own data paths; runs in "
                 "the foreground until stopped (Ctrl-C, SIGTERM) or the SuperLink refuses it.")
    p.add_argument("--site", required=True,
                   help="the site file (site.yaml; its keys: docs/federated.md, 'Across sites')")
    p.add_argument("--max-retries", type=int, default=None, help="give up after this many failed connection attempts "
                   "(default: Flower's, retry without end)")
    p.add_argument("--print-command", action="store_true", help="check the site file, print the flower-supernode "
                   "command line and exit")


def _certs(args) -> None:
    # deferred: cryptography — `dermsynth --help` and the Snakefile must not load it
    from .sites import write_consortium
    write_consortium(args.out, args.superlink_address, args.sites, args.port, args.days, args.site_kits,
                     args.keys_only)


def _join(args) -> None:
    # deferred: pandas and cryptography — `dermsynth --help` and the Snakefile must not load them
    from .sites import command_line, join
    if args.print_command:
        print(command_line(args.site, args.max_retries))
        return
    join(args.site, args.max_retries)
