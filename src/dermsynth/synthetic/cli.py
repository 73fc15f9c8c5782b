"""`dermsynth` verbs of the synthetic stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb, set_threads


def _config(args):
    from ..config import load_config
    return load_config(args.config)


def _synthetic_dataset(args) -> None:
    from ..synthetic.datasets import build_synthetic_dataset
    cfg = _config(args)
    sizes = cfg["synthetic"]["sizes"]
    if args.name not in sizes:
        from ..errors import ConfigError
        raise ConfigError(f"synthetic set {args.name!r} is not under synthetic.sizes (defined: {', '.join(sizes)})")
    build_synthetic_dataset(args.name, sizes[args.name], cfg["synthetic"]["seed"], args.transformed, args.manifest,
                            args.out)


def add_verbs(sub) -> None:
    """Declare the synthetic stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "synthetic-dataset", _synthetic_dataset, "Draw one SA-n synthetic training set from the "
             "transformed images (n/T per transformation).", shared=("config",))
    p.add_argument("--name", required=True, help="a name under synthetic.sizes")
    p.add_argument("--transformed", nargs="+", required=True, help="transformation output folders")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest (sources must be training images)")
    p.add_argument("--out", required=True)
