"""Canonizers that put the project's timm classifiers into a form LRP can explain (zennit).

LRP (Bach et al. 2015; Montavon et al. 2019, "Layer-wise relevance propagation: an overview") assigns
rules to linear layers; BatchNorm, residual additions and in-place activations need the network
rewritten first, without changing what it computes (Motzkus et al. 2022, "Measurably stronger
explanation reliability via model canonization"). zennit ships such canonizers for torchvision
ResNet and VGG only; these are for timm's models:

* `ResNetCanonizer` (timm ResNet: resnet10t, resnet18, …): every BatchNorm that follows a convolution
  is merged into it (W' = W·γ/σ, b' = (b − μ)·γ/σ + β); each residual addition becomes a
  `zennit.layer.Sum` module, which composites give the Norm rule (relevance split in proportion to
  each branch's contribution).
* `DenseNetCanonizer` (timm DenseNet121/169): DenseNet is pre-activation — BatchNorm + ReLU come
  *before* the convolution, after a concatenation that many later layers share, so it cannot be
  merged into a preceding layer. Per channel BN+ReLU is ReLU(a·x + b) = |a|·ReLU(s·(x − t)) with
  a = γ/σ, b = β − μ·a, s = sign(a), t = −b/a: the scale |a| moves into the next convolution's
  (or the classifier's) input channels and what stays is a `ThresholdReLU`, which composites give
  the Pass rule. The stem's BatchNorm follows conv0 and is merged into it. The canonized DenseNet
  has no bias anywhere except the stem's conv0 and the classifier's.
* `EfficientNetCanonizer` (timm EfficientNet-B0…B7, the ISIC study's B2): BatchNorm merged into the
  preceding convolution, skip additions as Sum modules, squeeze-and-excitation gates held constant
  (`ConstantGate`, Pass rule); SiLU gets the Pass rule like every activation.

Every canonizer is temporary: zennit applies it when a composite is registered and `remove()`
restores each parameter, buffer and method exactly. Models must be in eval mode (running statistics).
"""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, EdgeResidual, InvertedResidual,
                                              SqueezeExcite)
from timm.models.densenet import DenseLayer, DenseNet, DenseTransition
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from zennit.canonizers import Canonizer
from zennit.layer import Sum

from ..errors import DermsynthError

_MISSING = object()


class ThresholdReLU(torch.nn.ReLU):
    """ReLU(sign · (x − threshold)) per channel of (N, C, H, W) float input.

    What BatchNorm + ReLU computes once BatchNorm's scale |γ/σ| has moved into the next linear layer.
    A subclass of ReLU so that zennit composites give it the Pass rule (relevance passes unchanged).
    """

    def __init__(self, sign: torch.Tensor, threshold: torch.Tensor):
        super().__init__()
        self.register_buffer("sign", sign)
        self.register_buffer("threshold", threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.sign[:, None, None] * (x - self.threshold[:, None, None]))


class ConstantGate(torch.nn.ReLU):
    """x · g(x) for float input (N, C, H, W), with the gate g (N, C, 1, 1) held constant: what a
    squeeze-and-excitation block computes, with no relevance flowing into its gate (the usual LRP
    treatment of multiplicative gates; Arras et al. 2017). A ReLU subclass so that zennit composites
    give it the Pass rule: the relevance of x · g goes to x unchanged."""

    def __init__(self, gate):
        super().__init__()
        self.__dict__["gate"] = gate  # a plain function, not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.detach())


def batchnorm_affine(bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale a, shift b) with BN(x) = a·x + b per channel, from the running statistics (eval mode)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class _TimmCanonizer(Canonizer):
    """Rewrites one model in place and records every change so that `remove()` undoes it exactly."""

    def __init__(self):
        self.changes: list[tuple[object, str, object]] = []

    def apply(self, root_module: torch.nn.Module) -> list[Canonizer]:
        instance = self.copy()
        instance.register(root_module)
        return [instance]

    def register(self, model: torch.nn.Module) -> None:
        if model.training:
            raise DermsynthError("canonizers merge BatchNorm running statistics: call model.eval() first")
        with torch.no_grad():
            for module in model.modules():  # in-place activations break zennit's backward hooks
                if getattr(module, "inplace", False) is True:
                    self._set(module, "inplace", False)
            self.canonize(model)

    def canonize(self, model: torch.nn.Module) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        for owner, name, old in reversed(self.changes):
            if old is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
        self.changes = []

    def _set(self, owner, name: str, value) -> None:
        old = owner.__dict__.get(name, _MISSING) if name == "forward" else getattr(owner, name, _MISSING)
        self.changes.append((owner, name, old))
        setattr(owner, name, value)

    def merge_batchnorm(self, linear: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
        """Merge a BatchNorm that follows `linear` into it; the BatchNorm becomes the identity."""
        scale, shift = batchnorm_affine(bn)
        bias = torch.zeros_like(scale) if linear.bias is None else linear.bias.data
        if linear.bias is None:
            self._set(linear, "bias", torch.nn.Parameter(torch.zeros_like(scale), requires_grad=False))
        self._set(linear.weight, "data", linear.weight.data * scale.view(-1, *[1] * (linear.weight.ndim - 1)))
        self._set(linear.bias, "data", bias * scale + shift)
        for name, value in (("running_mean", torch.zeros_like(scale)), ("running_var", torch.ones_like(scale))):
            self._set(bn, name, value)
        self._set(bn.weight, "data", torch.ones_like(scale))
        self._set(bn.bias, "data", torch.zeros_like(scale))
        self._set(bn, "eps", 0.0)

    def fold_batchnorm_relu(self, bn_act: BatchNormAct2d, linear: torch.nn.Module) -> None:
        """BatchNorm + ReLU before `linear` (a Conv2d with groups=1, or a Linear after average pooling):
        the BatchNorm's |scale| moves into `linear`'s input channels, `bn_act` computes a ThresholdReLU."""
        if not isinstance(bn_act.act, torch.nn.ReLU):
            raise DermsynthError(f"cannot fold BatchNorm followed by {type(bn_act.act).__name__}: only ReLU")
        if getattr(linear, "groups", 1) != 1:
            raise DermsynthError("cannot fold BatchNorm into a grouped convolution")
        scale, shift = batchnorm_affine(bn_act)
        scale = torch.where(scale == 0, torch.full_like(scale, 1e-12), scale)  # a dead channel stays ReLU(b)
        shape = (1, -1) + (1,) * (linear.weight.ndim - 2)
        self._set(linear.weight, "data", linear.weight.data * scale.abs().view(shape))
        self._set(bn_act, "canonizer_relu", ThresholdReLU(torch.sign(scale), -shift / scale))
        self._set(bn_act, "forward", lambda x: bn_act.canonizer_relu(x))  # through __call__: hooks apply

    def sum_residual(self, block: torch.nn.Module, forward) -> None:
        """Replace the block's `x + shortcut` by a Sum module (Norm rule in composites)."""
        self._set(block, "canonizer_sum", Sum())
        self._set(block, "forward", forward.__get__(block))


def _basic_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm BasicBlock.forward with the residual addition as a Sum module."""
    y = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    return self.act2(_residual(self, self.bn2(self.conv2(y)), x))


def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm Bottleneck.forward with the residual addition as a Sum module."""
    y = self.act1(self.bn1(self.conv1(x)))
    y = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(y)))))
    return self.act3(_residual(self, self.bn3(self.conv3(y)), x))


def _residual(block, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """SE, drop-path and downsampling as timm applies them, then Sum([shortcut, x])."""
    if block.se is not None:
        x = block.se(x)
    if block.drop_path is not None:
        x = block.drop_path(x)
    if block.downsample is not None:
        shortcut = block.downsample(shortcut)
    return block.canonizer_sum(torch.stack([shortcut, x], dim=-1))


def _conv_batchnorm_pairs(module: torch.nn.Module) -> list[tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]]:
    """(convolution, BatchNorm) pairs that are adjacent in forward order among the leaves (BatchNorm
    counted as a leaf even when it holds an activation, as timm's BatchNormAct2d does)."""
    leaves, pairs = [], []

    def walk(m):
        if isinstance(m, torch.nn.BatchNorm2d) or not list(m.children()):
            leaves.append(m)
        else:
            for child in m.children():
                walk(child)
    walk(module)
    for previous, leaf in zip(leaves, leaves[1:]):
        if isinstance(previous, torch.nn.Conv2d) and isinstance(leaf, torch.nn.BatchNorm2d):
            pairs.append((previous, leaf))
    return pairs


class ResNetCanonizer(_TimmCanonizer):
    """timm ResNet (resnet10t, resnet18, resnet50, …): BatchNorm merged into the preceding convolution,
    residual additions as Sum modules. Raises DermsynthError on another architecture."""

    def canonize(self, model: torch.nn.Module) -> None:
        if not isinstance(model, ResNet):
            raise DermsynthError(f"ResNetCanonizer needs a timm ResNet, got {type(model).__name__}")
        for conv, bn in _conv_batchnorm_pairs(model):
            self.merge_batchnorm(conv, bn)
        for block in model.modules():
            if isinstance(block, (BasicBlock, Bottleneck)):
                self.sum_residual(block, _bottleneck_forward if isinstance(block, Bottleneck) else _basic_block_forward)


class DenseNetCanonizer(_TimmCanonizer):
    """timm DenseNet (densenet121, densenet169, …): the stem's BatchNorm merged into conv0, every other
    BatchNorm + ReLU folded into the convolution (or classifier) after it as a ThresholdReLU.
    Raises DermsynthError on another architecture or a global pool other than average."""

    def canonize(self, model: torch.nn.Module) -> None:
        if not isinstance(model, DenseNet):
            raise DermsynthError(f"DenseNetCanonizer needs a timm DenseNet, got {type(model).__name__}")
        if not isinstance(getattr(model.global_pool, "pool", None), torch.nn.AdaptiveAvgPool2d):
            raise DermsynthError("DenseNetCanonizer: the global pool must be average pooling (global_pool='avg')")
        features = model.features
        self.merge_batchnorm(features.conv0, features.norm0)
        for module in features.modules():
            if isinstance(module, DenseLayer):
                self.fold_batchnorm_relu(module.norm1, module.conv1)
                self.fold_batchnorm_relu(module.norm2, module.conv2)
            elif isinstance(module, DenseTransition):
                self.fold_batchnorm_relu(module.norm, module.conv)
        self.fold_batchnorm_relu(features.norm5, model.classifier)


def _skip_forward(self, x: torch.Tensor) -> torch.Tensor:
    """A timm EfficientNet block's forward with `drop_path(x) + shortcut` as a Sum module: the class's
    own forward runs with has_skip switched off, then the shortcut is added here."""
    y = type(self).forward(self, x)
    return self.canonizer_sum(torch.stack([x, self.drop_path(y)], dim=-1))


def _squeeze_excite_gate(se: SqueezeExcite):
    """The gate of timm's SqueezeExcite: sigmoid(expand(act(reduce(mean over H, W))))."""
    def gate(x: torch.Tensor) -> torch.Tensor:
        return se.gate(se.conv_expand(se.act1(se.conv_reduce(x.mean((2, 3), keepdim=True)))))
    return gate


class EfficientNetCanonizer(_TimmCanonizer):
    """timm EfficientNet (efficientnet_b0…b7, lite): BatchNorm merged into the preceding convolution,
    skip additions as Sum modules, squeeze-and-excitation gates held constant (ConstantGate). SiLU
    activations get the Pass rule, as every activation in zennit composites; so do Lite's ReLU6, whose
    clipping at 6 is not positively homogeneous: relevance through a clipped unit is not conserved exactly.
    Raises DermsynthError on another architecture."""

    def canonize(self, model: torch.nn.Module) -> None:
        if not isinstance(model, EfficientNet):
            raise DermsynthError(f"EfficientNetCanonizer needs a timm EfficientNet, got {type(model).__name__}")
        for conv, bn in _conv_batchnorm_pairs(model):
            self.merge_batchnorm(conv, bn)
        for module in list(model.modules()):
            if isinstance(module, SqueezeExcite):
                self._set(module, "canonizer_gate", ConstantGate(_squeeze_excite_gate(module)))
                self._set(module, "forward", lambda x, se=module: se.canonizer_gate(x))
            elif isinstance(module, (ConvBnAct, DepthwiseSeparableConv, InvertedResidual, EdgeResidual)) \
                    and module.has_skip:
                self._set(module, "has_skip", False)
                self.sum_residual(module, _skip_forward)


CANONIZERS = {ResNet: ResNetCanonizer, DenseNet: DenseNetCanonizer, EfficientNet: EfficientNetCanonizer}


def canonizers_for(model: torch.nn.Module) -> list[Canonizer]:
    """The canonizers for a timm classifier, as zennit composites take them.

    Raises:
        DermsynthError: no canonizer is written for the model's architecture (listed in the message).
    """
    for kind, canonizer in CANONIZERS.items():
        if isinstance(model, kind):
            return [canonizer()]
    raise DermsynthError(f"no LRP canonizer for {type(model).__name__}; written for: "
                         + ", ".join(kind.__name__ for kind in CANONIZERS))
