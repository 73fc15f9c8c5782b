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
    except Exception as exc:  # the machine says no: full disk, read-only, no permission, I/O error
        message = _machine_error(exc) if isinstance(exc, (OSError, RuntimeError)) or \
            type(exc).__module__.startswith("lmdb") else None
        if message is None:
            raise
        print(f"dermsynth {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _machine_error(exc: BaseException) -> str | None:
    """One line for an operating-system failure that no verb caught where it wrote (None: a real bug, which
    keeps its traceback). Names the file when the OS did, what the OS said, and the fix."""
    # deferred: outputs loads numpy and pandas; only a failed verb needs it (`dermsynth --help` stays light)
    from .outputs import disk_error
    filename = getattr(exc, "filename", None)
    if isinstance(exc, IsADirectoryError):
        return f"{filename} is a folder where a file is needed (give the file inside it)"
    if isinstance(exc, NotADirectoryError):
        return f"{filename} is a file where a folder is needed"
    wrapped = disk_error(filename or "an output", exc)
    return str(wrapped) if wrapped is not None else None


if __name__ == "__main__":  # also `torchrun -m dermsynth.cli train-gan ...` for multi-GPU training
    sys.exit(main())
