"""Low-level operators of StyleGAN2. `reference` implementations are plain PyTorch (autograd gives
the gradients) and define the semantics that the fused CUDA kernels must reproduce."""

from .bias_act import ACTIVATIONS, bias_act
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["ACTIVATIONS", "bias_act", "downsample2d", "filter2d", "setup_filter", "upfirdn2d", "upsample2d"]
