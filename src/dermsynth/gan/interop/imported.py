"""What the NVIDIA and rosinality readers share: the architecture a file describes, the shape-checked load of its
tensors into dermsynth's `Generator`/`Discriminator`, and the imported checkpoint `dermsynth gan import` writes
(reading any format and fine-tuning: `checkpoint`).

An imported checkpoint is a dict loadable with `torch.load(weights_only=True)`:
{"format": "dermsynth-stylegan2-imported-v1", "options": JSON {"network": Generator keyword arguments,
"discriminator": Discriminator keyword arguments}, "G_ema", "G" (when the source has it), "D" (likewise): state dicts
in dermsynth's names, "source": JSON {"file", "sha256", "format", "notes"}}. Every verb that reads a generator
(`gan generate`, `gan sample-sheet`, `latent project`, …) reads it like a trained `network-final.pt`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...errors import DermsynthError
from ...outputs import save_torch
from ..networks import Discriminator, Generator

IMPORTED_FORMAT = "dermsynth-stylegan2-imported-v1"
TRAINED_FORMATS = ("dermsynth-stylegan2-checkpoint-v1", "dermsynth-federated-snapshot-v1", IMPORTED_FORMAT)
HASH_CHUNK = 1 << 20
# Buffers a file may leave out because they are constants of the architecture (rosinality stores its own scaled
# copies of the [1, 3, 3, 1] filter, which the readers check and drop).
CONSTANT_BUFFERS = ("resample_filter",)


class CheckpointImportError(DermsynthError):
    """A checkpoint file cannot become a dermsynth StyleGAN2 (another architecture, a missing or misshapen tensor)."""


@dataclass(frozen=True)
class Architecture:
    """The hyper-parameters that fix a StyleGAN2's tensors and function, in dermsynth's terms: image side
    `resolution` (pixels), `img_channels`, classes `c_dim` (0: unconditional), latent sizes `z_dim`/`w_dim`,
    `mapping_layers` and their `mapping_lr_multiplier` (the stored weights' scale), channels min(channel_base / r,
    channel_max) at resolution r, `conv_clamp` (None: no clamp), `num_fp16_res` (compute only); the
    discriminator's projection size `cmap_dim` (None: channels at 4²) and minibatch-std group `mbstd_group_size`."""

    resolution: int
    img_channels: int
    c_dim: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    mapping_lr_multiplier: float
    channel_base: int
    channel_max: int
    conv_clamp: float | None
    num_fp16_res: int
    cmap_dim: int | None
    mbstd_group_size: int

    def channels(self) -> dict[int, int]:
        """Feature maps per resolution 4 … `resolution`."""
        return {4 * 2 ** i: min(self.channel_base // (4 * 2 ** i), self.channel_max)
                for i in range(int(math.log2(self.resolution)) - 1)}

    def generator_kwargs(self) -> dict:
        """`Generator` keyword arguments besides c_dim and img_resolution (what the checkpoint's options record)."""
        return {"z_dim": self.z_dim, "w_dim": self.w_dim, "img_channels": self.img_channels,
                "channel_base": self.channel_base, "channel_max": self.channel_max,
                "mapping_layers": self.mapping_layers, "mapping_lr_multiplier": self.mapping_lr_multiplier,
                "conv_clamp": self.conv_clamp, "num_fp16_res": self.num_fp16_res}

    def discriminator_kwargs(self) -> dict:
        """`Discriminator` keyword arguments besides c_dim and img_resolution."""
        return {"img_channels": self.img_channels, "channel_base": self.channel_base,
                "channel_max": self.channel_max, "cmap_dim": self.cmap_dim,
                "mbstd_group_size": self.mbstd_group_size, "conv_clamp": self.conv_clamp,
                "num_fp16_res": self.num_fp16_res}

    def build(self) -> tuple[Generator, Discriminator]:
        """(G, D) of this architecture on CPU, in eval mode, weights drawn from a fixed seed (every one of them is
        overwritten by a load)."""
        side = self.resolution  # the file's, not a setting of this run
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            G = Generator(c_dim=self.c_dim, img_resolution=side, **self.generator_kwargs())
            D = Discriminator(c_dim=self.c_dim, img_resolution=side, **self.discriminator_kwargs())
        return G.eval(), D.eval()


def architecture_of(G: Generator, D: Discriminator | None = None) -> Architecture:
    """The `Architecture` of built networks (what a fine-tuning run's config made)."""
    layer0 = G.mapping.layers[0]
    channels = {b.resolution: b.conv1.weight.shape[0] for b in G.synthesis.blocks}
    base, top = _fit_channels(channels)
    return Architecture(G.img_resolution, G.img_channels, G.c_dim, G.z_dim, G.w_dim, len(G.mapping.layers),
                        layer0.bias_gain, base, top, G.synthesis.blocks[0].conv1.conv_clamp,
                        0, None if D is None else D.cmap_dim or None,
                        MBSTD_DEFAULT if D is None else D.mbstd.group_size)


# What a trained checkpoint's options leave out is what train-gan built: the networks' config-f keyword defaults.
MBSTD_DEFAULT = inspect.signature(Discriminator).parameters["mbstd_group_size"].default
GENERATOR_DEFAULTS = {key: inspect.signature(Generator).parameters[key].default
                      for key in ("mapping_lr_multiplier", "conv_clamp", "num_fp16_res")}


def _fit_channels(channels: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) that give `channels` {resolution: feature maps} by min(base / r, max); the
    smallest base that does when several do. Raises CheckpointImportError when none does."""
    top = max(channels.values())
    below = {r: c for r, c in channels.items() if c < top}
    base = max((c * r for r, c in below.items()), default=top * max(channels))
    if any(min(base // r, top) != c for r, c in channels.items()):
        raise CheckpointImportError(f"feature maps per resolution {dict(sorted(channels.items()))} do not follow "
                                    "min(channel_base / r, channel_max), the only channel layout dermsynth builds")
    return base, top


@dataclass
class Imported:
    """A checkpoint read into dermsynth's names: `G_ema` (always), `G` and `D` (None when the file lacks them) as
    {name: tensor} state dicts, its `architecture`, `format` ("nvidia-pkl", "rosinality-pt", "dermsynth"), the
    file's `sha256`, and `notes` (what the import changed or assumed, in words)."""

    path: str
    format: str
    sha256: str
    architecture: Architecture
    G_ema: dict
    G: dict | None = None
    D: dict | None = None
    notes: list[str] = field(default_factory=list)

    def source(self) -> dict:
        """What the imported checkpoint records of its source."""
        return {"file": Path(self.path).name, "sha256": self.sha256, "format": self.format, "notes": self.notes}


def sha256_of(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(module: torch.nn.Module, tensors: dict, what: str, where: str, sources: dict | None = None,
                 optional: tuple[str, ...] = ()) -> None:
    """Load {dermsynth name: tensor} into `module` after checking that every tensor has its place and shape and
    that every parameter/buffer is given (`optional` ones keep the module's value). `sources` maps a dermsynth
    name to the file's own name for the messages. Raises CheckpointImportError (one line naming the tensor)."""
    sources = sources or {}
    target = module.state_dict()
    for name, value in tensors.items():
        if name not in target:
            raise CheckpointImportError(f"{where}: {what} tensor {sources.get(name, name)} has no place in dermsynth's "
                                        "StyleGAN2 (another architecture)")
        if tuple(value.shape) != tuple(target[name].shape):
            raise CheckpointImportError(
                f"{where}: {what} tensor {sources.get(name, name)} has shape {list(value.shape)}, where dermsynth's "
                f"StyleGAN2 of the file's hyper-parameters has {list(target[name].shape)}")
    missing = [name for name in target if name not in tensors and not name.endswith(optional or ("\0",))]
    if missing:
        raise CheckpointImportError(f"{where}: its {what} holds no {missing[0]}"
                                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    module.load_state_dict({**target, **{k: v.detach().to(target[k].dtype) for k, v in tensors.items()}})


def networks(imported: Imported) -> dict[str, torch.nn.Module]:
    """{"G_ema", "G", "D"} (those the file holds) built from its architecture with its weights, shape-checked."""
    G, D = imported.architecture.build()
    nets = {"G_ema": G}
    load_weights(G, imported.G_ema, "G_ema", imported.path, optional=CONSTANT_BUFFERS)
    if imported.G is not None:
        nets["G"] = imported.architecture.build()[0]
        load_weights(nets["G"], imported.G, "G", imported.path, optional=CONSTANT_BUFFERS)
    if imported.D is not None:
        load_weights(D, imported.D, "D", imported.path, optional=CONSTANT_BUFFERS + ("mapping.w_avg",))
        nets["D"] = D
    return nets


def imported_state(imported: Imported) -> dict:
    """The imported checkpoint of `imported` (see the module docstring), tensors loaded and checked."""
    nets = networks(imported)
    state = {"format": IMPORTED_FORMAT,
             "options": json.dumps({"network": imported.architecture.generator_kwargs(),
                                    "discriminator": imported.architecture.discriminator_kwargs()}),
             "source": json.dumps(imported.source())}
    state.update({name: net.state_dict() for name, net in nets.items()})
    return state


def write_imported(imported: Imported, out: str | Path) -> dict:
    """Write the imported checkpoint to `out` (atomically). Returns what `gan import` reports (JSON-ready)."""
    save_torch(out, imported_state(imported))
    return {"out": str(out), **imported.source(), "architecture": asdict(imported.architecture),
            "networks": [n for n in ("G_ema", "G", "D") if getattr(imported, n) is not None]}


def from_dermsynth_state(state: dict, path: str | Path, sha256: str) -> Imported:
    """A dermsynth checkpoint (trained, federated snapshot, or imported) as an `Imported`."""
    options = json.loads(state["options"])
    network = dict(options.get("network", {}))
    disc = dict(options.get("discriminator", {}))
    G_ema = state["G_ema"]
    blocks = [int(k.split(".")[2]) for k in G_ema if k.startswith("synthesis.blocks.")]
    c_dim = G_ema["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in G_ema else 0
    resolution = 4 * 2 ** max(blocks)
    channels = {4 * 2 ** b: G_ema[f"synthesis.blocks.{b}.conv1.weight"].shape[0] for b in set(blocks)}
    base, top = _fit_channels(channels)
    w_dim = G_ema["mapping.w_avg"].shape[0]
    layers = sum(1 for k in G_ema if k.startswith("mapping.layers.") and k.endswith(".weight"))
    z_dim = G_ema["mapping.layers.0.weight"].shape[1] - (w_dim if c_dim else 0)
    defaults = {**GENERATOR_DEFAULTS, "img_channels": G_ema["synthesis.blocks.0.torgb.weight"].shape[0],
                "channel_base": base, "channel_max": top}
    g = {key: network.get(key, defaults[key]) for key in defaults}
    arch = Architecture(resolution, g["img_channels"], c_dim, z_dim, w_dim, layers, g["mapping_lr_multiplier"],
                        g["channel_base"], g["channel_max"], g["conv_clamp"], g["num_fp16_res"],
                        disc.get("cmap_dim"), disc.get("mbstd_group_size", MBSTD_DEFAULT))
    return Imported(str(path), "dermsynth", sha256, arch, G_ema, state.get("G"), state.get("D"))


def is_torch_file(path: str | Path) -> bool:
    """Whether `path` is a `torch.save` file (zip, or the legacy stream that starts with torch's magic number)
    rather than a plain pickle (NVIDIA's network pickles)."""
    with Path(path).open("rb") as f:
        head = f.read(16)
    return head.startswith(b"PK\x03\x04") or head[2:4] == b"\x8a\x0a" and head[4:14] == b"l\xfc\x9cF\xf9 j\xa8P\x19"
