"""StyleGAN2 networks at tiny resolution: shapes, styles, modulation, truncation, labels, gradients."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermsynth.gan.networks import (Discriminator, FullyConnected, Generator, MinibatchStd, conv2d_resample,
                                    modulated_conv2d)
from dermsynth.gan.ops import setup_filter

SMALL = dict(z_dim=32, w_dim=32, channel_base=512, channel_max=32)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return Generator(img_resolution=32, **SMALL).eval()


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_and_number_of_styles(resolution):
    torch.manual_seed(0)
    G = Generator(img_resolution=resolution, **SMALL)
    D = Discriminator(img_resolution=resolution, channel_base=512, channel_max=32)
    images = G(torch.randn(4, 32))
    assert images.shape == (4, 3, resolution, resolution) and images.dtype == torch.float32
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    assert D(images).shape == (4, 1)
    assert len(G.synthesis.style_layers()) == 3 * (int(math.log2(resolution)) - 2) + 2


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_equals_a_per_sample_convolution(fused):
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 5, 8, 8, dtype=torch.float64), torch.randn(4, 5, 3, 3, dtype=torch.float64), \
        torch.randn(3, 5, dtype=torch.float64)
    ours = modulated_conv2d(x, weight, styles, demodulate=True, fused=fused)
    for i in range(3):
        w = weight * styles[i].view(1, 5, 1, 1)
        w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(ours[i:i + 1], F.conv2d(x[i:i + 1], w, padding=1), atol=1e-12)


@pytest.mark.parametrize("demodulate", [True, False])
def test_training_and_inference_modulated_convs_agree_when_upsampling(demodulate):
    """Training uses the batched (non-fused) form, inference the grouped one: same function."""
    torch.manual_seed(3)
    x, weight, styles = torch.randn(4, 6, 8, 8, dtype=torch.float64), torch.randn(5, 6, 3, 3, dtype=torch.float64), \
        torch.randn(4, 6, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    grouped = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=2, f=f, fused=True)
    batched = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=2, f=f, fused=False)
    assert grouped.shape == (4, 5, 16, 16)
    torch.testing.assert_close(batched, grouped)


def test_generator_gives_the_same_images_in_train_and_eval_mode():
    torch.manual_seed(4)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=256, channel_max=32).double()
    z = torch.randn(3, 16, dtype=torch.float64)
    train_images = G.train()(z, noise_mode="const")
    eval_images = G.eval()(z, noise_mode="const")
    torch.testing.assert_close(train_images, eval_images)


def test_mixed_precision_settings_keep_cpu_in_float32():
    """Reduced precision is a CUDA-only optimisation: on CPU the same weights give the same images."""
    torch.manual_seed(5)
    plain = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=32)
    mixed = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=32, num_fp16_res=2,
                      reduced_precision="bfloat16")
    mixed.load_state_dict(plain.state_dict())
    assert [b.reduced_precision for b in mixed.synthesis.blocks] == [False, False, True, True]  # 16² and 32²
    z = torch.randn(2, 16)
    torch.testing.assert_close(mixed(z, noise_mode="const"), plain(z, noise_mode="const"), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="reduced precision runs on CUDA only")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_on_gpu_stays_close_to_float32(dtype):
    torch.manual_seed(6)
    kwargs = dict(z_dim=32, w_dim=32, img_resolution=64, channel_base=1024, channel_max=64)
    plain = Generator(**kwargs).cuda().eval()
    mixed = Generator(**kwargs, num_fp16_res=3, reduced_precision=dtype).cuda().eval()
    mixed.load_state_dict(plain.state_dict())
    D_plain = Discriminator(img_resolution=64, channel_base=1024, channel_max=64).cuda()
    D_mixed = Discriminator(img_resolution=64, channel_base=1024, channel_max=64, num_fp16_res=3,
                            reduced_precision=dtype).cuda()
    D_mixed.load_state_dict(D_plain.state_dict())
    z = torch.randn(8, 32, device="cuda")
    images = mixed(z, noise_mode="const")
    assert images.dtype == torch.float32
    assert (images - plain(z, noise_mode="const")).abs().mean() < 0.02
    assert (D_mixed(images) - D_plain(images)).abs().max() < 0.05 * D_plain(images).abs().max() + 0.05


def test_demodulation_keeps_unit_variance():
    torch.manual_seed(2)
    x = torch.randn(8, 256, 16, 16)
    out = modulated_conv2d(x, torch.randn(64, 256, 3, 3), torch.rand(8, 256) * 3 + 0.1, demodulate=True)
    assert 0.9 < out.std().item() < 1.1


@pytest.mark.parametrize("kernel", [1, 3])
def test_resampling_convolutions_halve_and_double(kernel):
    f = setup_filter([1, 3, 3, 1])
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, kernel, kernel)
    assert conv2d_resample(x, w, f, down=2).shape == (2, 6, 4, 4)
    if kernel == 3:
        assert conv2d_resample(x, w, f, up=2).shape == (2, 6, 16, 16)


def _up_conv_scipy(x: np.ndarray, w: np.ndarray, f: np.ndarray) -> np.ndarray:
    """2× up-sampling convolution of one (C, H, W) image: zero insertion, full convolution with the kernel
    (summed over input channels) and with the 2-D filter (gain 4), cropped so that input pixel j (centre
    j + ½) lands at output index 2j + ½. A 3-tap kernel and a 4-tap filter spread the inserted sample 2j
    over 2j … 2j + 5, centre 2j + 2.5: the crop starts 2 samples in."""
    from scipy import signal
    _, height, width = x.shape
    out = []
    for w_o in w:
        full = sum(signal.convolve2d(np.kron(x_c, [[1, 0], [0, 0]]), w_oc) for x_c, w_oc in zip(x, w_o))
        full = signal.convolve2d(full, np.outer(f, f) * 4)
        out.append(full[2:2 + 2 * height, 2:2 + 2 * width])
    return np.stack(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_upsampling_modulated_conv_matches_scipy_on_random_images(fused, demodulate):
    rng = np.random.default_rng(4)
    x, weight, styles = rng.normal(size=(2, 3, 5, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(2, 3))
    f = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    ours = modulated_conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(styles),
                            demodulate=demodulate, up=2, f=torch.from_numpy(f), fused=fused).numpy()
    for n in range(2):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / np.sqrt((w ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        np.testing.assert_allclose(ours[n], _up_conv_scipy(x[n], w, f), atol=1e-10)


def test_upsampling_convolution_of_a_ramp_samples_it_at_the_new_pixel_centres():
    """Alignment: a centred symmetric kernel and filter reproduce a ramp, so the ×2 output is the ramp at
    the output pixel centres (input index (k − ½)/2); a filter padding off by one shifts it by half a slope."""
    f = setup_filter([1, 3, 3, 1]).double()
    y, x = np.meshgrid(np.arange(8.0), np.arange(10.0), indexing="ij")
    ramp = torch.from_numpy(0.4 * y - 0.3 * x + 2)[None, None]
    w = torch.from_numpy(np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16)[None, None]
    out = conv2d_resample(ramp, w, f, up=2)[0, 0].numpy()
    k_y, k_x = np.meshgrid(np.arange(16.0), np.arange(20.0), indexing="ij")
    expected = 0.4 * (k_y - 0.5) / 2 - 0.3 * (k_x - 0.5) / 2 + 2
    np.testing.assert_allclose(out[3:-3, 3:-3], expected[3:-3, 3:-3], atol=1e-12)
    down = conv2d_resample(ramp, w, f, down=2)[0, 0].numpy()  # ÷2: output o centred on input index 2o + ½
    o_y, o_x = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    np.testing.assert_allclose(down[1:-1, 1:-1], (0.4 * (2 * o_y + 0.5) - 0.3 * (2 * o_x + 0.5) + 2)[1:-1, 1:-1],
                               atol=1e-12)


def test_equalised_learning_rate_scales():
    torch.manual_seed(3)
    layer = FullyConnected(512, 512, lr_multiplier=0.01)
    assert layer.weight.std().item() == pytest.approx(100, rel=0.05)  # stored at 1/lr_multiplier
    assert layer.effective_weight().std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)


def test_w_and_broadcast_w_plus_give_the_same_image(generator):
    torch.manual_seed(4)
    ws = generator.mapping(torch.randn(2, 32))
    assert ws.shape == (2, generator.num_ws, 32)
    single = ws[:, 0]
    assert torch.allclose(generator.synthesis(single, noise_mode="const"),
                          generator.synthesis(single.unsqueeze(1).repeat(1, generator.num_ws, 1), noise_mode="const"))
    with pytest.raises(ValueError, match="expected 8 styles"):
        generator.synthesis(ws[:, :3])


def test_truncation_to_the_average_removes_all_variation(generator):
    generator = copy.deepcopy(generator)
    generator.mapping.w_avg.copy_(torch.randn(32))
    images = generator(torch.randn(3, 32), truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(images[0], images[1], atol=1e-5) and torch.allclose(images[0], images[2], atol=1e-5)
    varied = generator(torch.randn(3, 32), truncation_psi=1.0, noise_mode="const")
    assert not torch.allclose(varied[0], varied[1], atol=1e-3)


def test_w_avg_tracks_the_mean_w(generator):
    mapping = copy.deepcopy(generator.mapping)
    mapping.w_avg.zero_()
    z = torch.randn(64, 32)
    with torch.no_grad():
        for _ in range(2000):  # an EMA with β = 0.995 has forgotten its start after ~2000 steps
            mapping(z, update_emas=True)
        assert torch.allclose(mapping.w_avg, mapping(z)[:, 0].mean(dim=0), atol=1e-3)


def test_noise_modes(generator):
    generator = copy.deepcopy(generator)
    z = torch.randn(2, 32)
    for layer in generator.synthesis.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    assert torch.equal(generator(z, noise_mode="const"), generator(z, noise_mode="const"))
    assert not torch.equal(generator(z, noise_mode="random"), generator(z, noise_mode="random"))
    assert not torch.equal(generator(z, noise_mode="none"), generator(z, noise_mode="const"))


def test_conditional_generator_and_projection_discriminator():
    torch.manual_seed(5)
    G = Generator(c_dim=7, img_resolution=32, **SMALL).eval()
    D = Discriminator(c_dim=7, img_resolution=32, channel_base=512, channel_max=32)
    z = torch.randn(1, 32).repeat(2, 1)
    labels = torch.eye(7)[[0, 4]]
    images = G(z, labels, noise_mode="const")
    assert not torch.allclose(images[0], images[1], atol=1e-4)  # the label changes the image
    scores = D(images[:1].repeat(2, 1, 1, 1), labels)
    assert scores.shape == (2, 1) and not torch.allclose(scores[0], scores[1])  # and the verdict


def _group_std_numpy(x: np.ndarray, members: list[int], channels: slice) -> float:
    """Mean over the channel slice and pixels of the biased standard deviation across the group's samples."""
    group = x[members][:, channels]
    return float(np.sqrt(group.var(axis=0) + 1e-8).mean())


@pytest.mark.parametrize("batch, group_size, num_channels", [(8, 4, 1), (12, 4, 2), (3, 4, 1), (4, 4, 3)])
def test_minibatch_stddev_against_numpy(batch, group_size, num_channels):
    """Groups of G = min(group_size, N): sample i is in group i mod (N/G), with samples i, i + N/G, …"""
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 6, 4, 5)) * rng.uniform(0.5, 2, size=(batch, 1, 1, 1))
    out = MinibatchStd(group_size=group_size, num_channels=num_channels)(torch.from_numpy(x)).numpy()
    assert out.shape == (batch, 6 + num_channels, 4, 5)
    np.testing.assert_array_equal(out[:, :6], x)
    groups = batch // min(group_size, batch)
    width = 6 // num_channels
    for i in range(batch):
        members = list(range(i % groups, batch, groups))
        for f in range(num_channels):
            expected = _group_std_numpy(x, members, slice(f * width, (f + 1) * width))
            np.testing.assert_allclose(out[i, 6 + f], np.full((4, 5), expected), rtol=1e-12)


@pytest.mark.parametrize("batch", [5, 6, 10])
def test_minibatch_stddev_refuses_a_batch_the_groups_do_not_tile(batch):
    """NVIDIA's rule: N ≤ group size or a multiple of it; anything else is an error naming the batch setting,
    not a silent constant channel."""
    with pytest.raises(ValueError, match=rf"a batch of {batch} images does not split into groups of 4.*"
                                         r"gans\.<name>\.batch"):
        MinibatchStd(group_size=4)(torch.randn(batch, 2, 4, 4))
    with pytest.raises(ValueError, match="minibatch standard deviation"):
        Discriminator(img_resolution=8, channel_base=64, channel_max=8)(torch.randn(batch, 3, 8, 8))


def test_losses_are_finite_and_gradients_reach_every_parameter():
    torch.manual_seed(6)
    G = Generator(img_resolution=32, **SMALL)
    D = Discriminator(img_resolution=32, channel_base=512, channel_max=32)
    fake = G(torch.randn(4, 32))
    loss_g = F.softplus(-D(fake)).mean()
    loss_g.backward()
    assert torch.isfinite(loss_g)
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
