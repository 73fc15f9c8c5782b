"""The `dermsynth` command: one subcommand per pipeline verb. Every Snakemake rule runs one of these.

Each stage package declares its own verbs (`<stage>/cli.py`: flags and the function each runs); this module
only assembles them, in pipeline order, and dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DermsynthError

STAGES = ("data", "gan", "federated", "metrics", "latent", "synthetic", "classify", "explain", "review", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The `dermsynth` parser: every stage's verbs, each bound to the function that runs it."""
    parser = argparse.ArgumentParser(prog="dermsynth", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        importlib.import_module(f"{__package__}.{stage}.cli").add_verbs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; a DermsynthError, or an input file that is not there, becomes one line on stderr and exit
    status 2. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DermsynthError as exc:
        print(f"dermsynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a path given on the command line (or inside an input) that is not there
        where = f"no such file or folder: {exc.filename}" if exc.filename else str(exc)
        print(f"dermsynth {args.command}: error: {where} (check the path, or run the step that writes it)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # also `torchrun -m dermsynth.cli train-gan ...` for multi-GPU training
    sys.exit(main())
