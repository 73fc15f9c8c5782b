"""The server's side of a federated run: rounds of FedAvg over the hospitals that answer, checkpoints, snapshots.

`run_federation(grid, options, out_dir)` is what the Flower ServerApp (`app.py`) runs. Each round it sends the
global shared arrays (`state.py`) and the run's options to every connected hospital (`HospitalFedAvg`, a
`flwr.serverapp.strategy.FedAvg` with `fraction_train=1`, waiting for `min_available_nodes`), waits up to
`round_timeout_s`, checks what came back (only the arrays it sent and the scalar metrics of `messages.METRICS`),
and averages the replies weighted by each hospital's number of images. A round counts when at least
`min_available_nodes` hospitals answered; otherwise the run stops with an error (it resumes from the last
checkpoint when started again).

Output folder (`results/federated/<run>/`):
    checkpoint.pt / checkpoint.json   global arrays + round number + the run's fingerprint (every `checkpoint_every`
                                      rounds; resume point, resumed only by the same run: `run_fingerprint`)
    network-snapshot-round<NNNN>.pt   the global model every `evaluate_every` rounds and at the last round, as a
                                      training checkpoint `gan.run.load_generator` reads (G, D, G_ema)
    rounds.csv                        one row per round: hospitals that took part, their images, losses, seconds
                                      (the round, and the slowest hospital's time inside its training call)
    messages.jsonl                    per reply: its round, records and array/metric names (what left each
                                      hospital); cut back to the resumed round on resume (each reply once)
    network-final.pt (+ .json)        the final global model and its provenance
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord

from ..errors import ConfigError
from ..fingerprint import digest, store_identity
from ..gan.training import build_networks
from ..outputs import save_torch, write_csv, write_json, write_text
from ..provenance import provenance
from .options import RoundSettings, TrainFederatedOptions
from .state import load_checkpoint, load_shared, save_checkpoint, shared_arrays
from .strategy import HospitalFedAvg

RUN_FINGERPRINT = "run-fingerprint.json"


def data_fingerprint(options: TrainFederatedOptions, lmdb, federated_csv) -> dict:
    """The data part of a run's fingerprint, computed where the data is (the launcher): the LMDB store's identity
    and the digest of the run's rows of federated.csv (hospital, key, label of its hospitals and classes)."""
    table = pd.read_csv(federated_csv, dtype=str, keep_default_na=False)
    table = table[table["hospital"].isin(options.hospitals)]
    if options.training.get("classes"):
        table = table[table["label"].isin(options.training["classes"])]
    rows = sorted(zip(table["hospital"], table["key"], table["label"]))
    return {"data.store": store_identity(lmdb), "data.selection": digest(rows)}


def run_fingerprint(options: TrainFederatedOptions, data: dict | None = None) -> dict:
    """What a federated run's state (server checkpoint, hospitals' states) belongs to: the data (`data`, from
    `data_fingerprint`, plus dataset, hospitals, classes, resolution, conditional), the architecture (network,
    c_dim, resolution), the recipe (the training keys) and the federation settings that shape the state
    (`local_steps`). `rounds` is not part of it: more rounds continue the same run."""
    t = options.training
    c_dim = len(options.label_classes) if t["conditional"] else 0
    return {**(data or {}), "data.dataset": options.dataset, "data.hospitals": list(options.hospitals),
            "data.classes": list(options.label_classes), "data.trained_classes": list(t.get("classes") or []),
            "data.resolution": int(options.resolution), "data.conditional": bool(t["conditional"]),
            "architecture": {"network": dict(t["network"]), "c_dim": c_dim, "resolution": int(options.resolution)},
            "recipe": {k: v for k, v in t.items() if k not in ("network", "classes", "conditional")},
            "federation": {"local_steps": options.federation.local_steps}}


def initial_arrays(options: TrainFederatedOptions) -> dict[str, torch.Tensor]:
    """The global model before round 1: G, D and G_ema built from the run's seed (`build_networks`), shared part."""
    return shared_arrays(global_networks(options))


def global_networks(options: TrainFederatedOptions, arrays: dict[str, torch.Tensor] | None = None) -> dict:
    """{"G", "D", "G_ema"} on CPU as every hospital builds them, with `arrays` (shared state) loaded when given."""
    c_dim = len(options.label_classes) if options.training["conditional"] else 0
    G, D = build_networks(options.training_settings(), c_dim, options.resolution, "cpu")
    nets = {"G": G, "D": D, "G_ema": copy.deepcopy(G).eval().requires_grad_(False)}
    if arrays is not None:
        load_shared(nets, arrays)
    return nets


def snapshot_state(options: TrainFederatedOptions, arrays: dict[str, torch.Tensor], round_number: int) -> dict:
    """A snapshot of the global model in the format of `train-gan`'s checkpoints (the parts generators are read
    from): options, G, D, G_ema state dicts, `nimg` = images shown across all hospitals, plus `round` and
    `hospital_steps` (iterations each hospital has run)."""
    nets = global_networks(options, arrays)
    steps = round_number * options.federation.local_steps
    return {"format": "dermsynth-federated-snapshot-v1", "options": json.dumps(asdict(options.training_settings())),
            "G": nets["G"].state_dict(), "D": nets["D"].state_dict(), "G_ema": nets["G_ema"].state_dict(),
            "round": round_number, "hospital_steps": steps,
            "nimg": steps * options.training["batch"] * len(options.hospitals), "step": steps}


def _save(state: dict, path: Path) -> None:
    save_torch(path, state)


def _round_row(round_number: int, answered: list[tuple[str, int, int, dict]], seconds: float) -> dict:
    """One row of rounds.csv from (hospital, images, node id, metrics) of the hospitals that answered."""
    images = sum(a[1] for a in answered)
    return {"round": round_number, "hospitals": ";".join(sorted(a[0] for a in answered)),
            "n_hospitals": len(answered), "images": images, "nodes": ";".join(str(a[2]) for a in sorted(answered)),
            "loss_G": sum(a[3]["loss-G"] * a[1] for a in answered) / images,
            "loss_D": sum(a[3]["loss-D"] * a[1] for a in answered) / images, "seconds": round(seconds, 2),
            "slowest_hospital_seconds": round(max(a[3]["seconds"] for a in answered), 2)}


def _write_progress(out_dir: Path, round_number: int, stage: str) -> None:
    write_json(out_dir / "progress.json", {"round": round_number, "stage": stage, "time": time.time()})


def _restart_messages(path: Path, round_number: int) -> None:
    """Cut messages.jsonl back to the replies of rounds up to `round_number` (the resumed checkpoint's; 0: none):
    a killed run's replies of later rounds are received again (each reply is logged once)."""
    if not path.exists():
        return
    text = path.read_text()
    kept = []
    for line in text.splitlines():
        try:
            if int(json.loads(line).get("round", 0)) <= round_number:
                kept.append(line)
        except (ValueError, AttributeError, TypeError):
            continue
    if "".join(f"{line}\n" for line in kept) != text:
        write_text(path, "".join(f"{line}\n" for line in kept))


def run_federation(grid, options: TrainFederatedOptions, out_dir: str | Path, data: dict | None = None) -> Path:
    """Run (or resume) the federated rounds over `grid` (a Flower `Grid`) and write the outputs listed in the
    module docstring to `out_dir`; `data`: the data part of the run's fingerprint (`data_fingerprint`, from the
    launcher). Resumes only a checkpoint of the same fingerprint. Returns the path of network-final.pt. Raises
    RuntimeError when fewer than `min_available_nodes` hospitals answer a round."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fed = options.federation
    fingerprint = run_fingerprint(options, data)
    resumed = load_checkpoint(out_dir, fingerprint)
    _restart_messages(out_dir / "messages.jsonl", resumed[0] if resumed else 0)
    start, arrays, history = (resumed[0] + 1, resumed[1], resumed[2]) if resumed else (1, initial_arrays(options), [])
    print(f"federated {options.run}: {'resuming at round ' + str(start) if resumed else 'starting'} of "
          f"{fed.rounds}, dataset {options.dataset}, hospitals {', '.join(options.hospitals)}", file=sys.stderr)
    expected = set(arrays)
    # what each hospital needs besides the run config's round settings: serialised once here, parsed once per
    # ClientApp process (`client.hospital_options`)
    config = ConfigRecord({"options": json.dumps(options.for_hospitals()), "run-fingerprint": digest(fingerprint)})
    with open(out_dir / "messages.jsonl", "a") as log:
        strategy = HospitalFedAvg(options.hospitals, expected, log, min_available_nodes=fed.min_available_nodes,
                                  min_train_nodes=fed.min_available_nodes, fraction_train=1.0, fraction_evaluate=0.0)
        for round_number in range(start, fed.rounds + 1):
            _write_progress(out_dir, round_number, "training")
            began = time.perf_counter()
            messages = strategy.configure_train(round_number, ArrayRecord(arrays), config, grid)
            replies = grid.send_and_receive(messages, timeout=fed.round_timeout_s)
            aggregated, _ = strategy.aggregate_train(round_number, replies)
            answered = strategy.last_round
            if len(answered) < fed.min_available_nodes:
                raise RuntimeError(f"round {round_number}: {len(answered)} hospital(s) answered "
                                   f"({', '.join(sorted(a[0] for a in answered)) or 'none'}), fewer than "
                                   f"min_available_nodes = {fed.min_available_nodes}; run again to resume")
            arrays = aggregated.to_torch_state_dict()
            history.append(_round_row(round_number, answered, time.perf_counter() - began))
            _after_round(out_dir, options, arrays, history, round_number, fingerprint)
    return _finish(out_dir, options, arrays, history)


def _after_round(out_dir: Path, options, arrays, history, round_number: int, fingerprint: dict) -> None:
    fed, last = options.federation, round_number == options.federation.rounds
    write_csv(out_dir / "rounds.csv", pd.DataFrame(history))
    if round_number % fed.evaluate_every == 0 or last:
        _save(snapshot_state(options, arrays, round_number), out_dir / f"network-snapshot-round{round_number:04d}.pt")
    if round_number % fed.checkpoint_every == 0 or last:
        save_checkpoint(out_dir, round_number, arrays, history, fingerprint)
    print(f"federated {options.run}: round {round_number}/{fed.rounds} done with "
          f"{history[-1]['hospitals'].replace(';', ', ')}", file=sys.stderr)


def _finish(out_dir: Path, options: TrainFederatedOptions, arrays, history) -> Path:
    rounds = options.federation.rounds
    final = out_dir / "network-final.pt"
    state = snapshot_state(options, arrays, rounds)
    _save(state, final)
    write_json(out_dir / "network-final.json", {
        "run": options.run, "dataset": options.dataset, "rounds": rounds, "hospitals": list(options.hospitals),
        "hospital_steps": state["hospital_steps"], "kimg": state["nimg"] / 1000, "classes": list(options.label_classes),
        "conditional": options.training["conditional"], "resolution": options.resolution,
        "rounds_with_all_hospitals": sum(r["n_hospitals"] == len(options.hospitals) for r in history),
        "provenance": provenance(options.step, options.to_dict(), seed=options.training["seed"])})
    _write_progress(out_dir, rounds, "finished")
    return final


def server_options(run_config: Mapping) -> TrainFederatedOptions:
    """The ServerApp's options: the run config's `options` file with the run config's round settings
    (`RoundSettings.from_run_config`), which must be the file's. Raises ConfigError when no file is named, it is
    not a train-federated options file, or the two disagree (naming each setting and the `--run-config` to pass)."""
    path = str(run_config.get("options", ""))
    if not path:
        raise ConfigError("the run config names no options file: flwr run ... --run-config \"options='<a "
                          "train-federated options file>' out='<folder>'\" (see the app folder's README.md)")
    options = TrainFederatedOptions.load(path)
    settings = RoundSettings.from_run_config(run_config, len(options.hospitals))
    differ = options.federation.differences(settings)
    if differ:
        wanted = " ".join(f"{k}={v}" for k, v in options.federation.to_run_config().items())
        raise ConfigError(f"{path} and the run config disagree on the round settings ({'; '.join(differ)}); pass "
                          f"the file's: --run-config \"options='{path}' out='<folder>' {wanted}\" "
                          "(dermsynth federated train does)")
    return options


__all__ = ["data_fingerprint", "global_networks", "initial_arrays", "run_federation", "run_fingerprint",
           "server_options", "snapshot_state"]
