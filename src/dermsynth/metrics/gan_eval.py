"""Evaluate trained generators against their real training images: the ISIC study's Table 1 metrics.

`evaluate_gan` samples G_ema (seeds 0…n−1; a conditional generator gets classes in the proportions of
its real training set), extracts Inception, VGG16 and EfficientNet-Lite0 features, and writes one JSON per
generator: FID, KID, precision/recall (k = 3), α-precision/β-recall, authenticity, Fréchet distance and KID in
Lite0 features (`fd_lite0`, `kid_lite0`: the one feature space with real ImageNet weights offline, never
called FID), PPL in W, a memorisation
summary (and a CSV with every sample's nearest real image), the extractors used and whether the
numbers are comparable with published ones. Real-set features come from the real_features job
(`compute_real_features`, one per real reference: `results/metrics/real/<reference>/<extractor>.npz`, a declared
output of the workflow) or, by hand, from the cache under `results/metrics/cache/`; either way keyed by
(dataset, splits, classes, chosen images, extractor, weights, preprocessing). Feature networks and metrics are
built through `metrics.registry`.

`evaluate_images` computes the same image-set metrics (no PPL) for any image folder or LMDB store.
`snapshot_curve` gives FID/KID per training snapshot; `table1` collects the generators into a table.

Each evaluator counts both sets first and checks every metric's minimum sample sizes
(`preconditions`, docs/metrics.md) before extracting features: a metric below its minimum is written
as null with the reason under `undefined`, the rest computed; with no computable metric the command
stops with one line naming the minimums.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..checkpoints import GENERATOR_KINDS, load_checkpoint
from ..data.dataset import read_images
from ..data.images import error_text
from ..data.lmdb_store import INDEX_FILE, LmdbImageStore
from ..devices import choose_device
from ..errors import ConfigError, InputError
from ..figures import pyplot as plt
from ..fingerprint import store_identity
from ..gan.generate import network_classes
from ..gan.networks import seed_latents
from ..gan.pixels import to_uint8
from ..gan.run import generator_from_state, load_generator
from ..locks import exclusive
from ..outputs import check_writable, save_figure, write_csv, write_json
from ..progress import Progress
from ..provenance import provenance
from . import extractors as feature_nets
from . import generative, preconditions, registry
from .evaluate import (IMAGE_SET_METRICS, cached_real_features, feature_key, generative_metrics, read_features,
                       write_features)
from .generative import FidOptions, KidOptions
from .options import (EVALUATE_GAN_EXTRACTORS, GAN_CURVE_EXTRACTORS, EvaluateGanOptions, GanCurveOptions,
                      RealFeaturesOptions)
from .ppl import PplOptions

CACHE_DIR = Path("results/metrics/cache")


def feature_networks(names: tuple[str, ...] | list[str] = EVALUATE_GAN_EXTRACTORS) -> dict:
    """The registered feature networks `names` (`metrics.registry`) from the weights cache: by default Inception
    (FID/KID), VGG16 (precision/recall, α/β, authenticity, memorisation) and EfficientNet-Lite0
    (`fd_lite0`/`kid_lite0`, `metrics.lite0`), each random-init with a warning when its weights are not cached."""
    return registry.feature_networks(names)


# --- the real side -------------------------------------------------------------------------------
def real_reference(manifest: str | Path, splits: list[str], classes: list[str] | None, limit: int | None,
                   seed: int) -> pd.DataFrame:
    """Manifest rows of the generator's real images (its splits, its classes), a seeded subset if `limit`."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["split"].isin(splits)]
    if classes:
        frame = frame[frame["label"].isin(classes)]
    if len(frame) == 0:
        present = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        raise preconditions.TooFewImages(
            f"{manifest}: no real images in splits {splits} with classes {classes or 'any'} (the manifest has "
            f"splits {sorted(set(present['split']))}, classes {sorted(set(present['label']))}); choose splits and "
            f"classes that hold images")
    if limit is not None and limit < len(frame):
        frame = frame.sample(n=limit, random_state=seed).sort_values("key")
    return frame.reset_index(drop=True)


def reference_identity(dataset: str, splits: list[str], classes: list[str] | None, lmdb_root,
                       frame: pd.DataFrame) -> dict:
    """What identifies a real image set in the feature cache key: dataset, splits, classes, the LMDB's
    resolution and identity (`fingerprint.store_identity`: a store rebuilt with other pixels under the same keys
    is another set), a hash of the chosen keys and their count."""
    resolution = json.loads((Path(lmdb_root) / INDEX_FILE).read_text())["resolution"]
    return {"dataset": dataset, "split": "+".join(splits), "classes": ",".join(classes or []),
            "resolution": resolution, "store": store_identity(lmdb_root),
            "keys": hashlib.sha256("\n".join(frame["key"]).encode()).hexdigest()[:16], "count": len(frame)}


def real_features(lmdb_root, frame: pd.DataFrame, identity: dict, nets: dict, device, cache_dir=CACHE_DIR,
                  computed: str | Path | None = None) -> dict:
    """Features {extractor name: float64 (N, dim)} of the real images in `frame`. With `computed` (the folder the
    real_features job wrote, `<registered name>.npz`): its files, each used when it has this image set, extractor,
    weights and preprocessing, else extracted here with a warning (and not written). Without: from the cache
    under `cache_dir` (see `cached_real_features`), extracting only for the extractors that miss. The LMDB is
    read at most once."""
    images = {}

    def load():
        if "x" not in images:
            images["x"] = read_images(lmdb_root, frame["key"].tolist())
        return images["x"]
    out = {}
    for name, net in nets.items():
        if not computed:
            out[net.name] = cached_real_features(cache_dir, identity, net, load, device=device)
            continue
        out[net.name] = read_features(Path(computed) / f"{name}.npz", feature_key(identity, net))
        if out[net.name] is None:  # e.g. weights fetched since: extracted here, not written (not this job's output)
            print(f"warning: {computed}/{name}.npz is not of this image set, {net.name}'s weights and preprocessing; "
                  "extracting the real features here", file=sys.stderr)
            out[net.name] = net.features(load(), batch_size=64, device=device)
    return out


def compute_real_features(options: RealFeaturesOptions, lmdb_root, manifest, out_dir,
                          device: str | None = None) -> dict[str, Path]:
    """The real_features job: features of the real reference `options` selects (dataset, splits, classes,
    `real_samples` seeded with `seed`) in each of `options.extractors`, written to `out_dir/<name>.npz` with their
    cache key (`feature_key`); the extractors' current preprocessing must be the one in the options (else
    ConfigError: the options were written by another version). Holds `out_dir`'s lock. Raises BusyError,
    OutputError. Returns {extractor: path}."""
    device = choose_device(device)
    check_writable(out_dir)
    with exclusive(out_dir, "real-features"):
        return _real_features_locked(options, lmdb_root, manifest, Path(out_dir), device)


def _real_features_locked(options: RealFeaturesOptions, lmdb_root, manifest, out_dir: Path, device) -> dict[str, Path]:
    frame = real_reference(manifest, options.splits, options.classes, options.real_samples, options.seed)
    identity = reference_identity(options.dataset, options.splits, options.classes, lmdb_root, frame)
    nets = feature_networks(list(options.extractors))
    for name, net in nets.items():
        if net.preprocessing != options.extractors[name]:
            raise ConfigError(f"extractor {name}: its preprocessing {net.preprocessing} is not the one in the "
                              f"options ({dict(options.extractors[name])}); let the workflow write them again")
    images = read_images(lmdb_root, frame["key"].tolist())
    written = {}
    for name, net in nets.items():
        features = net.features(images, batch_size=64, device=device)
        written[name] = write_features(out_dir / f"{name}.npz", features, feature_key(identity, net))
    print(f"real-features {options.reference}: {len(frame)} images × {', '.join(nets)} → {out_dir}", file=sys.stderr)
    return written


# --- the generated side --------------------------------------------------------------------------
def class_schedule(G, classes: list[str], real_labels: pd.Series, count: int, seed: int) -> list[int | None]:
    """The class index of every generated sample: real label proportions for a conditional G."""
    if G.c_dim == 0:
        return [None] * count
    shares = real_labels.value_counts(normalize=True)
    rng = np.random.default_rng(seed)
    names = rng.choice(shares.index.to_numpy(), size=count, p=shares.to_numpy())
    return [classes.index(name) for name in names]


@torch.no_grad()
def generated_features(G, nets: dict, count: int, class_indices: list[int | None], truncation_psi: float,
                       batch: int, device, label: str = "generate") -> dict:
    """Features of images for seeds 0…count−1 (z from each seed, as `dermsynth gan generate`), extracted
    batch by batch so that 50k generated images never sit in memory together."""
    G = G.to(device)
    progress = Progress(count, label, unit="img")
    features = {net.name: [] for net in nets.values()}
    for start in range(0, count, batch):
        seeds = range(start, min(start + batch, count))
        z = seed_latents(seeds, G.z_dim).to(device)
        c = None
        if G.c_dim > 0:
            c = torch.zeros(len(seeds), G.c_dim, device=device)
            c[torch.arange(len(seeds)), torch.tensor([class_indices[s] for s in seeds])] = 1
        images = G(z, c, truncation_psi=truncation_psi, noise_mode="const")
        images = to_uint8(images, device=None)  # features are extracted where the images were made
        for net in nets.values():
            features[net.name].append(net.features(images, batch_size=batch, device=device, progress=False))
        progress.update(len(seeds))
    progress.close()
    return {name: np.concatenate(parts) for name, parts in features.items()}


def _extract(nets: dict, images: torch.Tensor, batch: int, device) -> dict:
    return {net.name: net.features(images, batch_size=batch, device=device) for net in nets.values()}


def _memorisation_table(result: dict, real_keys: list[str], sample_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"sample": sample_ids, "nearest_real": [real_keys[i] for i in result["nearest_real"]],
                         "distance": np.round(result["distance"], 6), "ratio": np.round(result["ratio"], 6),
                         "copy": result["copy"]})


def _real_advice(options, manifest, subset: bool) -> str:
    ev = options.evaluation
    return (f"give gans.{options.gan} more real images (its splits {options.splits}"
            + (f" and classes {options.classes}" if options.classes else "") + f" in {manifest}"
            + (f"; evaluation.real_samples: {ev['real_samples']}" if subset and ev["real_samples"] else "") + ")")


def evaluate_gan(options: EvaluateGanOptions, network: str | Path, lmdb_root: str | Path, manifest: str | Path,
                 out_json: str | Path, out_memorisation: str | Path, device: str | None = None,
                 cache_dir: str | Path = CACHE_DIR, real_features_dir: str | Path | None = None) -> dict:
    """Evaluate generator `options.gan` (checkpoint `network`) against its real training images (`lmdb_root`,
    `manifest`; `options`: its dataset/splits/classes and the `evaluation` settings): FID/KID in Inception
    features, FD/KID in Lite0 features, precision/recall and α/β/authenticity in VGG16 features (metrics and
    extractors from `metrics.registry`), PPL in W, memorisation. Real features: from `real_features_dir` (the
    real_features job's files) when given and matching, else cached under `cache_dir`. Writes the metrics JSON
    (extractor weights, provenance) and the memorisation CSV (one row per generated sample); returns the
    metrics. Metrics that the sample sizes cannot support are null with a reason (metrics/preconditions.py);
    raises TooFewImages when none can be computed, BusyError (another writer of `out_json`), OutputError."""
    device = choose_device(device)
    for folder in {Path(out_json).parent, Path(out_memorisation).parent}:
        check_writable(folder)
    with exclusive(out_json, "evaluate-gan"):
        return _evaluate_gan_locked(options, network, lmdb_root, manifest, out_json, out_memorisation, device,
                                    cache_dir, real_features_dir)


def _evaluate_gan_locked(options: EvaluateGanOptions, network, lmdb_root, manifest, out_json, out_memorisation,
                         device, cache_dir, real_features_dir) -> dict:
    name, ev = options.gan, options.evaluation
    G = load_generator(network, device)
    classes, _ = network_classes(network)
    frame = real_reference(manifest, options.splits, options.classes, ev["real_samples"], ev["seed"])
    undefined = preconditions.check(
        len(frame), ev["fake_samples"], IMAGE_SET_METRICS + ["memorisation"], ev["k"], f"evaluate-gan {name}",
        {"real": _real_advice(options, manifest, subset=True), "generated": "raise evaluation.fake_samples"})
    nets = feature_networks(EVALUATE_GAN_EXTRACTORS)
    identity = reference_identity(options.dataset, options.splits, options.classes, lmdb_root, frame)
    real = real_features(lmdb_root, frame, identity, nets, device, cache_dir, real_features_dir)
    schedule = class_schedule(G, classes, frame["label"], ev["fake_samples"], ev["seed"])
    fake = generated_features(G, nets, ev["fake_samples"], schedule, ev["truncation_psi"], ev["batch"], device,
                              f"evaluate-gan {name}")
    metrics = generative_metrics(real, fake, nets, kid_subset=ev["kid_subset"], k=ev["k"], undefined=undefined)
    lpips_vgg, lpips_info = feature_nets.lpips_model(net="vgg")
    ppl = registry.metric("ppl").compute(G, lpips_vgg, PplOptions(samples=ev["ppl_samples"], batch=ev["batch"],
                                                                  seed=ev["seed"]), device=device)
    copies = generative.memorisation(real[nets["vgg16"].name], fake[nets["vgg16"].name], ev["copy_ratio"])
    write_csv(out_memorisation, _memorisation_table(copies, frame["key"].tolist(),
                                                    [f"seed{s:07d}" for s in range(ev["fake_samples"])]))
    result = {"gan": name, "network": str(network), **metrics,
              "ppl": ppl["ppl"], "ppl_details": {**ppl, "lpips": lpips_info},
              "memorisation": {"copies": copies["copies"], "samples": ev["fake_samples"],
                               "copy_ratio_threshold": ev["copy_ratio"],
                               "median_ratio": float(np.median(copies["ratio"])), "features": nets["vgg16"].name},
              "real_reference": {"dataset": options.dataset, "splits": options.splits,
                                 "classes": options.classes or "all", "images": len(frame)},
              "generated": {"seeds": f"0-{ev['fake_samples'] - 1}", "truncation_psi": ev["truncation_psi"],
                            "classes": {classes[i]: schedule.count(i) for i in sorted(set(schedule))}
                            if G.c_dim else "unconditional"},
              "comparable_to_published": metrics["comparable_to_published"] and lpips_info["comparable_to_published"],
              "provenance": provenance(options.step, options.to_dict(), seed=ev["seed"])}
    write_json(out_json, result)
    print(f"evaluate-gan {name}: {summary(result)}, PPL {result['ppl']:.1f}", file=sys.stderr)
    return result


def summary(result: dict) -> str:
    """One line of the main metrics; an undefined one prints as `n/a`."""
    def show(key, digits):
        return "n/a" if result.get(key) is None else f"{result[key]:.{digits}f}"
    line = (f"FID {show('fid', 3)}  KID×100 {show('kid_percent', 4)}  precision {show('precision', 3)}  "
            f"recall {show('recall', 3)}  α-precision {show('alpha_precision', 3)}  β-recall {show('beta_recall', 3)}"
            f"  authenticity {show('authenticity', 3)}")
    if "fd_lite0" in result:
        line += (f"  FD_lite0 {show('fd_lite0', 3)}  KID_lite0×100 {show('kid_lite0_percent', 4)}"
                 f" (Lite0 real weights: {str(bool(result.get('lite0_real_weights'))).lower()})")
    return line


# --- any image set ---------------------------------------------------------------------------------
# dermsynth's own records in an image folder (generate --format png, generate --neighbors): noted, not images
OWN_RECORDS = ("manifest.csv", "generate.json", "neighbors.json", "neighbors.npz")


def load_image_set(path: str | Path, limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """uint8 images (N, 3, H, W) and their names of an image set (see `read_image_set`, which also says what
    was left out)."""
    images, names, _ = read_image_set(path, limit)
    return images, names


def read_image_set(path: str | Path, limit: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
    """uint8 images (N, 3, H, W), their names and what was left out ({"file", "reason"} each), from a folder of
    image files or a dermsynth LMDB store (the store itself, or a folder holding it as `lmdb/`, as `dermsynth
    gan generate --format lmdb` and the data stage write).

    A folder is read whole: its sub-folders and symbolically linked folders too (a link to a folder already read
    — a loop, or a second link — is left out, so no image counts twice), images named by their path in the
    folder, in name order, the first `limit` (the rest left out as beyond the limit). An image is whatever Pillow
    decodes (PNG, JPEG, WebP, JFIF, GIF, TIFF, BMP, …; the first frame of an animation), converted to RGB.
    Left out, and said: hidden files (locks, temporary files), links to nothing, non-regular files, dermsynth's
    own records (`manifest.csv`, `generate.json`, …; a manifest must list PNGs that are there). Raises
    InputError naming every file that cannot be decoded (the metrics depend on exactly which images are in the
    set), a manifest that lists missing images, and images of several sizes."""
    path = Path(path)
    if (path / "lmdb" / INDEX_FILE).exists():
        path = path / "lmdb"
    if (path / INDEX_FILE).exists():  # an LMDB store
        store = LmdbImageStore(path)
        keys = store.keys()
        left = [{"file": k, "reason": f"beyond the limit of {limit} images"} for k in keys[limit:]] if limit else []
        images = read_images(store, keys[:limit])
        store.close()
        return images, keys[:limit], left
    if not path.is_dir():
        raise InputError(f"{path}: not a folder; give a folder of images of one size, or a dermsynth LMDB store")
    files, left = _walk_folder(path)
    _check_manifests(path, files, left)
    candidates = sorted((f for f in files if f.name not in OWN_RECORDS), key=lambda f: f.relative_to(path).as_posix())
    if not candidates:
        raise InputError(f"{path}: no image files and no LMDB index.json; give a folder of images of one size, "
                         f"or a dermsynth LMDB store")
    arrays, names, problems = _decode(path, candidates, limit, left)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"{path}: every file in the folder is read as an image, and {len(problems)} cannot be "
                         f"decoded: {shown}. Move them out of the folder, or re-save them as PNG")
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise InputError(f"{path}: images have different sizes {sorted(sizes)[:3]}…; resize them to one size first")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), names, left


def _walk_folder(root: Path) -> tuple[list[Path], list[dict]]:
    """Every regular file under `root`, sub-folders and linked folders included (each real folder read once),
    and what was left out with the reason."""
    files, left = [], []
    seen = {root.resolve()}
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            left.append({"file": _relative(root, folder), "reason": f"folder cannot be read ({exc.strerror or exc})"})
            continue
        for entry in entries:
            reason = _left_out(entry, seen)
            if reason:
                left.append({"file": _relative(root, entry), "reason": reason})
            elif entry.is_dir():
                seen.add(entry.resolve())
                folders.append(entry)
            else:
                files.append(entry)
    return files, left


def _left_out(entry: Path, seen: set) -> str | None:
    """Why `entry` is not read (None: it is read, or walked into when a folder)."""
    if entry.name.startswith("."):
        return "hidden file or folder (a lock, a temporary file of a running or killed writer, or hidden on purpose)"
    if entry.is_symlink() and not entry.exists():
        return f"symbolic link to nothing ({entry.readlink()})"
    if entry.is_dir():
        real = entry.resolve()
        if real in seen:
            return f"a link to a folder already read ({real}): a loop, or the same folder twice"
        return None
    if not entry.is_file():
        return "not a regular file"
    if entry.name.endswith(".lock"):
        return "dermsynth's lock file"
    return None


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _check_manifests(root: Path, files: list[Path], left: list[dict]) -> None:
    """A dermsynth manifest.csv (with a key column) in the folder must list PNGs that are there (`generate`
    writes `<key>.png` beside it); it is noted as left out (not an image). Raises InputError when it lists
    images that are missing."""
    present = {f for f in files}
    for manifest in [f for f in files if f.name in OWN_RECORDS]:
        left.append({"file": _relative(root, manifest), "reason": "dermsynth's own record of the images, not an image"})
        if manifest.name != "manifest.csv":
            continue
        try:
            keys = pd.read_csv(manifest, dtype=str, keep_default_na=False).get("key")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
            keys = None
        if keys is None:
            continue
        missing = [k for k in keys if manifest.parent / f"{k}.png" not in present]
        if missing:
            raise InputError(f"{manifest} lists {len(missing)} image(s) that are not in its folder "
                             f"({', '.join(f'{k}.png' for k in missing[:3])}{'…' if len(missing) > 3 else ''}): an "
                             "interrupted `dermsynth gan generate`, or images moved away; generate them again, or "
                             "remove the manifest")


def _decode(root: Path, candidates: list[Path], limit: int | None, left: list[dict]):
    """(RGB arrays, names, problems) of the first `limit` decodable candidates; the rest noted in `left`."""
    arrays, names, problems = [], [], []
    for f in candidates:
        name = _relative(root, f)
        if limit is not None and len(arrays) >= limit:
            left.append({"file": name, "reason": f"beyond the limit of {limit} images (--samples)"})
            continue
        try:
            with Image.open(f) as image:
                image.seek(0)
                arrays.append(np.asarray(image.convert("RGB")))
                names.append(name)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"{name} ({error_text(exc)})")
    return arrays, names, problems


def left_out_line(path, left: list[dict]) -> str:
    """One line saying what of image set `path` was left out and why (counts per reason, a few files each)."""
    by_reason: dict[str, list[str]] = {}
    for item in left:
        by_reason.setdefault(item["reason"], []).append(item["file"])
    parts = [f"{len(files)} {reason} ({', '.join(files[:3])}{'…' if len(files) > 3 else ''})"
             for reason, files in by_reason.items()]
    return f"evaluate-images {path}: left out {len(left)} entries: " + "; ".join(parts)


def evaluate_images(images_path, lmdb_root, manifest, splits: list[str], classes: list[str] | None,
                    out_json, evaluation: Mapping, samples: int | None = None, real_samples: int | None = None,
                    device: str | None = None, cache_dir=CACHE_DIR) -> dict:
    """The same metrics as `evaluate_gan` for a folder or LMDB of already generated images against the real
    images of `splits` (and `classes`) in the manifest; writes and returns the metrics JSON (`left_out`: what of
    the set was not read and why, also said in one line on stderr). `evaluation`: the settings of the config's
    `evaluation` section read here (`seed` of the real subset, `batch`, `k`, `kid_subset`; the verb passes the
    schema's defaults). Holds `out_json`'s lock. Raises InputError for unreadable image sets (see
    `read_image_set`), BusyError, OutputError."""
    device = choose_device(device)
    check_writable(Path(out_json).parent)
    with exclusive(out_json, "evaluate-images"):
        return _evaluate_images_locked(images_path, lmdb_root, manifest, splits, classes, out_json, samples,
                                       real_samples, evaluation, device, cache_dir)


def _evaluate_images_locked(images_path, lmdb_root, manifest, splits, classes, out_json, samples, real_samples,
                            evaluation, device, cache_dir) -> dict:
    seed, batch, k = evaluation["seed"], evaluation["batch"], evaluation["k"]
    images, names, left = read_image_set(images_path, samples)
    if left:
        print(left_out_line(images_path, left), file=sys.stderr)
    frame = real_reference(manifest, splits, classes, real_samples, seed)
    undefined = preconditions.check(
        len(frame), len(names), IMAGE_SET_METRICS, k, f"evaluate-images {images_path}",
        {"generated": f"add images to {images_path}" + (" or raise --samples" if samples is not None else ""),
         "real": f"choose more real images (splits {splits}" + (f", classes {classes}" if classes else "")
                 + f" of {manifest}" + (", --real-samples" if real_samples is not None else "") + ")"})
    nets = feature_networks(EVALUATE_GAN_EXTRACTORS)
    identity = reference_identity(Path(lmdb_root).parent.name, splits, classes, lmdb_root, frame)
    real = real_features(lmdb_root, frame, identity, nets, device, cache_dir)
    metrics = generative_metrics(real, _extract(nets, images, batch, device), nets,
                                 kid_subset=evaluation["kid_subset"], k=k, undefined=undefined)
    result = {"images": str(images_path), "n_images": len(names), "left_out": left, **metrics,
              "real_reference": {"lmdb": str(lmdb_root), "splits": splits, "classes": classes or "all",
                                 "images": len(frame)},
              "provenance": provenance("evaluate-images", {"splits": splits, "classes": classes}, seed=seed)}
    write_json(out_json, result)
    return result


# --- snapshots and the table -------------------------------------------------------------------------
def _snapshot_row(path: Path, options: GanCurveOptions, real: dict, nets: dict, classes, frame, kid_size: int,
                  device) -> dict:
    """One snapshot's CSV row: FID/KID (Inception) and FD/KID in Lite0 features through the metric registry."""
    ev = options.evaluation
    state = load_checkpoint(path, GENERATOR_KINDS, "a generator snapshot",
                            "move it out of the generator's folder (or delete it), then run gan-curve again",
                            map_location=device)
    state_kimg, G = state["nimg"] / 1000, generator_from_state(state, device)
    del state  # D and the optimisers are not needed
    schedule = class_schedule(G, classes, frame["label"], ev["snapshot_samples"], ev["seed"])
    fake = generated_features(G, nets, ev["snapshot_samples"], schedule, ev["truncation_psi"], ev["batch"],
                              device, f"snapshot {path.name}")
    values = {}
    for space, net in nets.items():
        values.update(registry.compute_metric("fid", space, real[net.name], fake[net.name], FidOptions()))
        values.update(registry.compute_metric("kid", space, real[net.name], fake[net.name],
                                              KidOptions(subset_size=kid_size)))
    inc, lite = nets["inception"], nets["lite0"]
    return {"snapshot": path.name, "kimg": state_kimg, "fid": values["fid"], "kid": values["kid"],
            "fd_lite0": values["fd_lite0"], "kid_lite0": values["kid_lite0"],
            "n_fake": len(fake[inc.name]), "n_real": len(real[inc.name]), "inception_weights": inc.weights,
            "lite0_weights": lite.weights, "lite0_real_weights": lite.real_weights}


def snapshot_curve(options: GanCurveOptions, network: str | Path, lmdb_root, manifest, out_csv, out_png,
                   device: str | None = None, cache_dir=CACHE_DIR, real_features_dir=None) -> pd.DataFrame:
    """FID and KID (Inception) of every training snapshot next to `network` (generator `options.gan`), against
    its real reference, and FD/KID in EfficientNet-Lite0 features (`fd_lite0`, `kid_lite0`) beside them, from
    `options.evaluation`'s `snapshot_samples` generated images each. Real features as `evaluate_gan`. Writes one
    CSV row per snapshot (kimg, fid, kid, fd_lite0, kid_lite0, sample counts, each extractor's weights) and a
    figure of FID and FD_lite0 over kimg; returns the table. Holds `out_csv`'s lock. Raises ValueError without
    snapshots, TooFewImages when FID and KID are both undefined, WrongFileError for a snapshot that is not a
    generator checkpoint (truncated), BusyError, OutputError."""
    device = choose_device(device)
    for folder in {Path(out_csv).parent, Path(out_png).parent}:
        check_writable(folder)
    with exclusive(out_csv, "gan-curve"):
        return _snapshot_curve_locked(options, network, lmdb_root, manifest, out_csv, out_png, device, cache_dir,
                                      real_features_dir)


def _snapshot_curve_locked(options: GanCurveOptions, network, lmdb_root, manifest, out_csv, out_png, device,
                           cache_dir, real_features_dir) -> pd.DataFrame:
    ev = options.evaluation
    snapshots = sorted(Path(network).parent.glob("network-snapshot-step*.pt"))
    if not snapshots:
        raise ValueError(f"{Path(network).parent}: no network-snapshot-step*.pt files to evaluate")
    classes, _ = network_classes(network)
    frame = real_reference(manifest, options.splits, options.classes, ev["real_samples"], ev["seed"])
    preconditions.check(len(frame), ev["snapshot_samples"], ["fid", "kid"], k=None, what=f"gan-curve {options.gan}",
                        advice={"real": _real_advice(options, manifest, subset=False),
                                "generated": "raise evaluation.snapshot_samples"})
    nets = feature_networks(GAN_CURVE_EXTRACTORS)
    identity = reference_identity(options.dataset, options.splits, options.classes, lmdb_root, frame)
    real = real_features(lmdb_root, frame, identity, nets, device, cache_dir, real_features_dir)
    kid_size = min(ev["kid_subset"], len(frame), ev["snapshot_samples"])
    table = pd.DataFrame([_snapshot_row(path, options, real, nets, classes, frame, kid_size, device)
                          for path in snapshots])
    write_csv(out_csv, table)
    _plot_curve(table, options.gan, out_png, nets["inception"].real_weights, nets["lite0"].real_weights)
    return table


def _plot_curve(table: pd.DataFrame, name: str, out_png, real_weights: bool, lite0_real_weights: bool | None = None
                ) -> None:
    """FID over kimg (left) and, when the table has `fd_lite0`, FD in Lite0 features over kimg (right). Axis labels
    carry their units (kimg: thousands of real images shown to D; FID/FD: squared distance of feature
    statistics), each panel names its feature space and whether its network has its published weights
    ("random-init" in the title when not)."""
    lite = "fd_lite0" in table
    fig, axes = plt.subplots(1, 2 if lite else 1, figsize=(9 if lite else 5, 3.4), dpi=120, squeeze=False)
    kimg_label = "training progress (kimg: thousands of real images shown)"
    ax = axes[0, 0]
    ax.plot(table["kimg"], table["fid"], marker="o")
    ax.set_xlabel(kimg_label, fontsize=8)
    ax.set_ylabel("FID (Inception-v3 pool features)", fontsize=8)
    weights = ("published Inception weights" if real_weights
               else "random-init Inception:\nnot comparable to published FIDs")
    ax.set_title(f"{name}: FID over training ({weights})", fontsize=8)
    ax.grid(alpha=0.3)
    if lite:
        ax = axes[0, 1]
        ax.plot(table["kimg"], table["fd_lite0"], marker="o", color="tab:green")
        ax.set_xlabel(kimg_label, fontsize=8)
        ax.set_ylabel("FD in EfficientNet-Lite0 features", fontsize=8)
        weights = "ImageNet weights" if lite0_real_weights else "random-init weights"
        ax.set_title(f"{name}: FD_lite0 over training (Lite0 {weights};\nnot an FID)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        save_figure(out_png, fig)
    finally:
        plt.close(fig)


def read_report(path, key: str, what: str, fix: str) -> dict:
    """The JSON report (a dict) at `path`, which must be `what` (hold `key`); `fix` says where the right file comes
    from. Raises InputError (one line) for a missing, truncated or foreign file."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as {what} ({getattr(exc, 'strerror', None) or exc}); {fix}") from None
    if not isinstance(report, dict) or key not in report:
        raise InputError(f"{path} is not {what} (it has no '{key}'); {fix}")
    return report


TABLE1_COLUMNS = {"gan": "GAN", "kid_percent": "KID (%)", "fid": "FID", "precision": "Precision",
                  "recall": "Recall", "ppl": "PPL"}
LITE0_COLUMNS = {"fd_lite0": "FD_lite0", "kid_lite0_percent": "KID_lite0 (%)"}


def table1(metric_files: list[str | Path], out_csv, data_source: str) -> pd.DataFrame:
    """The ISIC study's Table 1 (KID %, FID, precision, recall, PPL per generator) plus the columns that
    say how far the numbers can be trusted (sample counts, real weights or not, data source). When the metric
    files have them: FD and KID (%) in EfficientNet-Lite0 features (`FD_lite0`, `KID_lite0 (%)`) and whether
    those came from ImageNet weights (`Lite0 real weights`); `real weights` is about Inception, VGG16 and LPIPS."""
    rows = []
    for path in metric_files:
        m = read_report(path, "gan", "an evaluate-gan metrics file", "give the JSON files evaluate-gan wrote")
        rows.append({**{label: m[key] for key, label in TABLE1_COLUMNS.items()},
                     "α-precision": m["alpha_precision"], "β-recall": m["beta_recall"],
                     "authenticity": m["authenticity"], "copies": m["memorisation"]["copies"],
                     "generated": m["n_fake"], "real": m["n_real"],
                     "real weights": m["comparable_to_published"], "data": data_source,
                     "undefined": "; ".join(dict.fromkeys(m.get("undefined", {}).values()))})
        if "fd_lite0" in m:
            rows[-1].update({label: m[key] for key, label in LITE0_COLUMNS.items()})
            rows[-1]["Lite0 real weights"] = bool(m.get("lite0_real_weights"))
    table = pd.DataFrame(rows)
    if "FD_lite0" in table:  # the study's columns, then the Lite0 ones beside them
        first = [c for c in [*TABLE1_COLUMNS.values(), *LITE0_COLUMNS.values(), "Lite0 real weights"] if c in table]
        table = table[first + [c for c in table.columns if c not in first]]
    numeric = ["KID (%)", "FID", "Precision", "Recall", "PPL", "α-precision", "β-recall", "authenticity"]
    numeric += [label for label in LITE0_COLUMNS.values() if label in table]
    table[numeric] = table[numeric].astype(float).round(4)
    write_csv(out_csv, table)
    return table
