"""LRP canonizers for timm ResNet, DenseNet and EfficientNet: the canonized model computes what the original does, and
with an LRP-ε composite the input relevance sums to the explained logit (conservation, Bach et al. 2015).

Biases absorb relevance under LRP-ε by design, so the conservation tests give every BatchNorm a zero
shift (β = μ = 0: merged biases vanish) while keeping random scales of both signs — what the
canonizers move around; the classifier bias is zero. Float64, so the tolerance measures the method
(zennit's 1e-6 stabiliser in the Norm rule), not float32 rounding."""

import pytest
import timm
import torch
from timm.models.densenet import DenseNet
from timm.models.resnet import Bottleneck, ResNet
from zennit.composites import LAYER_MAP_BASE, LayerMapComposite
from zennit.rules import Epsilon
from zennit.types import Linear

from dermsynth.errors import DermsynthError
from dermsynth.explain.canonizers import DenseNetCanonizer, ResNetCanonizer, canonizers_for

CONSERVATION_TOLERANCE = 1e-3  # relative: |Σ R_input − logit| / |logit|


def tiny_densenet() -> DenseNet:
    """DenseNet-BC with DenseNet121's structure (4 dense blocks, transitions) at a test's size."""
    return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), bn_size=2, num_classes=4)


def model_named(name: str) -> torch.nn.Module:
    if name == "densenet":
        return tiny_densenet()
    if name == "bottleneck-resnet":  # resnet50's block type, one block per stage
        return ResNet(block=Bottleneck, layers=(1, 1, 1, 1), num_classes=4)
    return timm.create_model(name, num_classes=4)


# EfficientNet's squeeze-and-excitation gates and SiLUs shrink a random network's signal towards zennit's
# fixed 1e-6 stabiliser (logits ~1e-5); BatchNorm scales twice as large keep the logit far above it.
# tf_efficientnet_lite0 (the demo's ImageNet classifier: TF "SAME" padding convolutions, ReLU6, no SE gates) keeps
# gain 1: ReLU6 is not positively homogeneous, so a unit clipped at 6 passes relevance for a value it did not
# propagate; at gain 2 many units clip and conservation fails by 74 % (at gain 1: 4e-5, logits 0.1-0.8).
GAIN = {"efficientnet_b0": 2.0}
NAMES = ["resnet10t", "resnet18", "bottleneck-resnet", "densenet", "efficientnet_b0", "tf_efficientnet_lite0"]


def randomise_batchnorm(model, shifts: bool, gain: float = 1.0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = gain * torch.randn(n, generator=generator, dtype=torch.float64)  # both signs
            bn.running_var.data = torch.rand(n, generator=generator, dtype=torch.float64) + 0.5
            scale = 0.5 if shifts else 0.0
            bn.running_mean.data = scale * torch.randn(n, generator=generator, dtype=torch.float64)
            bn.bias.data = scale * torch.randn(n, generator=generator, dtype=torch.float64)
    return model


def epsilon_composite(model):
    return LayerMapComposite(LAYER_MAP_BASE + [(Linear, Epsilon(1e-12))], canonizers=canonizers_for(model))


def input_relevance(model, x, target, composite):
    x = x.clone().requires_grad_(True)
    with composite.context(model) as canonized:
        logits = canonized(x)
        seed = torch.zeros_like(logits)
        seed[:, target] = logits[:, target].detach()
        logits.backward(seed)
    return x.grad.sum(dim=(1, 2, 3)), logits[:, target].detach()


@pytest.mark.parametrize("name", NAMES)
def test_canonized_model_computes_the_same_outputs(name):
    torch.manual_seed(0)
    model = randomise_batchnorm(model_named(name).double().eval(), shifts=True)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    before = model(x)
    with epsilon_composite(model).context(model) as canonized:
        during = canonized(x)
    torch.testing.assert_close(during, before, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # remove() restores every parameter


@pytest.mark.parametrize("name", NAMES)
def test_input_relevance_sums_to_the_logit(name):
    torch.manual_seed(1)
    model = randomise_batchnorm(model_named(name).double().eval(), shifts=False, gain=GAIN.get(name, 1.0))
    model.get_classifier().bias.data.zero_()
    relevance, logit = input_relevance(model, torch.randn(4, 3, 32, 32, dtype=torch.float64), 1,
                                       epsilon_composite(model))
    error = ((relevance - logit).abs() / logit.abs()).max().item()
    assert error < CONSERVATION_TOLERANCE, f"{name}: relative conservation error {error:.2e}"


def test_conservation_fails_without_the_canonizer():
    """The check above can fail: DenseNet's BatchNorms left in place scale relevance, not conserve it."""
    torch.manual_seed(1)
    model = randomise_batchnorm(tiny_densenet().double().eval(), shifts=False)
    model.classifier.bias.data.zero_()
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    plain = LayerMapComposite(LAYER_MAP_BASE + [(Linear, Epsilon(1e-12))])
    relevance, logit = input_relevance(model, torch.randn(4, 3, 32, 32, dtype=torch.float64), 1, plain)
    assert ((relevance - logit).abs() / logit.abs()).max().item() > 1e-2


def test_canonizers_refuse_other_architectures_and_training_mode():
    with pytest.raises(DermsynthError, match="no LRP canonizer"):
        canonizers_for(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    with pytest.raises(DermsynthError, match="timm ResNet"):
        ResNetCanonizer().apply(tiny_densenet().eval())
    with pytest.raises(DermsynthError, match="eval"):
        DenseNetCanonizer().apply(tiny_densenet().train())
