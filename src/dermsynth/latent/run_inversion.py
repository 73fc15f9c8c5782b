"""`dermsynth latent train-e4e`, `train-hyperstyle` and `invert`: GAN inversion trained on the generator's own
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

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoints import KINDS, load_checkpoint
from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..errors import ConfigError, InputError
from ..fingerprint import differences, set_aside, store_identity, tensors_digest
from ..gan.run import LmdbTrainingImages, load_generator, training_images
from ..locks import exclusive
from ..metrics.extractors import lpips_alex, lpips_model
from ..outputs import atomic_path, check_writable, save_torch, write_csv, write_json
from ..progress import Progress
from ..provenance import provenance
from .identity import data_fingerprint, generator_digest, recorded_digest, require_generator
from .inversion import (E4eOptions, HyperStyleOptions, build_e4e, build_hypernetwork, checkpoint_differences, invert,
                        reconstruction_report, train_e4e, train_hyperstyle)
from .options import InvertOptions, TrainE4eOptions, TrainHyperstyleOptions


def holdout_split(keys: list[str], fraction: float, seed: int, limit: int) -> tuple[list[str], list[str]]:
    """(training keys, held-out keys): a seeded choice of `fraction` of the keys (at most `limit`) is held out."""
    rng = np.random.default_rng(seed)
    count = min(limit, max(1, int(round(len(keys) * fraction))))
    held = set(rng.choice(sorted(keys), size=count, replace=False).tolist())
    return [k for k in keys if k not in held], sorted(held)


def _gan_images(options: TrainE4eOptions | TrainHyperstyleOptions, lmdb_root, manifest):
    """(encoder training images, the store, held-out keys, the images' fingerprint): the generator's training
    images (its `splits` and `classes`, as `train-gan` chose them), less a seeded held-out choice for the
    report; the fingerprint names the store, the chosen keys, the classes and the resolution."""
    images, _, _ = training_images(lmdb_root, manifest, {"splits": options.splits, "classes": options.classes})
    if len(images.keys) < 2:
        raise ConfigError(f"{manifest}: the generator's splits {options.splits} (classes {options.classes or 'all'}) "
                          f"hold {len(images.keys)} image(s); an encoder needs at least 2 (one to train on, one held "
                          f"out): check gans.{options.gan}.splits/classes and the manifest")
    train_keys, held_keys = holdout_split(images.keys, options.holdout, options.holdout_seed, options.report_images)
    if not train_keys:
        raise ConfigError(f"latent.inversion.holdout {options.holdout} holds out all {len(images.keys)} images of "
                          f"gans.{options.gan}'s training set; lower it (or latent.inversion.report_images)")
    chosen = LmdbTrainingImages(images.store, train_keys)
    return chosen, images.store, held_keys, data_fingerprint(lmdb_root, train_keys, options.classes, chosen.shape[-1])


def _save_model(path: Path, payload: dict) -> None:
    save_torch(path, payload)  # a unique temporary name, renamed when complete


E4E_FIX = "train an e4e encoder for this generator (dermsynth latent train-e4e --network <it>)"
HYPERSTYLE_FIX = "train a HyperStyle hypernetwork for this generator and e4e (dermsynth latent train-hyperstyle)"


def _load(path, build, options_class, weights_key: str, kind: str, G, device, fix: str):
    """A trained encoder or hypernetwork (checkpoint kind `kind`) for generator `G`: refused in one line when it
    is another kind of file or was trained for another generator; rebuilt from its saved options (no backbone
    download), then its weights. Returns (model, options, its saved state)."""
    state = load_checkpoint(path, (kind,), KINDS[kind], f"give the {kind}.pt that train-{kind} wrote")
    require_generator(path, recorded_digest(state), generator_digest(G), "the generator given", fix)
    options = options_class(**state["options"])
    model = build(G, options_class(**{**state["options"], "pretrained": False}))
    model.load_state_dict(state[weights_key])
    return model.to(device).eval(), options, state


def load_e4e(path, G, device="cpu"):
    """(encoder, options) of the e4e checkpoint `path` for generator `G`. Raises WrongFileError (not an e4e
    checkpoint), ForeignComponentError (trained for another generator, or records none)."""
    model, options, _ = _load(path, build_e4e, E4eOptions, "encoder", "e4e", G, device, E4E_FIX)
    return model, options


def load_hyperstyle(path, G, device="cpu", encoder=None):
    """(hypernetwork, options) of the HyperStyle checkpoint `path` for generator `G` (and, when given, the e4e
    `encoder` it refines: it must have been trained on top of that one). Raises WrongFileError,
    ForeignComponentError."""
    model, options, state = _load(path, build_hypernetwork, HyperStyleOptions, "hypernetwork", "hyperstyle", G,
                                  device, HYPERSTYLE_FIX)
    if encoder is not None:
        require_generator(path, recorded_digest(state, "e4e"), tensors_digest(encoder.state_dict()),
                          "the e4e encoder given", HYPERSTYLE_FIX, what="e4e encoder")
    return model, options


def _set_aside_stale(checkpoint: Path, options, what: str, fingerprint: dict | None = None) -> None:
    """A resume checkpoint written with other options, for another generator or on other data is not resumed:
    it moves to `superseded-<time>/` beside itself (one line says so; nothing is deleted) and training starts
    over."""
    if not checkpoint.exists():
        return
    found = checkpoint_differences(checkpoint, options, fingerprint)
    if found:
        set_aside(checkpoint.parent, [checkpoint.name], f"{checkpoint.name} was written by another run "
                  f"({', '.join(found)})", what)


def _report(G, encoder, hyper, iterations, store, held_keys, device) -> dict:
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
    `manifest`, resuming from `<out>.resume.pt` when that was written by the same run (options, generator, data;
    otherwise it is set aside); the encoder in `out` (.pt, with the generator's and the data's fingerprint), a
    report beside it (.json: training history, held-out L2 / LPIPS-Alex / MS-SSIM). `device`: cpu/cuda (None:
    cuda when available). Holds `out`'s lock. Raises BusyError (another writer), OutputError (cannot write
    there), WrongFileError (`network` is not a generator). Returns the report."""
    device = choose_device(device)
    gan, options = step.gan, E4eOptions.from_section(step.e4e, where="train-e4e options' e4e")
    out = Path(out)
    check_writable(out.parent)
    with exclusive(out, "train-e4e"):
        G = load_generator(network, device)
        images, store, held_keys, data = _gan_images(step, lmdb_root, manifest)
        fingerprint = {**data, "generator": generator_digest(G)}
        lpips, _ = lpips_model(net="alex")
        checkpoint = out.with_name(out.stem + ".resume.pt")
        _set_aside_stale(checkpoint, options, f"train-e4e {gan}", fingerprint)
        encoder, history = train_e4e(G, images, options, lpips, checkpoint, device, fingerprint=fingerprint)
        _save_model(out, {"format": "e4e", "encoder": encoder.state_dict(), "options": asdict(options),
                          "network": str(network), "fingerprint": fingerprint})
        report = _report(G, encoder, None, 0, store, held_keys, device)
        summary = {"gan": gan, "network": str(network), "training_images": len(images), "history": history,
                   "backbone_weights": encoder.pyramid.weights, "report": report, "fingerprint": fingerprint,
                   "provenance": provenance(step.step, step.to_dict(), seed=options.seed)}
        write_json(out.with_suffix(".json"), summary)
        checkpoint.unlink(missing_ok=True)
    r = report["w_encoder"]
    print(f"e4e {gan}: held-out L2 {r['l2']:.4f}, LPIPS {r['lpips_alex']:.4f}, MS-SSIM {r['ms_ssim']:.4f}",
          file=sys.stderr)
    return summary


def run_train_hyperstyle(step: TrainHyperstyleOptions, network, e4e, lmdb_root, manifest, out, device=None) -> dict:
    """Train a HyperStyle hypernetwork for generator `network` (`step.gan`) on top of its e4e encoder `e4e` (which
    must have been trained for that generator), on the generator's training images, resuming from
    `<out>.resume.pt` when that was written by the same run (options, generator, e4e, data; otherwise it is set
    aside); the hypernetwork in `out` (.pt, with its fingerprint), a report beside it (.json: held-out L2 /
    LPIPS-Alex / MS-SSIM of e4e and after each refinement iteration). Holds `out`'s lock. Raises BusyError,
    OutputError, WrongFileError, ForeignComponentError (an e4e of another generator). Returns the report."""
    device = choose_device(device)
    gan = step.gan
    options = HyperStyleOptions.from_section(step.hyperstyle, where="train-hyperstyle options' hyperstyle")
    out = Path(out)
    check_writable(out.parent)
    with exclusive(out, "train-hyperstyle"):
        G = load_generator(network, device)
        encoder, _ = load_e4e(e4e, G, device)
        images, store, held_keys, data = _gan_images(step, lmdb_root, manifest)
        fingerprint = {**data, "generator": generator_digest(G), "e4e": tensors_digest(encoder.state_dict())}
        lpips, _ = lpips_model(net="alex")
        checkpoint = out.with_name(out.stem + ".resume.pt")
        _set_aside_stale(checkpoint, options, f"train-hyperstyle {gan}", fingerprint)
        hyper, history = train_hyperstyle(G, encoder, images, options, lpips, checkpoint, device,
                                          fingerprint=fingerprint)
        _save_model(out, {"format": "hyperstyle", "hypernetwork": hyper.state_dict(), "options": asdict(options),
                          "network": str(network), "e4e": str(e4e), "fingerprint": fingerprint})
        report = _report(G, encoder, hyper, options.iterations, store, held_keys, device)
        summary = {"gan": gan, "network": str(network), "e4e": str(e4e), "training_images": len(images),
                   "layers": hyper.layer_names, "history": history, "backbone_weights": hyper.pyramid.weights,
                   "report": report, "refined_beats_w_encoder": report["hyperstyle"]["l2"] < report["w_encoder"]["l2"],
                   "fingerprint": fingerprint, "provenance": provenance(step.step, step.to_dict(), seed=options.seed)}
        write_json(out.with_suffix(".json"), summary)
        checkpoint.unlink(missing_ok=True)
    print(f"hyperstyle {gan}: held-out L2 {report['w_encoder']['l2']:.4f} (e4e) → {report['hyperstyle']['l2']:.4f} "
          f"after {options.iterations} iterations", file=sys.stderr)
    return summary


def run_invert(options: InvertOptions, network, e4e, hyperstyle, lmdb_root, manifest, out_dir, device=None) -> dict:
    """Invert every image of split `options.split` of a dataset (`lmdb_root`, `manifest`: the inversion's
    dataset) into generator `network` with its e4e encoder and HyperStyle hypernetwork (both must belong to that
    generator, the hypernetwork to that e4e), `options.batch` images at a time; each finished batch is kept under
    `<out_dir>.chunks/` with the run's fingerprint, so a killed job resumes there (chunks of another run are
    recomputed). Writes the stored inversion (see the module docstring) to `out_dir`, holding its lock, and
    returns its summary. Raises BusyError, OutputError, WrongFileError, ForeignComponentError."""
    device = choose_device(device)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    with exclusive(out_dir, "invert"):
        return _invert_locked(options, network, e4e, hyperstyle, lmdb_root, manifest, out_dir, device)


def inversion_fingerprint(G, encoder, hyper, iterations: int, lmdb_root) -> dict:
    """What an inversion (and each of its chunks) belongs to: the generator, the e4e encoder, the hypernetwork,
    its refinement iterations and the image store."""
    return {"generator": generator_digest(G), "e4e": tensors_digest(encoder.state_dict()),
            "hyperstyle": tensors_digest(hyper.state_dict()), "iterations": int(iterations),
            "data.store": store_identity(lmdb_root)}


def _invert_locked(options: InvertOptions, network, e4e, hyperstyle, lmdb_root, manifest, out_dir: Path,
                   device) -> dict:
    gan, split = options.gan, options.split
    G = load_generator(network, device)
    encoder, _ = load_e4e(e4e, G, device)
    hyper, hyper_options = load_hyperstyle(hyperstyle, G, device, encoder=encoder)
    fingerprint = inversion_fingerprint(G, encoder, hyper, hyper_options.iterations, lmdb_root)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["split"] == split].sort_values("key").reset_index(drop=True)
    if frame.empty:
        raise InputError(f"{manifest}: split {split!r} holds no images to invert; choose another "
                         "latent.inversion.split (or dataset)")
    chunks = out_dir.with_name(out_dir.name + ".chunks")
    chunks.mkdir(parents=True, exist_ok=True)
    store = LmdbImageStore(lmdb_root)
    batch = options.batch
    progress = Progress(len(frame), f"invert {gan}")
    plan = []
    for start in range(0, len(frame), batch):
        keys = frame["key"][start:start + batch].tolist()
        chunk = chunks / f"chunk-{start:08d}.pt"
        if not _chunk_holds(chunk, keys, fingerprint):  # a chunk of another batch size, manifest or run: recomputed
            result = invert(G, encoder, read_images(store, keys), hyper, hyper_options.iterations, device)
            _save_model(chunk, {"keys": keys, "ws": result["ws"], "fingerprint": fingerprint,
                                "factors": {k: [a.half(), b.half()] for k, (a, b) in result["factors"].items()}})
        plan.append(chunk)
        progress.update(len(keys))
    progress.close()
    summary = {"gan": gan, "dataset_manifest": str(manifest), "split": split, "images": len(frame),
               "iterations": hyper_options.iterations, "layers": hyper.layer_names, "network": str(network),
               "e4e": str(e4e), "hyperstyle": str(hyperstyle), "fingerprint": fingerprint,
               "provenance": provenance(options.step, options.to_dict(), seed=None)}
    _preview(G, store, frame, out_dir, encoder, hyper, hyper_options.iterations, device)
    _merge_chunks(plan, out_dir, frame, hyper.layer_names, record=summary)
    shutil.rmtree(chunks)
    print(f"invert {gan}: {len(frame)} images of split {split}", file=sys.stderr)
    return summary


def chunk_fingerprint_matches(state: dict, fingerprint: dict | None) -> bool:
    """Whether a loaded chunk was written by the run with `fingerprint` (None: any run)."""
    return fingerprint is None or not differences(state.get("fingerprint"), fingerprint)


def _chunk_holds(chunk: Path, keys: list[str], fingerprint: dict | None = None) -> bool:
    """Whether a finished chunk holds exactly the inversions of `keys`, in that order, made by the run with
    `fingerprint` (generator, e4e, hypernetwork, iterations, store). An unreadable chunk holds nothing."""
    if not chunk.exists():
        return False
    try:
        state = torch.load(chunk, weights_only=True)
    except Exception:  # noqa: BLE001 — a truncated chunk (written before atomic saves) is recomputed
        return False
    return isinstance(state, dict) and state.get("keys") == keys and chunk_fingerprint_matches(state, fingerprint)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def _merge_chunks(plan: list[Path], out_dir: Path, frame: pd.DataFrame, layers: list[str],
                  record: dict | None = None) -> None:
    """One folder from the chunks of `plan` (in order); every row of `frame` must be there exactly once.
    `inversion.json` (`record`) is removed first and written last: a folder without it is incomplete (a kill
    while merging), and every file under a final name is complete.

    Raises RuntimeError when the chunks' keys or row counts do not add up to `frame`."""
    parts = [torch.load(p, weights_only=True) for p in plan]
    keys = [k for p in parts for k in p.get("keys", [])]
    rows = sum(len(p["ws"]) for p in parts)
    if keys != frame["key"].tolist() or rows != len(frame) or any(len(p["ws"]) != len(p["keys"]) for p in parts):
        raise RuntimeError(f"the inversion chunks hold {rows} rows for {len(keys)} keys, but the split has "
                           f"{len(frame)} images in another order or number; delete {plan[0].parent} and rerun")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INVERSION_RECORD).unlink(missing_ok=True)
    wanted = {f"offsets-{layer}-{side}.npy" for layer in layers for side in "ab"}
    for stale in out_dir.glob("offsets-*.npy"):  # layers of an earlier inversion into this folder
        if stale.name not in wanted:
            stale.unlink()
    _save_npy(out_dir / "ws.npy", torch.cat([p["ws"] for p in parts]).float().numpy())
    for layer in layers:
        for i, side in enumerate("ab"):
            offsets = torch.cat([p["factors"][layer][i] for p in parts]).numpy()
            _save_npy(out_dir / f"offsets-{layer}-{side}.npy", offsets)
    index = frame[["key", "label", "split"]].copy()
    index["row"] = range(len(index))
    write_csv(out_dir / "index.csv", index)
    write_json(out_dir / INVERSION_RECORD, record or {"images": len(frame), "layers": list(layers)})


def _preview(G, store, frame, out_dir: Path, encoder, hyper, iterations, device, count: int = 8) -> None:
    """preview.png, a labelled `figures.image_grid` of the first `count` images of `frame`: one row per image (its
    key and class), columns target | e4e inversion | after the HyperStyle iterations."""
    # deferred: matplotlib only for the preview; the review app imports this module for StoredInversion
    from ..figures import write_image_grid
    shown = frame.iloc[:count]
    targets = read_images(store, shown["key"].tolist())
    result = invert(G, encoder, targets, hyper, iterations, device)
    last = f"HyperStyle ×{len(result['stages']) - 1}" if len(result["stages"]) > 1 else "e4e (no HyperStyle)"
    write_image_grid(out_dir / "preview.png",
                     torch.stack([targets, result["stages"][0].cpu(), result["stages"][-1].cpu()], dim=1),
                     [f"{key} ({label})" for key, label in zip(shown["key"], shown["label"])],
                     ["target", "e4e", last],
                     f"inversion {out_dir.parent.name}/{out_dir.name}: {len(shown)} of {len(frame)} images, e4e then "
                     f"{len(result['stages']) - 1} HyperStyle iterations", row_title="image (class)")


INVERSION_RECORD = "inversion.json"


class StoredInversion:
    """Read access to an inversion folder: ws and HyperStyle offsets of chosen keys."""

    def __init__(self, folder: str | Path):
        """Open the inversion folder `folder`. Raises InputError (one line) when it is not a complete inversion
        (missing, a file, or without inversion.json, ws.npy or index.csv: a killed `invert`)."""
        self.folder = Path(folder)
        missing = [n for n in (INVERSION_RECORD, "index.csv", "ws.npy") if not (self.folder / n).is_file()]
        if not self.folder.is_dir() or missing:
            what = "does not exist" if not self.folder.exists() else "is not a folder" if not self.folder.is_dir() \
                else f"is not a complete inversion (no {', '.join(missing)}: an interrupted invert, or another folder)"
            raise InputError(f"{self.folder} {what}; give the folder `dermsynth latent invert` wrote (run it again to "
                             "complete it)")
        self.record = json.loads((self.folder / INVERSION_RECORD).read_text())
        self.index = pd.read_csv(self.folder / "index.csv", dtype={"key": str, "label": str, "split": str})
        self.rows = dict(zip(self.index["key"], self.index["row"]))
        self.ws = np.load(self.folder / "ws.npy", mmap_mode="r")
        self.layers = sorted({p.name[len("offsets-"):-len("-a.npy")] for p in self.folder.glob("offsets-*-a.npy")})
        self.factors = {layer: tuple(np.load(self.folder / f"offsets-{layer}-{s}.npy", mmap_mode="r") for s in "ab")
                        for layer in self.layers}

    def require_generator(self, G, network) -> None:
        """Raise ForeignComponentError unless this inversion was made with generator `G` (checkpoint `network`)."""
        require_generator(self.folder, (self.record.get("fingerprint") or {}).get("generator"), generator_digest(G),
                          network, "invert the images with this generator (dermsynth latent invert)")

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
