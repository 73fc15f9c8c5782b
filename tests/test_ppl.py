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
    assert perceptual_path_length(frozen, lpips, samples=16, batch=8, seed=0)["ppl"] == pytest.approx(0.0, abs=1e-6)


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
        perceptual_path_length(G, _squared_l2, samples=4, batch=4, seed=0, sampling="middle")


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


class _Recorder(torch.nn.Module):
    """A linear generator whose class scales w: w = g_c · M z, image = A w. The path length of a pair is
    g_c² ‖A M (z₁ − z₀)‖² in closed form (it does not cancel), and it keeps what PPL hands it: the classes, the
    latents it synthesises, the noise mode and the device. Its matrices are buffers, so `.to(device)` moves them."""

    def __init__(self, z_dim=4, w_dim=3, c_dim=0, gains=(1.0,)):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.register_buffer("M", torch.randn(w_dim, z_dim, generator=g))
        self.register_buffer("A", torch.randn(12, w_dim, generator=g) / 4)
        self.register_buffer("gains", torch.tensor(gains))
        self.classes, self.ws, self.noise_modes = [], [], []
        self.mapping, self.synthesis = self._map, self._synthesise

    def _map(self, z, c=None):
        self.classes.append(c)
        w = z @ self.M.T
        if c is not None:
            w = w * (c @ self.gains)[:, None]
        return w[:, None, :].repeat(1, 2, 1)

    def _synthesise(self, ws, noise_mode="random"):  # the real generator's default is random noise
        self.ws.append(ws)
        self.noise_modes.append(noise_mode)
        return (ws[:, 0].double() @ self.A.double().T).reshape(len(ws), 3, 2, 2)  # float64 from here on


class _WeightedSquaredL2(torch.nn.Module):
    """Squared L2 with a (unit) weight buffer: like LPIPS, it only runs on the device its weights are on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(12, dtype=torch.float64))

    def forward(self, a, b):
        return ((a - b).flatten(1).square() * self.weight).sum(dim=1)


def _protocol_draws(z_dim, c_dim, samples, batch, seed, sampling):
    """The seeding protocol written out: one torch.Generator seeded with `seed`; per batch of n pairs, 2n latents
    (the n starts, then the n ends), then n classes when conditional, then n values of t for 'full'."""
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        z = torch.randn(2 * n, z_dim, generator=generator).double()
        classes = torch.randint(c_dim, (n,), generator=generator) if c_dim else None
        t = torch.rand(n, generator=generator).double() if sampling == "full" else torch.zeros(n, dtype=torch.float64)
        draws.append((z[:n], z[n:], classes, t))
    return draws


def _trimmed_mean(values):
    low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    kept = values[(values >= low) & (values <= high)]
    return kept.mean(), len(kept)


def _closed_form(G, draws):
    values = []
    for z0, z1, classes, _ in draws:
        scale = torch.ones(len(z0), dtype=torch.float64) if classes is None else G.gains.cpu().double()[classes]
        AM = G.A.cpu().double() @ G.M.cpu().double()
        values.append((((z1 - z0) @ AM.T).square().sum(dim=1) * scale ** 2).numpy())
    return np.concatenate(values)


def test_200_pairs_in_batches_of_16_seed_0_and_the_default_epsilon_1e4():
    """PPL draws 200 pairs from seed 0 in batches of 16 (the batch size decides which latents pair up) with its
    method constant ε = 1e-4 (w(t + ε) − w(t) is a float32 difference: about 1e-3 relative error)."""
    G = _Recorder()
    ours = perceptual_path_length(G, _WeightedSquaredL2(), samples=200, batch=16, seed=0)
    draws = _protocol_draws(4, 0, 200, 16, 0, "end")
    expected, kept = _trimmed_mean(_closed_form(G, draws))
    assert ours["samples"] == 200 and ours["epsilon"] == 1e-4 and ours["kept"] == kept
    assert ours["ppl"] == pytest.approx(expected, rel=1e-2)
    assert [len(ws) for ws in G.ws] == [32] * 12 + [16]  # 12 batches of 16 pairs and one of 8
    for (z0, z1, _, _), ws in zip(draws, G.ws):  # each path starts at its own w₀ = M z₀ (t = 0)
        np.testing.assert_allclose(ws[:len(z0), 0].double().numpy(), (z0 @ G.M.double().T).numpy(), atol=1e-5)


def test_a_last_batch_smaller_than_the_others_draws_only_the_pairs_left():
    G = _Recorder()
    ours = perceptual_path_length(G, _WeightedSquaredL2(), samples=50, batch=16, seed=4, epsilon=0.5)
    expected, kept = _trimmed_mean(_closed_form(G, _protocol_draws(4, 0, 50, 16, 4, "end")))
    assert [len(ws) // 2 for ws in G.ws] == [16, 16, 16, 2]
    assert ours["kept"] == kept and ours["ppl"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("sampling", ["end", "full"])
def test_both_ends_of_a_path_are_w_at_t_and_t_plus_epsilon_with_one_drawn_class_and_const_noise(sampling):
    """Several batches of a conditional generator whose class scales the path (g = 1, 2, 3): every pair's class is
    drawn from the seeded generator, one-hot over all c_dim classes even when a batch lacks the last one, shared
    by both ends; the two ends are w(t) and w(t + ε) (not t − ε) on the line w₀ → w₁; the noise is 'const'."""
    G = _Recorder(c_dim=3, gains=(1.0, 2.0, 3.0))
    samples, batch, seed, eps = 41, 8, 6, 0.25
    ours = perceptual_path_length(G, _WeightedSquaredL2(), samples=samples, batch=batch, seed=seed, epsilon=eps,
                                  sampling=sampling)
    draws = _protocol_draws(4, 3, samples, batch, seed, sampling)
    assert any(2 not in classes for _, _, classes, _ in draws)  # a batch without the last class
    expected, kept = _trimmed_mean(_closed_form(G, draws))
    assert ours["ppl"] == pytest.approx(expected, rel=1e-5) and ours["kept"] == kept
    assert G.noise_modes == ["const"] * len(draws)
    for (z0, z1, classes, t), c_start, c_end, ws in zip(draws, G.classes[::2], G.classes[1::2], G.ws):
        one_hot = np.eye(3)[classes.numpy()]
        np.testing.assert_array_equal(c_start.numpy(), one_hot)  # float32 one-hot, every class a column
        np.testing.assert_array_equal(c_end.numpy(), one_hot)
        gain = G.gains.double()[classes][:, None]
        w0, w1 = gain * (z0 @ G.M.double().T), gain * (z1 @ G.M.double().T)
        n = len(z0)
        np.testing.assert_allclose(ws[:n, 0].numpy(), (w0 + t[:, None] * (w1 - w0)).numpy(), atol=1e-5)
        np.testing.assert_allclose(ws[n:, 0].numpy(), (w0 + (t[:, None] + eps) * (w1 - w0)).numpy(), atol=1e-5)


def test_a_single_class_is_still_a_class():
    """c_dim = 1: the mapping gets the one-hot of class 0 (gain 2 here, so the path lengths are 4× the unconditional)."""
    G = _Recorder(c_dim=1, gains=(2.0,))
    ours = perceptual_path_length(G, _WeightedSquaredL2(), samples=20, batch=10, seed=2, epsilon=0.5)
    expected, _ = _trimmed_mean(_closed_form(G, _protocol_draws(4, 1, 20, 10, 2, "end")))
    assert ours["ppl"] == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(c, torch.ones(10, 1)) for c in G.classes)


def test_the_sampling_message_in_full():
    with pytest.raises(ValueError, match=r"^sampling is 'end' \(t = 0\) or 'full' \(t uniform in \[0, 1\]\)$"):
        perceptual_path_length(_Recorder(), _WeightedSquaredL2(), samples=4, batch=4, seed=0, sampling="start")


def test_the_same_noise_at_both_ends(setup):
    """Noise switched on in a generator whose images ignore the latent: PPL stays zero only if both ends of a
    path see the same noise (random noise per call would make every path long)."""
    G, lpips = setup
    frozen = copy.deepcopy(G)
    for name, module in frozen.synthesis.named_modules():
        if name.endswith("affine"):
            module.weight.data.zero_()
        if hasattr(module, "noise_strength"):
            module.noise_strength.data.fill_(0.5)
    assert perceptual_path_length(frozen, lpips, samples=8, batch=8, seed=0)["ppl"] == pytest.approx(0.0, abs=1e-6)


def test_images_just_above_256_are_area_downsampled_too():
    """257² → 256²: adaptive average pooling with bins [i, i + 2) (the bins of 257 → 256 overlap by one)."""
    G = _LinearGenerator(z_dim=2, w_dim=2, pixels=3 * 257 * 257, image_side=257)
    ours = perceptual_path_length(G, _squared_l2, samples=10, batch=10, seed=1, epsilon=0.5)
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(1)).double()
    delta = ((z[10:] - z[:10]) @ (G.A.double() @ G.M.double()).T).reshape(10, 3, 257, 257).numpy()
    pooled = (delta[..., :-1, :-1] + delta[..., 1:, :-1] + delta[..., :-1, 1:] + delta[..., 1:, 1:]) / 4
    expected, _ = _trimmed_mean((pooled ** 2).reshape(10, -1).sum(axis=1))
    assert ours["ppl"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_everything_runs_on_the_device_asked_for():
    """The generator, the distance, the latents, classes and t all move to `device`; the numbers are those of the
    closed form (computed on the CPU)."""
    G = _Recorder(c_dim=3, gains=(1.0, 2.0, 3.0))
    ours = perceptual_path_length(G, _WeightedSquaredL2(), samples=24, batch=8, seed=3, epsilon=0.25,
                                  sampling="full", device="cuda")
    assert all(ws.device.type == "cuda" for ws in G.ws) and all(c.device.type == "cuda" for c in G.classes)
    G = G.cpu()
    expected, _ = _trimmed_mean(_closed_form(G, _protocol_draws(4, 3, 24, 8, 3, "full")))
    assert ours["ppl"] == pytest.approx(expected, rel=1e-5)
