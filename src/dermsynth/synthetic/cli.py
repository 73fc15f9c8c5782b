"""`dermsynth` verbs of the synthetic stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

from ..options import options_from_args
from ..verbs import add_verb
from .options import SyntheticDatasetOptions


def _synthetic_dataset(args) -> None:
    # deferred: pandas, LMDB — `dermsynth --help` and the other verbs must not load them
    from .datasets import build_synthetic_dataset
    options = options_from_args(SyntheticDatasetOptions, args, name=args.name)
    build_synthetic_dataset(options, args.transformed, args.manifest, args.out)


def add_verbs(sub, top) -> None:
    """Declare the synthetic stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "dataset", _synthetic_dataset, "Draw one SA-n synthetic training set from the "
                 "transformed images (n/T per transformation); --manifest: the real dataset's, whose training "
                 "split every source image must belong to.", shared=("options", "manifest"))
    p.add_argument("--name", help="a name under synthetic.sizes (with --options: taken from the file)")
    p.add_argument("--transformed", nargs="+", required=True, help="transformation output folders")
    p.add_argument("--out", required=True, help="output folder (lmdb/, manifest.csv, summary.json)")
