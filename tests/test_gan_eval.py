"""Generator evaluation: metrics JSON, memorisation, snapshot curve, Table 1, and image-set evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import schema_defaults
from dermsynth.gan.options import TrainGanOptions
from dermsynth.gan.run import train_gan
from dermsynth.metrics.gan_eval import evaluate_gan, evaluate_images, real_reference, snapshot_curve, table1
from dermsynth.metrics.options import EvaluateGanOptions, GanCurveOptions

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")  # no weights here: random-init nets


@pytest.fixture(scope="module")
def trained(gan_setup, tmp_path_factory):
    cfg, lmdb, manifest = gan_setup
    out = tmp_path_factory.mktemp("trained")
    network = train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest, out, device="cpu")
    return cfg, lmdb, manifest, network


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    cfg, lmdb, manifest, network = trained
    out = tmp_path_factory.mktemp("evaluated")
    cache = out / "cache"
    first = evaluate_gan(EvaluateGanOptions.from_config(cfg, gan="tiny"), network, lmdb, manifest, out / "tiny.json",
                         out / "tiny-mem.csv", device="cpu", cache_dir=cache)
    return cfg, out, cache, first


def test_metrics_file_holds_table1_numbers_and_provenance(evaluated):
    cfg, out, _, result = evaluated
    saved = json.loads((out / "tiny.json").read_text())
    for key in ("fid", "kid", "kid_percent", "precision", "recall", "ppl", "alpha_precision", "beta_recall",
                "authenticity"):
        assert np.isfinite(saved[key]), key
    assert saved["kid_percent"] == pytest.approx(saved["kid"] * 100)
    assert 0 <= saved["precision"] <= 1 and 0 <= saved["recall"] <= 1 and saved["ppl"] >= 0
    ev = cfg["evaluation"]
    assert saved["n_fake"] == ev["fake_samples"] and saved["n_real"] == ev["real_samples"]
    assert saved["comparable_to_published"] is False  # random-init extractors here, and it says so
    assert all("random-init" in saved["feature_extractors"][n]["weights"] for n in ("inception", "vgg16"))
    # FD/KID in EfficientNet-Lite0 features beside them, whose weights (real where the cache has them) are named
    lite = saved["feature_extractors"]["lite0"]
    assert np.isfinite(saved["fd_lite0"]) and saved["fd_lite0"] >= 0 and np.isfinite(saved["kid_lite0"])
    assert saved["kid_lite0_percent"] == pytest.approx(saved["kid_lite0"] * 100)
    assert lite["name"] == "tf_efficientnet_lite0_pool" and lite["comparable_to_published"] is False
    assert saved["lite0_real_weights"] is lite["real_weights"] is ("random-init" not in lite["weights"])
    assert saved["provenance"]["config"]["evaluation"]["fake_samples"] == ev["fake_samples"]


def test_memorisation_table_names_real_training_images(evaluated, trained):
    cfg, out, _, result = evaluated
    _, _, manifest, _ = trained
    table = pd.read_csv(out / "tiny-mem.csv")
    reference = real_reference(manifest, ["train"], None, cfg["evaluation"]["real_samples"], cfg["evaluation"]["seed"])
    assert len(table) == cfg["evaluation"]["fake_samples"]
    assert set(table["nearest_real"]) <= set(reference["key"])
    assert int(table["copy"].sum()) == result["memorisation"]["copies"]


def test_second_evaluation_reuses_the_real_features_and_repeats_exactly(evaluated, trained, tmp_path):
    cfg, out, cache, first = evaluated
    _, lmdb, manifest, network = trained
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 3  # Inception, VGG16 and EfficientNet-Lite0 features of the real reference
    again = evaluate_gan(EvaluateGanOptions.from_config(cfg, gan="tiny"), network, lmdb, manifest,
                         tmp_path / "t.json", tmp_path / "m.csv", device="cpu", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == cached
    for key in ("fid", "kid", "precision", "recall", "ppl", "authenticity", "fd_lite0", "kid_lite0"):
        assert again[key] == first[key], key


def test_copies_of_the_training_images_score_as_copies(trained, tmp_path):
    """A 'generator' that outputs the real reference itself: FID ≈ 0, P = R = 1, authenticity 0."""
    cfg, lmdb, manifest, _ = trained
    from dermsynth.data.dataset import read_images
    reference = real_reference(manifest, ["train"], None, 12, 0)
    folder = tmp_path / "copies"
    folder.mkdir()
    for key, image in zip(reference["key"], read_images(lmdb, reference["key"].tolist())):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{key}.png")
    result = evaluate_images(folder, lmdb, manifest, ["train"], None, tmp_path / "copies.json", schema_defaults("evaluation"),
                             real_samples=12,
                             device="cpu", cache_dir=tmp_path / "cache")
    assert result["fid"] == pytest.approx(0, abs=1e-6) and result["fd_lite0"] == pytest.approx(0, abs=1e-6)
    assert result["precision"] == 1 and result["recall"] == 1 and result["authenticity"] == 0


def test_snapshot_curve_has_one_row_per_snapshot(trained, tmp_path):
    cfg, lmdb, manifest, network = trained
    table = snapshot_curve(GanCurveOptions.from_config(cfg, gan="tiny"), network, lmdb, manifest,
                           tmp_path / "curve.csv", tmp_path / "curve.png", device="cpu", cache_dir=tmp_path / "cache")
    snapshots = sorted(network.parent.glob("network-snapshot-step*.pt"))
    assert list(table["snapshot"]) == [p.name for p in snapshots]
    assert table["kimg"].is_monotonic_increasing and np.isfinite(table["fid"]).all()
    assert np.isfinite(table["fd_lite0"]).all() and np.isfinite(table["kid_lite0"]).all()
    assert (tmp_path / "curve.png").stat().st_size > 5_000


def test_table1_rows_equal_the_metric_files(evaluated, tmp_path):
    _, out, _, result = evaluated
    other = dict(json.loads((out / "tiny.json").read_text()), gan="tiny_b", fid=12.5)
    (tmp_path / "b.json").write_text(json.dumps(other))
    table = table1([out / "tiny.json", tmp_path / "b.json"], tmp_path / "table1.csv", "demo archives")
    saved = pd.read_csv(tmp_path / "table1.csv")
    assert list(saved["GAN"]) == ["tiny", "tiny_b"]
    assert saved.loc[0, "FID"] == pytest.approx(result["fid"], rel=1e-4)
    assert saved.loc[1, "FID"] == 12.5
    assert saved.loc[0, "KID (%)"] == pytest.approx(result["kid"] * 100, rel=1e-4)
    assert set(saved["data"]) == {"demo archives"} and not saved["real weights"].any()
    assert list(table.columns[:9]) == ["GAN", "KID (%)", "FID", "Precision", "Recall", "PPL", "FD_lite0",
                                       "KID_lite0 (%)", "Lite0 real weights"]
    assert saved.loc[0, "FD_lite0"] == pytest.approx(result["fd_lite0"], rel=1e-4)
    assert saved.loc[0, "KID_lite0 (%)"] == pytest.approx(result["kid_lite0"] * 100, rel=1e-4)
    assert list(saved["Lite0 real weights"]) == [result["lite0_real_weights"]] * 2


def test_an_lmdb_of_generated_images_is_evaluated_whole(trained, tmp_path):
    """`dermsynth gan generate --format lmdb` output is an image set too: every stored key is read."""
    from dermsynth.data.lmdb_store import LmdbImageStore
    from dermsynth.gan.generate import generate
    cfg, lmdb, manifest, network = trained
    store = generate(network, list(range(10)), tmp_path / "fakes", truncation_psi=1.0, batch=32, fmt="lmdb",
                     device="cpu")
    written = LmdbImageStore(store / "lmdb")
    assert len(written.keys()) == 10
    written.close()  # LMDB allows one open handle per environment and process
    result = evaluate_images(store, lmdb, manifest, ["train"], None, tmp_path / "fakes.json", schema_defaults("evaluation"),
                             real_samples=12,
                             device="cpu", cache_dir=tmp_path / "cache")
    assert result["n_images"] == 10 and np.isfinite(result["fid"])


def test_image_sets_read_every_format_pillow_decodes_and_name_the_files_it_cannot(tmp_path):
    """A folder of generated images: PNG, JPEG, JFIF, WebP and GIF are all read (in name order, RGB); a
    corrupt PNG or a stray text file is an error naming each file, never silently left out."""
    from PIL import Image

    from dermsynth.errors import InputError
    from dermsynth.metrics.gan_eval import load_image_set
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    folder = tmp_path / "set"
    folder.mkdir()
    for i, (name, fmt) in enumerate([("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.jfif", "JPEG"), ("d.webp", "WEBP"),
                                     ("e.gif", "GIF")]):
        options = {"lossless": True} if fmt == "WEBP" else {}
        Image.fromarray(pixels[i]).save(folder / name, format=fmt, **options)
    images, names = load_image_set(folder)
    assert names == ["a.png", "b.jpg", "c.jfif", "d.webp", "e.gif"] and images.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), pixels[0])  # lossless formats exact
    np.testing.assert_array_equal(images[3].permute(1, 2, 0).numpy(), pixels[3])
    (folder / "broken.png").write_bytes(b"garbage")
    (folder / "notes.txt").write_text("seeds 0-4")
    with pytest.raises(InputError) as caught:
        load_image_set(folder)
    message = str(caught.value)
    assert "2 cannot be decoded" in message and "broken.png (" in message and "notes.txt (" in message
    assert "object at 0x" not in message and "Move them out of the folder" in message
