"""One hospital's side of a federated round: its own images, the project's StyleGAN2 step, its own state.

`train_round` is what the Flower ClientApp (`app.py`) runs for a train message: it reads only this hospital's
images (its rows of federated.csv, looked up in the LMDB store at the hospital), builds the same `GanTrainer`
that `train-gan` uses, restores the hospital's local state of the previous round it took part in (optimisers,
ADA p, path-length mean, counters, data order, RNG — see `state.py`), loads the global shared arrays, runs
`local_steps` training steps and saves its local state for this round. It returns the shared arrays and scalar
metrics only — never images, keys or features.

Every key the trainer reads is written to `<state-dir>/keys-read.txt`, so a test (or an auditor at the hospital)
can check that a client read nothing but its own images.

A hospital's state belongs to its run: it is saved with a fingerprint (`hospital_fingerprint`: the server's run
fingerprint digest, the hospital, its store and rows, the recipe) and a state of another run is set aside
(`superseded-<time>/` in the state folder, one line) instead of resumed. Files are written under temporary names
unique to the process and renamed. Every loss of a local step NaN or infinite stops the hospital's round after its
steps (`TrainingDivergedError`, naming that step; `GanTrainer.check_diverged`), saving nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..checkpoints import WrongFileError, load_checkpoint
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..fingerprint import differences, digest, set_aside, store_identity
from ..gan.run import LmdbTrainingImages
from ..gan.training import GanTrainer, ResumableBatches, TrainingDivergedError, recorded_fingerprint
from ..outputs import write_text
from .messages import METRICS
from .options import RoundSettings, TrainFederatedOptions
from .state import load_shared, shared_arrays



@dataclass(frozen=True)
class Hospital:
    """Where one hospital's SuperNode finds its data and keeps its state (the SuperNode's `--node-config`):
    `name`; `lmdb` — the LMDB store holding its images; `federated_csv` — the federated split (only this
    hospital's rows are used); `state_dir` — its local training state between rounds; `device` — cpu, cuda or
    auto; `threads` — CPU threads for torch (0: torch's default)."""

    name: str
    lmdb: str
    federated_csv: str
    state_dir: str
    device: str = "auto"
    threads: int = 0

    @classmethod
    def from_node_config(cls, node_config: dict, run_config: dict, hospitals: list[str]) -> "Hospital":
        """From a deployment SuperNode's node config (`hospital`, `lmdb`, `federated-csv`, `state-dir`, `device`,
        `threads`), or in the Simulation Runtime from `partition-id` (→ the sorted hospital list) and the run
        config's `lmdb`, `federated-csv`, `state-root`. Raises ValueError naming what is missing."""
        if "hospital" in node_config:
            missing = [k for k in ("lmdb", "federated-csv", "state-dir") if k not in node_config]
            if missing:
                raise ValueError(f"SuperNode of {node_config['hospital']}: --node-config lacks {', '.join(missing)}")
            return cls(str(node_config["hospital"]), str(node_config["lmdb"]), str(node_config["federated-csv"]),
                       str(node_config["state-dir"]), str(node_config.get("device", "auto")),
                       int(node_config.get("threads", 0)))
        if "partition-id" not in node_config:
            raise ValueError("the SuperNode has neither `hospital` in its --node-config nor a simulation partition-id")
        name = hospitals[int(node_config["partition-id"])]
        return cls(name, str(run_config["lmdb"]), str(run_config["federated-csv"]),
                   str(Path(str(run_config["state-root"])) / name), str(run_config.get("device", "auto")),
                   int(run_config.get("threads", 0)))


class AuditedImages(LmdbTrainingImages):
    """`LmdbTrainingImages` that remembers every key it was asked for (`keys_read`)."""

    def __init__(self, store: LmdbImageStore, keys: list[str]):
        super().__init__(store, keys)
        self.keys_read: set[str] = set()

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        self.keys_read.update(self.keys[i] for i in indices.tolist())
        return super().__getitem__(indices)


def hospital_images(hospital: Hospital, options: TrainFederatedOptions) -> tuple[AuditedImages, torch.Tensor]:
    """This hospital's training images (its rows of federated.csv, of the run's `classes` when set) and their
    one-hot labels over `options.label_classes` (float32 (N, C)). Raises ValueError when it has none."""
    table = pd.read_csv(hospital.federated_csv, dtype=str, keep_default_na=False)
    rows = table[table["hospital"] == hospital.name]
    if options.training.get("classes"):
        rows = rows[rows["label"].isin(options.training["classes"])]
    if rows.empty:
        raise ValueError(f"{hospital.federated_csv}: hospital {hospital.name} has no training images"
                         f"{' of classes ' + str(list(options.training['classes'])) if options.training.get('classes') else ''}")
    rows = rows.sort_values("key")
    images = AuditedImages(LmdbImageStore(hospital.lmdb), rows["key"].tolist())
    images.labels = rows["label"].tolist()
    indices = torch.tensor([list(options.label_classes).index(x) for x in rows["label"]])
    return images, F.one_hot(indices, len(options.label_classes)).float()


def hospital_seed(options: TrainFederatedOptions, hospital: str) -> int:
    """The seed of a hospital's own random streams (data order, latents, noise): distinct per hospital."""
    return int(options.training["seed"]) * 1_000_003 + 7919 * (list(options.hospitals).index(hospital) + 1)


def hospital_fingerprint(options: TrainFederatedOptions, hospital: Hospital, images: AuditedImages,
                         run: str = "") -> dict:
    """What a hospital's local state belongs to: the server's run fingerprint digest `run` (sent with every train
    message; '' from an older server), the run, the hospital, its LMDB store's identity and its rows (keys and
    labels), the training recipe and `local_steps`."""
    return {"run": run, "run.name": options.run, "hospital": hospital.name, "data.store": store_identity(hospital.lmdb),
            "data.selection": digest(list(zip(images.keys, images.labels))), "data.resolution": int(options.resolution),
            "recipe": json.loads(json.dumps(options.training)), "federation.local_steps": options.federation.local_steps}


def networks(trainer: GanTrainer) -> dict[str, torch.nn.Module]:
    """{"G", "D", "G_ema"} of a trainer."""
    return {"G": trainer.G, "D": trainer.D, "G_ema": trainer.G_ema}


class ClientState:
    """A hospital's local training state per round (`state-round<NNNN>.pt`, the trainer's full checkpoint), kept
    for the last `keep` rounds so that a server resuming from an older checkpoint finds the matching state."""

    def __init__(self, folder: str | Path, keep: int):
        self.folder, self.keep = Path(folder), max(2, keep)

    def _rounds(self) -> list[int]:
        return sorted(int(p.stem.split("round")[1]) for p in self.folder.glob("state-round*.pt"))

    def path(self, round_number: int) -> Path:
        """The state file of round `round_number`."""
        return self.folder / f"state-round{round_number:04d}.pt"

    def before(self, round_number: int) -> Path | None:
        """The newest saved state of a round before `round_number` (None: this hospital starts afresh)."""
        earlier = [r for r in self._rounds() if r < round_number]
        return self.path(earlier[-1]) if earlier else None

    def save(self, trainer: GanTrainer, round_number: int) -> None:
        """Save the trainer's state (with its fingerprint) as round `round_number`'s, atomically, and delete states
        older than the last `keep`. Raises OutputError when the disk is full or not writable."""
        self.folder.mkdir(parents=True, exist_ok=True)
        trainer.save(self.path(round_number))
        for old in self._rounds()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)

    def resumable(self, round_number: int, fingerprint: dict, who: str) -> tuple[Path | None, dict | None]:
        """(path, state) of the newest state before `round_number` when it belongs to this run (its recorded
        fingerprint equals `fingerprint`), else (None, None) — after every saved state was set aside
        (`superseded-<time>/`, one line naming what differs)."""
        path = self.before(round_number)
        if path is None:
            return None, None
        try:
            state = load_checkpoint(path, ("generator",), "a hospital's training state", "it is set aside")
            found = differences(recorded_fingerprint(state), fingerprint)
        except WrongFileError as exc:
            state, found = None, [str(exc).split("; ")[0]]
        if not found:
            return path, state
        names = [p.name for p in self.folder.glob("state-round*.pt")]
        set_aside(self.folder, names, f"{path.name} belongs to another run ({'; '.join(found[:4])})", who)
        return None, None


def _record_keys(hospital: Hospital, images: AuditedImages) -> None:
    path = Path(hospital.state_dir) / "keys-read.txt"
    before = set(path.read_text().split()) if path.exists() else set()
    write_text(path, "".join(f"{k}\n" for k in sorted(before | images.keys_read)))


def train_round(global_arrays: dict[str, torch.Tensor], options: TrainFederatedOptions, round_number: int,
                hospital: Hospital, run: str = "") -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Run one round at `hospital`: restore its state of its previous round (when it belongs to this run: `run`
    is the server's run fingerprint digest), load `global_arrays` (`state.py` names, float32), train `local_steps`
    steps. Returns (shared arrays after training, float32 CPU tensors; scalar metrics `METRICS`, with
    `num-examples` = the hospital's training images, FedAvg's weight). The hospital's process seeds the global
    torch stream with its own seed (`hospital_seed`) before restoring its state.

    Raises:
        ValueError: the hospital has no training images.
        TrainingDivergedError: every loss of a local step is NaN or infinite (nothing of this round is saved).
        DeviceError: the hospital's device is not on this machine."""
    start = time.perf_counter()
    if hospital.threads:
        torch.set_num_threads(hospital.threads)
    images, labels = hospital_images(hospital, options)
    device = choose_device(None if hospital.device == "auto" else hospital.device)
    trainer = GanTrainer(options.training_settings(), images, labels if options.training["conditional"] else None,
                         device)
    seed = hospital_seed(options, hospital.name)
    trainer.batches = ResumableBatches(len(images), trainer.options.batch, seed)
    torch.manual_seed(seed)
    trainer.fingerprint = hospital_fingerprint(options, hospital, images, run)
    state = ClientState(hospital.state_dir, keep=options.federation.checkpoint_every + 1)
    previous, saved = state.resumable(round_number, trainer.fingerprint, f"hospital {hospital.name}")
    if saved is not None:
        trainer.load_state(saved, previous)
    del saved
    load_shared(networks(trainer), global_arrays)
    try:
        for _ in range(options.federation.local_steps):
            stats = trainer.step()  # 0-d tensors on the device, read back once the round's steps are done
        trainer.check_diverged()  # before the state is saved, so nothing of a diverged step is saved
    except TrainingDivergedError as exc:
        raise TrainingDivergedError(f"hospital {hospital.name}, round {round_number}: {exc} (federated.{options.run}"
                                    ".g_lr, .d_lr, .r1_gamma in the config)") from None
    state.save(trainer, round_number)
    _record_keys(hospital, images)
    metrics = {"num-examples": len(images), "hospital-index": list(options.hospitals).index(hospital.name),
               "local-steps": options.federation.local_steps, "hospital-steps": trainer.step_index,
               "loss-G": float(stats["loss_G"]), "loss-D": float(stats["loss_D"]),
               "augment-p": float(stats["augment_p"]), "seconds": time.perf_counter() - start}
    print(f"hospital {hospital.name}: round {round_number}, {len(images)} images, {trainer.step_index} steps so far "
          f"({'resumed ' + previous.name if previous else 'fresh state'})", file=sys.stderr)
    return shared_arrays(networks(trainer)), metrics


def hospital_options(text: str, run_config: Mapping) -> TrainFederatedOptions:
    """The run's options at a hospital: the train message's `options` (`text`: JSON of
    `TrainFederatedOptions.for_hospitals()`) with the round settings of Flower's run config
    (`RoundSettings.from_run_config`). Parsed and validated once per process and run (every round of a run sends
    the same text; the Simulation Runtime runs many rounds in one process). Raises ConfigError."""
    return _hospital_options(text, tuple(sorted(run_config.items())))


@lru_cache(maxsize=4)
def _hospital_options(text: str, run_config: tuple) -> TrainFederatedOptions:
    data = json.loads(text)
    settings = RoundSettings.from_run_config(dict(run_config), len(data["hospitals"]))
    return TrainFederatedOptions.from_hospital_message(data, settings)


__all__ = ["AuditedImages", "ClientState", "Hospital", "METRICS", "hospital_fingerprint", "hospital_images",
           "hospital_seed", "networks",
           "hospital_options", "train_round"]
