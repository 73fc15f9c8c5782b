"""Feature networks: the weights cache is really used when filled, random init is recorded when not."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import AlexNet_Weights, VGG16_Weights, alexnet
from torchvision.models import vgg16 as tv_vgg16

from dermsynth.metrics import extractors
from dermsynth.metrics.evaluate import cached_real_features, generative_metrics, load_split_images
from dermsynth.metrics.generative import fid, kid


@pytest.fixture(scope="module")
def images(ingested_ham) -> torch.Tensor:
    manifest = ingested_ham / "manifest-all-train.csv"
    import pandas as pd
    pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False).assign(split="train").to_csv(
        manifest, index=False)
    batch, _ = load_split_images(ingested_ham / "lmdb", manifest, "train", limit=24, seed=0)
    return batch


def test_empty_cache_gives_recorded_deterministic_random_weights(tmp_path, images):
    with pytest.warns(UserWarning, match="no weights at .*vgg16-397923af.pth"):
        first = extractors.vgg16(tmp_path)
    assert first.describe()["comparable_to_published"] is False and first.weights == "random-init(seed=0)"
    with pytest.warns(UserWarning):
        second = extractors.vgg16(tmp_path)
    assert np.array_equal(first.features(images[:8]), second.features(images[:8]))


def test_filled_cache_is_loaded(tmp_path, images):
    """Weights we put where torchvision's downloader would are the ones used (compared with an
    independently built VGG16 carrying the same state dict)."""
    torch.manual_seed(123)
    reference = tv_vgg16(weights=None).eval()
    path = extractors.torchvision_checkpoint(tmp_path, VGG16_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    loaded = extractors.vgg16(tmp_path)
    assert loaded.weights == str(path) and loaded.describe()["comparable_to_published"] is True
    x = F.interpolate(images[:4].float() / 255, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.classifier[:4](torch.flatten(reference.avgpool(reference.features(x)), 1))
    assert np.allclose(loaded.features(images[:4]), expected.double().numpy(), atol=1e-4)


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(tmp_path, images):
    with pytest.warns(UserWarning, match="AlexNet trunk"):
        model, info = extractors.lpips_alex(tmp_path)
    assert info["comparable_to_published"] is False
    clean = images[:8]
    assert np.allclose(extractors.lpips_distance(model, clean, clean), 0.0, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    distances = []
    for sigma in (5, 20, 60):
        noisy = (clean.float() + sigma * torch.randn(clean.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
        distances.append(extractors.lpips_distance(model, clean, noisy).mean())
    assert distances == sorted(distances) and distances[0] > 0


def test_lpips_uses_a_cached_alexnet_trunk(tmp_path):
    torch.manual_seed(7)
    path = extractors.torchvision_checkpoint(tmp_path, AlexNet_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    trunk = alexnet(weights=None)
    torch.save(trunk.state_dict(), path)
    model, info = extractors.lpips_alex(tmp_path)
    assert info["trunk_weights"] == str(path) and info["comparable_to_published"] is True
    assert torch.equal(model.net.slice1[0].weight, trunk.features[0].weight)


def test_image_fid_is_zero_on_itself_and_grows_with_blur(tmp_path, images):
    with pytest.warns(UserWarning):
        inception = extractors.inception(tmp_path)
    images = images[:16]
    real = inception.features(images)
    assert np.abs(real).max() < 1e3  # calibrated random network: features of a sane scale
    scale = np.trace(np.cov(real, rowvar=False))
    assert abs(fid(real, real)) < 1e-6 * scale
    values = []
    for sigma in (0.5, 1.5, 3.0):
        k = int(2 * round(3 * sigma) + 1)
        blurred = torch.from_numpy(np.stack([cv2.GaussianBlur(img.permute(1, 2, 0).numpy(), (k, k), sigma)
                                             for img in images])).permute(0, 3, 1, 2)
        values.append(fid(real, inception.features(blurred)))
    assert values == sorted(values) and values[0] > 0


def test_real_features_are_cached_and_metrics_say_which_extractor(tmp_path, images):
    with pytest.warns(UserWarning):
        nets = {"inception": extractors.inception(tmp_path), "vgg16": extractors.vgg16(tmp_path)}
    calls = []

    def load():
        calls.append(1)
        return images

    images = images[:12]
    identity = {"dataset": "ham10000", "split": "train", "resolution": 64, "n": len(images)}
    real = {nets[n].name: cached_real_features(tmp_path / "cache", identity, nets[n], load) for n in nets}
    again = {nets[n].name: cached_real_features(tmp_path / "cache", identity, nets[n], load) for n in nets}
    assert len(calls) == 2 and all(np.array_equal(real[k], again[k]) for k in real)  # second time: from cache
    fake = {nets[n].name: nets[n].features(images.flip(-1)) for n in nets}
    report = generative_metrics(real, fake, nets, kid_subset=12, k=3)
    assert report["comparable_to_published"] is False and report["fid_rank_deficient"] is True
    assert report["feature_extractors"]["inception"]["weights"] == extractors.RANDOM_INCEPTION
    assert report["fid"] > 0 and 0 <= report["precision"] <= 1
    json.dumps(report)  # serialisable as a metrics file


def test_image_fid_and_kid_grow_with_a_colour_shift(tmp_path, images):
    """A progressively stronger colour cast (red up, blue down) moves both FID and KID away from zero."""
    with pytest.warns(UserWarning):
        inception = extractors.inception(tmp_path)
    images = images[:16]
    real = inception.features(images)
    fids, kids = [], []
    for shift in (10, 30, 60):
        shifted = images.int()
        shifted[:, 0] += shift
        shifted[:, 2] -= shift
        fake = inception.features(shifted.clamp(0, 255).to(torch.uint8))
        fids.append(fid(real, fake))
        kids.append(kid(real, fake, subset_size=16))
    assert fids == sorted(fids) and fids[0] > 0
    assert kids == sorted(kids) and kids[-1] > 0


def test_the_random_inception_is_built_once_per_process_and_each_caller_gets_its_own_copy():
    """Built once (seconds: its BatchNorm calibration), deep-copied per caller: a copy holds exactly the weights and
    statistics of a fresh build, and changing one copy changes no other."""
    first, second = extractors._RandomInception(), extractors._RandomInception()
    fresh = extractors._build_random_inception().state_dict()
    assert list(first.net.state_dict()) == list(fresh)
    assert all(torch.equal(value, fresh[name]) for name, value in first.net.state_dict().items())
    weight = next(first.net.parameters())
    with torch.no_grad():
        weight.add_(1.0)
    assert not torch.equal(weight, next(second.net.parameters()))
    assert torch.equal(next(second.net.parameters()), next(iter(fresh.values())))
