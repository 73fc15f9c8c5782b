"""`dermsynth` verbs of the explain stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

from ..config import schema_defaults
from ..errors import ConfigError
from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_verb, set_threads
from .options import (AuthenticityOptions, CrpOptions, FrameAccuracyOptions, FrameDirectionsOptions,
                      FramelessSetOptions, PcxOptions)


def _authenticity(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .authenticity import run_authenticity
    options = options_from_args(AuthenticityOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_authenticity(options, args.network, args.projection, args.lmdb, args.classifier, args.out, device=args.device)


def _crp(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .crp import run_crp
    options = options_from_args(CrpOptions, args)
    set_threads(args.threads)
    run_crp(options, args.models, args.sizes, args.lmdb, args.manifest, args.out, device=args.device)


def _pcx(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .pcx import run_pcx
    options = options_from_args(PcxOptions, args)
    set_threads(args.threads)
    run_pcx(options, args.models, args.sizes, args.crp, args.lmdb, args.manifest, args.out, device=args.device)


def _frame_score(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .frames import run_frame_score
    threshold = schema_defaults("explain.frames")["threshold"] if args.threshold is None else args.threshold
    with exclusive(args.out, "frame-score"):
        run_frame_score(args.lmdb, args.manifest, args.out, splits=args.splits, threshold=threshold,
                        truth_csv=args.truth, batch=args.batch)


def _frame_directions(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .frame_removal import run_frame_directions
    options = options_from_args(FrameDirectionsOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_frame_directions(options, args.network, args.sefa, args.out, args.figure, args.proposal, device=args.device)


def _frameless_set(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .frame_removal import frameless_set
    options = options_from_args(FramelessSetOptions, args)
    set_threads(args.threads)
    bad = [item for item in args.network if "=" not in item]
    if bad:
        raise ConfigError(f"--network takes <class>=<network-final.pt>, got {', '.join(bad)}")
    networks = dict(item.split("=", 1) for item in args.network)
    frameless_set(options, networks, args.sefa, args.moves, args.out, device=args.device)


def _frame_accuracy(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .frame_removal import run_frame_accuracy
    options = options_from_args(FrameAccuracyOptions, args)
    with exclusive(args.out, "frame-accuracy"):
        run_frame_accuracy(options, args.models, args.lmdb, args.manifest, args.out)


def _explained_models(p) -> None:
    p.add_argument("--models", nargs="+", required=True, help="the architecture's HAM10000 model folders "
                   "(baseline, SA-n, SA-n-filter)")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order (for the Table 3 choice)")


def add_verbs(sub, top) -> None:
    """Declare the explain stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "authenticity", _authenticity, "Real images and their projections embedded by a classifier: "
                 "cosine distances, nearest neighbours and memorisation flags, 3-D t-SNE, edge and central cases.",
                 shared=("options", "gan", "network", "lmdb", "device", "threads"))
    p.add_argument("--projection", required=True, help="the projection .npz of `dermsynth latent project`")
    p.add_argument("--classifier", required=True, help="a classifier folder (best.pt)")
    p.add_argument("--out", required=True, help="output folder")

    p = add_verb(sub, "crp", _crp, "Concept Relevance Propagation of one architecture's HAM10000 baseline and best "
                 "filtered SA model: top concepts, conditional heatmaps and reference images of chosen test images.",
                 shared=("options", "lmdb", "manifest", "device", "threads"))
    _explained_models(p)
    p.add_argument("--out", required=True, help="output folder")

    p = add_verb(sub, "pcx", _pcx, "Prototypical concept-based explanations of one class for the same two models: "
                 "Gaussian-mixture prototypes of concept relevances, test images assigned or flagged as novelties.",
                 shared=("options", "lmdb", "manifest", "device", "threads"))
    _explained_models(p)
    p.add_argument("--crp", required=True, help="the `dermsynth explain crp` output folder (cached concept relevances)")
    p.add_argument("--out", required=True, help="output folder")

    p = add_verb(sub, "frame-score", _frame_score, "Frame score per image: the share of near-black pixels in the "
                 "corner ring outside the inscribed circle (the dermatoscope's black frame; ISIC study, Fig. 4–5).",
                 shared=("lmdb", "manifest"))
    p.add_argument("--out", required=True, help="CSV to write: key, label, frame_score, has_frame")
    p.add_argument("--splits", nargs="+", help="only these splits of the manifest (default: every row)")
    p.add_argument("--threshold", type=float, help="has_frame when frame_score ≥ this (default: "
                   "the schema's explain.frames.threshold)")
    p.add_argument("--truth", help="the demo archives' demo_truth.csv: adds the drawn frames and the accuracy")
    p.add_argument("--batch", type=int, default=256, help="images read at a time")

    p = add_verb(sub, "frame-directions", _frame_directions, "Rank SeFa directions of a generator by how much they "
                 "lower the frame score while changing the rest of the image least (LPIPS outside the corner ring): "
                 "CSV, Fig. 5 figure, and a proposed frame-moves file (ISIC study, Fig. 5).",
                 shared=("options", "gan", "network", "device", "threads"))
    p.add_argument("--sefa", required=True, help="the generator's sefa-<range>.npz")
    p.add_argument("--out", required=True, help="CSV: one row per direction, sign and magnitude (a .json beside it)")
    p.add_argument("--figure", required=True, help="PNG: rows = chosen directions, columns = magnitudes")
    p.add_argument("--proposal", required=True, help="YAML frame-moves file to write (copy and edit it to override)")

    p = add_verb(sub, "frameless-set", _frameless_set, "Generated images whose frame was taken away by the frame "
                 "moves (or that had none, for another generator's class): an LMDB set of N per class with the "
                 "frame scores before and after and the LPIPS outside the ring.", shared=("options", "device",
                                                                                          "threads"))
    p.add_argument("--network", action="append", required=True, metavar="CLASS=PATH",
                   help="a class's generator checkpoint (repeat per class)")
    p.add_argument("--sefa", required=True, help="sefa-<range>.npz of the moves' generator")
    p.add_argument("--moves", required=True, help="the frame-moves file (frame-directions' proposal or a reviewed "
                   "copy)")
    p.add_argument("--out", required=True, help="output folder (lmdb/, manifest.csv, frameless.json, preview.png)")

    p = add_verb(sub, "frame-accuracy", _frame_accuracy, "ISIC classifiers' accuracy on real test images with and "
                 "without a frame (does a classifier lean on the frame?).", shared=("options", "lmdb", "manifest"))
    p.add_argument("--models", nargs="+", required=True, help="classifier folders (metrics.json, predictions-test.csv)")
    p.add_argument("--out", required=True, help="CSV to write (a .json beside it)")
