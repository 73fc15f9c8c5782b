"""StyleGAN2 networks, written from the papers:

* [SG2] Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", CVPR: weight
  demodulation (§2.2), the skip generator and residual discriminator (§4, Fig. 7), hyperparameters
  (Appendix B);
* [ADA] Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data", NeurIPS:
  conditioning by an embedding of the label c (mapping network), with the projection discriminator of
  [PROJ] Miyato & Koyama 2018, "cGANs with Projection Discriminator", ICLR;
* [SG1] Karras et al. 2019, "A Style-Based Generator Architecture for GANs", CVPR: the mapping network
  z → w and per-layer styles (§2), per-pixel noise (§3.2), the truncation trick in W (Appendix B);
* [PG] Karras et al. 2018, "Progressive Growing of GANs", ICLR: minibatch standard deviation (§3),
  equalized learning rate and pixelwise normalisation (§4.1, §4.2).

Terms used below: N images per batch; z (N, z_dim) float32 drawn from the standard normal; c (N, c_dim)
one-hot float32 labels (a conditional GAN) or nothing (c_dim = 0); w (N, w_dim) an intermediate latent;
ws (N, num_ws, w_dim) one style per modulated layer ("W+"; all rows equal is "W"); images (N, 3, R, R)
float32, roughly in [−1, 1] (not clamped), R a power of two.

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

from ..config import MBSTD_GROUP_SIZE
from .ops import ACTIVATIONS, bias_act, downsample2d, setup_filter, upfirdn2d, upsample2d

RESAMPLE_FILTER = [1, 3, 3, 1]


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / √(mean(x²) + eps) along `dim`: unit second moment per row ([PG] §4.2's pixelwise normalisation, applied
    by the mapping network to z and to the label embedding). Any shape and floating dtype; same shape out."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Dense layer with equalized learning rate ([PG] §4.1): y = act(x · (g·W)ᵀ + lr_multiplier·b), g =
    lr_multiplier / √in_features.

    The stored weight (out_features, in_features) starts as N(0, 1/lr_multiplier²) and is scaled by
    `weight_gain` = g at every call, so the effective weight starts as N(0, 1/in_features) whatever the
    multiplier; Adam's steps on the stored parameter have about the same size at any scale, so the effective
    weight moves lr_multiplier times as fast as at 1 (0.01 in the mapping network, [SG2] Appendix B). The bias
    starts at `bias_init` (1 for the style affines: their output starts near 1), scaled by lr_multiplier.
    `activation`: a name in `gan.ops.ACTIVATIONS` ("linear", or "lrelu": slope 0.2, gain √2).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective_weight(self) -> torch.Tensor:
        """(out_features, in_features): the weight as applied, `weight · weight_gain` (what SeFa factorises)."""
        return self.weight * self.weight_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in_features) → (N, out_features), in x's dtype."""
        w = self.effective_weight().to(x.dtype)
        b = None if self.bias is None else (self.bias * self.bias_gain).to(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    groups: int = 1) -> torch.Tensor:
    """Convolution with a square odd kernel that keeps alignment, optionally 2× up or down: x (N, groups·in, H, W),
    w (groups·out, in, k, k) → (N, groups·out, H·up/down, W·up/down); `f` the FIR filter for resampling.

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
    """(dtype, memory format) a block computes in: (`dtype`, channels_last) when it is `reduced` and x is on CUDA,
    else (float32, contiguous) — reduced precision never runs on CPU."""
    if reduced and x.device.type == "cuda":
        return dtype, torch.channels_last
    return torch.float32, torch.contiguous_format


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, f: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """Modulated convolution ([SG2] §2.2, Eq. 1–3): each sample's kernel is scaled per input channel by its
    style, w′ = w · s, then with `demodulate` every output channel's kernel is divided by its L2 norm,
    w″ = w′ / √(Σ w′² + 1e-8), so that unit-variance inputs give unit-variance outputs (this replaces StyleGAN's
    instance normalisation, whose statistics caused the "droplet" artefacts).

    x (N, in, H, W); weight (out, in, k, k) shared, or (N, out, in, k, k) per sample (HyperStyle's offsets, fused
    only); styles (N, in); k odd. up=2 (with the FIR filter `f`) gives (N, out, 2H, 2W), else (N, out, H, W),
    in x's dtype.

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
    """One modulated 3×3 convolution of the synthesis network ([SG2] §2.2, Fig. 2d): the style s = A(w) of an
    affine layer (bias 1) modulates the kernel, which is then demodulated; with `up`=2 the convolution also
    upsamples 2× (transposed convolution, then the FIR filter). Per-pixel noise scaled by a learned per-layer
    strength (starts at 0) is added ([SG1] §3.2), then bias, leaky ReLU (gain √2) and, when `conv_clamp` is set,
    a clamp to ±conv_clamp. The kernel is stored
    at unit scale and scaled by 1/√(in·k²) (equalized learning rate). `noise_const` (R, R) is this layer's
    fixed noise for noise_mode="const".
    """

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
        """x (N, in, R/up, R/up) → (N, out, R, R), with w (N, w_dim) this layer's style input (one row of ws).

        noise_mode: "random" draws fresh N(0, 1) noise (N, 1, R, R) at every call; "const" adds the layer's
        fixed `noise_const` (the same for every sample and call: reproducible images); any other value ("none")
        adds no noise. `noise` (N, 1, R, R), when given, replaces the noise of `noise_mode` (projection optimises
        it). `weight_delta` (N, out, in), when given, scales each sample's kernel by (1 + delta) (HyperStyle).
        In training mode the convolution runs batched (`modulated_conv2d(fused=False)`), in eval mode or with
        `weight_delta` grouped: the same function."""
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
    """The skip generator's output of one resolution ([SG2] §4, Fig. 7b "tRGB"): a modulated 1×1 convolution
    *without* demodulation, plus bias, no activation, clamped to ±conv_clamp when set."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (N, in, R, R) features, w (N, w_dim) → (N, img_channels, R, R) this resolution's image contribution."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=not self.training)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution R of the skip generator ([SG2] §4, Fig. 7b): the learned R×R constant (the first block,
    `in_channels` = 0) or a 2× upsampling modulated conv, then a modulated conv, then toRGB, whose image is added
    to the previous resolution's image upsampled 2× with the [1, 3, 3, 1] filter. `reduced_precision`: this
    block computes in `reduced_dtype` with channels_last on CUDA (see the module docstring)."""

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
        """x (N, in, R/2, R/2) features and img (N, C, R/2, R/2) float32 of the previous block (both None for the
        first); ws (N, num_ws, w_dim) this block's styles: conv0 (when present), conv1, toRGB — the toRGB style is
        the next block's first. `noise`: this block's num_conv noise maps; `weight_deltas`: see
        `SynthesisNetwork.forward`. Returns (x (N, out, R, R) in the block's compute dtype, img (N, C, R, R) float32).
        """
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
    """ws → images: one `SynthesisBlock` per resolution 4, 8, …, img_resolution ([SG2] §4's skip generator).

    Channels at resolution r: min(channel_base / r, channel_max). `num_ws` = 2·log2(img_resolution) − 2 styles:
    one per modulated conv plus the last toRGB. `conv_clamp` bounds the activations (default ±256) and `num_fp16_res`
    the highest resolutions that compute in `reduced_precision` ("float16" or "bfloat16") on CUDA.
    Raises ValueError when img_resolution is not a power of two ≥ 4.
    """

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
        noise_mode: "random", "const" or "none" (see `SynthesisLayer.forward`).
        noise: optional explicit noise maps, one (N, 1, R, R) per conv layer (see `noise_resolutions`).
        weight_deltas: optional {conv layer name ('b16.conv1'): (N, out, in)} relative kernel offsets.
        Returns images (N, img_channels, img_resolution, img_resolution) float32, ≈[−1, 1] once trained (not
        clamped). Raises ValueError when ws has another number of styles than `num_ws`."""
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
    """z (and a label c) → w: `num_layers` equalized-lr dense layers with leaky ReLU ([SG1] §2; 8 layers at
    0.01× learning rate, [SG2] Appendix B).

    z and, for c_dim > 0, the embedding `embed(c)` (a dense layer c_dim → w_dim, [ADA]'s conditioning) are each
    normalised to unit second moment and concatenated. `w_avg` (w_dim,) is the running mean of w (an EMA with
    β = `w_avg_beta`, updated when `update_emas`), the centre of the truncation trick. num_ws=None returns w
    itself (N, w_dim), else ws (N, num_ws, w_dim); z_dim=0 maps the label alone (the discriminator's projection
    embedding).
    """

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
        """z (N, z_dim) float32 standard normal (ignored when z_dim = 0), c (N, c_dim) one-hot float32 (ignored
        when c_dim = 0) → ws (N, num_ws, w_dim) float32 (w (N, w_dim) when num_ws is None).

        Truncation trick ([SG1] Appendix B; only when num_ws is set): the first `truncation_cutoff` styles (all
        when None) become w_avg + psi·(w − w_avg); psi = 1 leaves w, 0 gives the average image, values in (0, 1)
        trade variety for typicality. `update_emas`: move `w_avg` towards this batch's mean w (training only)."""
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
    """z (len(seeds), z_dim) float32, row i ~ N(0, 1) from `np.random.RandomState(seeds[i])`: the same image for the
    same seed whatever the batch or the tool."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


class Generator(nn.Module):
    """StyleGAN2 generator ([SG2], the skip architecture of §4): `mapping` (z, c → ws) then `synthesis`
    (ws → images). z_dim, w_dim: latent sizes (512 in the papers); c_dim: classes of a conditional generator
    (0: unconditional); img_resolution: a power of two ≥ 4; channel_base/channel_max, conv_clamp, num_fp16_res,
    reduced_precision: see `SynthesisNetwork`; mapping_layers, mapping_lr_multiplier: see `MappingNetwork`.

    The keyword defaults are StyleGAN2's config-f architecture ([SG2] Table 1: z_dim = w_dim = 512, channel_base
    32768, channel_max 512, 8 mapping layers with learning-rate multiplier 0.01; conv_clamp 256 as [ADA]), for
    networks built by hand (tests, benchmarks). They are not a second default of the config: train-gan and
    train-federated pass the schema's whole `network` section (`gans.<name>.network`, `federated.<name>.network`,
    every key filled by the schema) through `gan.training.build_networks`.
    """

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
        """z (N, z_dim) float32 standard normal, c (N, c_dim) one-hot float32 (None or (N, 0) when c_dim = 0) →
        images (N, img_channels, R, R) float32 ≈[−1, 1] (not clamped). truncation_psi/cutoff, update_emas: see
        `MappingNetwork.forward`; noise_mode: "random", "const" or "none" (see `SynthesisLayer.forward`)."""
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block of the discriminator ([SG2] §4, Fig. 7c): two 3×3 convolutions with leaky ReLU (the second
    2× down) plus a 2× downsampled 1×1 skip without bias; both paths are scaled by √½ so that their sum keeps
    unit variance. x (N, in, R, R) → (N, out, R/2, R/2), in the block's compute dtype."""

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
        """x (N, in, R, R) → (N, out, R/2, R/2)."""
        dtype, memory_format = compute_format(x, self.reduced_precision, self.reduced_dtype)
        x = x.to(dtype=dtype, memory_format=memory_format)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate ([PG] §4.1): the kernel (out, in, k, k) is stored at unit scale
    and multiplied by 1/√(in·k²) at run time; optional 2× anti-aliased downsampling (`down`=2: the [1, 3, 3, 1]
    filter, then a stride-2 convolution), bias, activation and clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x (N, in, H, W) → (N, out, H/down, W/down) in x's dtype; `gain` multiplies the activation's own gain
        and the clamp (the residual blocks pass √½)."""
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
    """Minibatch standard deviation ([PG] §3): appends `num_channels` feature maps holding how much the samples of
    a group differ, so that the discriminator can see a lack of variety in a batch of generated images.

    The batch of N is split into N/G groups of G = min(group_size, N) samples; sample i belongs to group i mod
    (N/G). Within a group, the standard deviation over its G samples, √(biased variance + 1e-8), of every feature
    is averaged over the C/num_channels channels of each of the `num_channels` channel slices and over all pixels;
    every sample of the group gets those values as constant extra channels.

    N must be at most group_size or a multiple of it, as NVIDIA's StyleGAN2-ADA requires (its reshape fails
    otherwise): with any other N the groups would not tile the batch, and a silent fallback to groups of one would
    turn the feature into a constant (a zero standard deviation). C must be divisible by num_channels.
    """

    def __init__(self, group_size: int = MBSTD_GROUP_SIZE, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) → (N, C + num_channels, H, W), in x's dtype. Raises ValueError when N exceeds the group
        size and is not a multiple of it (the message names the batch setting to change)."""
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(
                f"minibatch standard deviation: a batch of {n} images does not split into groups of {g} (the "
                f"discriminator's mbstd_group_size); give it at most {g} images or a multiple of {g} — the per-process "
                f"batch: `gans.<name>.batch` (split among its `gpus` processes) or `federated.<name>.batch` "
                f"(config validation checks it when the workflow is planned)")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator ([SG2] §4, Fig. 7c): fromRGB at img_resolution, one
    `DiscriminatorBlock` per resolution down to 4×4, minibatch standard deviation over groups of
    `mbstd_group_size` ([PG] §3), a 3×3 conv, a dense layer (C·16 → C) and the output layer.

    Conditional (c_dim > 0): a projection discriminator ([PROJ]; [ADA]'s conditioning): the output layer gives
    `cmap_dim` features, a `MappingNetwork` without z embeds c into cmap_dim (8 layers), and the score is their
    inner product divided by √cmap_dim. Channels, conv_clamp, num_fp16_res, reduced_precision: as in
    `SynthesisNetwork`; their keyword defaults are StyleGAN2's config-f (see `Generator`), and `build_networks`
    passes the network section's values of them (`gan.training.D_NETWORK_KEYS`).
    """

    def __init__(self, c_dim: int = 0, img_resolution: int = 256, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, cmap_dim: int | None = None, mbstd_group_size: int = MBSTD_GROUP_SIZE,
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
        """img (N, img_channels, R, R) float32 in [−1, 1] (real images scaled from uint8, or generated ones), c
        (N, c_dim) one-hot float32 (ignored when c_dim = 0) → logits (N, 1) float32: larger means "real".
        N must be at most `mbstd_group_size` or a multiple of it (`MinibatchStd` raises ValueError otherwise)."""
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
