"""`dermsynth gan train`: train one configured generator, with snapshots, logs and resume.

Output folder (`results/gan/<name>/`):
    network-snapshot-step<N>.pt   full training state every `snapshot_kimg` (resume points)
    fakes-step<N>.png             G_ema samples for fixed seeds at that snapshot
    training_log.jsonl            one line per logged step: kimg, losses, p, sec/kimg, memory
    tensorboard/                  the same scalars for TensorBoard
    network-final.pt (+ .json)    the finished state; G_ema is what later stages use

On stderr (rank 0): a start line (`train-gan <gan>: <images> …`), one line per tick of `tick_kimg` (kimg,
sec/kimg, tick-mean losses, augment p, GPU memory, time left: `ticks.TickReporter`), `wrote <path>` for each
snapshot and the final network; a live kimg bar as well on a terminal.

Run again after a kill and it continues from the newest snapshot, when that snapshot belongs to this run: every
checkpoint records a fingerprint (`run_fingerprint`: the LMDB store's identity, the chosen images and labels,
classes, resolution, conditional, hospital; the architecture; the training recipe) and a snapshot whose
fingerprint differs (or that has none, or cannot be read) is set aside with the rest of the folder
(`superseded-<time>/`, said in one line) before training starts afresh. `training_log.jsonl` is cut back to
the resumed step, so every logged step appears once.

One writer: rank 0 holds the folder's lock (`locks.exclusive`) for the whole run, so a second `train-gan` on the
same folder is refused in one line; every file is written under a temporary name and renamed (`outputs`), and
the folder is proven writable before anything is built. Under `torchrun` (several processes) every rank trains
on its slice of each batch and rank 0 writes everything. Training images are read from the LMDB batch by batch,
so memory does not grow with the dataset.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from ..checkpoints import GENERATOR_KINDS, WrongFileError, load_checkpoint
from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..errors import ConfigError
from ..fingerprint import differences, digest, set_aside, store_identity, tensors_digest
from ..labels import scheme_classes
from ..locks import exclusive
from ..outputs import check_writable, write_json, write_text
from ..provenance import provenance
from .distributed import join_world, leave_world
from .networks import Generator, seed_latents
from .ops import fused
from .options import TrainGanOptions, TrainingOptions
from .pixels import to_uint8
from .ticks import TickReporter, TickSettings, tick_steps
from .interop.imported import sha256_of
from .training import GanTrainer, TrainingDivergedError, recorded_fingerprint

GRID_SEEDS = range(32)
GENERATOR_FIX = ("use results/gan/<gan>/network-final.pt or a snapshot (network-snapshot-step*.pt; a federated "
                 "run's network-final.pt or network-snapshot-round*.pt)")


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
            raise ConfigError(f"gans: classes {unknown} are not classes of the dataset ({', '.join(classes)})")
        frame = frame[frame["label"].isin(spec["classes"])]
    images = LmdbTrainingImages(store, frame["key"].tolist())
    images.labels = frame["label"].tolist()
    labels = F.one_hot(torch.tensor([classes.index(x) for x in frame["label"]]), len(classes)).float()
    return images, labels, classes


def _hospital_rows(frame: pd.DataFrame, hospital: str, federated: str | Path | None) -> pd.DataFrame:
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
    """The `TrainingOptions` of a validated `gans` entry (`TrainingOptions.from_section`: its training keys and
    `network`). Raises ConfigError naming the keys it lacks."""
    return TrainingOptions.from_section(spec, where="train-gan options' spec")


def _latest_snapshot(out_dir: Path) -> Path | None:
    snapshots = sorted(out_dir.glob("network-snapshot-step*.pt"))
    return snapshots[-1] if snapshots else None


def run_fingerprint(spec: dict, lmdb_root: str | Path, images: LmdbTrainingImages, classes: list[str],
                    training: TrainingOptions) -> dict:
    """What a train-gan run's state belongs to: the data (the LMDB store's identity, the chosen images and their
    labels in training order, the dataset's and the trained classes, resolution, conditional, hospital), the
    architecture (network keyword arguments, c_dim, resolution), the recipe (every training option) and the checkpoint
    it started from (`init`: path and SHA-256, so a changed file is another run). `kimg`
    and `snapshot_kimg` are not part of it: training longer continues the same run."""
    resolution = int(images.shape[-1])
    selection = list(zip(images.keys, getattr(images, "labels", [""] * len(images.keys))))
    return {"data.store": store_identity(lmdb_root), "data.selection": digest(selection),
            "data.images": len(images), "data.classes": list(classes),
            "data.trained_classes": list(spec.get("classes") or classes), "data.resolution": resolution,
            "data.conditional": bool(spec["conditional"]), "data.hospital": spec.get("hospital") or None,
            "architecture": {"network": dict(training.network), "c_dim": len(classes) if spec["conditional"] else 0,
                             "resolution": resolution},
            "recipe": _recipe(training),
            **({"init": {"file": training.init, "sha256": sha256_of(training.init)}} if training.init else {})}


def _recipe(training: TrainingOptions) -> dict:
    """The training options as recorded in a run's fingerprint. Keys added since fingerprints were first written
    appear only when they change what is trained (`init` set, `freeze_d` > 0), so a run started by an earlier
    version resumes instead of being set aside; `init` is recorded with its file's SHA-256 beside the recipe."""
    recipe = json.loads(json.dumps(asdict(training)))
    recipe.pop("init", None)
    if not recipe.get("freeze_d"):
        recipe.pop("freeze_d", None)
    return recipe


def _resumable_state(out_dir: Path, fingerprint: dict, name: str, world) -> dict | None:
    """The newest snapshot's state when it belongs to this run (same fingerprint), else None — after the folder's
    outputs were set aside (`superseded-<time>/`, one line naming what differs) by rank 0."""
    latest = _latest_snapshot(out_dir)
    if latest is None:
        return None
    state, reason = None, None
    try:
        state = load_checkpoint(latest, ("generator",), "a train-gan snapshot", "it is set aside")
    except WrongFileError as exc:
        reason = str(exc).split("; ")[0]
    if state is not None:
        found = differences(recorded_fingerprint(state), fingerprint)
        if found:
            state, reason = None, f"{latest.name} belongs to another run ({'; '.join(found[:4])}" \
                                  f"{f'; {len(found) - 4} more' if len(found) > 4 else ''})"
    if reason is None:
        return state
    world.barrier()  # every rank has read the snapshot before rank 0 moves it
    if world.is_main:
        set_aside(out_dir, None, reason, f"train-gan {name}")
    world.barrier()
    return None


def _restart_log(path: Path, step: int) -> list[str]:
    """The lines of training_log.jsonl up to `step` (the resumed snapshot; 0: none), written back atomically when
    the killed run had logged more (or a line was cut), so that each step is logged once."""
    if not path.exists():
        return []
    text = path.read_text()
    kept = []
    for line in text.splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if "".join(f"{line}\n" for line in kept) != text:
        write_text(path, "".join(f"{line}\n" for line in kept))
    return kept


GRID_COLUMNS = 8


@torch.no_grad()
def sample_grid(G: Generator, path: Path, classes: list[str], device, title: str) -> None:
    """A labelled PNG (`figures.image_grid`) of G's images (noise constant) headed `title` (the GAN and the snapshot's
    kimg): a conditional G draws one row per class of `classes` (its one-hot order) with the same seeds 0…7 in every
    row; an unconditional one 4 rows of 8 consecutive seeds of `GRID_SEEDS` (rows labelled with their seeds,
    columns with the seed's offset in the row)."""
    # deferred: matplotlib (½ s) only where a snapshot is drawn; every job that loads a generator imports this module
    from ..figures import write_image_grid
    if G.c_dim > 0:
        seeds = list(GRID_SEEDS[:GRID_COLUMNS]) * G.c_dim
        c = torch.eye(G.c_dim).repeat_interleave(GRID_COLUMNS, dim=0).to(device)
        rows = [classes[k] if k < len(classes) else f"class {k}" for k in range(G.c_dim)]
        columns, row_title, column_title = [f"seed {seed}" for seed in seeds[:GRID_COLUMNS]], "class", "seed"
    else:
        seeds, c = list(GRID_SEEDS), None
        rows = [f"seeds {r}–{r + GRID_COLUMNS - 1}" for r in seeds[::GRID_COLUMNS]]
        columns, row_title, column_title = ([f"+{j}" for j in range(GRID_COLUMNS)], "seeds",
                                            "seed = the row's first seed + column")
    images = to_uint8(G(seed_latents(seeds, G.z_dim).to(device), c, noise_mode="const")).cpu()
    write_image_grid(path, images.reshape(len(rows), GRID_COLUMNS, *images.shape[1:]), rows, columns, title,
                     row_title=row_title, column_title=column_title)


def _log_record(trainer: GanTrainer, stats: dict, seconds: float, kimg_done: float, device) -> dict:
    return {"step": trainer.step_index, "kimg": trainer.nimg / 1000, **{k: float(v) for k, v in stats.items()},
            "sec_per_kimg": seconds / max(kimg_done, 1e-9), "kimg_per_s": kimg_done / max(seconds, 1e-9),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_max_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0,
            "processes": trainer.world.size}


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
        "init": trainer.init_source,  # the checkpoint fine-tuning started from (file, SHA-256, format) or None
        "provenance": provenance(options.step, options.to_dict(), seed=spec["seed"])})


def train_gan(options: TrainGanOptions, lmdb_root: str | Path, manifest: str | Path, out_dir: str | Path,
              device: str | None = None, federated: str | Path | None = None) -> Path:
    """Train generator `options.gan` on the training images of `manifest` (its `splits`, `classes`) from
    `lmdb_root`, writing snapshots, logs and `network-final.pt` (+ .json) to `out_dir`; resumes from the newest
    snapshot when it belongs to this run (its fingerprint), else sets the folder's outputs aside and starts afresh.
    `device`: cpu/cuda (None: cuda when available; under torchrun one process per GPU). `federated`: the federated
    split, read for a hospital-alone baseline (`spec["hospital"]`). Returns the final checkpoint's path.

    Raises:
        BusyError: another process is writing to `out_dir` (rank 0 holds its lock for the whole run).
        OutputError: `out_dir` is not writable, or the disk filled up while writing (finished snapshots are kept).
        TrainingDivergedError: every loss of a step was NaN or infinite (nothing of that step is saved).
        ConfigError: unknown classes or hospital."""
    out_dir = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        check_writable(out_dir)
    with exclusive(out_dir, "train-gan") if main else contextlib.nullcontext():
        return _train(options, lmdb_root, manifest, out_dir, device, federated)


def _train(options: TrainGanOptions, lmdb_root, manifest, out_dir: Path, device, federated) -> Path:
    spec, name = options.spec, options.gan
    world, device = join_world(device)
    world.barrier()
    images, labels, classes = training_images(lmdb_root, manifest, spec, federated)
    _check_sizes(name, spec, len(images), world.size, manifest)
    training = options_from(spec)
    fingerprint = run_fingerprint(spec, lmdb_root, images, classes, training)
    resumed = _resumable_state(out_dir, fingerprint, name, world)  # before building: nothing of another run loads
    trainer = GanTrainer(training, images, labels if spec["conditional"] else None, device, world)
    trainer.fingerprint = fingerprint
    if resumed is not None:
        trainer.load_state(resumed, _latest_snapshot(out_dir))
        if world.is_main:
            print(f"train-gan {name}: resumed from {_latest_snapshot(out_dir).name} at {trainer.nimg / 1000:.2f} kimg",
                  file=sys.stderr)
    del resumed
    total_steps = steps_for(spec["kimg"], spec["batch"])
    snapshot_every = max(1, steps_for(spec["snapshot_kimg"], spec["batch"]))
    tick_every = tick_steps(TickSettings.from_section(spec, where=f"train-gan {name}'s spec"), total_steps,
                            spec["batch"])
    if world.is_main:
        print(f"train-gan {name}: {len(images)} images at {images.shape[-1]}², classes "
              f"{spec.get('classes') or classes}, conditional={spec['conditional']}, augment={spec['augment']}, "
              f"{total_steps} steps of {spec['batch']} on {world.size} × {device.type} "
              f"({total_steps * spec['batch'] / 1000:g} kimg), a tick every {tick_every} steps", file=sys.stderr)
    try:
        _loop(trainer, out_dir, name, classes, total_steps, (snapshot_every, tick_every), device)
        trainer.check_diverged()  # every rank, before the final network is written (nothing diverged is saved)
    except TrainingDivergedError as exc:
        raise TrainingDivergedError(f"train-gan {name}: {exc} (gans.{name}.g_lr, .d_lr, .r1_gamma in the config; "
                                    f"the snapshots in {out_dir} before that step are kept)") from None
    world.assert_in_sync(trainer.G)
    world.assert_in_sync(trainer.D)
    final = out_dir / "network-final.pt"
    if world.is_main:
        trainer.save(final)
        _write_final_record(options, trainer, out_dir, classes, images, device)
        print(f"train-gan {name}: wrote {final}", file=sys.stderr, flush=True)
    world.barrier()
    leave_world()
    return final


def _check_sizes(name: str, spec: dict, n_images: int, processes: int, manifest) -> None:
    """At start, sizes the data or the machine cannot support, with the config key to change (ConfigError)."""
    if n_images < spec["batch"]:
        raise ConfigError(f"train-gan {name}: {manifest} gives {n_images} training images (splits {spec['splits']}"
                          f"{', classes ' + str(spec['classes']) if spec.get('classes') else ''}"
                          f"{', hospital ' + spec['hospital'] if spec.get('hospital') else ''}), fewer than one batch of "
                          f"{spec['batch']}: lower gans.{name}.batch or give the generator more images")
    if spec["batch"] % processes:
        raise ConfigError(f"train-gan {name}: batch {spec['batch']} cannot be split among {processes} processes; make "
                          f"gans.{name}.batch a multiple of {processes} (or start as many processes as divide it)")


def _loop(trainer: GanTrainer, out_dir: Path, name: str, classes: list[str], total_steps: int,
          every: tuple[int, int], device) -> None:
    """Train to `total_steps`; `every` = (snapshot_every, tick_every) steps. At each tick and snapshot every rank
    first checks for divergence (`GanTrainer.check_diverged`, the only read back from the GPU between them; raises
    TrainingDivergedError). Rank 0 prints a tick line every `tick_every` steps and at the last
    (`ticks.TickReporter`), and every `snapshot_every` steps (and at the last)
    writes the log line, the fakes and the snapshot, in that order, then says `wrote <snapshot>`: a kill between
    them leaves a logged step without its snapshot, which the rerun cuts from the log and writes again (the
    snapshot first would lose the step's line and fakes for good)."""
    world, (snapshot_every, tick_every) = trainer.world, every
    log_path = out_dir / "training_log.jsonl"
    lines = _restart_log(log_path, trainer.step_index) if world.is_main else []
    writer = console = None
    if world.is_main:
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=trainer.step_index + 1)  # drop a killed run's
        console = TickReporter(f"train-gan {name}", trainer.nimg, total_steps * trainer.options.batch, device)
    try:
        span_start, span_nimg = time.perf_counter(), trainer.nimg  # the log line's span: since the last snapshot
        while trainer.step_index < total_steps:
            stats = trainer.step()  # 0-d tensors on the device: read back only at ticks and snapshots
            last = trainer.step_index == total_steps
            tick = last or trainer.step_index % tick_every == 0
            snapshot = last or trainer.step_index % snapshot_every == 0
            if tick or snapshot:  # every rank, before anything of these steps is shown or saved
                trainer.check_diverged()
            if console:
                console.step(stats, trainer.options.batch)
                if tick:
                    console.end_tick(trainer.nimg)
            if not snapshot:
                continue
            if world.is_main:
                span = (stats, time.perf_counter() - span_start, (trainer.nimg - span_nimg) / 1000)
                with console.maintenance():
                    snapshot = _write_snapshot(trainer, out_dir, name, classes, lines, writer, device, span)
                console.wrote(snapshot)
            world.barrier()
            span_start, span_nimg = time.perf_counter(), trainer.nimg
    finally:
        if world.is_main:
            writer.close()
            console.close()


def _write_snapshot(trainer: GanTrainer, out_dir: Path, name: str, classes: list[str], lines: list[str], writer,
                    device, span: tuple) -> Path:
    """Rank 0's snapshot at the current step: the training_log.jsonl line (`span` = the step's stats, seconds
    and kimg since the last snapshot), the fakes grid, the snapshot itself, the TensorBoard scalars. Returns the
    snapshot's path."""
    stats, seconds, kimg_done = span
    record = _log_record(trainer, stats, seconds, kimg_done, device)
    lines.append(json.dumps(record))
    write_text(out_dir / "training_log.jsonl", "".join(f"{line}\n" for line in lines))
    tag = f"step{trainer.step_index:07d}"
    sample_grid(trainer.G_ema, out_dir / f"fakes-{tag}.png", classes, device,
                f"{name}: G_ema at {trainer.nimg / 1000:g} kimg (step {trainer.step_index})")
    snapshot = out_dir / f"network-snapshot-{tag}.pt"
    trainer.save(snapshot)
    for key, value in record.items():
        writer.add_scalar(key, value, trainer.step_index)
    return snapshot


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
    """The generator stored in a training checkpoint (G_ema unless ema=False): a train-gan snapshot or final
    network, or a federated run's global-model snapshot. `G.identity` is its weights' digest (`generator_identity`).

    Raises:
        FileNotFoundError: `path` does not exist.
        WrongFileError: `path` is a folder, not a readable PyTorch file, or a checkpoint of another kind (a
            classifier, a federated server's checkpoint.pt, an encoder, …), or its weights do not fit its options."""
    state = load_checkpoint(path, GENERATOR_KINDS, "a generator checkpoint", GENERATOR_FIX, map_location=device)
    return generator_from_state(state, device, ema, path)


def generator_identity(state: dict, ema: bool = True) -> str:
    """The identity of a checkpoint's generator (the digest of its G_ema weights, `fingerprint.tensors_digest`):
    what a component trained for one generator (an encoder, SeFa directions, projections) records and compares."""
    return tensors_digest(state["G_ema" if ema else "G"])


def generator_from_state(state: dict, device: str | torch.device = "cpu", ema: bool = True,
                         path: str | Path = "the checkpoint") -> Generator:
    """The generator of an already loaded checkpoint (see `load_generator`; `path` names it in errors).
    Raises WrongFileError when the state holds no generator or its weights do not fit its options."""
    key = "G_ema" if ema else "G"
    if not isinstance(state, dict) or "options" not in state or key not in state:
        raise WrongFileError(f"{path} holds no generator ({key} and options missing); {GENERATOR_FIX}")
    options = json.loads(state["options"])
    weights = state[key]
    blocks = [int(k.split(".")[2]) for k in weights if k.startswith("synthesis.blocks.")]
    if not blocks:
        raise WrongFileError(f"{path} holds no synthesis network; {GENERATOR_FIX}")
    resolution = 4 * 2 ** max(blocks)
    c_dim = weights["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in weights else 0
    G = Generator(c_dim=c_dim, img_resolution=resolution, **options["network"]).to(device)
    try:
        G.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WrongFileError(f"{path}: its {key} weights do not fit the network its options describe "
                             f"({first[1].strip()[:150] if len(first) > 1 else first[0][:150]}); {GENERATOR_FIX}"
                             ) from None
    G.identity = generator_identity(state, ema)
    return G.eval().requires_grad_(False)
