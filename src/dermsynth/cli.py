"""The `dermsynth` command, grouped the way the pipeline is: `dermsynth data …`, `gan …`, `metrics …`,
`latent …`, `synthetic …`, `classify …`, `explain …`, `federated …`, and `review`, `bench`, `check-config`,
`fetch-weights` on their own. Every Snakemake rule runs one of these verbs.

Each stage package declares its own verbs (`<stage>/cli.py`: flags and the function each runs); this module
only assembles them, in pipeline order, and dispatches. The flat names of earlier releases (`train-gan`, …)
still run, with one line naming the new verb (`RENAMED`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, console
from .config import data_size_warnings, load_config
from .errors import DermsynthError
from .verbs import RENAMED, HelpFormatter, add_verb

# Stage package → what its group does (the group's line in `dermsynth --help`). Stages without a group
# (review, bench) declare their one verb on the command itself.
GROUPS = {
    "data": "archives → validated LMDB datasets: demo archives, ingest, splits, previews",
    "gan": "StyleGAN2(-ADA) generators: train, generate images, sample sheets, import and export published checkpoints",
    "federated": "federated StyleGAN2 training across hospitals (Flower): train, evaluate, the study's table",
    "metrics": "FID, KID, precision/recall, PPL of generators and image sets; the ISIC study's Table 1",
    "latent": "latent space: SeFa directions, projection, e4e/HyperStyle encoders, inversion, transformations",
    "synthetic": "synthetic training sets drawn from transformed images (SA-n)",
    "classify": "skin-lesion classifiers: train on each scenario, filter synthetic sets, the studies' tables",
    "explain": "what the classifiers learned: authenticity, CRP, PCX, the dermatoscope frame",
}
STAGES = ("data", "gan", "federated", "metrics", "latent", "synthetic", "classify", "explain", "review", "bench")



def build_parser() -> argparse.ArgumentParser:
    """The `dermsynth` parser: a group per stage (GROUPS) holding its verbs, each bound to the function that
    runs it, and the verbs that stand alone."""
    parser = argparse.ArgumentParser(prog="dermsynth", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"dermsynth {__version__}")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    add_verb(top, "check-config", _check_config, "Validate a whole workflow config as Snakemake does when it plans: "
             "the schema (defaults filled), the cross-references, the transformations file, the archives not in "
             "place yet and the sizes the split data cannot support.", shared=("config",))
    for stage in STAGES:
        module = importlib.import_module(f"{__package__}.{stage}.cli")
        if stage not in GROUPS:
            module.add_verbs(top, top)
            continue
        group = top.add_parser(stage, help=GROUPS[stage], description=GROUPS[stage], formatter_class=HelpFormatter)
        module.add_verbs(group.add_subparsers(dest="verb", required=True, metavar="VERB"), top)
    return parser


def _check_config(args) -> None:
    # deferred: pandas, OpenCV — the archive readers (light for the Snakefile, not for `dermsynth --help`)
    from .data.archives import missing_archives
    from .data.demo.layout import expected_outputs
    from .data.options import current_manifest
    from .latent.named import load_transformations
    cfg = load_config(args.config, workflow=True)  # the checks Snakemake makes when it plans the workflow
    gans = cfg["latent"]["inversion"]["gans"]
    if gans:  # as workflow/rules/helpers/latent.smk reads them
        load_transformations(cfg["latent"]["transform"]["file"], gans)
    print(f"{args.config}: valid ({len(cfg['sources'])} sources, {len(cfg['datasets'])} datasets)")
    for message in missing_archives(cfg, *expected_outputs(cfg["demo"]), config_files=[args.config]):
        print(f"  not found yet: {message}")  # as the dry run says them: these ingest jobs cannot run yet
    for message in data_size_warnings(cfg, lambda dataset: current_manifest(cfg, dataset)):
        print(f"  warning: {message}")  # sizes the split data cannot support (as the dry run says them)


def renamed(argv: list[str]) -> list[str]:
    """`argv` with a flat verb name of an earlier release replaced by the grouped one (`train-gan …` →
    `gan train …`), after one line on stderr naming the new verb; any other `argv` unchanged."""
    if argv and argv[0] in RENAMED:
        new = RENAMED[argv[0]]
        print(f"dermsynth: `{argv[0]}` is now `dermsynth {new}` (the old name goes in a later release)",
              file=sys.stderr)
        return new.split() + argv[1:]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run one verb; a DermsynthError, or an input file that is not there, becomes one line on stderr and exit
    status 2. Returns the exit status."""
    console.setup()  # logging once; library warnings as one line each
    argv = renamed(sys.argv[1:] if argv is None else list(argv))
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


if __name__ == "__main__":  # also `torchrun -m dermsynth.cli gan train ...` for multi-GPU training
    sys.exit(main())
