"""Importing published StyleGAN2 checkpoints (issue 30): NVIDIA network pickles and rosinality .pt files map onto
dermsynth's networks with bitwise-identical images, the published FFHQ-256 key lists map completely, and a pickle that
names any other global is refused without running it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import pickletools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dermsynth.cli import main
from dermsynth.gan.generate import generate_images
from dermsynth.gan.interop.checkpoint import read_checkpoint
from dermsynth.gan.interop.imported import CheckpointImportError, networks
from dermsynth.gan.interop.nvidia import filter_2d, imported_from_records, write_nvidia_pickle
from dermsynth.gan.interop.rosinality import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, read_rosinality, rosinality_kernel
from dermsynth.gan.interop.safepickle import PersistentRecord
from dermsynth.gan.networks import Discriminator, Generator, seed_latents
from dermsynth.gan.run import load_generator

# --- the published key lists (names and shapes, as the networks' state dicts hold them) ------------------------------
# NVIDIA stylegan2-ada-pytorch's FFHQ 256² transfer-learning source (ffhq-res256-mirror-paper256-noaug.pkl, config
# paper256: channel_base 16384, channel_max 512, 8 mapping layers, mbstd group 8): G_ema and D.
NVIDIA_FFHQ256_G = """
mapping.fc0.weight [512, 512]
mapping.fc0.bias [512]
mapping.fc1.weight [512, 512]
mapping.fc1.bias [512]
mapping.fc2.weight [512, 512]
mapping.fc2.bias [512]
mapping.fc3.weight [512, 512]
mapping.fc3.bias [512]
mapping.fc4.weight [512, 512]
mapping.fc4.bias [512]
mapping.fc5.weight [512, 512]
mapping.fc5.bias [512]
mapping.fc6.weight [512, 512]
mapping.fc6.bias [512]
mapping.fc7.weight [512, 512]
mapping.fc7.bias [512]
mapping.w_avg [512]
synthesis.b4.const [512, 4, 4]
synthesis.b4.resample_filter [4, 4]
synthesis.b4.conv1.weight [512, 512, 3, 3]
synthesis.b4.conv1.noise_strength []
synthesis.b4.conv1.bias [512]
synthesis.b4.conv1.resample_filter [4, 4]
synthesis.b4.conv1.noise_const [4, 4]
synthesis.b4.conv1.affine.weight [512, 512]
synthesis.b4.conv1.affine.bias [512]
synthesis.b4.torgb.weight [3, 512, 1, 1]
synthesis.b4.torgb.bias [3]
synthesis.b4.torgb.affine.weight [512, 512]
synthesis.b4.torgb.affine.bias [512]
synthesis.b8.resample_filter [4, 4]
synthesis.b8.conv0.weight [512, 512, 3, 3]
synthesis.b8.conv0.noise_strength []
synthesis.b8.conv0.bias [512]
synthesis.b8.conv0.resample_filter [4, 4]
synthesis.b8.conv0.noise_const [8, 8]
synthesis.b8.conv0.affine.weight [512, 512]
synthesis.b8.conv0.affine.bias [512]
synthesis.b8.conv1.weight [512, 512, 3, 3]
synthesis.b8.conv1.noise_strength []
synthesis.b8.conv1.bias [512]
synthesis.b8.conv1.resample_filter [4, 4]
synthesis.b8.conv1.noise_const [8, 8]
synthesis.b8.conv1.affine.weight [512, 512]
synthesis.b8.conv1.affine.bias [512]
synthesis.b8.torgb.weight [3, 512, 1, 1]
synthesis.b8.torgb.bias [3]
synthesis.b8.torgb.affine.weight [512, 512]
synthesis.b8.torgb.affine.bias [512]
synthesis.b16.resample_filter [4, 4]
synthesis.b16.conv0.weight [512, 512, 3, 3]
synthesis.b16.conv0.noise_strength []
synthesis.b16.conv0.bias [512]
synthesis.b16.conv0.resample_filter [4, 4]
synthesis.b16.conv0.noise_const [16, 16]
synthesis.b16.conv0.affine.weight [512, 512]
synthesis.b16.conv0.affine.bias [512]
synthesis.b16.conv1.weight [512, 512, 3, 3]
synthesis.b16.conv1.noise_strength []
synthesis.b16.conv1.bias [512]
synthesis.b16.conv1.resample_filter [4, 4]
synthesis.b16.conv1.noise_const [16, 16]
synthesis.b16.conv1.affine.weight [512, 512]
synthesis.b16.conv1.affine.bias [512]
synthesis.b16.torgb.weight [3, 512, 1, 1]
synthesis.b16.torgb.bias [3]
synthesis.b16.torgb.affine.weight [512, 512]
synthesis.b16.torgb.affine.bias [512]
synthesis.b32.resample_filter [4, 4]
synthesis.b32.conv0.weight [512, 512, 3, 3]
synthesis.b32.conv0.noise_strength []
synthesis.b32.conv0.bias [512]
synthesis.b32.conv0.resample_filter [4, 4]
synthesis.b32.conv0.noise_const [32, 32]
synthesis.b32.conv0.affine.weight [512, 512]
synthesis.b32.conv0.affine.bias [512]
synthesis.b32.conv1.weight [512, 512, 3, 3]
synthesis.b32.conv1.noise_strength []
synthesis.b32.conv1.bias [512]
synthesis.b32.conv1.resample_filter [4, 4]
synthesis.b32.conv1.noise_const [32, 32]
synthesis.b32.conv1.affine.weight [512, 512]
synthesis.b32.conv1.affine.bias [512]
synthesis.b32.torgb.weight [3, 512, 1, 1]
synthesis.b32.torgb.bias [3]
synthesis.b32.torgb.affine.weight [512, 512]
synthesis.b32.torgb.affine.bias [512]
synthesis.b64.resample_filter [4, 4]
synthesis.b64.conv0.weight [256, 512, 3, 3]
synthesis.b64.conv0.noise_strength []
synthesis.b64.conv0.bias [256]
synthesis.b64.conv0.resample_filter [4, 4]
synthesis.b64.conv0.noise_const [64, 64]
synthesis.b64.conv0.affine.weight [512, 512]
synthesis.b64.conv0.affine.bias [512]
synthesis.b64.conv1.weight [256, 256, 3, 3]
synthesis.b64.conv1.noise_strength []
synthesis.b64.conv1.bias [256]
synthesis.b64.conv1.resample_filter [4, 4]
synthesis.b64.conv1.noise_const [64, 64]
synthesis.b64.conv1.affine.weight [256, 512]
synthesis.b64.conv1.affine.bias [256]
synthesis.b64.torgb.weight [3, 256, 1, 1]
synthesis.b64.torgb.bias [3]
synthesis.b64.torgb.affine.weight [256, 512]
synthesis.b64.torgb.affine.bias [256]
synthesis.b128.resample_filter [4, 4]
synthesis.b128.conv0.weight [128, 256, 3, 3]
synthesis.b128.conv0.noise_strength []
synthesis.b128.conv0.bias [128]
synthesis.b128.conv0.resample_filter [4, 4]
synthesis.b128.conv0.noise_const [128, 128]
synthesis.b128.conv0.affine.weight [256, 512]
synthesis.b128.conv0.affine.bias [256]
synthesis.b128.conv1.weight [128, 128, 3, 3]
synthesis.b128.conv1.noise_strength []
synthesis.b128.conv1.bias [128]
synthesis.b128.conv1.resample_filter [4, 4]
synthesis.b128.conv1.noise_const [128, 128]
synthesis.b128.conv1.affine.weight [128, 512]
synthesis.b128.conv1.affine.bias [128]
synthesis.b128.torgb.weight [3, 128, 1, 1]
synthesis.b128.torgb.bias [3]
synthesis.b128.torgb.affine.weight [128, 512]
synthesis.b128.torgb.affine.bias [128]
synthesis.b256.resample_filter [4, 4]
synthesis.b256.conv0.weight [64, 128, 3, 3]
synthesis.b256.conv0.noise_strength []
synthesis.b256.conv0.bias [64]
synthesis.b256.conv0.resample_filter [4, 4]
synthesis.b256.conv0.noise_const [256, 256]
synthesis.b256.conv0.affine.weight [128, 512]
synthesis.b256.conv0.affine.bias [128]
synthesis.b256.conv1.weight [64, 64, 3, 3]
synthesis.b256.conv1.noise_strength []
synthesis.b256.conv1.bias [64]
synthesis.b256.conv1.resample_filter [4, 4]
synthesis.b256.conv1.noise_const [256, 256]
synthesis.b256.conv1.affine.weight [64, 512]
synthesis.b256.conv1.affine.bias [64]
synthesis.b256.torgb.weight [3, 64, 1, 1]
synthesis.b256.torgb.bias [3]
synthesis.b256.torgb.affine.weight [64, 512]
synthesis.b256.torgb.affine.bias [64]
"""
NVIDIA_FFHQ256_D = """
b256.fromrgb.weight [64, 3, 1, 1]
b256.fromrgb.bias [64]
b256.fromrgb.resample_filter [4, 4]
b256.resample_filter [4, 4]
b256.conv0.weight [64, 64, 3, 3]
b256.conv0.bias [64]
b256.conv0.resample_filter [4, 4]
b256.conv1.weight [128, 64, 3, 3]
b256.conv1.bias [128]
b256.conv1.resample_filter [4, 4]
b256.skip.weight [128, 64, 1, 1]
b256.skip.resample_filter [4, 4]
b128.resample_filter [4, 4]
b128.conv0.weight [128, 128, 3, 3]
b128.conv0.bias [128]
b128.conv0.resample_filter [4, 4]
b128.conv1.weight [256, 128, 3, 3]
b128.conv1.bias [256]
b128.conv1.resample_filter [4, 4]
b128.skip.weight [256, 128, 1, 1]
b128.skip.resample_filter [4, 4]
b64.resample_filter [4, 4]
b64.conv0.weight [256, 256, 3, 3]
b64.conv0.bias [256]
b64.conv0.resample_filter [4, 4]
b64.conv1.weight [512, 256, 3, 3]
b64.conv1.bias [512]
b64.conv1.resample_filter [4, 4]
b64.skip.weight [512, 256, 1, 1]
b64.skip.resample_filter [4, 4]
b32.resample_filter [4, 4]
b32.conv0.weight [512, 512, 3, 3]
b32.conv0.bias [512]
b32.conv0.resample_filter [4, 4]
b32.conv1.weight [512, 512, 3, 3]
b32.conv1.bias [512]
b32.conv1.resample_filter [4, 4]
b32.skip.weight [512, 512, 1, 1]
b32.skip.resample_filter [4, 4]
b16.resample_filter [4, 4]
b16.conv0.weight [512, 512, 3, 3]
b16.conv0.bias [512]
b16.conv0.resample_filter [4, 4]
b16.conv1.weight [512, 512, 3, 3]
b16.conv1.bias [512]
b16.conv1.resample_filter [4, 4]
b16.skip.weight [512, 512, 1, 1]
b16.skip.resample_filter [4, 4]
b8.resample_filter [4, 4]
b8.conv0.weight [512, 512, 3, 3]
b8.conv0.bias [512]
b8.conv0.resample_filter [4, 4]
b8.conv1.weight [512, 512, 3, 3]
b8.conv1.bias [512]
b8.conv1.resample_filter [4, 4]
b8.skip.weight [512, 512, 1, 1]
b8.skip.resample_filter [4, 4]
b4.conv.weight [512, 513, 3, 3]
b4.conv.bias [512]
b4.conv.resample_filter [4, 4]
b4.fc.weight [512, 8192]
b4.fc.bias [512]
b4.out.weight [1, 512]
b4.out.bias [1]
"""
# rosinality stylegan2-pytorch's FFHQ 256² checkpoint (Generator(256, 512, 8, channel_multiplier=2), its
# Discriminator): g_ema (g has the same keys) and d.
ROSINALITY_FFHQ256_G = """
style.1.weight [512, 512]
style.1.bias [512]
style.2.weight [512, 512]
style.2.bias [512]
style.3.weight [512, 512]
style.3.bias [512]
style.4.weight [512, 512]
style.4.bias [512]
style.5.weight [512, 512]
style.5.bias [512]
style.6.weight [512, 512]
style.6.bias [512]
style.7.weight [512, 512]
style.7.bias [512]
style.8.weight [512, 512]
style.8.bias [512]
input.input [1, 512, 4, 4]
conv1.conv.weight [1, 512, 512, 3, 3]
conv1.conv.modulation.weight [512, 512]
conv1.conv.modulation.bias [512]
conv1.noise.weight [1]
conv1.activate.bias [512]
to_rgb1.conv.weight [1, 3, 512, 1, 1]
to_rgb1.conv.modulation.weight [512, 512]
to_rgb1.conv.modulation.bias [512]
to_rgb1.bias [1, 3, 1, 1]
convs.0.conv.weight [1, 512, 512, 3, 3]
convs.0.conv.modulation.weight [512, 512]
convs.0.conv.modulation.bias [512]
convs.0.conv.blur.kernel [4, 4]
convs.0.noise.weight [1]
convs.0.activate.bias [512]
convs.1.conv.weight [1, 512, 512, 3, 3]
convs.1.conv.modulation.weight [512, 512]
convs.1.conv.modulation.bias [512]
convs.1.noise.weight [1]
convs.1.activate.bias [512]
to_rgbs.0.upsample.kernel [4, 4]
to_rgbs.0.conv.weight [1, 3, 512, 1, 1]
to_rgbs.0.conv.modulation.weight [512, 512]
to_rgbs.0.conv.modulation.bias [512]
to_rgbs.0.bias [1, 3, 1, 1]
convs.2.conv.weight [1, 512, 512, 3, 3]
convs.2.conv.modulation.weight [512, 512]
convs.2.conv.modulation.bias [512]
convs.2.conv.blur.kernel [4, 4]
convs.2.noise.weight [1]
convs.2.activate.bias [512]
convs.3.conv.weight [1, 512, 512, 3, 3]
convs.3.conv.modulation.weight [512, 512]
convs.3.conv.modulation.bias [512]
convs.3.noise.weight [1]
convs.3.activate.bias [512]
to_rgbs.1.upsample.kernel [4, 4]
to_rgbs.1.conv.weight [1, 3, 512, 1, 1]
to_rgbs.1.conv.modulation.weight [512, 512]
to_rgbs.1.conv.modulation.bias [512]
to_rgbs.1.bias [1, 3, 1, 1]
convs.4.conv.weight [1, 512, 512, 3, 3]
convs.4.conv.modulation.weight [512, 512]
convs.4.conv.modulation.bias [512]
convs.4.conv.blur.kernel [4, 4]
convs.4.noise.weight [1]
convs.4.activate.bias [512]
convs.5.conv.weight [1, 512, 512, 3, 3]
convs.5.conv.modulation.weight [512, 512]
convs.5.conv.modulation.bias [512]
convs.5.noise.weight [1]
convs.5.activate.bias [512]
to_rgbs.2.upsample.kernel [4, 4]
to_rgbs.2.conv.weight [1, 3, 512, 1, 1]
to_rgbs.2.conv.modulation.weight [512, 512]
to_rgbs.2.conv.modulation.bias [512]
to_rgbs.2.bias [1, 3, 1, 1]
convs.6.conv.weight [1, 512, 512, 3, 3]
convs.6.conv.modulation.weight [512, 512]
convs.6.conv.modulation.bias [512]
convs.6.conv.blur.kernel [4, 4]
convs.6.noise.weight [1]
convs.6.activate.bias [512]
convs.7.conv.weight [1, 512, 512, 3, 3]
convs.7.conv.modulation.weight [512, 512]
convs.7.conv.modulation.bias [512]
convs.7.noise.weight [1]
convs.7.activate.bias [512]
to_rgbs.3.upsample.kernel [4, 4]
to_rgbs.3.conv.weight [1, 3, 512, 1, 1]
to_rgbs.3.conv.modulation.weight [512, 512]
to_rgbs.3.conv.modulation.bias [512]
to_rgbs.3.bias [1, 3, 1, 1]
convs.8.conv.weight [1, 256, 512, 3, 3]
convs.8.conv.modulation.weight [512, 512]
convs.8.conv.modulation.bias [512]
convs.8.conv.blur.kernel [4, 4]
convs.8.noise.weight [1]
convs.8.activate.bias [256]
convs.9.conv.weight [1, 256, 256, 3, 3]
convs.9.conv.modulation.weight [256, 512]
convs.9.conv.modulation.bias [256]
convs.9.noise.weight [1]
convs.9.activate.bias [256]
to_rgbs.4.upsample.kernel [4, 4]
to_rgbs.4.conv.weight [1, 3, 256, 1, 1]
to_rgbs.4.conv.modulation.weight [256, 512]
to_rgbs.4.conv.modulation.bias [256]
to_rgbs.4.bias [1, 3, 1, 1]
convs.10.conv.weight [1, 128, 256, 3, 3]
convs.10.conv.modulation.weight [256, 512]
convs.10.conv.modulation.bias [256]
convs.10.conv.blur.kernel [4, 4]
convs.10.noise.weight [1]
convs.10.activate.bias [128]
convs.11.conv.weight [1, 128, 128, 3, 3]
convs.11.conv.modulation.weight [128, 512]
convs.11.conv.modulation.bias [128]
convs.11.noise.weight [1]
convs.11.activate.bias [128]
to_rgbs.5.upsample.kernel [4, 4]
to_rgbs.5.conv.weight [1, 3, 128, 1, 1]
to_rgbs.5.conv.modulation.weight [128, 512]
to_rgbs.5.conv.modulation.bias [128]
to_rgbs.5.bias [1, 3, 1, 1]
noises.noise_0 [1, 1, 4, 4]
noises.noise_1 [1, 1, 8, 8]
noises.noise_2 [1, 1, 8, 8]
noises.noise_3 [1, 1, 16, 16]
noises.noise_4 [1, 1, 16, 16]
noises.noise_5 [1, 1, 32, 32]
noises.noise_6 [1, 1, 32, 32]
noises.noise_7 [1, 1, 64, 64]
noises.noise_8 [1, 1, 64, 64]
noises.noise_9 [1, 1, 128, 128]
noises.noise_10 [1, 1, 128, 128]
noises.noise_11 [1, 1, 256, 256]
noises.noise_12 [1, 1, 256, 256]
"""
ROSINALITY_FFHQ256_D = """
convs.0.0.weight [128, 3, 1, 1]
convs.0.1.bias [128]
convs.1.conv1.0.weight [128, 128, 3, 3]
convs.1.conv1.1.bias [128]
convs.1.conv2.0.kernel [4, 4]
convs.1.conv2.1.weight [256, 128, 3, 3]
convs.1.conv2.2.bias [256]
convs.1.skip.0.kernel [4, 4]
convs.1.skip.1.weight [256, 128, 1, 1]
convs.2.conv1.0.weight [256, 256, 3, 3]
convs.2.conv1.1.bias [256]
convs.2.conv2.0.kernel [4, 4]
convs.2.conv2.1.weight [512, 256, 3, 3]
convs.2.conv2.2.bias [512]
convs.2.skip.0.kernel [4, 4]
convs.2.skip.1.weight [512, 256, 1, 1]
convs.3.conv1.0.weight [512, 512, 3, 3]
convs.3.conv1.1.bias [512]
convs.3.conv2.0.kernel [4, 4]
convs.3.conv2.1.weight [512, 512, 3, 3]
convs.3.conv2.2.bias [512]
convs.3.skip.0.kernel [4, 4]
convs.3.skip.1.weight [512, 512, 1, 1]
convs.4.conv1.0.weight [512, 512, 3, 3]
convs.4.conv1.1.bias [512]
convs.4.conv2.0.kernel [4, 4]
convs.4.conv2.1.weight [512, 512, 3, 3]
convs.4.conv2.2.bias [512]
convs.4.skip.0.kernel [4, 4]
convs.4.skip.1.weight [512, 512, 1, 1]
convs.5.conv1.0.weight [512, 512, 3, 3]
convs.5.conv1.1.bias [512]
convs.5.conv2.0.kernel [4, 4]
convs.5.conv2.1.weight [512, 512, 3, 3]
convs.5.conv2.2.bias [512]
convs.5.skip.0.kernel [4, 4]
convs.5.skip.1.weight [512, 512, 1, 1]
convs.6.conv1.0.weight [512, 512, 3, 3]
convs.6.conv1.1.bias [512]
convs.6.conv2.0.kernel [4, 4]
convs.6.conv2.1.weight [512, 512, 3, 3]
convs.6.conv2.2.bias [512]
convs.6.skip.0.kernel [4, 4]
convs.6.skip.1.weight [512, 512, 1, 1]
final_conv.0.weight [512, 513, 3, 3]
final_conv.1.bias [512]
final_linear.0.weight [512, 8192]
final_linear.0.bias [512]
final_linear.1.weight [1, 512]
final_linear.1.bias [1]
"""


def _parse(text: str) -> dict[str, list[int]]:
    return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in text.strip().splitlines()}


def _tensors(shapes: dict[str, list[int]], fill) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {name: fill(name) if fill(name) is not None else torch.randn(shape, generator=generator)
            for name, shape in shapes.items()}


# --- small networks with known weights --------------------------------------------------------------------------------

def _networks(c_dim: int = 0, **kwargs) -> tuple[Generator, Generator, Discriminator]:
    """(G_ema, G, D) with every parameter and buffer moved off its initial value (noise strengths too)."""
    arch = {"z_dim": 16, "w_dim": 16, "img_resolution": 16, "channel_base": 256, "channel_max": 32,
            "mapping_layers": 2, **kwargs}
    torch.manual_seed(5)
    G_ema, G = Generator(c_dim=c_dim, **arch).eval(), Generator(c_dim=c_dim, **arch).eval()
    D = Discriminator(c_dim=c_dim, img_resolution=16, channel_base=arch["channel_base"],
                      channel_max=arch["channel_max"], conv_clamp=kwargs.get("conv_clamp", 256)).eval()
    with torch.no_grad():
        for net in (G_ema, G, D):
            for name, p in net.named_parameters():
                p.add_(torch.randn_like(p) * 0.2)
        G_ema.mapping.w_avg.normal_()
    return G_ema, G, D


def _images(G: Generator, c_dim: int) -> list[torch.Tensor]:
    """The same z, c, ψ and noise: constant noise, explicit noise maps, and no truncation."""
    z = seed_latents(range(4), G.z_dim)
    c = torch.eye(c_dim)[[0, 1, 2, 0]] if c_dim else None
    noise = [torch.randn(4, 1, r, r, generator=torch.Generator().manual_seed(r))
             for r in G.synthesis.noise_resolutions()]
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=0.7)
        return [G(z, c, truncation_psi=0.7, noise_mode="const"), G.synthesis(ws, noise=noise),
                G(z, c, noise_mode="none")]


def _canary_command(canary) -> str:
    return f"touch {canary}"


# --- NVIDIA .pkl ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c_dim", [0, 3])
def test_nvidia_pickle_round_trip_gives_identical_images(tmp_path, c_dim, capsys):
    G_ema, G, D = _networks(c_dim)
    pkl = tmp_path / "network.pkl"
    write_nvidia_pickle(pkl, G_ema, G, D)
    globals_used = {arg for op, arg, _ in pickletools.genops(pkl.read_bytes()) if op.name == "SHORT_BINUNICODE"
                    and arg in ("torch_utils.persistence", "_reconstruct_persistent_obj", "dnnlib.util", "EasyDict")}
    assert globals_used == {"torch_utils.persistence", "_reconstruct_persistent_obj", "dnnlib.util", "EasyDict"}

    assert main(["gan", "import", str(pkl), "--out", str(tmp_path / "imported.pt")]) == 0
    record = json.loads((tmp_path / "imported.json").read_text())
    assert record["format"] == "nvidia-pkl" and record["sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert record["networks"] == ["G_ema", "G", "D"] and record["architecture"]["c_dim"] == c_dim
    state = torch.load(tmp_path / "imported.pt", weights_only=True)
    assert json.loads(state["source"])["sha256"] == record["sha256"]

    imported = load_generator(tmp_path / "imported.pt")
    for ours, theirs in zip(_images(G_ema, c_dim), _images(imported, c_dim)):
        assert torch.equal(ours, theirs)
    trained_g = load_generator(tmp_path / "imported.pt", ema=False)
    assert torch.equal(_images(G, c_dim)[0], _images(trained_g, c_dim)[0])
    D2 = networks(read_checkpoint(tmp_path / "imported.pt"))["D"]
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    c = torch.eye(3)[[0, 1, 2, 0]] if c_dim else None
    with torch.no_grad():  # the projection's label mapping is rescaled (lr_multiplier 0.01 ↔ 1): equal to rounding
        torch.testing.assert_close(D2(img, c), D(img, c), rtol=1e-5, atol=1e-6)


def test_a_conditional_import_is_named_with_classes_and_generate_picks_a_class_by_name(tmp_path, capsys):
    """Published conditional pickles hold no class names: `--classes` records them in label order for
    `gan generate --class`; without them the import says how to name them and generate refuses in one line."""
    G_ema, G, D = _networks(c_dim=3)
    pkl = tmp_path / "network.pkl"
    write_nvidia_pickle(pkl, G_ema, G, D)
    assert main(["gan", "import", str(pkl), "--out", str(tmp_path / "unnamed.pt")]) == 0
    assert "import it again with --classes" in capsys.readouterr().err
    assert "classes" not in json.loads((tmp_path / "unnamed.json").read_text())
    assert main(["gan", "generate", "--network", str(tmp_path / "unnamed.pt"), "--seeds", "0", "--class", "nv",
                 "--out", str(tmp_path / "none"), "--device", "cpu"]) == 2
    assert "--classes NAME" in capsys.readouterr().err and not (tmp_path / "none").exists()

    for wrong, said in (("mel,nv", "2 names"), ("mel,nv,nv", "nv given twice"), ("mel,,bcc", "an empty name")):
        assert main(["gan", "import", str(pkl), "--classes", wrong, "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert said in err and "give 3 distinct names" in err and not (tmp_path / "x.pt").exists()
    assert main(["gan", "import", str(pkl), "--classes", "mel", "nv", "bcc", "--out", str(tmp_path / "spaced.pt")]) == 0
    assert json.loads((tmp_path / "spaced.json").read_text())["classes"] == ["mel", "nv", "bcc"]
    assert main(["gan", "import", str(pkl), "--classes", "mel, nv ,bcc", "--out", str(tmp_path / "named.pt")]) == 0
    record = json.loads((tmp_path / "named.json").read_text())
    assert record["classes"] == record["trained_on_classes"] == ["mel", "nv", "bcc"]
    assert record["provenance"]["config"]["classes"] == ["mel", "nv", "bcc"]
    assert main(["gan", "generate", "--network", str(tmp_path / "named.pt"), "--seeds", "0-1", "--class", "nv",
                 "--out", str(tmp_path / "nv"), "--device", "cpu"]) == 0
    made = sorted((tmp_path / "nv").glob("*.png"))
    expected = generate_images(load_generator(tmp_path / "named.pt"), [0, 1], class_index=1)  # label 1 = "nv"
    assert len(made) == 2 and set(pd.read_csv(tmp_path / "nv" / "manifest.csv")["label"]) == {"nv"}
    for image, png in zip(expected, made):
        assert np.array_equal(np.asarray(Image.open(png)), image.permute(1, 2, 0).numpy())


def test_nvidia_record_state_is_read_as_data_the_stored_source_never_runs(tmp_path):
    """A network pickle whose stored module source would create the canary imports without creating it."""
    canary = tmp_path / "canary"
    G_ema, G, D = _networks()
    pkl = tmp_path / "network.pkl"
    write_nvidia_pickle(pkl, G_ema, G, D, module_src=f"import os\nos.system({_canary_command(canary)!r})\n")
    assert main(["gan", "import", str(pkl), "--out", str(tmp_path / "imported.pt")]) == 0
    assert not canary.exists()
    assert torch.equal(_images(G_ema, 0)[0], _images(load_generator(tmp_path / "imported.pt"), 0)[0])


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("where", ["top", "inside-network"])
def test_a_pickle_naming_any_other_global_is_refused_in_one_line_without_running_it(tmp_path, where, capsys):
    canary = tmp_path / "canary"
    evil = _Evil(_canary_command(canary))
    pkl = tmp_path / "evil.pkl"
    if where == "top":
        pkl.write_bytes(pickle.dumps({"G_ema": evil}, protocol=4))
    else:  # a well-formed network pickle whose training-set kwargs (after the networks) hold the call
        G_ema, G, D = _networks()
        write_nvidia_pickle(pkl, G_ema, G, D, extra={"training_set_kwargs": {"path": evil}})
    assert main(["gan", "import", str(pkl), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "system" in err[0] and "refused" in err[0] and "nothing from the file was executed" in err[0]
    assert not canary.exists() and not (tmp_path / "x.pt").exists()


def test_published_nvidia_ffhq256_key_lists_map_completely():
    G_shapes, D_shapes = _parse(NVIDIA_FFHQ256_G), _parse(NVIDIA_FFHQ256_D)
    fill = lambda name: filter_2d() if name.endswith("resample_filter") else None  # noqa: E731
    G_ema = PersistentRecord("Generator", {"_parameters": _tensors(G_shapes, fill), "_init_kwargs": {
        "z_dim": 512, "w_dim": 512, "c_dim": 0, "img_resolution": 256, "img_channels": 3,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {"channel_base": 16384, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256}}})
    D = PersistentRecord("Discriminator", {"_parameters": _tensors(D_shapes, fill), "_init_kwargs": {
        "c_dim": 0, "img_resolution": 256, "img_channels": 3, "channel_base": 16384, "channel_max": 512,
        "num_fp16_res": 4, "conv_clamp": 256, "epilogue_kwargs": {"mbstd_group_size": 8}}})
    imported = imported_from_records({"G_ema": G_ema, "G": G_ema, "D": D}, "ffhq256.pkl", "0" * 64)
    arch = imported.architecture
    assert (arch.resolution, arch.z_dim, arch.w_dim, arch.mapping_layers, arch.conv_clamp, arch.mbstd_group_size) == \
        (256, 512, 512, 8, 256, 8)
    assert arch.channels() == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    nets = networks(imported)  # every dermsynth tensor given, every file tensor placed, every shape checked
    G = nets["G_ema"]
    filters = sum(name.endswith("resample_filter") for name in G_shapes)
    assert len(G.state_dict()) == len(G_shapes) - filters + sum(k.endswith("resample_filter") for k in G.state_dict())
    assert torch.equal(G.synthesis.blocks[3].conv0.weight, G_ema.tensors()["synthesis.b32.conv0.weight"])
    assert torch.equal(nets["D"].blocks[1].skip.weight, D.tensors()["b128.skip.weight"])
    assert torch.equal(nets["D"].from_rgb.bias, D.tensors()["b256.fromrgb.bias"])


# --- rosinality .pt ---------------------------------------------------------------------------------------------------

def _rosinality_layout():
    """A network in rosinality's channel layout (512 feature maps up to 32²), small otherwise."""
    return _networks(z_dim=32, w_dim=32, channel_base=16384, channel_max=512, conv_clamp=None)


def _dermsynth_checkpoint(path, G_ema, G, D):
    network = {"z_dim": G_ema.z_dim, "w_dim": G_ema.w_dim, "mapping_layers": len(G_ema.mapping.layers),
               "channel_base": 16384, "channel_max": 512, "conv_clamp": None}
    torch.save({"format": "dermsynth-stylegan2-imported-v1", "options": json.dumps({"network": network}),
                "G_ema": G_ema.state_dict(), "G": G.state_dict(), "D": D.state_dict()}, path)


def test_rosinality_export_and_import_round_trip_gives_identical_images(tmp_path, capsys):
    G_ema, G, D = _rosinality_layout()
    _dermsynth_checkpoint(tmp_path / "network.pt", G_ema, G, D)
    assert main(["gan", "export", str(tmp_path / "network.pt"), "--format", "rosinality",
                 "--out", str(tmp_path / "rosinality.pt")]) == 0
    state = torch.load(tmp_path / "rosinality.pt", weights_only=True)
    assert sorted(state) == ["d", "g", "g_ema", "latent_avg"] and torch.equal(state["latent_avg"], G_ema.mapping.w_avg)
    assert {k for k in state["g_ema"] if k.startswith("noises.")} == {f"noises.noise_{n}" for n in range(5)}
    assert main(["gan", "import", str(tmp_path / "rosinality.pt"), "--out", str(tmp_path / "back.pt")]) == 0
    assert json.loads((tmp_path / "back.json").read_text())["format"] == "rosinality-pt"
    back = load_generator(tmp_path / "back.pt")
    for ours, theirs in zip(_images(G_ema, 0), _images(back, 0)):
        assert torch.equal(ours, theirs)
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(networks(read_checkpoint(tmp_path / "back.pt"))["D"](img), D(img))


def _rosinality_mapping(state: dict, z: torch.Tensor, lr: float = 0.01) -> torch.Tensor:
    """rosinality's style network, written from its definition: PixelNorm, then EqualLinear(lr_mul) + fused leaky
    ReLU (slope 0.2, gain √2) per layer."""
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, 1 + sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))):
        w, b = state[f"style.{i}.weight"], state[f"style.{i}.bias"]
        x = F.leaky_relu(x @ (w * lr / math.sqrt(w.shape[1])).t() + b * lr, 0.2) * math.sqrt(2)
    return x


def test_rosinality_without_latent_avg_takes_the_mean_w_of_seeded_z(tmp_path):
    G_ema, G, D = _rosinality_layout()
    _dermsynth_checkpoint(tmp_path / "network.pt", G_ema, G, D)
    main(["gan", "export", str(tmp_path / "network.pt"), "--out", str(tmp_path / "r.pt")])
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    del state["latent_avg"]
    imported = read_rosinality(state, tmp_path / "r.pt", "0" * 64)
    z = torch.randn(MEAN_LATENT_SAMPLES, 32, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    expected = _rosinality_mapping(state["g_ema"], z).mean(dim=0)
    torch.testing.assert_close(imported.G_ema["mapping.w_avg"], expected, rtol=1e-5, atol=1e-5)
    assert any("latent_avg" in note for note in imported.notes)


def test_published_rosinality_ffhq256_key_lists_map_completely():
    g_shapes, d_shapes = _parse(ROSINALITY_FFHQ256_G), _parse(ROSINALITY_FFHQ256_D)
    upsampling = lambda name: name.endswith(("blur.kernel", "upsample.kernel"))  # noqa: E731
    g = _tensors(g_shapes, lambda n: rosinality_kernel(4) if upsampling(n) else None)
    d = _tensors(d_shapes, lambda n: rosinality_kernel() if n.endswith("kernel") else None)
    state = {"g_ema": g, "g": g, "d": d, "latent_avg": torch.zeros(512)}
    imported = read_rosinality(state, "550000.pt", "0" * 64)
    assert imported.architecture.channels() == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    nets = networks(imported)
    assert torch.equal(nets["G_ema"].synthesis.blocks[6].conv0.weight, g["convs.10.conv.weight"][0])
    assert torch.equal(nets["G_ema"].synthesis.blocks[6].conv1.noise_const, g["noises.noise_12"][0, 0])
    assert torch.equal(nets["G_ema"].mapping.layers[7].weight, g["style.8.weight"])
    assert torch.equal(nets["D"].blocks[5].conv1.weight, d["convs.6.conv2.1.weight"])


# --- what is refused --------------------------------------------------------------------------------------------------

def test_architectures_dermsynth_does_not_build_are_refused_in_one_line():
    synthesis = PersistentRecord("SynthesisNetwork", {"_modules": {"input": PersistentRecord("SynthesisInput", {}),
                                                                   "L0_36_512": PersistentRecord("SynthesisLayer", {})}})
    sg3 = PersistentRecord("Generator", {"_modules": {"synthesis": synthesis}, "_init_kwargs": {"conv_kernel": 1}})
    with pytest.raises(CheckpointImportError, match="StyleGAN3-R"):
        imported_from_records({"G_ema": sg3}, "sg3.pkl", "0" * 64)
    resnet_g = PersistentRecord("Generator", {"_init_kwargs": {"synthesis_kwargs": {"architecture": "resnet"}}})
    with pytest.raises(CheckpointImportError, match="synthesis architecture is 'resnet'"):
        imported_from_records({"G_ema": resnet_g}, "g.pkl", "0" * 64)
    state = {"g_ema": {**_parse_state(ROSINALITY_FFHQ256_G), "to_rgbs.0.iwt.ll": torch.zeros(1)}}
    with pytest.raises(CheckpointImportError, match="SWAGAN"):
        read_rosinality(state, "swagan.pt", "0" * 64)


def _parse_state(text: str) -> dict:
    return {k: torch.zeros(v) for k, v in _parse(text).items()}


def test_export_refuses_what_rosinality_cannot_express(tmp_path, capsys):
    G_ema, G, D = _networks(c_dim=3)
    pkl = tmp_path / "c.pkl"
    write_nvidia_pickle(pkl, G_ema, G, D)
    assert main(["gan", "export", str(pkl), "--out", str(tmp_path / "r.pt")]) == 2
    assert "conditional generator (3 classes)" in capsys.readouterr().err
    G_ema, G, D = _networks()  # channel_base 256, channel_max 32: not rosinality's layout
    write_nvidia_pickle(pkl, G_ema, G, D)
    assert main(["gan", "export", str(pkl), "--out", str(tmp_path / "r.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not rosinality's layout" in err[0]
    assert not (tmp_path / "r.pt").exists()
