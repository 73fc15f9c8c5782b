"""GAN-inversion networks, our own implementations of e4e (Tov et al. 2021) and HyperStyle (Alaluf et al. 2022).

e4e: a timm backbone gives a three-level feature pyramid (strides 8/16/32), merged top-down as in
pSp's FPN. One head reads the deepest level and predicts w0; every further style index i predicts
an offset Δ_i from the level matching its layer's resolution (coarse ≤ 8² from the deepest, middle
16²–32² from the middle, fine ≥ 64² from the shallowest). ws_i = w_avg + w0 + Δ_i, where training
switches the offsets on progressively (index 1 first, then 2, …), so the code stays close to W
(editable) and only then spreads into W+. A latent discriminator pushes w0 + Δ_i towards the
distribution of the mapping network's outputs.

HyperStyle: a second backbone reads (target image, current reconstruction) stacked as six channels
and predicts, for each chosen 3×3 modulated convolution, a relative kernel offset
θ̂ = θ ⊙ (1 + Δ), Δ of shape (out, in) shared over the kernel window. Δ is predicted in low-rank
form a·bᵀ (rank r): the published model's full-size heads are the largest part of its parameters,
and low-rank factors keep the stored offsets of a whole split small. Offsets accumulate over
iterations: Δ_t = Δ_{t−1} + a_t b_tᵀ, starting from the e4e inversion (Δ_0 = 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import timm_model
from .named import LAYER_RANGES
from .sefa import layer_resolution


def ws_resolutions(G) -> list[int]:
    """Synthesis resolution of each style index (the last toRGB belongs to the top block)."""
    resolutions = [block.resolution for block in G.synthesis.blocks for _ in range(block.num_conv)]
    return resolutions + [G.synthesis.blocks[-1].resolution]


def pyramid_level(resolution: int) -> int:
    """0 = shallowest (fine), 1 = middle, 2 = deepest (coarse)."""
    return 2 if resolution <= 8 else 1 if resolution <= 32 else 0


def to_encoder_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or [-1, 1] float images → float [-1, 1] at size × size."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images


class StyleHead(nn.Module):
    """Strided 3×3 convolutions down to 1×1, then a linear layer: one style vector per image (pSp's
    'gradual style block')."""

    def __init__(self, channels: int, out_dim: int, spatial: int):
        super().__init__()
        layers = []
        for _ in range(max(0, int(math.log2(spatial)))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.convs(features)
        return self.linear(x.mean(dim=[2, 3]))


class FeaturePyramid(nn.Module):
    """A timm backbone's last three feature levels, merged top-down to `channels` each (`backbone.timm_model`:
    ImageNet weights from `weights_cache` when `pretrained`)."""

    def __init__(self, backbone: str, in_chans: int, channels: int, weights_cache, pretrained: bool):
        super().__init__()
        self.body, self.weights = timm_model(backbone, weights_cache, pretrained=pretrained, features_only=True,
                                             in_chans=in_chans, out_indices=(-3, -2, -1))
        self.reductions = self.body.feature_info.reduction()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.body.feature_info.channels())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels = [lateral(f) for lateral, f in zip(self.lateral, self.body(images))]
        for i in (1, 0):  # top-down: each level adds the upsampled deeper one
            levels[i] = levels[i] + F.interpolate(levels[i + 1], size=levels[i].shape[-2:], mode="bilinear",
                                                  align_corners=False)
        return levels


class E4eEncoder(nn.Module):
    """The e4e encoder (Tov et al. 2021, section 3; module docstring): uint8 or float images → W+ codes of a
    generator with `num_ws` style inputs of `w_dim`; `ws_res[i]` is the resolution style input i drives (it picks
    the pyramid level of its head). `input_resolution`: side the images are resized to; `backbone`: the timm
    network of the feature pyramid, with ImageNet weights from `weights_cache` when `pretrained` (the settings'
    `latent.e4e.input_resolution`, `.backbone`, `.pretrained`: `latent.inversion.build_e4e` passes them)."""

    def __init__(self, num_ws: int, w_dim: int, ws_res: list[int], input_resolution: int, backbone: str,
                 weights_cache, pretrained: bool):
        super().__init__()
        self.num_ws, self.w_dim, self.input_resolution = num_ws, w_dim, input_resolution
        self.pyramid = FeaturePyramid(backbone, 3, w_dim, weights_cache, pretrained)
        self.levels = [pyramid_level(r) for r in ws_res]
        self.levels[0] = 2  # w0 reads the deepest level
        spatial = [max(1, input_resolution // r) for r in self.pyramid.reductions]
        self.heads = nn.ModuleList(StyleHead(w_dim, w_dim, spatial[level]) for level in self.levels)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("active_offsets", torch.tensor(num_ws - 1))  # progressive training sets this

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (ws (N, num_ws, w_dim), offsets Δ (N, num_ws − 1, w_dim), zero beyond the active ones)."""
        levels = self.pyramid(to_encoder_input(images, self.input_resolution))
        w0 = self.heads[0](levels[self.levels[0]])
        offsets = [head(levels[level]) for head, level in zip(self.heads[1:], self.levels[1:])]
        offsets = torch.stack(offsets, dim=1) if offsets else w0.new_zeros(len(w0), 0, self.w_dim)
        mask = (torch.arange(self.num_ws - 1, device=w0.device) < self.active_offsets).to(w0.dtype)
        offsets = offsets * mask[None, :, None]
        ws = self.w_avg + w0[:, None, :] + torch.cat([torch.zeros_like(w0[:, None]), offsets], dim=1)
        return ws, offsets


class LatentDiscriminator(nn.Module):
    """Tells mapping-network w's (real) from encoder w's (fake): e4e's latent adversary."""

    def __init__(self, w_dim: int, layers: int = 4):
        super().__init__()
        blocks = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(w_dim, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w).flatten()


def hyper_layers(G, layer_ranges: list[str]) -> list[tuple[str, int, int]]:
    """(name, out channels, in channels) of the 3×3 modulated convolutions HyperStyle offsets."""
    chosen = []
    for name, layer in G.synthesis.conv_layers():
        resolution = layer_resolution(name)
        if any(LAYER_RANGES[r][0] <= resolution <= LAYER_RANGES[r][1] for r in layer_ranges):
            chosen.append((name, layer.weight.shape[0], layer.weight.shape[1]))
    return chosen


class OffsetHead(nn.Module):
    """Pooled features → low-rank factors (a (N, out, r), b (N, in, r)) of one layer's Δ."""

    def __init__(self, channels: int, out_channels: int, in_channels: int, rank: int, hidden: int = 256):
        super().__init__()
        self.out_channels, self.in_channels, self.rank = out_channels, in_channels, rank
        self.body = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(0.2))
        self.a = nn.Linear(hidden, out_channels * rank)
        self.b = nn.Linear(hidden, in_channels * rank)
        nn.init.zeros_(self.a.weight)  # Δ starts at 0: the first refinement begins at the W-encoder's image
        nn.init.zeros_(self.a.bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(pooled)
        a = self.a(hidden).reshape(-1, self.out_channels, self.rank) / math.sqrt(self.rank)
        b = self.b(hidden).reshape(-1, self.in_channels, self.rank)
        return a, b


class HyperNetwork(nn.Module):
    """The HyperStyle hypernetwork (Alaluf et al. 2022, section 3; module docstring): (target, reconstruction)
    stacked as six channels → a rank-`rank` increment a·bᵀ of the relative kernel offset Δ of each of `layers`
    ((name, out channels, in channels) of the generator's 3×3 modulated convolutions). `input_resolution`,
    `backbone`, `pretrained` (weights from `weights_cache`), `rank`: the `latent.hyperstyle` settings that
    `latent.inversion.build_hypernetwork` passes; `channels`: the pyramid's width (an architecture constant)."""

    def __init__(self, layers: list[tuple[str, int, int]], input_resolution: int, backbone: str, rank: int,
                 weights_cache, pretrained: bool, channels: int = 256):
        super().__init__()
        self.layer_names = [name for name, _, _ in layers]
        self.input_resolution, self.rank = input_resolution, rank
        self.pyramid = FeaturePyramid(backbone, 6, channels, weights_cache, pretrained)
        self.heads = nn.ModuleDict({name.replace(".", "_"): OffsetHead(3 * channels, out_c, in_c, rank)
                                    for name, out_c, in_c in layers})

    def forward(self, targets: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """→ {layer name: (a, b)}, this iteration's low-rank increment a·bᵀ of each layer's Δ."""
        size = self.input_resolution
        stacked = torch.cat([to_encoder_input(targets, size), to_encoder_input(reconstructions, size)], dim=1)
        pooled = torch.cat([level.mean(dim=[2, 3]) for level in self.pyramid(stacked)], dim=1)
        return {name: self.heads[name.replace(".", "_")](pooled) for name in self.layer_names}


def deltas_from_factors(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{layer: (A (N, out, k), B (N, in, k))} → {layer: Δ = A·Bᵀ (N, out, in)}."""
    return {name: a.float() @ b.float().transpose(1, 2) for name, (a, b) in factors.items()}


def accumulate(factors: dict | None, increment: dict) -> dict:
    """Δ_t = Δ_{t−1} + a_t·b_tᵀ, kept as concatenated factors (rank grows by r per iteration)."""
    if factors is None:
        return dict(increment)
    return {name: (torch.cat([factors[name][0], a], dim=2), torch.cat([factors[name][1], b], dim=2))
            for name, (a, b) in increment.items()}
