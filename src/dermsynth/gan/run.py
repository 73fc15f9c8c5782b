"""`dermsynth train-gan`: train one configured generator, with snapshots, logs and resume.

Output folder (`results/gan/<name>/`):
    network-snapshot-step<N>.pt   full training state every `snapshot_kimg` (resume points)
    fakes-step<N>.png             G_ema samples for fixed seeds at that snapshot
    training_log.jsonl            one line per logged step: kimg, losses, p, sec/kimg, memory
    tensorboard/                  the same scalars for TensorBoard
    network-final.pt (+ .json)    the finished state; G_ema is what later stages use

Run again after a kill and it continues from the newest snapshot. Under `torchrun` (several processes)
every rank trains on its slice of each batch and rank 0 writes everything. Training images are read
from the LMDB batch by batch, so memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..labels import scheme_classes
from ..outputs import tile, write_json, write_png
from ..progress import Progress
from ..provenance import provenance
from .distributed import join_world, leave_world
from .networks import Generator, seed_latents
from .ops import fused
from .options import TrainGanOptions
from .training import GanTrainer, TrainingOptions

OPTION_KEYS = ("batch", "g_lr", "d_lr", "r1_gamma", "pl_weight", "style_mixing_prob", "ema_kimg", "mirror",
               "augment", "augment_p", "ada_target", "ada_kimg", "seed", "cuda_ops", "compile")
GRID_SEEDS = range(32)


class LmdbTrainingImages:
    """The chosen images of an LMDB store as uint8 (3, R, R), read when a batch asks for them."""

    def __init__(self, store: LmdbImageStore, keys: list[str]):
        self.store, self.keys = store, list(keys)
        resolution = int(self.store.index["resolution"])
        self.shape = (len(self.keys), 3, resolution, resolution)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return read_images(self.store, [self.keys[i] for i in indices.tolist()])


def training_images(lmdb_root: str | Path, manifest: str | Path, spec: dict, federated: str | Path | None = None):
    """The training images (`LmdbTrainingImages`), one-hot labels over the dataset's classes, and those classes.
    With `spec["hospital"]` (a federated run's hospital-alone baseline) only that hospital's images of the
    federated split `federated` (federated.csv) are used. Raises ConfigError for unknown classes or hospital."""
    store = LmdbImageStore(lmdb_root)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["split"].isin(spec["splits"])]
    if spec.get("hospital"):
        frame = _hospital_rows(frame, spec["hospital"], federated)
    classes = list(scheme_classes(store.index["labels"]))
    if spec.get("classes"):
        unknown = sorted(set(spec["classes"]) - set(classes))
        if unknown:
            from ..errors import ConfigError
            raise ConfigError(f"gans: classes {unknown} are not classes of the dataset ({', '.join(classes)})")
        frame = frame[frame["label"].isin(spec["classes"])]
    images = LmdbTrainingImages(store, frame["key"].tolist())
    labels = F.one_hot(torch.tensor([classes.index(x) for x in frame["label"]]), len(classes)).float()
    return images, labels, classes


def _hospital_rows(frame: pd.DataFrame, hospital: str, federated: str | Path | None) -> pd.DataFrame:
    from ..errors import ConfigError
    if federated is None:
        raise ConfigError(f"training on hospital {hospital}'s images needs the federated split (--federated "
                          "results/data/<dataset>/federated.csv)")
    table = pd.read_csv(federated, dtype=str, keep_default_na=False)
    if hospital not in set(table["hospital"]):
        raise ConfigError(f"{federated}: no hospital '{hospital}' (hospitals: {', '.join(sorted(set(table['hospital'])))})")
    return frame[frame["key"].isin(set(table.loc[table["hospital"] == hospital, "key"]))]


def steps_for(kimg: float, batch: int) -> int:
    """Training steps of `batch` images that show `kimg` thousand images (rounded up; exact multiples are not
    pushed one step further by float error, e.g. 0.384 kimg at batch 8 is 48 steps, not 49)."""
    return math.ceil(round(kimg * 1000 / batch, 6))


def options_from(spec: dict) -> TrainingOptions:
    """The `TrainingOptions` of a `gans` entry (its `OPTION_KEYS` and `network`)."""
    return TrainingOptions(**{k: spec[k] for k in OPTION_KEYS}, network=dict(spec["network"]))


def _latest_snapshot(out_dir: Path) -> Path | None:
    snapshots = sorted(out_dir.glob("network-snapshot-step*.pt"))
    return snapshots[-1] if snapshots else None


def _set_aside(out_dir: Path, name: str) -> None:
    """Snapshots of another config are not resumed: they move to superseded-<time>/ (nothing is deleted)."""
    import time
    aside = out_dir / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in out_dir.iterdir():
        if not path.name.startswith("superseded-"):
            path.rename(aside / path.name)
    print(f"train-gan {name}: the snapshots in {out_dir} were trained with other options; moved them to {aside} "
          "and starting afresh", file=sys.stderr)


@torch.no_grad()
def sample_grid(G: Generator, path: Path, labels: torch.Tensor | None, device) -> None:
    """A 4 × 8 PNG of G's images for seeds 0…31 (noise constant; a conditional G cycles through `labels`)."""
    z = seed_latents(GRID_SEEDS, G.z_dim).to(device)
    c = None if G.c_dim == 0 else labels[torch.arange(len(z)) % len(labels)].to(device)
    images = G(z, c, noise_mode="const").clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    write_png(path, tile(images.reshape(4, 8, *images.shape[1:])))


def _log_record(trainer: GanTrainer, stats: dict, seconds: float, kimg_done: float, device) -> dict:
    return {"step": trainer.step_index, "kimg": trainer.nimg / 1000, **stats,
            "sec_per_kimg": seconds / max(kimg_done, 1e-9), "kimg_per_s": kimg_done / max(seconds, 1e-9),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_max_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0,
            "processes": trainer.world.size}


def _resume(trainer: GanTrainer, out_dir: Path, name: str, world) -> None:
    """Continue from the newest snapshot written with the same training options; set others aside."""
    latest = _latest_snapshot(out_dir)
    if latest is not None and not trainer.written_with_same_options(latest):
        world.barrier()
        if world.is_main:
            _set_aside(out_dir, name)
        world.barrier()
        latest = None
    if latest is not None:
        trainer.load(latest)
        if world.is_main:
            print(f"train-gan {name}: resumed from {latest.name} at {trainer.nimg / 1000:.2f} kimg", file=sys.stderr)


def _write_final_record(options: TrainGanOptions, trainer: GanTrainer, out_dir: Path, classes: list[str],
                        images: torch.Tensor, device: torch.device) -> None:
    """network-final.json: what was trained, on what, how far, with which options and software."""
    spec = options.spec
    write_json(out_dir / "network-final.json", {
        "gan": options.gan, "kimg": trainer.nimg / 1000, "steps": trainer.step_index, "classes": classes,
        "trained_on_classes": spec.get("classes") or classes, "conditional": spec["conditional"],
        "augment_p": float(trainer.augment.p), "resolution": int(images.shape[-1]), "images": len(images),
        "num_ws": trainer.G.num_ws, "processes": trainer.world.size, "device": str(device.type),
        "fused_cuda_ops": fused.kernels() is not None if device.type == "cuda" else False,
        "provenance": provenance(options.step, options.to_dict(), seed=spec["seed"])})


def train_gan(options: TrainGanOptions, lmdb_root: str | Path, manifest: str | Path, out_dir: str | Path,
              device: str | None = None, federated: str | Path | None = None) -> Path:
    """Train generator `options.gan` on the training images of `manifest` (its `splits`, `classes`) from
    `lmdb_root`, writing snapshots, logs and `network-final.pt` (+ .json) to `out_dir`; resumes from the newest
    snapshot written with the same options. `device`: cpu/cuda (None: cuda when available; under torchrun one
    process per GPU). `federated`: the federated split, read for a hospital-alone baseline (`spec["hospital"]`).
    Returns the final checkpoint's path."""
    spec, name = options.spec, options.gan
    out_dir = Path(out_dir)
    world, device = join_world(device)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    world.barrier()
    images, labels, classes = training_images(lmdb_root, manifest, spec, federated)
    trainer = GanTrainer(options_from(spec), images, labels if spec["conditional"] else None, device, world)
    _resume(trainer, out_dir, name, world)
    total_steps = steps_for(spec["kimg"], spec["batch"])
    snapshot_every = max(1, steps_for(spec["snapshot_kimg"], spec["batch"]))
    if world.is_main:
        print(f"train-gan {name}: {len(images)} images at {images.shape[-1]}², classes "
              f"{spec.get('classes') or classes}, conditional={spec['conditional']}, augment={spec['augment']}, "
              f"{total_steps} steps of {spec['batch']} on {world.size} × {device.type}", file=sys.stderr)
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(out_dir / "tensorboard")) if world.is_main else None
    progress = Progress(total_steps - trainer.step_index, f"train-gan {name}", unit="step") if world.is_main else None
    log = open(out_dir / "training_log.jsonl", "a") if world.is_main else None
    tick_start, tick_nimg = time.perf_counter(), trainer.nimg
    while trainer.step_index < total_steps:
        stats = trainer.step()
        if progress:
            progress.update()
        if trainer.step_index % snapshot_every and trainer.step_index != total_steps:
            continue
        if world.is_main:
            record = _log_record(trainer, stats, time.perf_counter() - tick_start, (trainer.nimg - tick_nimg) / 1000,
                                 device)
            log.write(json.dumps(record) + "\n")
            log.flush()
            for key, value in record.items():
                writer.add_scalar(key, value, trainer.step_index)
            tag = f"step{trainer.step_index:07d}"
            sample_grid(trainer.G_ema, out_dir / f"fakes-{tag}.png", torch.eye(len(classes)), device)  # cycles classes
            trainer.save(out_dir / f"network-snapshot-{tag}.pt")
        world.barrier()
        tick_start, tick_nimg = time.perf_counter(), trainer.nimg
    world.assert_in_sync(trainer.G)
    world.assert_in_sync(trainer.D)
    final = out_dir / "network-final.pt"
    if world.is_main:
        writer.close()
        progress.close()
        log.close()
        trainer.save(final)
        _write_final_record(options, trainer, out_dir, classes, images, device)
    world.barrier()
    leave_world()
    return final


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
    """The generator stored in a training checkpoint (G_ema unless ema=False)."""
    return generator_from_state(torch.load(path, map_location=device, weights_only=True), device, ema)


def generator_from_state(state: dict, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
    """The generator of an already loaded checkpoint (see `load_generator`)."""
    options = json.loads(state["options"])
    key = "G_ema" if ema else "G"
    weights = state[key]
    last_block = max(int(k.split(".")[2]) for k in weights if k.startswith("synthesis.blocks."))
    resolution = 4 * 2 ** last_block
    c_dim = weights["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in weights else 0
    G = Generator(c_dim=c_dim, img_resolution=resolution, **options["network"]).to(device)
    G.load_state_dict(weights)
    return G.eval().requires_grad_(False)
