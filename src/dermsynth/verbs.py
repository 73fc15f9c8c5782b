"""What every stage's `cli.py` uses to declare its verbs: `add_verb` and the shared flags.

A stage package declares its verbs in `<stage>/cli.py` (`add_verbs(sub, top)`: `sub` is its group's
subcommands — `dermsynth gan …` — and `top` the command's own, for the few verbs that stand alone, such as
`dermsynth check-config`); `dermsynth.cli` only assembles them and dispatches. Flags that many verbs share are argparse parent parsers, named in `add_verb(...,
shared=("gan", "lmdb", ...))`, so `--device` or `--lmdb` is declared once and means the same everywhere."""

from __future__ import annotations

import argparse
from functools import cache


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--options", help="the step's options file (what the workflow writes and passes); "
                   "instead of --config")
    p.add_argument("--config", default="config/config.yaml",
                   help="workflow config, when not given --options (default: %(default)s)")


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml", help="workflow config (default: %(default)s)")


SHARED = {
    "options": _options,
    "config": _config,
    "gan": lambda p: p.add_argument("--gan", help="a name under `gans` in the config (with --options: taken "
                                    "from the file)"),
    "network": lambda p: p.add_argument("--network", required=True, help="a generator checkpoint "
                                        "(results/gan/<gan>/network-final.pt or a snapshot)"),
    "lmdb": lambda p: p.add_argument("--lmdb", required=True, help="a dataset's LMDB store "
                                     "(results/data/<dataset>/lmdb)"),
    "manifest": lambda p: p.add_argument("--manifest", required=True, help="that dataset's manifest.csv "
                                         "(key, label, split, …)"),
    "device": lambda p: p.add_argument("--device", help="cpu or cuda (default: cuda when available)"),
    "threads": lambda p: p.add_argument("--threads", type=int, help="CPU threads for PyTorch (the job's "
                                        "allocation)"),
}


@cache
def shared_parser(name: str) -> argparse.ArgumentParser:
    """The parent parser that declares the shared flag `name` (one of SHARED)."""
    parser = argparse.ArgumentParser(add_help=False)
    SHARED[name](parser)
    return parser


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with each option's default appended to its help when it has one worth saying
    (not None, not False, not already in the text) — so `--help` shows every default without repeating it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_verb(sub, name: str, func, help_text: str, shared: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Add verb `name` to a group's subcommands (`sub`; or the command's own, for a verb that stands alone), run
    by `func(args)`, with the shared flags named. `args.command` holds the verb's full name (e.g. "gan train")
    for error lines."""
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                       parents=[shared_parser(s) for s in shared])
    command = p.prog.split(maxsplit=1)[1]
    p.set_defaults(func=func, command=command)
    return p


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads to the job's allocation (None: leave PyTorch's default)."""
    if threads:
        # deferred: torch — every stage's cli.py imports this module (`dermsynth --help` must not load PyTorch)
        import torch
        torch.set_num_threads(threads)
