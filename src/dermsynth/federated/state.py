"""What a federated StyleGAN2 run shares, what each hospital keeps, and how the server averages.

Shared (sent to the hospitals, returned by them, averaged by FedAvg), named `G.<name>`, `D.<name>`,
`G_ema.<name>`:
    every parameter of G, D and G_ema (float32), and the running average of W (`mapping.w_avg`, a float buffer
    that moves with training and defines truncation).
Kept at each hospital, persisted between rounds in its own state folder (`ClientState`):
    both Adam optimisers' moments and step counts, the ADA probability p and its accumulator, the path-length
    mean, the hospital's step and image counters, its data order position and its RNG states. They describe the
    hospital's own optimisation; averaging moments of different data is not FedAvg (McMahan et al., 2017,
    average model weights only) and the study keeps them local.
Never sent, never averaged:
    the constant buffers (noise maps, resampling filters): every process builds them identically from the run's
    seed (`gan.training.build_networks`), so the server and all hospitals hold the same values. Integer buffers
    (none in these networks today) would be in this group too: averaging counts or indices has no meaning.

FedAvg (McMahan et al., 2017, Algorithm 1, weights n_k / n): the new global value of every shared array is
Σ_k n_k · x_k / Σ_k n_k over the hospitals k that answered, n_k its number of training images. It is computed in
float64 in the order of the hospitals' names and rounded once to float32, so the result does not depend on the
order in which replies arrive (Flower's built-in aggregation sums in arrival order, in float32).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ..fingerprint import differences
from ..outputs import save_torch, write_json

NETWORKS = ("G", "D", "G_ema")
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "dermsynth-federated-checkpoint-v1"


def shared_arrays(networks: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The shared state of `networks` ({"G": G, "D": D, "G_ema": G_ema}) as {"<net>.<name>": float32 CPU tensor},
    in a fixed order (networks as `NETWORKS`, names as in the state dict). Detached copies."""
    out = {}
    for net in NETWORKS:
        module = networks[net]
        params = dict(module.named_parameters())
        for name, value in module.state_dict().items():
            if name in params or name.endswith("w_avg"):
                out[f"{net}.{name}"] = value.detach().to("cpu", torch.float32).clone()
    return out


def load_shared(networks: dict[str, torch.nn.Module], arrays: dict[str, torch.Tensor]) -> None:
    """Copy `arrays` (as `shared_arrays` names them) into `networks` in place. Raises ValueError when a shared
    array is missing or an unknown one is given (another network configuration)."""
    expected = set(shared_arrays(networks))
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays))[:5], sorted(set(arrays) - expected)[:5]
        raise ValueError(f"the global model does not fit this network (missing {missing}, unknown {extra}): "
                         "server and hospitals must run the same options")
    with torch.no_grad():
        for net in NETWORKS:
            state = networks[net].state_dict()
            for name, target in state.items():
                key = f"{net}.{name}"
                if key in arrays:
                    target.copy_(arrays[key].to(target.device, target.dtype))


def fedavg(replies: list[tuple[str, int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """FedAvg of hospitals' arrays: `replies` = [(hospital, n_images, {name: float32 tensor})]; returns
    {name: float32 tensor} = Σ n_k x_k / Σ n_k, accumulated in float64 in the order of the hospital names.
    Raises ValueError for no replies, a non-positive count or replies with different array names."""
    if not replies:
        raise ValueError("FedAvg of no replies")
    replies = sorted(replies, key=lambda r: r[0])
    names = list(replies[0][2])
    total = 0
    for hospital, count, arrays in replies:
        if count <= 0:
            raise ValueError(f"hospital {hospital} reported {count} training images")
        if list(arrays) != names:
            raise ValueError(f"hospital {hospital} returned other arrays than {replies[0][0]}")
        total += count
    out = {}
    for name in names:
        acc = torch.zeros_like(replies[0][2][name], dtype=torch.float64)
        for _, count, arrays in replies:
            acc += count * arrays[name].to(torch.float64)
        out[name] = (acc / total).to(torch.float32)
    return out


def save_checkpoint(out_dir: str | Path, round_number: int, arrays: dict[str, torch.Tensor], history: list[dict],
                    fingerprint: dict) -> Path:
    """The server's resume point: `checkpoint.pt` ({format, round, arrays}; loadable with weights_only=True) and
    `checkpoint.json` ({round, history of rounds, fingerprint of the run}), each written under a temporary name
    unique to this process and renamed (`outputs`; a full disk is one `OutputError` line)."""
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    save_torch(path, {"format": CHECKPOINT_FORMAT, "round": round_number, "arrays": arrays})
    write_json(out_dir / "checkpoint.json", {"round": round_number, "history": history, "fingerprint": fingerprint})
    return path


def load_checkpoint(out_dir: str | Path, fingerprint: dict) -> tuple[int, dict[str, torch.Tensor], list[dict]] | None:
    """(round, arrays, history) of the checkpoint when it belongs to this run (its recorded fingerprint equals
    `fingerprint`, see `server.run_fingerprint`), else None. A checkpoint of another run, without a fingerprint,
    unreadable, or whose two files disagree is renamed aside (`checkpoint-superseded-<time>.*`, said in one line
    naming what differs), never resumed."""
    out_dir = Path(out_dir)
    path, meta = out_dir / CHECKPOINT, out_dir / "checkpoint.json"
    if not path.exists() or not meta.exists():
        return None
    try:
        record = json.loads(meta.read_text())
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = differences(record.get("fingerprint"), fingerprint)
        if not found and (state.get("format") != CHECKPOINT_FORMAT or state["round"] != record["round"]):
            found = [f"checkpoint.pt (round {state.get('round')}) and checkpoint.json (round {record.get('round')}) "
                     "are not one checkpoint"]
    except Exception as exc:  # noqa: BLE001 — any unreadable checkpoint is set aside, not resumed
        found = [f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"]
    if found:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in (path, meta):
            p.rename(p.with_name(f"checkpoint-superseded-{stamp}{p.suffix}"))
        print(f"federated: {path} belongs to another run ({'; '.join(found[:4])}); renamed it to "
              f"checkpoint-superseded-{stamp}.pt/.json and starting at round 1", file=sys.stderr, flush=True)
        return None
    return int(record["round"]), state["arrays"], list(record["history"])


__all__ = ["NETWORKS", "fedavg", "load_checkpoint", "load_shared", "save_checkpoint", "shared_arrays"]
