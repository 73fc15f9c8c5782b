"""PPL: zero for a generator that ignores its latent, larger when the mapping is perturbed."""

from __future__ import annotations

import copy

import numpy as np

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


class _LinearGenerator(torch.nn.Module):
    """w = M z (+ a class embedding), image = A w: a generator whose path lengths are known in closed form."""

    def __init__(self, z_dim=6, w_dim=5, pixels=12, c_dim=0, image_side=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.z_dim, self.w_dim, self.c_dim, self.side = z_dim, w_dim, c_dim, image_side
        self.M = torch.randn(w_dim, z_dim, generator=g)
        self.E = torch.randn(w_dim, max(c_dim, 1), generator=g)
        self.A = torch.randn(pixels, w_dim, generator=g) / 4
        self.mapping = self._map
        self.synthesis = self._synthesise

    def _map(self, z, c=None):
        w = z @ self.M.T + (0 if c is None else c @ self.E.T)
        return w[:, None, :].repeat(1, 2, 1)  # two identical styles (num_ws = 2)

    def _synthesise(self, ws, noise_mode="const"):
        return (ws[:, 0] @ self.A.T).reshape(len(ws), 3, self.side, self.side)


class _SquaredL2(torch.nn.Module):
    """The image distance in place of LPIPS: squared L2 over pixels, per pair."""

    def forward(self, a, b):
        return (a - b).square().flatten(1).sum(dim=1)


_squared_l2 = _SquaredL2()


def test_ppl_equals_the_closed_form_of_a_linear_generator():
    """With image = A·M·z and the squared L2 distance, the end-point path length of a pair is exactly
    ‖A M (z₁ − z₀)‖² (the ε cancels); PPL is the mean between the 1st and 99th percentiles."""
    G = _LinearGenerator()
    samples, seed = 200, 3
    ours = perceptual_path_length(G, _squared_l2, samples=samples, batch=samples, seed=seed, epsilon=0.25)
    z = torch.randn(2 * samples, G.z_dim, generator=torch.Generator().manual_seed(seed)).double()
    values = ((z[samples:] - z[:samples]) @ (G.A.double() @ G.M.double()).T).square().sum(dim=1).numpy()
    low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    kept = values[(values >= low) & (values <= high)]
    assert ours["kept"] == len(kept) < samples and ours["samples"] == samples and ours["epsilon"] == 0.25
    assert ours["ppl"] == pytest.approx(kept.mean(), rel=1e-5)
    assert ours["ppl"] != pytest.approx(values.mean(), rel=1e-6)  # the trimming matters here


def test_full_sampling_and_the_shared_class_of_a_conditional_generator():
    """t uniform ('full') gives the same closed form for a linear generator (the path is a line), and both
    ends of a conditional path share their class (it cancels out)."""
    G = _LinearGenerator(c_dim=3)
    one = perceptual_path_length(G, _squared_l2, samples=40, batch=40, seed=1, sampling="full", epsilon=0.25)
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(80, G.z_dim, generator=generator).double()
    values = ((z[40:] - z[:40]) @ (G.A.double() @ G.M.double()).T).square().sum(dim=1).numpy()
    low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    assert one["ppl"] == pytest.approx(values[(values >= low) & (values <= high)].mean(), rel=1e-5)
    assert one["sampling"] == "full"
    with pytest.raises(ValueError, match="sampling is 'end'"):
        perceptual_path_length(G, _squared_l2, samples=4, sampling="middle")


def test_images_above_256_are_area_downsampled_before_the_distance():
    """A 512² linear generator: the distance is taken between 2×2-averaged images (avg_pool2d here)."""
    G = _LinearGenerator(z_dim=3, w_dim=2, pixels=3 * 512 * 512, image_side=512)
    ours = perceptual_path_length(G, _squared_l2, samples=20, batch=10, seed=2, epsilon=0.5)
    generator = torch.Generator().manual_seed(2)
    z = torch.cat([torch.randn(20, 3, generator=generator).reshape(2, 10, 3) for _ in range(2)], dim=1)
    delta = ((z[1] - z[0]).double() @ (G.A.double() @ G.M.double()).T).reshape(20, 3, 512, 512)
    values = torch.nn.functional.avg_pool2d(delta, 2).square().flatten(1).sum(dim=1).numpy()
    low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    assert ours["ppl"] == pytest.approx(values[(values >= low) & (values <= high)].mean(), rel=1e-4)
