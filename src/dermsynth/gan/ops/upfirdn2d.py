"""upfirdn2d: upsample by zero insertion, pad (negative = crop), convolve with a FIR filter, downsample.

For each image and channel independently:

    1. upsample:   insert `up − 1` zeros after every sample along x and y (size H·up, W·up)
    2. pad:        `padding = (x0, x1, y0, y1)` samples of zeros on each side; negative crops
    3. filter:     *true* convolution (filter flipped) with `f` — 2-D (fh, fw), or 1-D and applied
                   separably; `flip_filter=True` gives correlation instead
    4. downsample: keep every `down`-th sample, starting with the first

`gain` scales the output (a 1-D filter gets √gain per pass). `upsample2d`/`downsample2d` choose the
padding that keeps images aligned and a gain that preserves their mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fused


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _padding4(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def setup_filter(f, normalize: bool = True, separable: bool | None = None, device=None) -> torch.Tensor:
    """A float32 filter tensor; a 1-D list like [1, 3, 3, 1] stays 1-D (separable) unless separable=False."""
    f = torch.as_tensor([1.0] if f is None else f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if separable is False and f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:  # a normalised 1-D filter makes its separable 2-D product sum to one as well
        f = f / f.sum()
    return f


def _upsample_zeros(x: torch.Tensor, up_x: int, up_y: int) -> torch.Tensor:
    n, c, h, w = x.shape
    if up_x == 1 and up_y == 1:
        return x
    out = x.new_zeros(n, c, h, up_y, w, up_x)
    out[:, :, :, 0, :, 0] = x
    return out.reshape(n, c, h * up_y, w * up_x)


def _convolve(x: torch.Tensor, f: torch.Tensor, flip_filter: bool) -> torch.Tensor:
    """Depthwise valid convolution of every channel with the 2-D filter f."""
    c = x.shape[1]
    kernel = f if flip_filter else f.flip([0, 1])  # conv2d correlates; flipping makes it a convolution
    kernel = kernel.to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, kernel, groups=c)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1.0) -> torch.Tensor:
    """On (N, C, H, W) tensors. CUDA tensors take the fused kernel when it is available (see `fused`)."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    if fused.kernels_for(x) is not None:
        return fused.upfirdn2d(x, f, _pair(up), _pair(down), _padding4(padding), flip_filter, gain)
    return upfirdn2d_reference(x, f, up, down, padding, flip_filter, gain)


def upfirdn2d_reference(x: torch.Tensor, f: torch.Tensor, up=1, down=1, padding=0, flip_filter: bool = False,
                        gain: float = 1.0) -> torch.Tensor:
    """Plain PyTorch; defines the semantics the fused kernel reproduces (autograd gives the gradients)."""
    up_x, up_y = _pair(up)
    down_x, down_y = _pair(down)
    x0, x1, y0, y1 = _padding4(padding)
    x = _upsample_zeros(x, up_x, up_y)
    x = F.pad(x, [x0, x1, y0, y1])  # negative values crop
    if f.ndim == 1:
        scale = gain ** 0.5
        x = _convolve(x, (f * scale)[None, :], flip_filter)   # along x
        x = _convolve(x, (f * scale)[:, None], flip_filter)   # along y
    else:
        x = _convolve(x, f * gain, flip_filter)
    return x[:, :, ::down_y, ::down_x]


def _filter_size(f: torch.Tensor) -> tuple[int, int]:
    return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def filter2d(x: torch.Tensor, f: torch.Tensor, padding=0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Filter keeping the image size ('same' padding) plus any extra `padding`."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding=0, flip_filter: bool = False,
               gain: float = 1.0) -> torch.Tensor:
    """Upsample by `up` (H, W → H·up, W·up), preserving the mean (gain up²)."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = (px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding=0, flip_filter: bool = False,
                 gain: float = 1.0) -> torch.Tensor:
    """Anti-aliased downsample by `down` (H, W → H/down, W/down)."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = (px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2)
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)
