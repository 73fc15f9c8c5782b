"""`dermsynth` verbs of the gan stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import os
import sys

from ..errors import DermsynthError
from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_renamed_flag, add_verb, set_threads
from .options import TrainGanOptions


def _train_gan(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .run import train_gan
    options = options_from_args(TrainGanOptions, args, gan=args.gan)
    if args.threads:
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: the job's threads are shared
        set_threads(max(1, args.threads // processes))
    train_gan(options, args.lmdb, args.manifest, args.out, device=args.device, federated=args.federated)


def _generate(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .generate import generate, parse_seeds
    try:
        if args.neighbors or args.latents or args.radius is not None:
            out = _generate_neighbors(args)
        elif not args.seeds:
            raise ValueError("give --seeds (or --neighbors N --radius r around --seeds or --latents)")
        else:
            out = generate(args.network, parse_seeds(args.seeds), args.out, truncation_psi=args.truncation,
                           batch=args.batch, class_name=args.class_name, fmt=args.format, device=args.device)
    except ValueError as exc:
        raise DermsynthError(str(exc)) from None
    print(f"generate: {out}", file=sys.stderr)


def _generate_neighbors(args):
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .generate import parse_seeds
    from .neighbors import generate_neighbors
    if not args.neighbors or args.radius is None:
        raise ValueError("neighbours need both --neighbors N (≥ 1) and --radius r (the distance to the centre in W)")
    if args.keys and not args.latents:
        raise ValueError("--keys choose among stored latents: give --latents too")
    return generate_neighbors(args.network, args.out, args.neighbors, args.radius, truncation_psi=args.truncation,
                              seed=args.neighbor_seed, batch=args.batch,
                              seeds=parse_seeds(args.seeds) if args.seeds else None, latents=args.latents,
                              keys=args.keys, class_name=args.class_name, fmt=args.format, device=args.device)


def _sample_sheet(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .generate import sample_sheet
    with exclusive(args.out, "sample-sheet"):
        sheet = sample_sheet(args.network, args.out, args.columns, args.rows, args.truncation, args.device)
    print(f"sample-sheet: {args.out} ({len(sheet['rows'])} rows × {args.columns})", file=sys.stderr)


def _import_network(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from ..outputs import write_json
    from ..provenance import provenance
    from .interop.checkpoint import read_checkpoint
    from .interop.imported import write_imported
    imported = read_checkpoint(args.source)
    classes = _import_classes(args.classes, imported.architecture.c_dim, args.source)
    summary = write_imported(imported, args.out)
    if classes:  # what `gan generate --class` and the sample sheet read (network_classes)
        summary.update(classes=classes, trained_on_classes=classes)
    elif imported.architecture.c_dim:
        summary["notes"].append(f"a conditional generator of {imported.architecture.c_dim} classes whose names the "
                                "file does not hold: import it again with --classes NAME,… (in the order of its "
                                "class labels) so that `gan generate --class NAME` can pick one")
    write_json(_sidecar(args.out), {**summary, "provenance": provenance("gan-import", {"source": args.source,
                                                                                        "classes": classes})})
    arch = summary["architecture"]
    print(f"gan import: {args.out} ← {args.source} ({summary['format']}, sha256 {summary['sha256'][:12]}…; "
          f"{arch['resolution']}², c_dim {arch['c_dim']}; {', '.join(summary['networks'])})", file=sys.stderr)
    for note in summary["notes"]:
        print(f"gan import: note: {note}", file=sys.stderr)


def _import_classes(given: list[str] | None, c_dim: int, source: str) -> list[str]:
    """--classes of `gan import` (`mel,nv,bcc` or `mel nv bcc`): one name per class label of a conditional
    generator, in label order."""
    if given is None:
        return []
    text = ",".join(given)
    names = [name.strip() for name in text.split(",")]
    if not c_dim:
        raise DermsynthError(f"--classes: {source} holds an unconditional generator (no class labels); leave it out")
    repeated = sorted({name for name in names if names.count(name) > 1 and name})
    if len(names) != c_dim or not all(names) or repeated:
        problem = (f"{', '.join(repeated)} given twice" if repeated else "an empty name" if not all(names)
                   else f"{len(names)} names")
        raise DermsynthError(f"--classes {text!r}: {problem}, but {source} is conditional on {c_dim} classes: give "
                             f"{c_dim} distinct names in the order of its class labels (mel,nv,… or mel nv …)")
    return names


def _export_network(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from ..outputs import write_json
    from ..provenance import provenance
    from .interop.checkpoint import export_rosinality
    summary = export_rosinality(args.network, args.out)
    write_json(_sidecar(args.out), {**summary, "provenance": provenance("gan-export", {"network": args.network,
                                                                                     "format": args.format})})
    print(f"gan export: {args.out} (rosinality: size {summary['size']}, style_dim {summary['style_dim']}, n_mlp "
          f"{summary['n_mlp']}, channel_multiplier {summary['channel_multiplier']})", file=sys.stderr)
    for note in summary["notes"]:
        print(f"gan export: note: {note}", file=sys.stderr)


def _sidecar(out: str) -> str:
    """The JSON record beside a written checkpoint (network.pt → network.json)."""
    return os.path.splitext(out)[0] + ".json"


def add_verbs(sub, top) -> None:
    """Declare the gan stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "train", _train_gan, "Train one configured StyleGAN2(-ADA) generator (resumes from its "
                 "newest snapshot).", shared=("options", "gan", "lmdb", "manifest", "device", "threads"))
    p.add_argument("--out", required=True, help="output folder (snapshots, logs, network-final.pt)")
    p.add_argument("--federated", help="federated.csv, for a hospital-alone baseline (options with `hospital`)")

    p = add_verb(sub, "generate", _generate, "Images from a trained generator: PNG files or an LMDB store + manifest.")
    p.add_argument("--network", required=True, help="a network-final.pt or snapshot")
    p.add_argument("--seeds", help="e.g. 0-999 or 0-9,100 (with --neighbors: the centres)")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="truncation ψ: 1 = none; below 1 pulls each w "
                   "towards the average w (less variety, fewer artefacts)")
    p.add_argument("--class", dest="class_name", help="class to generate (required for conditional generators)")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass (memory, not the result)")
    p.add_argument("--format", choices=["png", "lmdb"], default="png", help="png: one file per image + "
                   "manifest.csv; lmdb: an LMDB store + manifest.csv, as the workflow's datasets")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--neighbors", type=int, metavar="N", help="N neighbours per centre, each at distance --radius in W "
                   "(dermsynth.gan.neighbors; needs --radius); centres: the --seeds' w or the --latents")
    p.add_argument("--radius", type=float, metavar="R", help="with --neighbors (required then): each neighbour's "
                   "Euclidean distance to its centre in W (w_dim numbers; the same offset on every layer, so the W+ "
                   "distance is R·√num_ws). Scale: a w of the mapping network has norm ≈ √w_dim·std, tens for 512-d; "
                   "the ISIC study used 0.1, a neighbour that looks the same")
    add_renamed_flag(p, "--diameter", "--radius", type=float)
    p.add_argument("--latents", help="centres from a projection .npz of `dermsynth latent project` (class and noise kept)")
    p.add_argument("--keys", nargs="+", help="only these image keys of --latents (default: every key)")
    p.add_argument("--neighbor-seed", type=int, default=0, help="seed of the neighbours' directions")

    p = add_verb(sub, "sample-sheet", _sample_sheet, "A picture of a trained generator: the same seeds in every row; "
             "one row per class for a conditional generator (+ a JSON naming the rows).")
    p.add_argument("--network", required=True, help="a network-final.pt or snapshot")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--columns", type=int, default=8, help="images per row (the same seeds in every row)")
    p.add_argument("--rows", type=int, default=4, help="rows of an unconditional generator (a conditional one "
                   "has a row per class)")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="truncation ψ: 1 = none; below 1 pulls each w "
                   "towards the average w")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    p = add_verb(sub, "import", _import_network, "Import a published StyleGAN2 checkpoint (NVIDIA .pkl of "
                 "stylegan2-ada-pytorch/stylegan3, or rosinality .pt) as a dermsynth network, without running any code "
                 "from the file.")
    p.add_argument("source", help="the .pkl or .pt to import")
    p.add_argument("--out", required=True, help="the dermsynth network to write (network.pt; + network.json)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="a conditional generator's class names, in the order "
                   "of its class labels (mel,nv,bcc or mel nv bcc; published files do not hold them): recorded in "
                   "the .json written beside --out, which `gan generate --class` reads (keep the two together)")

    p = add_verb(sub, "export", _export_network, "Write a dermsynth generator in another format (rosinality's .pt: "
                 "g_ema, g, d, latent_avg, for e4e, HyperStyle and their projectors).")
    p.add_argument("network", help="a network-final.pt, snapshot or imported network")
    p.add_argument("--format", choices=["rosinality"], default="rosinality", help="the format to write")
    p.add_argument("--out", required=True, help="the checkpoint to write (+ a .json beside it)")
