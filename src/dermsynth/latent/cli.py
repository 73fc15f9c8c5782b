"""`dermsynth` verbs of the latent stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb, set_threads


def _config(args):
    from ..config import load_config
    return load_config(args.config)


def _transformation(cfg, name):
    from ..errors import ConfigError
    from ..latent.transform import load_transformations
    entries = {t["name"]: t for t in load_transformations(cfg["latent"]["transform"]["file"])}
    if name not in entries:
        raise ConfigError(f"transformation {name!r} is not in {cfg['latent']['transform']['file']} "
                          f"(defined: {', '.join(entries)})")
    return entries[name]


def _gan_spec(cfg: dict, name: str) -> None:
    from ..errors import ConfigError
    if name not in cfg["gans"]:
        raise ConfigError(f"gan '{name}' is not defined under 'gans' (defined: {', '.join(cfg['gans']) or 'none'})")


def _sefa(args) -> None:
    from ..latent.run import run_sefa
    cfg = _config(args)
    run_sefa(cfg, args.network, args.layer_range, args.out, args.preview, device=args.device)


def _project(args) -> None:
    from ..latent.run import run_projection
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    run_projection(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.preview, device=args.device)


def _train_e4e(args) -> None:
    from ..latent.run_inversion import run_train_e4e
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    run_train_e4e(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, device=args.device)


def _train_hyperstyle(args) -> None:
    from ..latent.run_inversion import run_train_hyperstyle
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    run_train_hyperstyle(cfg, args.gan, args.network, args.e4e, args.lmdb, args.manifest, args.out,
                         device=args.device)


def _invert(args) -> None:
    from ..latent.run_inversion import run_invert
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    run_invert(cfg, args.gan, args.network, args.e4e, args.hyperstyle, args.lmdb, args.manifest, args.out,
               device=args.device)


def _transform(args) -> None:
    from ..latent.transform import run_transform
    cfg = _config(args)
    set_threads(args.threads)
    run_transform(cfg, _transformation(cfg, args.name), args.network, args.sefa, args.inversion, args.lmdb, args.out,
                  device=args.device)


def _lpips_table(args) -> None:
    from ..latent.transform import write_lpips_table
    table = write_lpips_table(args.reports, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


def add_verbs(sub) -> None:
    """Declare the latent stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "sefa", _sefa, "Closed-form factorisation (SeFa) of a generator for one layer range: "
             "directions (.npz + .json) and a preview grid.", shared=("config",))
    p.add_argument("--network", required=True)
    p.add_argument("--layer-range", required=True, choices=["all", "coarse", "middle", "fine"])
    p.add_argument("--out", required=True, help=".npz with directions and eigenvalues (a .json beside it)")
    p.add_argument("--preview", required=True, help="PNG grid: rows = direction × sample, columns = magnitude")
    p.add_argument("--device")

    p = add_verb(sub, "project", _project, "Project real images of a split into a generator's W/W+ (optimisation, "
             "batched): latents + optimised noise (.npz), reconstruction report (.json), target|reconstruction grid.", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help=".npz (a .json report beside it)")
    p.add_argument("--preview", required=True, help="PNG: pairs of target and reconstruction")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "train-e4e", _train_e4e, "Train an e4e encoder for a generator on its training images "
             "(resumable); report held-out L2 / LPIPS / MS-SSIM.", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True, help="the generator's training LMDB")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help=".pt (a .json report beside it)")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "train-hyperstyle", _train_hyperstyle, "Train a HyperStyle hypernetwork on top of an e4e encoder "
             "(resumable); report held-out reconstruction per refinement iteration.", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--e4e", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "invert", _invert, "Invert one split of a dataset (e4e + HyperStyle): latents and kernel offsets "
             "per image key (resumable by chunk).", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--e4e", required=True)
    p.add_argument("--hyperstyle", required=True)
    p.add_argument("--lmdb", required=True, help="the dataset's LMDB (latent.inversion.dataset)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "transform", _transform, "Apply one named transformation to every inverted image: LMDB + manifest "
             "with provenance and LPIPS, report JSON.", shared=("config",))
    p.add_argument("--name", required=True, help="a transformation of latent.transform.file")
    p.add_argument("--network", required=True)
    p.add_argument("--sefa", required=True, help="the generator's sefa-<range>.npz")
    p.add_argument("--inversion", required=True, help="folder written by `invert`")
    p.add_argument("--lmdb", required=True, help="the real images' LMDB (for LPIPS to the source)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "lpips-table", _lpips_table, "The HAM10000 study's Table 1 (LPIPS per transformation).")
    p.add_argument("--reports", nargs="+", required=True, help="transform.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--data-source", required=True)
