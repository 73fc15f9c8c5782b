"""Fused bias + activation + gain + clamp: y = clamp(act(x + b) · gain, −clamp, clamp)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import fused


@dataclass(frozen=True)
class Activation:
    """An activation function `fn(x, alpha)` (alpha: the leaky slope, used by lrelu) and its `default_gain`."""
    fn: Callable[[torch.Tensor, float], torch.Tensor]
    default_gain: float  # keeps the signal's magnitude for He-initialised weights


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 1.0),
    "relu": Activation(lambda x, alpha: F.relu(x), math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), math.sqrt(2)),
    "tanh": Activation(lambda x, alpha: torch.tanh(x), 1.0),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x), 1.0),
    "elu": Activation(lambda x, alpha: F.elu(x), 1.0),
    "selu": Activation(lambda x, alpha: F.selu(x), 1.0),
    "softplus": Activation(lambda x, alpha: F.softplus(x), 1.0),
    "swish": Activation(lambda x, alpha: x * torch.sigmoid(x), math.sqrt(2)),
}


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float = 0.2, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """`b` is a vector broadcast along dimension `dim` of `x`. CUDA tensors take the fused kernel when it
    is available (see `fused`); everything else the reference implementation below."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match dimension {dim} of {tuple(x.shape)}")
    gain = ACTIVATIONS[act].default_gain if gain is None else gain
    if act in fused.FUSED_ACTIVATIONS and fused.kernels_for(x) is not None:
        return fused.bias_act(x, b, dim % x.ndim, act, alpha, gain, clamp if clamp is not None and clamp >= 0 else None)
    return bias_act_reference(x, b, dim, act, alpha, gain, clamp)


def bias_act_reference(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                       alpha: float = 0.2, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Plain PyTorch; defines the semantics the fused kernel reproduces (autograd gives the gradients)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    spec = ACTIVATIONS[act]
    x = spec.fn(x, alpha)
    gain = spec.default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
