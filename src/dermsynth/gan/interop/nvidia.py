"""NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3's StyleGAN2 configs) ↔ dermsynth's StyleGAN2.

Reading goes through `safepickle.load_network_pickle` (no code from the file runs). The parameter names follow
stylegan2-ada-pytorch's `training/networks.py` (its published module tree; dermsynth's networks were written from
the same papers with the same module layout):

| NVIDIA | dermsynth |
|---|---|
| G `mapping.fc{i}.*`, `mapping.embed.*`, `mapping.w_avg` | `mapping.layers.{i}.*`, `mapping.embed.*`, `mapping.w_avg` |
| G `synthesis.b{R}.{const, conv0, conv1, torgb}.*` | `synthesis.blocks.{log2 R − 2}.…` (same leaf names) |
| D `b{R}.fromrgb.*` (top R) | `from_rgb.*` |
| D `b{R}.{conv0, conv1, skip}.*` | `blocks.{log2 top − log2 R}.…` |
| D `b4.{conv, fc, out}.*` (epilogue) | `conv.*`, `fc.*`, `out.*` |
| D `mapping.embed.*`, `mapping.fc{i}.*` (projection) | `mapping.embed.*`, `mapping.layers.{i}.*` |

The `resample_filter` buffers are checked to be StyleGAN2's [1, 3, 3, 1] (NVIDIA stores its normalised outer product,
(4, 4); dermsynth the separable 1-D form) and not copied. NVIDIA's conditional discriminator runs
its label mapping at lr_multiplier 0.01 (MappingNetwork's default), dermsynth's at 1: those stored weights and biases
are rescaled ×0.01 (the same effective weights; the import's notes say so). Architectures dermsynth does not
build — StyleGAN3 -T/-R, a generator other than "skip" or a discriminator other than "resnet", a mapping network
whose embed/layer features differ from w_dim, another resampling filter — are refused in one line naming the
hyper-parameter.

`write_nvidia_pickle` writes dermsynth networks in the same pickle structure (persistence records with state,
init kwargs and module source text; tensors as plain `pickle` stores them) — the round-trip fixture of the tests
and the import benchmark; it writes no NVIDIA code.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..networks import RESAMPLE_FILTER, Discriminator, Generator
from ..ops import setup_filter
from .imported import Architecture, CheckpointImportError, Imported, _fit_channels, sha256_of
from .safepickle import EasyDict, PersistentRecord, UnsafePickleError, load_network_pickle

NVIDIA_MAPPING_LR = 0.01  # MappingNetwork's default lr_multiplier in training/networks.py (also the D's)
NVIDIA_CONV_CLAMP = None  # SynthesisNetwork/Discriminator default (train.py passes 256)
NVIDIA_MBSTD_GROUP = 4    # DiscriminatorEpilogue default
BUFFERS = ("resample_filter", "noise_const", "w_avg")


# --- reading ------------------------------------------------------------------------------------------------------

def read_nvidia(path: str | Path, sha256: str | None = None) -> Imported:
    """An NVIDIA network pickle as an `Imported` (G_ema, G, D in dermsynth's names; architecture from the init
    kwargs and tensor shapes). Raises UnsafePickleError for any global a network pickle does not hold,
    CheckpointImportError (one line) for another architecture or a pickle without networks."""
    path = Path(path)
    try:
        data = load_network_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as exc:
        raise CheckpointImportError(f"{path} is not a readable network pickle ({str(exc)[:100]}); is the download "
                                    "complete?") from None
    return imported_from_records(data, path, sha256 or sha256_of(path))


def imported_from_records(data, path: str | Path, sha256: str) -> Imported:
    """The `Imported` of an unpickled network pickle {"G_ema", "G", "D", …} whose networks are `PersistentRecord`s
    (`read_nvidia` after `load_network_pickle`). Raises CheckpointImportError as `read_nvidia`."""
    path = Path(path)
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentRecord):
        raise CheckpointImportError(f"{path} is a pickle without G_ema, not a StyleGAN2-ADA network pickle")
    _refuse_other_architectures(data["G_ema"], data.get("D"), path)
    notes: list[str] = []
    arch = _architecture(data["G_ema"], data.get("D"), path, notes)
    G_ema = _generator_tensors(data["G_ema"], path)
    G = _generator_tensors(data["G"], path) if isinstance(data.get("G"), PersistentRecord) else None
    D = None
    if isinstance(data.get("D"), PersistentRecord):
        d_lr = float((data["D"].init_kwargs().get("mapping_kwargs") or {}).get("lr_multiplier", NVIDIA_MAPPING_LR))
        D = _discriminator_tensors(data["D"], arch.resolution, d_lr, path)
        if arch.c_dim:
            notes.append(f"D's label mapping rescaled from lr_multiplier {d_lr} to dermsynth's 1 (same function)")
    return Imported(str(path), "nvidia-pkl", sha256, arch, G_ema, G, D, notes)


def _refuse_other_architectures(G: PersistentRecord, D, path: Path) -> None:
    synthesis = G.children().get("synthesis")
    kwargs = {**G.init_kwargs(), **(G.init_kwargs().get("synthesis_kwargs") or {})}
    if synthesis is not None and ("input" in synthesis.children() or any(k.startswith("L0_") for k in
                                                                         synthesis.children())):
        kind = "-R" if kwargs.get("conv_kernel") == 1 or kwargs.get("use_radial_filters") else "-T"
        raise CheckpointImportError(f"{path}: a StyleGAN3{kind} (alias-free) generator; dermsynth builds StyleGAN2 "
                                    "only — import a StyleGAN2(-ADA) network (stylegan3's --cfg=stylegan2 pickles)")
    checks = [("synthesis architecture", kwargs.get("architecture", "skip"), "skip"),
              ("resample_filter", list(kwargs.get("resample_filter", RESAMPLE_FILTER)), RESAMPLE_FILTER)]
    mapping = G.init_kwargs().get("mapping_kwargs") or {}
    w_dim = G.init_kwargs().get("w_dim")
    checks += [(f"mapping {k}", mapping.get(k), w_dim) for k in ("embed_features", "layer_features")
               if mapping.get(k) is not None]
    checks.append(("mapping activation", mapping.get("activation", "lrelu"), "lrelu"))
    if isinstance(D, PersistentRecord):
        dk = D.init_kwargs()
        checks.append(("discriminator architecture", dk.get("architecture", "resnet"), "resnet"))
        checks.append(("mbstd_num_channels", (dk.get("epilogue_kwargs") or {}).get("mbstd_num_channels", 1), 1))
    for name, found, wanted in checks:
        if found != wanted:
            raise CheckpointImportError(f"{path}: {name} is {found!r}; dermsynth's StyleGAN2 builds {wanted!r} only")


def _architecture(G: PersistentRecord, D, path: Path, notes: list[str]) -> Architecture:
    tensors = G.tensors()
    kw = G.init_kwargs()
    synth = {**kw, **(kw.get("synthesis_kwargs") or {})}
    mapping = kw.get("mapping_kwargs") or {}
    try:
        w_dim = tensors["mapping.w_avg"].shape[0]
        c_dim = tensors["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in tensors else 0
        z_dim = tensors["mapping.fc0.weight"].shape[1] - (w_dim if c_dim else 0)
        resolutions = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"synthesis\.b(\d+)\.", k))})
        channels = {r: tensors[f"synthesis.b{r}.conv1.weight"].shape[0] for r in resolutions}
        img_channels = tensors[f"synthesis.b{resolutions[-1]}.torgb.weight"].shape[0]
    except (KeyError, IndexError):
        raise CheckpointImportError(f"{path}: G_ema lacks the mapping/synthesis tensors of a StyleGAN2 generator "
                                    "(another network)") from None
    layers = sum(1 for k in tensors if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    base, top = _fit_channels(channels)
    base, top = synth.get("channel_base", base), synth.get("channel_max", top)
    dk = D.init_kwargs() if isinstance(D, PersistentRecord) else {}
    mbstd = (dk.get("epilogue_kwargs") or {}).get("mbstd_group_size", NVIDIA_MBSTD_GROUP)
    if mbstd != NVIDIA_MBSTD_GROUP:
        notes.append(f"D's minibatch-std group size {mbstd} recorded (a fine-tuning run uses its config's)")
    return Architecture(resolutions[-1], img_channels, c_dim, z_dim, w_dim, layers,
                        float(mapping.get("lr_multiplier", NVIDIA_MAPPING_LR)), int(base), int(top),
                        synth.get("conv_clamp", NVIDIA_CONV_CLAMP), int(synth.get("num_fp16_res", 0)),
                        dk.get("cmap_dim"), int(mbstd))


def filter_2d() -> torch.Tensor:
    """StyleGAN2's resampling filter as NVIDIA's buffers hold it: the normalised outer product of [1, 3, 3, 1], (4, 4)
    (dermsynth keeps the separable 1-D form; the same filter)."""
    return setup_filter(RESAMPLE_FILTER, separable=False)


def _check_filter(name: str, value: torch.Tensor, path: Path) -> None:
    reference = filter_2d() if value.ndim == 2 else setup_filter(RESAMPLE_FILTER)
    if value.shape != reference.shape or not torch.allclose(value.float(), reference, atol=1e-6):
        raise CheckpointImportError(f"{path}: {name} is not StyleGAN2's [1, 3, 3, 1] resampling filter (another "
                                    "resample_filter); dermsynth builds that one only")


def _generator_tensors(record: PersistentRecord, path: Path) -> dict:
    out = {}
    for name, value in record.tensors().items():
        if name.endswith("resample_filter"):  # checked, then dermsynth's own (a constant of the architecture)
            _check_filter(name, value, path)
            continue
        out[_generator_name(name, path)] = value
    return out


def _generator_name(name: str, path: Path) -> str:
    if m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name):
        return f"mapping.layers.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"synthesis\.b(\d+)\.(.+)", name):
        return f"synthesis.blocks.{int(math.log2(int(m.group(1)))) - 2}.{m.group(2)}"
    if name.startswith("mapping.embed.") or name == "mapping.w_avg":
        return name
    raise CheckpointImportError(f"{path}: G tensor {name} has no place in dermsynth's StyleGAN2 (another architecture)")


def _discriminator_tensors(record: PersistentRecord, resolution: int, lr: float, path: Path) -> dict:
    out = {}
    top = int(math.log2(resolution))
    for name, value in record.tensors().items():
        if name.endswith("resample_filter"):
            _check_filter(name, value, path)
            continue
        if m := re.fullmatch(rf"b{resolution}\.fromrgb\.(.+)", name):
            out[f"from_rgb.{m.group(1)}"] = value
        elif m := re.fullmatch(r"b4\.(conv|fc|out)\.(.+)", name):
            out[f"{m.group(1)}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"b(\d+)\.(.+)", name):
            out[f"blocks.{top - int(math.log2(int(m.group(1))))}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name):
            out[f"mapping.layers.{m.group(1)}.{m.group(2)}"] = value * lr  # dermsynth's D mapping: lr_multiplier 1
        elif name.startswith("mapping.embed."):
            out[name] = value
        else:
            raise CheckpointImportError(f"{path}: D tensor {name} has no place in dermsynth's StyleGAN2 (another "
                                        "architecture)")
    return out


# --- writing ------------------------------------------------------------------------------------------------------

class _Global:
    """A global written by name (module, qualified name) without importing it: NVIDIA's modules are not here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError(f"{self.module}.{self.name} is only written, never called")


RECONSTRUCT = _Global("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = _Global("dnnlib.util", "EasyDict")
PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version` of stylegan2-ada-pytorch
WRITER_SOURCE = "# module source is not stored by dermsynth's writer\n"


class _OutRecord:
    def __init__(self, meta: dict):
        self.meta = meta


class _OutEasyDict(dict):
    pass


class _NetworkPickler(pickle._Pickler):
    """The pure-Python pickler, taught to write named globals, persistence records and EasyDicts the way NVIDIA's
    pickles hold them (REDUCE of `_reconstruct_persistent_obj`, NEWOBJ + SETITEMS of `dnnlib.util.EasyDict`)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global_by_name(self, obj: _Global) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def _save_record(self, obj: _OutRecord) -> None:
        self.save_reduce(RECONSTRUCT, (obj.meta,), obj=obj)

    def _save_easydict(self, obj: _OutEasyDict) -> None:
        self.save(EASYDICT)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    dispatch[_Global] = _save_global_by_name
    dispatch[_OutRecord] = _save_record
    dispatch[_OutEasyDict] = _save_easydict


G_CLASSES = [(r"", "Generator"), (r"mapping", "MappingNetwork"), (r"mapping\.(fc\d+|embed)", "FullyConnectedLayer"),
             (r"synthesis", "SynthesisNetwork"), (r"synthesis\.b\d+", "SynthesisBlock"),
             (r"synthesis\.b\d+\.conv[01]", "SynthesisLayer"), (r"synthesis\.b\d+\.torgb", "ToRGBLayer"),
             (r"synthesis\.b\d+\.\w+\.affine", "FullyConnectedLayer")]
D_CLASSES = [(r"", "Discriminator"), (r"b4", "DiscriminatorEpilogue"), (r"b\d+", "DiscriminatorBlock"),
             (r"b4\.(fc|out)", "FullyConnectedLayer"), (r"b\d+\.\w+", "Conv2dLayer"), (r"mapping", "MappingNetwork"),
             (r"mapping\.(fc\d+|embed)", "FullyConnectedLayer"), (r"b4\.mbstd", "MinibatchStdLayer")]


def _class_of(path: str, table) -> str:
    for pattern, name in reversed(table):
        if re.fullmatch(pattern, path):
            return name
    return "Module"


def _record_tree(tensors: dict, table, init_kwargs: dict, module_src: str, extra: tuple[str, ...] = ()) -> _OutRecord:
    """Persistence records (nested) from flat NVIDIA names: each module's state as `nn.Module.__dict__` holds it."""
    tree: dict = {}
    for name, value in tensors.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for name in extra:
        node = tree
        for part in name.split("."):
            node = node.setdefault(part, {})
    return _node_record(tree, "", table, init_kwargs, module_src)


def _node_record(node: dict, path: str, table, init_kwargs: dict, module_src: str) -> _OutRecord:
    params, buffers, modules = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
    for key, value in node.items():
        if isinstance(value, dict):
            modules[key] = _node_record(value, f"{path}.{key}".strip("."), table, {}, module_src)
        elif key == "resample_filter":
            buffers[key] = filter_2d()
        elif key in BUFFERS:
            buffers[key] = value.detach().clone()
        else:
            params[key] = torch.nn.Parameter(value.detach().clone(), requires_grad=False)
    state = {"training": False, "_parameters": params, "_buffers": buffers, "_non_persistent_buffers_set": set(),
             "_backward_hooks": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
             "_forward_pre_hooks": collections.OrderedDict(), "_state_dict_hooks": collections.OrderedDict(),
             "_load_state_dict_pre_hooks": collections.OrderedDict(), "_modules": modules,
             "_init_args": (), "_init_kwargs": init_kwargs}
    if "weight" in params and params["weight"].ndim >= 2:  # equalized lr: the layer's gain, a numpy float as NVIDIA's
        fan_in = int(np.prod(params["weight"].shape[1:]))
        state["weight_gain"] = np.float64(1 / np.sqrt(fan_in))
    meta = {"type": "class", "version": PERSISTENCE_VERSION, "module_src": module_src,
            "class_name": _class_of(path, table), "state": state}
    return _OutRecord(meta)


def _nvidia_generator_names(state: dict) -> dict:
    out = {}
    for name, value in state.items():
        if m := re.fullmatch(r"mapping\.layers\.(\d+)\.(weight|bias)", name):
            out[f"mapping.fc{m.group(1)}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"synthesis\.blocks\.(\d+)\.(.+)", name):
            out[f"synthesis.b{4 * 2 ** int(m.group(1))}.{m.group(2)}"] = value
        else:
            out[name] = value
    return out


def _nvidia_discriminator_names(state: dict, resolution: int) -> dict:
    out = {}
    for name, value in state.items():
        if m := re.fullmatch(r"from_rgb\.(.+)", name):
            out[f"b{resolution}.fromrgb.{m.group(1)}"] = value
        elif m := re.fullmatch(r"blocks\.(\d+)\.(.+)", name):
            out[f"b{resolution // 2 ** int(m.group(1))}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"(conv|fc|out)\.(.+)", name):
            out[f"b4.{m.group(1)}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"mapping\.layers\.(\d+)\.(weight|bias)", name):
            out[f"mapping.fc{m.group(1)}.{m.group(2)}"] = value / NVIDIA_MAPPING_LR
        elif name.startswith("mapping.embed."):
            out[name] = value
    return out  # dermsynth's D mapping.w_avg has no NVIDIA counterpart


def write_nvidia_pickle(path: str | Path, G_ema: Generator, G: Generator | None = None,
                        D: Discriminator | None = None, module_src: str = WRITER_SOURCE,
                        extra: dict | None = None) -> None:
    """Write dermsynth networks as an NVIDIA network pickle {"G", "D", "G_ema", "augment_pipe": None,
    "training_set_kwargs": None, **extra} (see the module docstring; `module_src` is the text stored in every record;
    `extra` e.g. the training set's kwargs, as NVIDIA's training loop stores them).
    Raises ValueError for a discriminator whose label mapping is not at lr_multiplier 1 (dermsynth's)."""
    res = G_ema.img_resolution
    base = G_ema.synthesis.blocks[0].conv1.weight.shape[0]  # channels at 4² (channel_max in practice)
    channels = {b.resolution: b.conv1.weight.shape[0] for b in G_ema.synthesis.blocks}
    channel_base, channel_max = _fit_channels(channels) if channels else (base, base)
    clamp = G_ema.synthesis.blocks[0].conv1.conv_clamp
    g_kwargs = {"z_dim": G_ema.z_dim, "c_dim": G_ema.c_dim, "w_dim": G_ema.w_dim, "img_resolution": res,
                "img_channels": G_ema.img_channels,
                "mapping_kwargs": _OutEasyDict(num_layers=len(G_ema.mapping.layers),
                                               lr_multiplier=G_ema.mapping.layers[0].bias_gain),
                "synthesis_kwargs": _OutEasyDict(channel_base=channel_base, channel_max=channel_max,
                                                 num_fp16_res=0, conv_clamp=clamp)}
    data = {"G": None, "D": None, "G_ema": None, "augment_pipe": None, "training_set_kwargs": None}
    for key, net in (("G_ema", G_ema), ("G", G)):
        if net is not None:
            data[key] = _record_tree(_nvidia_generator_names(net.state_dict()), G_CLASSES, dict(g_kwargs), module_src)
    if D is not None:
        if D.mapping is not None and D.mapping.layers[0].bias_gain != 1.0:
            raise ValueError("the discriminator's label mapping is not at lr_multiplier 1")
        d_kwargs = {"c_dim": D.c_dim, "img_resolution": res, "img_channels": G_ema.img_channels,
                    "channel_base": channel_base, "channel_max": channel_max, "num_fp16_res": 0, "conv_clamp": clamp,
                    "cmap_dim": D.cmap_dim or None, "block_kwargs": _OutEasyDict(), "mapping_kwargs": _OutEasyDict(),
                    "epilogue_kwargs": _OutEasyDict(mbstd_group_size=D.mbstd.group_size)}
        data["D"] = _record_tree(_nvidia_discriminator_names(D.state_dict(), res), D_CLASSES, d_kwargs, module_src,
                                 extra=("b4.mbstd",))
    data.update(extra or {})
    with Path(path).open("wb") as f:
        _NetworkPickler(f, protocol=4).dump(data)


__all__ = ["read_nvidia", "write_nvidia_pickle", "EasyDict", "UnsafePickleError"]
