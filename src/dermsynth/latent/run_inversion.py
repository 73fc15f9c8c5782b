"""`dermsynth train-e4e`, `train-hyperstyle` and `invert`: GAN inversion trained on the generator's own
training images, reported on held-out ones, then applied to a whole split (latents stored per key).

Stored inversion (a folder):
    index.csv           key, label, split, row (row of the arrays below)
    ws.npy              (N, num_ws, w_dim) float32 W+ latents from e4e
    offsets-<layer>-a.npy, offsets-<layer>-b.npy
                        (N, out, k) and (N, in, k) float16: HyperStyle's kernel offset of each conv
                        layer is Δ = a·bᵀ, the kernel used θ ⊙ (1 + Δ)
    report.json         reconstruction L2 / LPIPS / MS-SSIM of the e4e and the refined inversion
    preview.png         rows of target | e4e | HyperStyle
Chunks of `batch` images are written under chunks/ as they finish, so a killed job resumes there.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..outputs import tile, write_csv, write_json, write_png
from ..provenance import provenance
from .options import InvertOptions, TrainE4eOptions, TrainHyperstyleOptions
from .inversion import (E4eOptions, HyperStyleOptions, build_e4e, build_hypernetwork, checkpoint_differences, invert,
                        options_from, reconstruction_report, train_e4e, train_hyperstyle)


def _device(device):
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def holdout_split(keys: list[str], fraction: float, seed: int, limit: int) -> tuple[list[str], list[str]]:
    """(training keys, held-out keys): a seeded choice of `fraction` of the keys (at most `limit`) is held out."""
    rng = np.random.default_rng(seed)
    count = min(limit, max(1, int(round(len(keys) * fraction))))
    held = set(rng.choice(sorted(keys), size=count, replace=False).tolist())
    return [k for k in keys if k not in held], sorted(held)


def _gan_images(options: TrainE4eOptions | TrainHyperstyleOptions, lmdb_root, manifest):
    """(encoder training images, the store, held-out keys): the generator's training images (its `splits` and
    `classes`, as `train-gan` chose them), less a seeded held-out choice for the report."""
    from ..gan.run import LmdbTrainingImages, training_images
    images, _, _ = training_images(lmdb_root, manifest, {"splits": options.splits, "classes": options.classes})
    train_keys, held_keys = holdout_split(images.keys, options.holdout, options.holdout_seed, options.report_images)
    return LmdbTrainingImages(images.store, train_keys), images.store, held_keys


def _save_model(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load(path, build, options_class, weights_key: str, G, device):
    """A trained encoder or hypernetwork: rebuilt from its saved options (no backbone download), then its weights."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    options = options_class(**state["options"])
    model = build(G, options_class(**{**state["options"], "pretrained": False}))
    model.load_state_dict(state[weights_key])
    return model.to(device).eval(), options


def load_e4e(path, G, device="cpu"):
    return _load(path, build_e4e, E4eOptions, "encoder", G, device)


def load_hyperstyle(path, G, device="cpu"):
    return _load(path, build_hypernetwork, HyperStyleOptions, "hypernetwork", G, device)


def _set_aside_stale(checkpoint: Path, options, what: str) -> None:
    """A resume checkpoint written with other options is not resumed: it moves beside itself as
    <name>.superseded-<time>.pt (nothing is deleted) and training starts over."""
    import time
    if not checkpoint.exists():
        return
    differences = checkpoint_differences(checkpoint, options)
    if differences:
        aside = checkpoint.with_name(f"{checkpoint.stem}.superseded-{time.strftime('%Y%m%d-%H%M%S')}.pt")
        checkpoint.replace(aside)
        print(f"{what}: {checkpoint.name} was written with other options ({', '.join(differences)}); "
              f"moved to {aside.name}, training starts over", file=sys.stderr)


def _report(G, encoder, hyper, iterations, store, held_keys, device) -> dict:
    from ..data.dataset import read_images
    from ..metrics.extractors import lpips_alex
    targets = read_images(store, held_keys)
    alex, alex_info = lpips_alex()
    result = invert(G, encoder, targets, hyper, iterations, device)
    report = {"held_out_images": len(held_keys), "lpips": alex_info,
              "w_encoder": reconstruction_report(targets, result["stages"][0], alex)}
    if hyper is not None:
        report["per_iteration"] = [reconstruction_report(targets, stage, alex) for stage in result["stages"][1:]]
        report["hyperstyle"] = report["per_iteration"][-1]
    return report


def run_train_e4e(step: TrainE4eOptions, network, lmdb_root, manifest, out, device=None) -> dict:
    """Train an e4e encoder for generator `network` (`step.gan`) on its training images from `lmdb_root` /
    `manifest`, resuming from `<out>.resume.pt` when that was written with the same options; the encoder in
    `out` (.pt), a report beside it (.json: training history, held-out L2 / LPIPS-Alex / MS-SSIM). `device`:
    cpu/cuda (None: cuda when available). Returns the report."""
    from ..gan.run import load_generator
    from ..metrics.extractors import lpips_model
    device = _device(device)
    gan, options = step.gan, options_from(E4eOptions, step.e4e)
    G = load_generator(network, device)
    images, store, held_keys = _gan_images(step, lmdb_root, manifest)
    lpips, _ = lpips_model(net="alex")
    out = Path(out)
    checkpoint = out.with_name(out.stem + ".resume.pt")
    _set_aside_stale(checkpoint, options, f"train-e4e {gan}")
    encoder, history = train_e4e(G, images, options, lpips, checkpoint, device)
    _save_model(out, {"encoder": encoder.state_dict(), "options": asdict(options), "network": str(network)})
    checkpoint.unlink(missing_ok=True)
    report = _report(G, encoder, None, 0, store, held_keys, device)
    summary = {"gan": gan, "network": str(network), "training_images": len(images), "history": history,
               "backbone_weights": encoder.pyramid.weights, "report": report,
               "provenance": provenance(step.step, step.to_dict(), seed=options.seed)}
    write_json(out.with_suffix(".json"), summary)
    r = report["w_encoder"]
    print(f"e4e {gan}: held-out L2 {r['l2']:.4f}, LPIPS {r['lpips_alex']:.4f}, MS-SSIM {r['ms_ssim']:.4f}",
          file=sys.stderr)
    return summary


def run_train_hyperstyle(step: TrainHyperstyleOptions, network, e4e, lmdb_root, manifest, out, device=None) -> dict:
    """Train a HyperStyle hypernetwork for generator `network` (`step.gan`) on top of its e4e encoder `e4e`, on
    the generator's training images, resuming from `<out>.resume.pt` when that was written with the same
    options; the hypernetwork in `out` (.pt), a report beside it (.json: held-out L2 / LPIPS-Alex / MS-SSIM of
    e4e and after each refinement iteration). Returns the report."""
    from ..gan.run import load_generator
    from ..metrics.extractors import lpips_model
    device = _device(device)
    gan, options = step.gan, options_from(HyperStyleOptions, step.hyperstyle)
    G = load_generator(network, device)
    encoder, _ = load_e4e(e4e, G, device)
    images, store, held_keys = _gan_images(step, lmdb_root, manifest)
    lpips, _ = lpips_model(net="alex")
    out = Path(out)
    checkpoint = out.with_name(out.stem + ".resume.pt")
    _set_aside_stale(checkpoint, options, f"train-hyperstyle {gan}")
    hyper, history = train_hyperstyle(G, encoder, images, options, lpips, checkpoint, device)
    _save_model(out, {"hypernetwork": hyper.state_dict(), "options": asdict(options), "network": str(network),
                      "e4e": str(e4e)})
    checkpoint.unlink(missing_ok=True)
    report = _report(G, encoder, hyper, options.iterations, store, held_keys, device)
    summary = {"gan": gan, "network": str(network), "e4e": str(e4e), "training_images": len(images),
               "layers": hyper.layer_names, "history": history, "backbone_weights": hyper.pyramid.weights,
               "report": report, "refined_beats_w_encoder": report["hyperstyle"]["l2"] < report["w_encoder"]["l2"],
               "provenance": provenance(step.step, step.to_dict(), seed=options.seed)}
    write_json(out.with_suffix(".json"), summary)
    print(f"hyperstyle {gan}: held-out L2 {report['w_encoder']['l2']:.4f} (e4e) → {report['hyperstyle']['l2']:.4f} "
          f"after {options.iterations} iterations", file=sys.stderr)
    return summary


def run_invert(options: InvertOptions, network, e4e, hyperstyle, lmdb_root, manifest, out_dir, device=None) -> dict:
    """Invert every image of split `options.split` of a dataset (`lmdb_root`, `manifest`: the inversion's
    dataset) into generator `network` with its e4e encoder and HyperStyle hypernetwork, `options.batch` images at
    a time; each finished batch is kept under `<out_dir>.chunks/`, so a killed job resumes there. Writes the
    stored inversion (see the module docstring) to `out_dir` and returns its summary."""
    from ..data.dataset import read_images
    from ..data.lmdb_store import LmdbImageStore
    from ..gan.run import load_generator
    from ..progress import Progress
    device = _device(device)
    gan, split = options.gan, options.split
    G = load_generator(network, device)
    encoder, _ = load_e4e(e4e, G, device)
    hyper, hyper_options = load_hyperstyle(hyperstyle, G, device)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["split"] == split].sort_values("key").reset_index(drop=True)
    out_dir = Path(out_dir)
    chunks = out_dir.with_name(out_dir.name + ".chunks")
    chunks.mkdir(parents=True, exist_ok=True)
    store = LmdbImageStore(lmdb_root)
    batch = options.batch
    progress = Progress(len(frame), f"invert {gan}")
    plan = []
    for start in range(0, len(frame), batch):
        keys = frame["key"][start:start + batch].tolist()
        chunk = chunks / f"chunk-{start:08d}.pt"
        if not _chunk_holds(chunk, keys):  # a chunk of another batch size or manifest is recomputed
            result = invert(G, encoder, read_images(store, keys), hyper, hyper_options.iterations, device)
            _save_model(chunk, {"keys": keys, "ws": result["ws"],
                                "factors": {k: [a.half(), b.half()] for k, (a, b) in result["factors"].items()}})
        plan.append(chunk)
        progress.update(len(keys))
    progress.close()
    _merge_chunks(plan, out_dir, frame, hyper.layer_names)
    summary = {"gan": gan, "dataset_manifest": str(manifest), "split": split, "images": len(frame),
               "iterations": hyper_options.iterations, "layers": hyper.layer_names,
               "provenance": provenance(options.step, options.to_dict(), seed=None)}
    write_json(out_dir / "inversion.json", summary)
    _preview(G, store, frame, out_dir, encoder, hyper, hyper_options.iterations, device)
    shutil.rmtree(chunks)
    print(f"invert {gan}: {len(frame)} images of split {split}", file=sys.stderr)
    return summary


def _chunk_holds(chunk: Path, keys: list[str]) -> bool:
    """Whether a finished chunk holds exactly the inversions of `keys`, in that order."""
    if not chunk.exists():
        return False
    return torch.load(chunk, weights_only=True).get("keys") == keys


def _merge_chunks(plan: list[Path], out_dir: Path, frame: pd.DataFrame, layers: list[str]) -> None:
    """One folder from the chunks of `plan` (in order); every row of `frame` must be there exactly once.

    Raises RuntimeError when the chunks' keys or row counts do not add up to `frame`."""
    parts = [torch.load(p, weights_only=True) for p in plan]
    keys = [k for p in parts for k in p.get("keys", [])]
    rows = sum(len(p["ws"]) for p in parts)
    if keys != frame["key"].tolist() or rows != len(frame) or any(len(p["ws"]) != len(p["keys"]) for p in parts):
        raise RuntimeError(f"the inversion chunks hold {rows} rows for {len(keys)} keys, but the split has "
                           f"{len(frame)} images in another order or number; delete {plan[0].parent} and rerun")
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / "ws.npy", torch.cat([p["ws"] for p in parts]).float().numpy())
    for layer in layers:
        for i, side in enumerate("ab"):
            np.save(staging / f"offsets-{layer}-{side}.npy", torch.cat([p["factors"][layer][i] for p in parts]).numpy())
    index = frame[["key", "label", "split"]].copy()
    index["row"] = range(len(index))
    write_csv(staging / "index.csv", index)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def _preview(G, store, frame, out_dir: Path, encoder, hyper, iterations, device, count: int = 8) -> None:
    from ..data.dataset import read_images
    targets = read_images(store, frame["key"][:count].tolist())
    result = invert(G, encoder, targets, hyper, iterations, device)
    write_png(out_dir / "preview.png", tile(torch.stack([targets, result["stages"][0], result["stages"][-1]], dim=1)))


class StoredInversion:
    """Read access to an inversion folder: ws and HyperStyle offsets of chosen keys."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = pd.read_csv(self.folder / "index.csv", dtype={"key": str, "label": str, "split": str})
        self.rows = dict(zip(self.index["key"], self.index["row"]))
        self.ws = np.load(self.folder / "ws.npy", mmap_mode="r")
        self.layers = sorted({p.name[len("offsets-"):-len("-a.npy")] for p in self.folder.glob("offsets-*-a.npy")})
        self.factors = {layer: tuple(np.load(self.folder / f"offsets-{layer}-{s}.npy", mmap_mode="r") for s in "ab")
                        for layer in self.layers}

    def latents(self, keys: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(ws (N, num_ws, w_dim), {layer: Δ (N, out, in)}) of `keys`."""
        rows = [self.rows[k] for k in keys]
        ws = torch.from_numpy(np.ascontiguousarray(self.ws[rows]))
        deltas = {}
        for layer, (a, b) in self.factors.items():
            a_rows = torch.from_numpy(np.ascontiguousarray(a[rows])).float()
            b_rows = torch.from_numpy(np.ascontiguousarray(b[rows])).float()
            deltas[layer] = a_rows @ b_rows.transpose(1, 2)
        return ws, deltas
