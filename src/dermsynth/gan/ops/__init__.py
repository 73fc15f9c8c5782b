"""Low-level operators of StyleGAN2. The `*_reference` implementations are plain PyTorch (autograd gives
the gradients) and define the semantics that the fused CUDA kernels (`fused`, `cuda/`) reproduce."""

from . import fused
from .bias_act import ACTIVATIONS, bias_act, bias_act_reference
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_reference, upsample2d

__all__ = ["ACTIVATIONS", "bias_act", "bias_act_reference", "downsample2d", "filter2d", "fused", "setup_filter",
           "upfirdn2d", "upfirdn2d_reference", "upsample2d"]
