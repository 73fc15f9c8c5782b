"""CRP (Achtibat et al. 2023) on zennit-crp: checked against plain zennit LRP and a hand-built model."""

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from timm.models.densenet import DenseNet
from zennit.attribution import Gradient

from dermsynth.explain.crp import ConceptExplainer, explained_keys, lrp_composite, top_concepts


@pytest.mark.parametrize("name", ["resnet10t", "densenet"])
def test_concept_relevances_and_conditional_heatmaps_add_up_to_plain_lrp(name):
    """Σ over all concepts of the conditional heatmaps = the unconditioned LRP heatmap (pixelwise), and a
    relevance vector sums to the relevance reaching the layer — both computed here with zennit alone.
    Layer: the default (last convolutional block) of the canonized timm ResNet and DenseNet."""
    torch.manual_seed(0)
    model = (timm.create_model("resnet10t", num_classes=3) if name == "resnet10t"
             else DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), bn_size=2, num_classes=3)).eval()
    x = torch.randn(1, 3, 32, 32)
    explainer = ConceptExplainer(model, None, "epsilon_plus_flat")
    relevances = explainer.concept_relevances(x, [2])[0]
    conditional = explainer.conditional_heatmaps(x[0], 2, list(range(len(relevances))))

    captured = {}
    layer = dict(model.named_modules())[explainer.layer]
    hook = layer.register_forward_hook(lambda m, i, o: (o.retain_grad(), captured.update(out=o)) and None)
    with Gradient(model, lrp_composite("epsilon_plus_flat", model)) as attributor:
        _, plain = attributor(x, lambda logits: torch.eye(3)[[2]] * logits)
    hook.remove()
    layer_total = captured["out"].grad.sum().item()

    assert len(relevances) == captured["out"].shape[1]
    np.testing.assert_allclose(relevances.sum(), layer_total, rtol=1e-4)
    np.testing.assert_allclose(conditional.sum(axis=(1, 2)), relevances, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(conditional.sum(axis=0), plain[0].sum(dim=0).numpy(), rtol=1e-3, atol=1e-6)


def channel_model() -> torch.nn.Module:
    """Four colour detectors (channel k: colour k % 3, +1 on it and −0.5 on the others), average pool,
    and a class-1 logit that reads channel 2 (blue) with weight 1 and channels 0 and 3 slightly negatively."""
    model = torch.nn.Sequential(OrderedDict(
        conv=torch.nn.Conv2d(3, 4, 3, padding=1), relu=torch.nn.ReLU(), pool=torch.nn.AdaptiveAvgPool2d(1),
        flat=torch.nn.Flatten(), fc=torch.nn.Linear(4, 2)))
    with torch.no_grad():
        model.conv.weight.fill_(0)
        for k in range(4):
            model.conv.weight[k] = -0.5 / 9
            model.conv.weight[k, k % 3] = 1 / 9
        model.conv.bias.zero_()
        model.fc.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [-0.2, 0.0, 1.0, -0.1]]))
        model.fc.bias.zero_()
    return model.eval()


def test_the_channel_carrying_the_evidence_is_the_top_concept_and_its_heatmap_is_on_its_region():
    image = torch.zeros(3, 24, 24)
    image[2, 3:9, 14:20] = 1.0     # a blue square: what drives channel 2
    image[0, 14:20, 3:9] = 1.0     # a red square: channel 0, slightly against class 1
    image[1] += 0.05 * torch.rand(24, 24, generator=torch.Generator().manual_seed(0))
    explainer = ConceptExplainer(channel_model(), "relu", "epsilon_plus_flat")
    relevances = explainer.concept_relevances(image[None], [1])[0]
    concepts, shares = top_concepts(relevances, 2)
    assert concepts[0] == 2 and shares[0] > 0.5
    heatmap = explainer.conditional_heatmaps(image, 1, [2])[0]
    region = np.zeros_like(heatmap, dtype=bool)
    region[1:11, 12:22] = True     # the square ± 2 px: outputs that see it (3×3), spread back by the flat rule (3×3)
    positive = np.clip(heatmap, 0, None)
    assert positive[region].sum() / positive.sum() > 0.95
    assert heatmap[14:20, 3:9].max() <= 1e-6  # nothing of concept 2 on the red square


def test_explained_keys_are_the_studys_case_then_configured_keys():
    baseline = pd.DataFrame({"key": ["a", "b", "c", "d"], "label": ["mel", "mel", "mel", "nv"],
                             "predicted": ["bkl", "bkl", "mel", "bkl"]})
    augmented = pd.DataFrame({"key": ["a", "b", "c", "d"], "predicted": ["mel", "bkl", "mel", "mel"]})
    settings = {"case": {"label": "mel", "baseline": "bkl", "augmented": "mel"}, "images": 4, "keys": ["d"]}
    assert explained_keys(baseline, augmented, settings) == (["a", "d"], "case")
    none = {**settings, "keys": []}
    keys, selection = explained_keys(baseline, augmented.assign(predicted="bkl"), none)
    assert keys == ["a", "b", "c"] and "no test image of the case" in selection
