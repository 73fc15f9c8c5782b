"""StyleGAN2 networks, written from the papers (Karras et al. 2020 "Analyzing and improving the image
quality of StyleGAN"; 2020 "Training generative adversarial networks with limited data").

* Equalised learning rate everywhere: parameters are stored at unit scale and multiplied by
  He's constant at run time (`lr_multiplier` additionally slows the mapping network down 100×).
* Generator: mapping network (z, optional label → w, 8 layers), synthesis network with a learned
  4×4 constant, modulated/demodulated 3×3 convolutions, per-pixel noise and "skip" toRGB outputs
  summed across resolutions. `num_ws` per-layer styles; synthesis accepts W (broadcast) or W+.
* Discriminator: "resnet" blocks, minibatch standard deviation, and for labels the projection
  head (the output is the inner product of the features with an embedding of the label).

Filters and activations go through `gan.ops`, whose reference implementations define the
semantics (fused CUDA kernels, when present, must match them).

Mixed precision: on CUDA, the `num_fp16_res` highest resolutions of both networks compute in
float16 (or bfloat16) with channels_last activations; `conv_clamp` bounds their activations so they
cannot overflow. Parameters, the toRGB image sum and everything on CPU stay float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ops import ACTIVATIONS, bias_act, downsample2d, setup_filter, upfirdn2d, upsample2d

RESAMPLE_FILTER = [1, 3, 3, 1]


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight().to(x.dtype)
        b = None if self.bias is None else (self.bias * self.bias_gain).to(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    groups: int = 1) -> torch.Tensor:
    """Convolution with a square odd kernel that keeps alignment, optionally 2× up or down.

    up:   transposed convolution with stride 2, then the FIR filter (gain 4) — the StyleGAN2 way.
    down: FIR filter first, then a strided convolution.
    """
    kernel = w.shape[-1]
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=kernel // 2, groups=groups)
    if up == 2:
        out_per_group, in_per_group = w.shape[0] // groups, w.shape[1]
        wt = w.reshape(groups, out_per_group, in_per_group, kernel, kernel).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_per_group, kernel, kernel)
        x = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # H → 2H + k − 2
        total = f.shape[0] - kernel + 1  # filter padding that brings 2H + k − 2 back to 2H
        return upfirdn2d(x, f, padding=[(total + 1) // 2, total // 2] * 2, gain=4)
    if down == 2:
        total = f.shape[0] + kernel - 3  # filter padding so that the stride-2 convolution gives H/2
        x = upfirdn2d(x, f, padding=[(total + 1) // 2, total // 2] * 2)
        return F.conv2d(x, w, stride=2, groups=groups)
    raise ValueError(f"unsupported resampling up={up} down={down}")


REDUCED_PRECISION = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """The lowest resolution that runs in reduced precision (above img_resolution when none does)."""
    return max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8)


def compute_format(x: torch.Tensor, reduced: bool, dtype: torch.dtype) -> tuple[torch.dtype, torch.memory_format]:
    if reduced and x.device.type == "cuda":
        return dtype, torch.channels_last
    return torch.float32, torch.contiguous_format


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, f: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """Each sample's kernel is scaled per input channel by its style, then (optionally) every output
    channel's kernel is renormalised to unit L2 norm.

    fused=True: one grouped convolution with per-sample kernels (cheapest for inference).
    fused=False: scale the input by the styles, one ordinary convolution for the whole batch, scale the
    output by the demodulation coefficients — the same function, and much faster to train on a GPU.
    """
    if not fused:
        x = x * styles.to(x.dtype).reshape(*styles.shape, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=f, up=up)
        if demodulate:
            w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)
            coefficients = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            x = x * coefficients.to(x.dtype).reshape(*coefficients.shape, 1, 1)
        return x
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape[-4:]
    per_sample = weight if weight.ndim == 5 else weight.unsqueeze(0)  # (N, out, in, k, k): HyperStyle's kernels
    w = per_sample * styles.reshape(batch, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, batch * in_channels, height, width)
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=f, up=up, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 kernel_size: int = 3, conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                noise: torch.Tensor | None = None, weight_delta: torch.Tensor | None = None) -> torch.Tensor:
        """`noise` (N, 1, R, R), when given, replaces the noise of `noise_mode` (projection optimises it).
        `weight_delta` (N, out, in), when given, scales each sample's kernel by (1 + delta) (HyperStyle)."""
        styles = self.affine(w) * self.weight_gain
        weight = self.weight
        if weight_delta is not None:
            weight = weight.unsqueeze(0) * (1 + weight_delta.to(weight.dtype)[..., None, None])
        x = modulated_conv2d(x, weight, styles, demodulate=True, up=self.up, f=self.resample_filter,
                             fused=not self.training or weight_delta is not None)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=not self.training)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (2× up) conv, conv, toRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None, reduced_precision: bool = False,
                 reduced_dtype: torch.dtype = torch.float16):
        super().__init__()
        self.resolution = resolution
        self.reduced_precision, self.reduced_dtype = reduced_precision, reduced_dtype
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.conv0 is None else 2
        self.num_ws = self.num_conv + 1  # the toRGB style is shared with the next block's first conv

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str = "random", noise: list | None = None,
                weight_deltas: dict | None = None):
        w_iter = iter(ws.unbind(dim=1))
        deltas = weight_deltas or {}
        noise_iter = iter(noise or [None] * self.num_conv)
        dtype, memory_format = compute_format(ws, self.reduced_precision, self.reduced_dtype)
        if self.conv0 is None:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(dtype=dtype, memory_format=memory_format)
        else:
            x = self.conv0(x.to(dtype=dtype, memory_format=memory_format), next(w_iter), noise_mode,
                           next(noise_iter), deltas.get(f"b{self.resolution}.conv0"))
        x = self.conv1(x, next(w_iter), noise_mode, next(noise_iter), deltas.get(f"b{self.resolution}.conv1"))
        y = self.torgb(x, next(w_iter)).to(dtype=torch.float32, memory_format=torch.contiguous_format)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = 256, num_fp16_res: int = 0,
                 reduced_precision: str = "float16"):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two ≥ 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.resolutions}
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        lowest_reduced = fp16_resolution(img_resolution, num_fp16_res)
        for res in self.resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels, conv_clamp=conv_clamp,
                                   reduced_precision=res >= lowest_reduced,
                                   reduced_dtype=REDUCED_PRECISION[reduced_precision])
            self.num_ws += block.num_conv
            self.blocks.append(block)
        self.num_ws += 1  # the last toRGB

    def noise_resolutions(self) -> list[int]:
        """Resolution of each noise input, in the order `forward(noise=...)` takes them."""
        return [block.resolution for block in self.blocks for _ in range(block.num_conv)]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", noise: list | None = None,
                weight_deltas: dict | None = None) -> torch.Tensor:
        """ws: (N, num_ws, w_dim) per-layer styles (W+), or (N, w_dim) broadcast to every layer (W).
        noise: optional explicit noise maps, one (N, 1, R, R) per conv layer (see `noise_resolutions`).
        weight_deltas: optional {conv layer name ('b16.conv1'): (N, out, in)} relative kernel offsets."""
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).repeat(1, self.num_ws, 1)
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"expected {self.num_ws} styles, got {ws.shape[1]}")
        x = img = None
        index = 0
        for block in self.blocks:
            block_noise = None if noise is None else noise[index:index + block.num_conv]
            x, img = block(x, img, ws.narrow(1, index, block.num_ws), noise_mode, block_noise, weight_deltas)
            index += block.num_conv
        return img

    def conv_layers(self) -> list[tuple[str, "SynthesisLayer"]]:
        """(name, layer) of every modulated 3×3 convolution: the kernels HyperStyle offsets."""
        return [(f"b{block.resolution}.{name}", getattr(block, name)) for block in self.blocks
                for name in ("conv0", "conv1") if getattr(block, name) is not None]

    def style_layers(self) -> list[tuple[str, FullyConnected]]:
        """(name, affine layer) of every modulated layer, in the order of `ws`: what SeFa factorises."""
        layers = []
        for block in self.blocks:
            for name in ("conv0", "conv1", "torgb"):
                layer = getattr(block, name)
                if layer is not None:
                    layers.append((f"b{block.resolution}.{name}", layer.affine))
        return layers


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnected(a, b, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for a, b in zip(features[:-1], features[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
            if truncation_psi != 1:
                cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
                x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


def seed_latents(seeds, z_dim: int) -> torch.Tensor:
    """z for each seed: the same image for the same seed whatever the batch or the tool."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


class Generator(nn.Module):
    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, conv_clamp: float | None = 256, num_fp16_res: int = 0,
                 reduced_precision: str = "float16"):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp,
                                          num_fp16_res, reduced_precision)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random", update_emas: bool = False):
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3×3 convolutions (the second 2× down) plus a 1×1 down-sampled skip."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, conv_clamp: float | None = None,
                 reduced_precision: bool = False, reduced_dtype: torch.dtype = torch.float16):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.reduced_precision, self.reduced_dtype = reduced_precision, reduced_dtype
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER))
        self.conv0 = Conv2dLayer(in_channels, mid_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(mid_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, memory_format = compute_format(x, self.reduced_precision, self.reduced_dtype)
        x = x.to(dtype=dtype, memory_format=memory_format)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 2 and w.shape[-1] == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        else:
            x = conv2d_resample(x, w, f=self.resample_filter, down=self.down)
        act_gain = ACTIVATIONS[self.activation].default_gain * gain
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        b = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples (one extra channel)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    def __init__(self, c_dim: int = 0, img_resolution: int = 256, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, cmap_dim: int | None = None, mbstd_group_size: int = 4,
                 conv_clamp: float | None = 256, num_fp16_res: int = 0, reduced_precision: str = "float16"):
        super().__init__()
        self.c_dim, self.img_resolution = c_dim, img_resolution
        resolutions = [2 ** i for i in range(int(np.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in resolutions + [4]}
        lowest_reduced = fp16_resolution(img_resolution, num_fp16_res)
        self.reduced_precision = img_resolution >= lowest_reduced  # of from_rgb, at the top resolution
        self.reduced_dtype = REDUCED_PRECISION[reduced_precision]
        self.from_rgb = Conv2dLayer(img_channels, channels[img_resolution], 1, activation="lrelu", conv_clamp=conv_clamp)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(channels[res], channels[res], channels[res // 2], conv_clamp,
                               reduced_precision=res >= lowest_reduced, reduced_dtype=self.reduced_dtype)
            for res in resolutions)
        self.cmap_dim = (channels[4] if cmap_dim is None else cmap_dim) if c_dim > 0 else 0
        self.mapping = MappingNetwork(0, c_dim, self.cmap_dim, None, lr_multiplier=1.0) if c_dim > 0 else None
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = Conv2dLayer(channels[4] + 1, channels[4], 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnected(channels[4] * 16, channels[4], activation="lrelu")
        self.out = FullyConnected(channels[4], self.cmap_dim if c_dim > 0 else 1)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        dtype, memory_format = compute_format(img, self.reduced_precision, self.reduced_dtype)
        x = self.from_rgb(img.to(dtype=dtype, memory_format=memory_format))
        for block in self.blocks:
            x = block(x)
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        x = self.conv(self.mbstd(x))
        x = self.out(self.fc(x.flatten(1)))
        if self.c_dim > 0:  # projection discriminator
            cmap = self.mapping(None, c)
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x
