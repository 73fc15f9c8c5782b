"""Reading any StyleGAN2 checkpoint dermsynth knows, starting a training run from one (`gans.<name>.init`), and
exporting to rosinality's format: what needs both format modules (`nvidia`, `rosinality`) and `imported`.

Fine-tuning (`initialise`): G ← the file's G (its G_ema when it has none), D ← its D, G_ema ← its G_ema, each after
`architecture_differences` found nothing that keeps the weights from carrying over. An unconditional source may start
a conditional run: the mapping's first layer gets zero weights for the new label embedding (its z weights rescaled for
the equalized-lr gain 1/√fan_in), so every class starts as the source; the discriminator keeps every layer but its
output, which with the projection head's label mapping starts fresh.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import torch

from ...outputs import save_torch
from ..networks import Discriminator, Generator
from .imported import (CONSTANT_BUFFERS, TRAINED_FORMATS, Architecture, CheckpointImportError, Imported,
                       architecture_of, from_dermsynth_state, is_torch_file, load_weights, networks, sha256_of)
from .nvidia import read_nvidia
from .rosinality import (ROSINALITY_MAPPING_LR, channel_multiplier, load_rosinality, read_rosinality,
                         rosinality_discriminator, rosinality_generator)


def read_checkpoint(path: str | Path) -> Imported:
    """Any StyleGAN2 checkpoint dermsynth reads — an NVIDIA `.pkl`, a rosinality `.pt`, or a dermsynth checkpoint —
    as an `Imported` (nothing in the file is executed).
    Raises FileNotFoundError; CheckpointImportError / UnsafePickleError (one line) for a file that is none of those
    or describes an architecture dermsynth does not build."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    sha = sha256_of(path)
    if not is_torch_file(path):
        return read_nvidia(path, sha)
    state = load_rosinality(path)
    if isinstance(state, dict) and str(state.get("format", "")) in TRAINED_FORMATS:
        return from_dermsynth_state(state, path, sha)
    return read_rosinality(state, path, sha)


@functools.lru_cache(maxsize=2)
def _cached(path: str, mtime_ns: int, size: int) -> Imported:
    return read_checkpoint(path)


def read_checkpoint_cached(path: str | Path) -> Imported:
    """`read_checkpoint`, remembered for the same file (path, modification time and size): building G and D, then
    G_ema, of a fine-tuning run reads the init file once."""
    stat = Path(path).stat()
    return _cached(str(path), stat.st_mtime_ns, stat.st_size)


# --- fine-tuning: the initial state of a training run -------------------------------------------------------------

def architecture_differences(source: Architecture, target: Architecture) -> list[str]:
    """The hyper-parameters in which a checkpoint (`source`) and a run's networks (`target`) differ so that the
    weights cannot carry over, as "name: source vs target" — [] when they fit. Compute-only settings (conv_clamp,
    num_fp16_res, mbstd_group_size) do not count, and an unconditional source fits a conditional run (new label
    embedding, see `initialise`)."""
    found = [f"{key}: {getattr(source, key)} in the file, {getattr(target, key)} in this run"
             for key in ("resolution", "img_channels", "z_dim", "w_dim", "mapping_layers", "mapping_lr_multiplier")
             if getattr(source, key) != getattr(target, key)]
    if source.channels() != target.channels():
        found.append(f"channel_base/channel_max: feature maps {source.channels()} in the file, {target.channels()} "
                     "in this run")
    if source.c_dim != target.c_dim and source.c_dim != 0:
        found.append(f"c_dim (classes of a conditional GAN): {source.c_dim} in the file, {target.c_dim} in this run")
    return found


def _check_fits(imported: Imported, G: Generator) -> None:
    found = architecture_differences(imported.architecture, architecture_of(G))
    if found:
        raise CheckpointImportError(
            f"init {imported.path} does not fit this run's networks: {found[0]}"
            f"{f' (and {len(found) - 1} more)' if len(found) > 1 else ''}; set the gan's `network` and dataset "
            "resolution to the file's, or start from another checkpoint")


def _conditional_generator(source: dict, G: Generator) -> dict:
    """An unconditional generator's weights for conditional `G`: the first mapping layer gets zero columns for the
    label embedding and its z columns scaled by √(in_new / in_old) (the equalized-lr gain 1/√in changes), so every
    class starts as the source's generator; the embedding is G's own fresh one."""
    state = dict(source)
    own = G.state_dict()
    old = state["mapping.layers.0.weight"]
    new = torch.zeros_like(own["mapping.layers.0.weight"])
    new[:, :old.shape[1]] = old * math.sqrt(new.shape[1] / old.shape[1])
    state["mapping.layers.0.weight"] = new
    state.update({k: v for k, v in own.items() if k.startswith("mapping.embed.")})
    return state


def _conditional_discriminator(source: dict, D: Discriminator) -> dict:
    """An unconditional discriminator's weights for conditional `D`: every layer but the output (1 → cmap_dim
    features) carries over; the output layer and the label mapping of the projection head are D's own fresh ones."""
    own = D.state_dict()
    state = {k: v for k, v in source.items() if not k.startswith(("out.", "mapping."))}
    state.update({k: v for k, v in own.items() if k.startswith(("out.", "mapping."))})
    return state


def initialise(path: str | Path, G: Generator | None = None, D: Discriminator | None = None,
               G_ema: Generator | None = None) -> dict:
    """Load the checkpoint at `path` (`read_checkpoint`: imported, trained, NVIDIA or rosinality) into a new run's
    networks: G ← its G (its G_ema when it has no G), D ← its D, G_ema ← its G_ema (each when given). An
    unconditional source fits a conditional run (`_conditional_generator`, `_conditional_discriminator`). When the
    file has no discriminator, D keeps its fresh weights (said on stderr). Returns {"file", "sha256", "format"}.
    Raises CheckpointImportError (one line naming the first hyper-parameter that differs) when it does not fit."""
    imported = read_checkpoint_cached(path)
    reference = G if G is not None else G_ema
    _check_fits(imported, reference)
    conditional = imported.architecture.c_dim == 0 and reference.c_dim > 0
    for net, state, name in ((G, imported.G if imported.G is not None else imported.G_ema, "G"),
                             (G_ema, imported.G_ema, "G_ema")):
        if net is not None:
            load_weights(net, _conditional_generator(state, net) if conditional else state, name, str(path),
                         optional=CONSTANT_BUFFERS)
    if D is not None and imported.D is None:
        print(f"init {path}: the file holds no discriminator; D starts from fresh weights", file=sys.stderr)
    elif D is not None:
        state = _conditional_discriminator(imported.D, D) if conditional else imported.D
        load_weights(D, state, "D", str(path), optional=CONSTANT_BUFFERS + ("mapping.w_avg",))
    return {"file": str(path), "sha256": imported.sha256, "format": imported.format,
            "has_discriminator": imported.D is not None}


def export_rosinality(network: str | Path, out: str | Path) -> dict:
    """Write the generator (and discriminator) of `network` — a dermsynth checkpoint, or any file `read_checkpoint`
    reads — as a rosinality checkpoint {"g_ema", "g", "d", "latent_avg"} at `out`. Returns what it wrote (for the
    verb's JSON): resolution, style_dim, n_mlp, channel_multiplier, notes.
    Raises CheckpointImportError (one line) for what rosinality's networks cannot express: a conditional generator,
    another channel layout, a mapping lr_multiplier other than 0.01."""
    imported = read_checkpoint(network)
    arch = imported.architecture
    if arch.c_dim:
        raise CheckpointImportError(f"{network}: a conditional generator ({arch.c_dim} classes); rosinality's "
                                    "Generator is unconditional, so it cannot be exported to that format")
    if arch.z_dim != arch.w_dim:
        raise CheckpointImportError(f"{network}: z_dim {arch.z_dim} ≠ w_dim {arch.w_dim}; rosinality's Generator has "
                                    "one style_dim for both")
    if arch.mapping_lr_multiplier != ROSINALITY_MAPPING_LR:
        raise CheckpointImportError(f"{network}: mapping_lr_multiplier {arch.mapping_lr_multiplier}; rosinality-format "
                                    f"tools build the mapping at lr_mlp {ROSINALITY_MAPPING_LR}")
    try:
        cm = channel_multiplier(arch)
    except CheckpointImportError as exc:
        raise CheckpointImportError(f"{network}: {exc}; rosinality-format tools build that layout only") from None
    nets = networks(imported)
    state = {"g_ema": rosinality_generator(nets["G_ema"]),
             "latent_avg": nets["G_ema"].mapping.w_avg.detach().clone()}
    if "G" in nets:
        state["g"] = rosinality_generator(nets["G"])
    if "D" in nets:
        state["d"] = rosinality_discriminator(nets["D"])
    save_torch(out, state)
    notes = [] if arch.conv_clamp is None else [f"dermsynth clamps activations at ±{arch.conv_clamp}; rosinality's "
                                                 "networks do not (outputs differ only where that clamp acted)"]
    return {"out": str(out), "format": "rosinality-pt", "size": arch.resolution, "style_dim": arch.w_dim,
            "n_mlp": arch.mapping_layers, "channel_multiplier": cm, "networks": sorted(state), "notes": notes}
