"""rosinality's stylegan2-pytorch checkpoints ↔ dermsynth's StyleGAN2.

The format (rosinality/stylegan2-pytorch `model.py`, `train.py`, `convert_weight.py`; the one e4e, HyperStyle and
most dermatology GAN repositories load): `torch.save` of a dict with state dicts `g_ema` (always), `g`, `d`, and
`latent_avg` (w_dim,) — the mean w that convert_weight.py and e4e store. rosinality's own training checkpoints also
hold the optimisers and `args` (an `argparse.Namespace`, the one non-tensor global allowed while loading).

| rosinality `g_ema` | dermsynth `G_ema` |
|---|---|
| `style.{i}.weight/bias` (i = 1 … n_mlp; `style.0` is PixelNorm) | `mapping.layers.{i−1}.*` |
| `input.input` (1, C, 4, 4) | `synthesis.blocks.0.const` (C, 4, 4) |
| `conv1.*`, `to_rgb1.*` | `synthesis.blocks.0.conv1.*`, `.torgb.*` |
| `convs.{2k−2}.*`, `convs.{2k−1}.*`, `to_rgbs.{k−1}.*` | `synthesis.blocks.{k}.conv0.*`, `.conv1.*`, `.torgb.*` |
| `….conv.weight` (1, out, in, k, k), `….conv.modulation.*` | `….weight` (out, in, k, k), `….affine.*` |
| `….noise.weight` (1,), `….activate.bias`, `to_rgb….bias` (1, 3, 1, 1) | `….noise_strength` (), `….bias`, `torgb.bias` (3,) |
| `noises.noise_{n}` (1, 1, R, R) | the n-th conv's `noise_const` (R, R) |
| `latent_avg` | `mapping.w_avg` |

| rosinality `d` | dermsynth `D` |
|---|---|
| `convs.0.0.weight`, `convs.0.1.bias` | `from_rgb.*` |
| `convs.{k+1}.conv1.{0.weight, 1.bias}`, `.conv2.{1.weight, 2.bias}`, `.skip.1.weight` | `blocks.{k}.conv0.*`, `.conv1.*`, `.skip.weight` |
| `final_conv.{0.weight, 1.bias}`, `final_linear.{0, 1}.*` | `conv.*`, `fc.*`, `out.*` |

The blur/upsample `kernel` buffers are checked to be the [1, 3, 3, 1] filter (×4 where rosinality scales it for
upsampling). rosinality's networks apply no activation clamp (dermsynth's `conv_clamp` None), are unconditional,
and run the mapping at lr_mlp 0.01 (its default; the file does not record it). Without `latent_avg`, w_avg is the
mean w of `MEAN_LATENT_SAMPLES` seeded z, as rosinality's own `mean_latent(4096)`. Equal outputs: for the same z,
ψ and noise (rosinality's `randomize_noise=False` is dermsynth's noise_mode="const"), the same images.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..networks import RESAMPLE_FILTER, Discriminator, Generator
from ..ops import setup_filter
from .imported import Architecture, CheckpointImportError, Imported, MBSTD_DEFAULT, _fit_channels

ROSINALITY_MAPPING_LR = 0.01  # Generator(lr_mlp=0.01) in model.py
MEAN_LATENT_SAMPLES = 4096   # rosinality's g_ema.mean_latent(4096)
MEAN_LATENT_SEED = 0
ROSINALITY_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}  # × cm ≥ 64²


def load_rosinality(path: str | Path) -> dict:
    """`torch.load(weights_only=True)` of a `.pt` file, allowing `argparse.Namespace` (rosinality's `args`) besides
    tensors and containers. Raises CheckpointImportError for a file torch cannot read that way."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "argparse.Namespace" not in str(exc):
                raise
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:140]
        raise CheckpointImportError(f"{path} is not a checkpoint that loads without running code ({first})") from None


def rosinality_kernel(gain: float = 1.0) -> torch.Tensor:
    """rosinality's `make_kernel([1, 3, 3, 1])` (the normalised 4×4 outer product) × `gain` (4 where it upsamples)."""
    return setup_filter(RESAMPLE_FILTER, separable=False) * gain


def _kernel_ok(value: torch.Tensor) -> bool:
    reference = rosinality_kernel()
    return value.shape == reference.shape and torch.allclose(value / value.sum(), reference, atol=1e-6)


def _generator_name(name: str) -> tuple[str, str] | None:
    """(dermsynth name, conversion) of a rosinality g/g_ema tensor; None for a filter buffer."""
    if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", name):
        return f"mapping.layers.{int(m.group(1)) - 1}.{m.group(2)}", ""
    if name == "input.input":
        return "synthesis.blocks.0.const", "squeeze"
    if m := re.fullmatch(r"noises\.noise_(\d+)", name):
        n = int(m.group(1))
        return f"synthesis.blocks.{(n + 1) // 2}.{'conv1' if n == 0 or n % 2 == 0 else 'conv0'}.noise_const", "noise"
    if m := re.fullmatch(r"(conv1|to_rgb1|convs\.(\d+)|to_rgbs\.(\d+))\.(.+)", name):
        if m.group(1) in ("conv1", "to_rgb1"):
            block, layer = 0, "conv1" if m.group(1) == "conv1" else "torgb"
        elif m.group(2) is not None:
            block, layer = int(m.group(2)) // 2 + 1, "conv0" if int(m.group(2)) % 2 == 0 else "conv1"
        else:
            block, layer = int(m.group(3)) + 1, "torgb"
        leaf = {"conv.weight": ("weight", "squeeze"), "conv.modulation.weight": ("affine.weight", ""),
                "conv.modulation.bias": ("affine.bias", ""), "noise.weight": ("noise_strength", "scalar"),
                "activate.bias": ("bias", ""), "bias": ("bias", "flatten")}.get(m.group(4))
        if m.group(4) in ("conv.blur.kernel", "upsample.kernel"):
            return None
        if leaf is not None:
            return f"synthesis.blocks.{block}.{layer}.{leaf[0]}", leaf[1]
    raise KeyError(name)


def _convert(value: torch.Tensor, how: str) -> torch.Tensor:
    if how == "squeeze":
        return value.squeeze(0)
    if how == "noise":
        return value.reshape(value.shape[-2:])
    if how == "scalar":
        return value.reshape(())
    if how == "flatten":
        return value.flatten()
    return value


def _generator_tensors(state: dict, path: Path, what: str) -> tuple[dict, dict]:
    out, sources = {}, {}
    wavelet = next((name for name in state if re.search(r"\b(dwt|iwt)\b", name)), None)
    if wavelet is not None:
        raise CheckpointImportError(f"{path}: a SWAGAN generator ({what} tensor {wavelet}); dermsynth builds "
                                    "StyleGAN2 only")
    for name, value in state.items():
        if name.endswith("kernel"):
            if not _kernel_ok(value):
                raise CheckpointImportError(f"{path}: {what} {name} is not the [1, 3, 3, 1] resampling filter")
            continue
        try:
            mapped = _generator_name(name)
        except KeyError:
            raise CheckpointImportError(f"{path}: {what} tensor {name} has no place in dermsynth's StyleGAN2 "
                                        "(another architecture)") from None
        if mapped is not None:
            out[mapped[0]] = _convert(value, mapped[1])
            sources[mapped[0]] = name
    return out, sources


D_RULES = [(r"convs\.0\.0\.weight", "from_rgb.weight"), (r"convs\.0\.1\.bias", "from_rgb.bias"),
           (r"convs\.(\d+)\.conv1\.0\.weight", "blocks.{}.conv0.weight"),
           (r"convs\.(\d+)\.conv1\.1\.bias", "blocks.{}.conv0.bias"),
           (r"convs\.(\d+)\.conv2\.1\.weight", "blocks.{}.conv1.weight"),
           (r"convs\.(\d+)\.conv2\.2\.bias", "blocks.{}.conv1.bias"),
           (r"convs\.(\d+)\.skip\.1\.weight", "blocks.{}.skip.weight"),
           (r"final_conv\.0\.weight", "conv.weight"), (r"final_conv\.1\.bias", "conv.bias"),
           (r"final_linear\.0\.(weight|bias)", "fc.{}"), (r"final_linear\.1\.(weight|bias)", "out.{}")]


def _discriminator_tensors(state: dict, path: Path) -> dict:
    out = {}
    for name, value in state.items():
        if name.endswith("kernel"):
            if not _kernel_ok(value):
                raise CheckpointImportError(f"{path}: d {name} is not the [1, 3, 3, 1] resampling filter")
            continue
        for pattern, target in D_RULES:
            if m := re.fullmatch(pattern, name):
                arg = m.group(1) if m.groups() else None
                out[target.format(int(arg) - 1 if arg and arg.isdigit() else arg)] = value
                break
        else:
            raise CheckpointImportError(f"{path}: d tensor {name} has no place in dermsynth's StyleGAN2 (another "
                                        "architecture)")
    return out


def _architecture(g: dict, path: Path) -> Architecture:
    try:
        layers = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        w_dim, z_dim = g["style.1.weight"].shape
        rgbs = {int(m.group(1)) for k in g if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))}
        resolution = 2 ** (len(rgbs) + 2)
        channels = {4: g["conv1.conv.weight"].shape[1]}
        channels.update({2 ** (i + 3): g[f"convs.{2 * i + 1}.conv.weight"].shape[1] for i in rgbs})
        img_channels = g["to_rgb1.conv.weight"].shape[1]
    except (KeyError, ValueError, IndexError):
        raise CheckpointImportError(f"{path}: g_ema lacks the style/conv1/convs/to_rgbs tensors of rosinality's "
                                    "StyleGAN2 generator (another network)") from None
    base, top = _fit_channels(channels)
    return Architecture(resolution, img_channels, 0, z_dim, w_dim, len(layers), ROSINALITY_MAPPING_LR, base, top,
                        None, 0, None, MBSTD_DEFAULT)


def read_rosinality(state, path: str | Path, sha256: str) -> Imported:
    """A loaded rosinality checkpoint (`load_rosinality`) as an `Imported`. Raises CheckpointImportError (one line)
    for a dict without `g_ema`, another architecture (SWAGAN, another channel layout) or a misshapen tensor."""
    path = Path(path)
    if not isinstance(state, dict) or not isinstance(state.get("g_ema"), dict):
        raise CheckpointImportError(f"{path} holds no g_ema: neither a rosinality checkpoint (g_ema, g, d, latent_avg) "
                                    "nor a dermsynth one")
    arch = _architecture(state["g_ema"], path)
    notes = ["rosinality's format does not record lr_mlp; 0.01 (its default) assumed"]
    G_ema, _ = _generator_tensors(state["g_ema"], path, "g_ema")
    G = _generator_tensors(state["g"], path, "g")[0] if isinstance(state.get("g"), dict) else None
    D = _discriminator_tensors(state["d"], path) if isinstance(state.get("d"), dict) else None
    latent_avg = state.get("latent_avg")
    if latent_avg is not None:
        w_avg = torch.as_tensor(latent_avg).float().reshape(-1)
    else:
        w_avg = _mean_latent(arch, G_ema, path)
        notes.append(f"no latent_avg: w_avg is the mean w of {MEAN_LATENT_SAMPLES} seeded z (rosinality's "
                     "mean_latent)")
    for tensors in (G_ema, G):
        if tensors is not None:
            tensors["mapping.w_avg"] = w_avg
    return Imported(str(path), "rosinality-pt", sha256, arch, G_ema, G, D, notes)


@torch.no_grad()
def _mean_latent(arch: Architecture, G_ema: dict, path: Path) -> torch.Tensor:
    G, _ = arch.build()
    G.load_state_dict({**G.state_dict(), **{k: v for k, v in G_ema.items() if k in G.state_dict()
                                            and v.shape == G.state_dict()[k].shape}})
    z = torch.randn(MEAN_LATENT_SAMPLES, arch.z_dim, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    return G.mapping(z, None)[:, 0].mean(dim=0)


# --- export -------------------------------------------------------------------------------------------------------

def rosinality_generator(G: Generator) -> dict:
    """The state dict rosinality's `Generator(size, style_dim, n_mlp, channel_multiplier)` loads, from a dermsynth
    generator (inverse of the table above; filter buffers written as rosinality builds them)."""
    out = {}
    for i, layer in enumerate(G.mapping.layers):
        out[f"style.{i + 1}.weight"], out[f"style.{i + 1}.bias"] = layer.weight, layer.bias
    noise = 0
    for k, block in enumerate(G.synthesis.blocks):
        for name in ("conv0", "conv1"):
            layer = getattr(block, name)
            if layer is None:
                continue
            key = "conv1" if k == 0 else f"convs.{2 * k - 2 + (name == 'conv1')}"
            out[f"{key}.conv.weight"] = layer.weight.unsqueeze(0)
            out[f"{key}.conv.modulation.weight"], out[f"{key}.conv.modulation.bias"] = layer.affine.weight, \
                layer.affine.bias
            out[f"{key}.noise.weight"] = layer.noise_strength.reshape(1)
            out[f"{key}.activate.bias"] = layer.bias
            if name == "conv0":
                out[f"{key}.conv.blur.kernel"] = rosinality_kernel(4)
            out[f"noises.noise_{noise}"] = layer.noise_const.reshape(1, 1, *layer.noise_const.shape)
            noise += 1
        key = "to_rgb1" if k == 0 else f"to_rgbs.{k - 1}"
        out[f"{key}.conv.weight"] = block.torgb.weight.unsqueeze(0)
        out[f"{key}.conv.modulation.weight"], out[f"{key}.conv.modulation.bias"] = block.torgb.affine.weight, \
            block.torgb.affine.bias
        out[f"{key}.bias"] = block.torgb.bias.reshape(1, -1, 1, 1)
        if k > 0:
            out[f"{key}.upsample.kernel"] = rosinality_kernel(4)
    out["input.input"] = G.synthesis.blocks[0].const.unsqueeze(0)
    return {k: v.detach().clone().float() for k, v in out.items()}


def rosinality_discriminator(D: Discriminator) -> dict:
    """The state dict rosinality's `Discriminator(size, channel_multiplier)` loads, from a dermsynth discriminator."""
    out = {"convs.0.0.weight": D.from_rgb.weight, "convs.0.1.bias": D.from_rgb.bias}
    for k, block in enumerate(D.blocks):
        out.update({f"convs.{k + 1}.conv1.0.weight": block.conv0.weight, f"convs.{k + 1}.conv1.1.bias": block.conv0.bias,
                    f"convs.{k + 1}.conv2.0.kernel": rosinality_kernel(),
                    f"convs.{k + 1}.conv2.1.weight": block.conv1.weight, f"convs.{k + 1}.conv2.2.bias": block.conv1.bias,
                    f"convs.{k + 1}.skip.0.kernel": rosinality_kernel(),
                    f"convs.{k + 1}.skip.1.weight": block.skip.weight})
    out.update({"final_conv.0.weight": D.conv.weight, "final_conv.1.bias": D.conv.bias,
                "final_linear.0.weight": D.fc.weight, "final_linear.0.bias": D.fc.bias,
                "final_linear.1.weight": D.out.weight, "final_linear.1.bias": D.out.bias})
    return {k: v.detach().clone().float() for k, v in out.items()}


def channel_multiplier(arch: Architecture) -> int:
    """rosinality's `channel_multiplier` for an architecture whose feature maps are rosinality's (512 up to 32², then
    256·cm at 64², halving); raises CheckpointImportError naming the layout otherwise."""
    channels = arch.channels()
    cm = channels[64] // ROSINALITY_CHANNELS[64] if 64 in channels else 2
    if any(c != (ROSINALITY_CHANNELS[r] * (cm if r >= 64 else 1)) for r, c in channels.items()) or cm < 1:
        raise CheckpointImportError(
            f"feature maps {channels} are not rosinality's layout (512 up to 32², then 256·channel_multiplier at 64² "
            "halving with each doubling: channel_max 512, channel_base 16384·channel_multiplier)")
    return cm
