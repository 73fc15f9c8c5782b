"""The real-weights paths and the verbs no other test runs: Inception (FID/KID) loaded from the weights
cache, `fetch-weights` on a cache that is already filled (no internet here: the test makes its own
weights, in the cache layout) and on an unreachable network, `evaluate-images`, and `bench`."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import AlexNet_Weights, VGG16_Weights, alexnet
from torchvision.models import vgg16 as tv_vgg16

from dermsynth.cli import main
from dermsynth.errors import DermsynthError
from dermsynth.metrics import extractors


class _Layers(nn.Module):
    """Stands in for Inception's trunk in a file of the same format (TorchScript with a `layers` child that
    maps normalised (N, 3, 299, 299) images to 2048 features), so loading and preprocessing can be checked."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():  # seeded weights without reseeding the caller's global random state
            torch.manual_seed(7)
            self.conv = nn.Conv2d(3, 2048, kernel_size=13, stride=13, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3), keepdim=True)  # (N, 2048, 1, 1), like Inception's pool


class _Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def _fill_cache(cache) -> dict:
    """Weights files where each library's downloader puts them (Inception, VGG16, AlexNet)."""
    (cache / "clean-fid").mkdir(parents=True)
    torch.jit.script(_Inception()).save(str(cache / "clean-fid" / extractors.INCEPTION_FILE))
    paths = {"inception": cache / "clean-fid" / extractors.INCEPTION_FILE}
    for name, build, weights in (("vgg16", tv_vgg16, VGG16_Weights.IMAGENET1K_V1),
                                 ("alexnet", alexnet, AlexNet_Weights.IMAGENET1K_V1)):
        path = extractors.torchvision_checkpoint(cache, weights.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            torch.manual_seed(1)
            state = build(weights=None).state_dict()
        torch.save(state, path)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return root, _fill_cache(root)


def _pil_bicubic_float(image: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's 'clean' resize written with Pillow directly: each channel as a float image, bicubic,
    clipped to [0, 255] (no rounding)."""
    channels = [np.asarray(Image.fromarray(image[:, :, c].astype(np.float32), mode="F").resize(
        (size, size), resample=Image.BICUBIC)).clip(0, 255) for c in range(3)]
    return np.stack(channels, axis=0)


def test_inception_from_the_cache_is_the_file_with_clean_fid_preprocessing(filled_cache, tmp_path):
    cache, paths = filled_cache
    net = extractors.inception(cache)
    assert net.weights == str(paths["inception"]) and net.describe()["comparable_to_published"] is True
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 40, 52), dtype=np.uint8))
    ours = net.features(images, progress=False)
    reference = torch.jit.load(str(paths["inception"])).layers
    resized = np.stack([_pil_bicubic_float(img.permute(1, 2, 0).numpy(), 299) for img in images])
    with torch.no_grad():
        expected = reference((torch.from_numpy(resized) - 128) / 128).reshape(3, 2048).double().numpy()
    assert ours.shape == (3, 2048)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="no weights at"):
        random = extractors.inception(tmp_path / "empty")
    assert random.describe()["comparable_to_published"] is False
    assert not np.allclose(random.features(images, progress=False), ours)


def test_fetch_weights_on_a_filled_cache_downloads_nothing_and_names_every_file(filled_cache, monkeypatch, capsys):
    cache, paths = filled_cache
    before = {p: p.stat().st_mtime_ns for p in paths.values()}
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # any download attempt fails fast
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    assert main(["fetch-weights", "--weights-dir", str(cache), "--timm"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"cached: {paths['inception']}", f"cached: {paths['vgg16']}", f"cached: {paths['alexnet']}"]
    assert {p: p.stat().st_mtime_ns for p in paths.values()} == before
    # the cache it reports is the one the extractors load
    assert extractors.vgg16(cache).weights == str(paths["vgg16"])
    assert extractors.lpips_alex(cache)[1]["comparable_to_published"] is True


def test_fetch_weights_without_a_network_says_what_to_do(tmp_path, monkeypatch, capsys):
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # a closed port: the connection is refused at once
    with pytest.raises(DermsynthError, match="Run `dermsynth fetch-weights` on a machine with internet access"):
        extractors.fetch_weights(tmp_path / "cache", ())
    assert main(["fetch-weights", "--weights-dir", str(tmp_path / "cache"), "--timm"]) == 2
    assert "could not download pretrained weights" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "clean-fid" / extractors.INCEPTION_FILE).exists()  # no partial file left


@pytest.fixture(scope="module")
def five_real(ingested_ham, filled_cache, tmp_path_factory):
    """A manifest of 5 real images (split train), the same images written as a PNG folder, a folder of noise
    images, and a filled weights cache (its small Inception stand-in keeps the test fast)."""
    from dermsynth.data.dataset import read_images
    root = tmp_path_factory.mktemp("evaluate-images")
    frame = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False).iloc[:5].assign(split="train")
    frame.to_csv(root / "manifest.csv", index=False)
    images = read_images(ingested_ham / "lmdb", frame["key"].tolist())
    (root / "same").mkdir()
    (root / "noise").mkdir()
    rng = np.random.default_rng(0)
    for key, image in zip(frame["key"], images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "same" / f"{key}.png")
        Image.fromarray(rng.integers(0, 256, image.permute(1, 2, 0).shape, dtype=np.uint8)).save(
            root / "noise" / f"{key}.png")
    return root, ingested_ham / "lmdb", filled_cache


def _leaves(tree, path=""):
    """(dotted path, value) of every leaf of a JSON-like tree."""
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{path}.{key}")]
    if isinstance(tree, list):
        return [leaf for i, value in enumerate(tree) for leaf in _leaves(value, f"{path}[{i}]")]
    return [(path, tree)]


def test_evaluate_images_verb_scores_the_real_images_as_themselves(five_real, tmp_path, monkeypatch, capsys):
    """The real images, saved as PNG (lossless), against themselves: FID 0 and precision = recall = 1;
    noise images against them: a larger FID and precision 0. The cache's weights are the ones used."""
    root, lmdb, (cache, paths) = five_real
    monkeypatch.setenv("DERMSYNTH_WEIGHTS", str(cache))
    monkeypatch.chdir(tmp_path)  # the real-feature cache is relative to the working directory
    results = {}
    for name in ("same", "noise"):
        out = tmp_path / f"{name}.json"
        assert main(["metrics", "evaluate-images", "--images", str(root / name), "--lmdb", str(lmdb), "--manifest",
                     str(root / "manifest.csv"), "--out", str(out), "--device", "cpu"]) == 0
        assert f"→ {out}" in capsys.readouterr().out
        results[name] = json.loads(out.read_text())
    same, noise = results["same"], results["noise"]
    assert same["n_images"] == 5 and same["real_reference"]["images"] == 5
    assert abs(same["fid"]) < 1e-6 * noise["fid"] and noise["fid"] > 0
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and noise["precision"] == 0.0
    assert str(paths["inception"]) in json.dumps(same) and str(paths["vgg16"]) in json.dumps(same)
    # Inception and VGG16 come from the cache; Lite0 is not in it (random-init), and no published number
    # lives in its feature space, so the result stays comparable to published figures
    random_init = [path for path, value in _leaves(same) if isinstance(value, str) and "random-init" in value]
    assert random_init == [".feature_extractors.lite0.weights"], random_init
    assert same["comparable_to_published"] is True and same["lite0_real_weights"] is False
    assert (tmp_path / "results" / "metrics" / "cache").is_dir()  # the real features were cached


def test_bench_verbs_write_their_records_into_one_file(tmp_path):
    """No timing is asserted: what each record says it measured, and that a second verb adds its record."""
    out = tmp_path / "bench.json"
    assert main(["bench", "gan-train", "--device", "cpu", "--resolutions", "16", "--batch", "4", "--steps", "2",
                 "--warmup", "1", "--channel-base", "128", "--out", str(out)]) == 0
    assert main(["bench", "lmdb-read", "--images", "6", "--resolutions", "16", "--workers", "1", "--max-side", "96",
                 "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record) == {"gan-train", "lmdb-read"}
    (train,) = record["gan-train"]["results"]
    # timed steps are whole lazy-regularisation cycles (R1 every 16 steps), so 2 becomes 16
    assert (train["resolution"], train["batch"], train["steps"], train["ops"], train["precision"]) == \
        (16, 4, 16, "reference", "fp32")
    assert train["sec_per_kimg"] > 0 and train["peak_memory_gb"] is None
    reads = record["lmdb-read"]["results"]
    assert {(r["encoding"], r["dataloader_workers"]) for r in reads} == {("png", 0), ("png", 1), ("raw", 0), ("raw", 1)}
    assert all(r["images"] == 3 * 6 and r["resolution"] == 16 for r in reads)  # three epochs of six images
    assert record["lmdb-read"]["source_images"] == 6 and record["lmdb-read"]["machine"]["cpu_count"] >= 1
