"""PPL: zero for a generator that ignores its latent, larger when the mapping is perturbed."""

from __future__ import annotations

import copy

import pytest
import torch

from dermsynth.gan.networks import Generator
from dermsynth.metrics.extractors import lpips_model
from dermsynth.metrics.ppl import perceptual_path_length


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, mapping_layers=2).eval()
    with pytest.warns(UserWarning, match="VGG16 trunk of LPIPS"):
        lpips, _ = lpips_model(tmp_path_factory.mktemp("weights"), "vgg")
    return G, lpips


def test_ppl_is_zero_when_images_ignore_the_latent(setup):
    G, lpips = setup
    frozen = copy.deepcopy(G)
    for name, module in frozen.synthesis.named_modules():
        if name.endswith("affine"):
            module.weight.data.zero_()  # styles no longer depend on w
    assert perceptual_path_length(frozen, lpips, samples=16, batch=8)["ppl"] == pytest.approx(0.0, abs=1e-6)


def test_perturbed_mapping_has_longer_paths_and_results_are_seeded(setup):
    G, lpips = setup
    base = perceptual_path_length(G, lpips, samples=32, batch=16, seed=1)
    assert base == perceptual_path_length(G, lpips, samples=32, batch=16, seed=1)
    entangled = copy.deepcopy(G)
    entangled.mapping.layers[-1].weight.data.mul_(4.0)  # w spreads wider: the same ε moves further
    longer = perceptual_path_length(entangled, lpips, samples=32, batch=16, seed=1)
    assert longer["ppl"] > 1.2 * base["ppl"] > 0  # 1.4× here (CPU, deterministic); demodulation caps the effect
    assert base["kept"] <= 32 and base["space"] == "w" and base["sampling"] == "end"
