"""What every stage's `cli.py` uses to declare its verbs: `add_verb` and the shared flags.

A stage package declares its verbs in `<stage>/cli.py` (`add_verbs(sub, top)`: `sub` is its group's
subcommands — `dermsynth gan …` — and `top` the command's own, for the few verbs that stand alone, such as
`dermsynth check-config`); `dermsynth.cli` only assembles them and dispatches. Flags that many verbs share are argparse parent parsers, named in `add_verb(...,
shared=("gan", "lmdb", ...))`, so `--device` or `--lmdb` is declared once and means the same everywhere."""

from __future__ import annotations

import argparse
import sys
from functools import cache


# The flat verb names of earlier releases → the verb now. Kept as hidden aliases for one release.
RENAMED = {
    "demo-archives": "data demo", "ingest": "data ingest", "split": "data split",
    "federated-split": "data federated-split", "preview": "data preview",
    "train-gan": "gan train", "generate": "gan generate", "sample-sheet": "gan sample-sheet",
    "train-federated": "federated train", "evaluate-federated": "federated evaluate",
    "federated-table": "federated table",
    "evaluate-gan": "metrics evaluate-gan", "gan-curve": "metrics gan-curve", "real-features": "metrics real-features",
    "evaluate-images": "metrics evaluate-images", "table1": "metrics table1",
    "sefa": "latent sefa", "project": "latent project", "train-e4e": "latent train-e4e",
    "train-hyperstyle": "latent train-hyperstyle", "invert": "latent invert", "transform": "latent transform",
    "lpips-table": "latent lpips-table",
    "synthetic-dataset": "synthetic dataset",
    "train-classifier": "classify train", "filter-synthetic": "classify filter-synthetic",
    "isic-synthetic": "classify isic-synthetic", "classifier-tables": "classify tables",
    "isic-table2": "classify isic-table2", "edge-neighbours": "classify edge-neighbours",
    "isic-edge-table": "classify isic-edge-table",
    "authenticity": "explain authenticity", "crp": "explain crp", "pcx": "explain pcx",
    "frame-score": "explain frame-score", "frame-directions": "explain frame-directions",
    "frameless-set": "explain frameless-set", "frame-accuracy": "explain frame-accuracy",
}


def verb_name(step: str) -> str:
    """The verb a step id runs as, in the grouped CLI (`train-gan` → `gan train`; a name that did not change
    stays)."""
    return RENAMED.get(step, step)


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
    (not None, False, '' or [], not already in the text; 0 is shown) — so `--help` shows every default once."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default == argparse.SUPPRESS \
                or default == "" or default == [] or not action.option_strings or "(default:" in text:
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


class _RenamedFlag(argparse.Action):
    """A flag's name of an earlier release: stores its value under the new flag's name after one line on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is now {self.new} (the old name goes in a later release)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed_flag(p: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """Keep `old`, a flag renamed to `new` (declared on `p` already), as a hidden alias for one release: not in
    `--help`; given, it prints one line ("dermsynth gan generate: --diameter is now --radius …") and sets `new`'s
    value. `kwargs` (type, nargs) are `new`'s."""
    dest = new.lstrip("-").replace("-", "_")
    p.add_argument(old, dest=dest, action=_RenamedFlag, new=new, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                   **kwargs)


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads to the job's allocation (None: leave PyTorch's default)."""
    if threads:
        # deferred: torch — every stage's cli.py imports this module (`dermsynth --help` must not load PyTorch)
        import torch
        torch.set_num_threads(threads)
