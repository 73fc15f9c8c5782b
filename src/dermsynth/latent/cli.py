"""`dermsynth` verbs of the latent stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..errors import ConfigError
from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_verb, set_threads
from .named import LAYER_RANGES
from .options import (InvertOptions, ProjectOptions, SefaOptions, TrainE4eOptions, TrainHyperstyleOptions,
                      TransformOptions)


def _sefa(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run import run_sefa
    options = options_from_args(SefaOptions, args, flags={"layers": "--layer-range"}, layers=args.layer_range)
    run_sefa(options, args.network, args.out, args.preview, device=args.device)


def _project(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run import run_projection
    options = options_from_args(ProjectOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_projection(options, args.network, args.lmdb, args.manifest, args.out, args.preview, device=args.device)


def _train_e4e(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run_inversion import run_train_e4e
    options = options_from_args(TrainE4eOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_train_e4e(options, args.network, args.lmdb, args.manifest, args.out, device=args.device)


def _train_hyperstyle(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run_inversion import run_train_hyperstyle
    options = options_from_args(TrainHyperstyleOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_train_hyperstyle(options, args.network, args.e4e, args.lmdb, args.manifest, args.out, device=args.device)


def _invert(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .run_inversion import run_invert
    options = options_from_args(InvertOptions, args, gan=args.gan)
    set_threads(args.threads)
    run_invert(options, args.network, args.e4e, args.hyperstyle, args.lmdb, args.manifest, args.out,
               device=args.device)


def _transform(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .transform import run_transform
    options = options_from_args(TransformOptions, args, name=args.name)
    if args.name is not None and args.name != options.transformation["name"]:
        raise ConfigError(f"--name {args.name} disagrees with {args.options} (transformation "
                          f"{options.transformation['name']})")
    set_threads(args.threads)
    run_transform(options, args.network, args.sefa, args.inversion, args.lmdb, args.out, device=args.device,
                  transformations=args.transformations)


def _lpips_table(args) -> None:
    # deferred: torch — `dermsynth --help` and the Snakefile must not load it
    from .transform import write_lpips_table
    with exclusive(args.out, "lpips-table"):
        table = write_lpips_table(args.reports, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


GENERATOR_JOB = ("options", "gan", "network", "lmdb", "manifest", "device", "threads")


def add_verbs(sub, top) -> None:
    """Declare the latent stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "sefa", _sefa, "Closed-form factorisation (SeFa) of a generator for one layer range: "
                 "directions (.npz + .json) and a preview grid.", shared=("options", "network", "device"))
    p.add_argument("--layer-range", choices=list(LAYER_RANGES),
                   help="which layers' styles are factorised (with --options: taken from the file)")
    p.add_argument("--out", required=True, help=".npz with directions and eigenvalues (a .json beside it)")
    p.add_argument("--preview", required=True, help="PNG grid: rows = direction × sample, columns = magnitude")

    p = add_verb(sub, "project", _project, "Project real images of a split into a generator's W/W+ (optimisation, "
                 "batched): latents + optimised noise (.npz), reconstruction report (.json), target|reconstruction "
                 "grid.", shared=GENERATOR_JOB)
    p.add_argument("--out", required=True, help=".npz (a .json report beside it)")
    p.add_argument("--preview", required=True, help="PNG: pairs of target and reconstruction")

    p = add_verb(sub, "train-e4e", _train_e4e, "Train an e4e encoder for a generator on its training images "
                 "(--lmdb/--manifest: the generator's dataset; resumable); report held-out L2 / LPIPS / MS-SSIM.",
                 shared=GENERATOR_JOB)
    p.add_argument("--out", required=True, help=".pt (a .json report beside it)")

    p = add_verb(sub, "train-hyperstyle", _train_hyperstyle, "Train a HyperStyle hypernetwork on top of an e4e "
                 "encoder (--lmdb/--manifest: the generator's dataset; resumable); report held-out reconstruction "
                 "per refinement iteration.", shared=GENERATOR_JOB)
    p.add_argument("--e4e", required=True, help="the generator's e4e encoder (train-e4e's .pt)")
    p.add_argument("--out", required=True, help=".pt (a .json report beside it)")

    p = add_verb(sub, "invert", _invert, "Invert one split of a dataset (e4e + HyperStyle; --lmdb/--manifest: the "
                 "dataset of latent.inversion.dataset): latents and kernel offsets per image key (resumable by "
                 "chunk).", shared=GENERATOR_JOB)
    p.add_argument("--e4e", required=True, help="the generator's e4e encoder (train-e4e's .pt)")
    p.add_argument("--hyperstyle", required=True, help="its HyperStyle hypernetwork (train-hyperstyle's .pt)")
    p.add_argument("--out", required=True, help="output folder")

    p = add_verb(sub, "transform", _transform, "Apply one named transformation to every inverted image: LMDB + "
                 "manifest with provenance and LPIPS, report JSON (--lmdb: the real images, for LPIPS to the "
                 "source).", shared=("options", "network", "lmdb", "device", "threads"))
    p.add_argument("--name", help="a transformation of latent.transform.file (with --options: taken from the file)")
    p.add_argument("--sefa", required=True, help="the generator's sefa-<range>.npz")
    p.add_argument("--inversion", required=True, help="folder written by `dermsynth latent invert`")
    p.add_argument("--out", required=True, help="output folder (lmdb/, manifest.csv, preview.png, transform.json)")
    p.add_argument("--transformations", default=None, help="the transformations file the entry comes from: its "
                   "review is checked against --network (one WARNING line when stale or never reviewed; none: not "
                   "checked)")

    p = add_verb(sub, "lpips-table", _lpips_table, "The HAM10000 study's Table 1 (LPIPS per transformation).")
    p.add_argument("--reports", nargs="+", required=True, help="transform.json files")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--data-source", required=True, help="what the images are (the table's `data` column)")
