"""`dermsynth` verbs of the explain stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb, set_threads


def _config(args):
    from ..config import load_config
    return load_config(args.config)


def _authenticity(args) -> None:
    from ..explain.authenticity import run_authenticity
    cfg = _config(args)
    set_threads(args.threads)
    run_authenticity(cfg, args.gan, args.network, args.projection, args.lmdb, args.classifier, args.out,
                     device=args.device)


def _crp(args) -> None:
    from ..explain.crp import run_crp
    cfg = _config(args)
    set_threads(args.threads)
    run_crp(cfg, args.models, args.sizes, args.lmdb, args.manifest, args.out, device=args.device)


def _pcx(args) -> None:
    from ..explain.pcx import run_pcx
    cfg = _config(args)
    set_threads(args.threads)
    run_pcx(cfg, args.models, args.sizes, args.crp, args.lmdb, args.manifest, args.out, device=args.device)


def add_verbs(sub) -> None:
    """Declare the explain stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "authenticity", _authenticity, "Real images and their projections embedded by a classifier: "
             "cosine distances, nearest neighbours and memorisation flags, 3-D t-SNE, edge and central cases.", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--projection", required=True, help="the projection .npz of `dermsynth project`")
    p.add_argument("--lmdb", required=True, help="the real images' LMDB store")
    p.add_argument("--classifier", required=True, help="a classifier folder (best.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "crp", _crp, "Concept Relevance Propagation of one architecture's HAM10000 baseline and best "
             "filtered SA model: top concepts, conditional heatmaps and reference images of chosen test images.", shared=("config",))
    p.add_argument("--models", nargs="+", required=True, help="the architecture's HAM10000 model folders")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order (for the Table 3 choice)")
    p.add_argument("--lmdb", required=True, help="the classifiers' dataset LMDB")
    p.add_argument("--manifest", required=True, help="its manifest.csv (splits)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "pcx", _pcx, "Prototypical concept-based explanations of one class for the same two models: "
             "Gaussian-mixture prototypes of concept relevances, test images assigned or flagged as novelties.", shared=("config",))
    p.add_argument("--models", nargs="+", required=True, help="the architecture's HAM10000 model folders")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order (for the Table 3 choice)")
    p.add_argument("--crp", required=True, help="the `dermsynth crp` output folder (cached concept relevances)")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
