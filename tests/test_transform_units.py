"""The transformations module's parts on their own, fast (no trained GAN): the file check, the seeded
magnitudes, the moved latents against a hand-built edit, the resize, and Table 1 from hand-made reports."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from dermsynth.errors import ConfigError
from dermsynth.gan.networks import Generator
from dermsynth.latent.named import load_transformations
from dermsynth.latent.transform import (TABLE1_COLUMNS, at_resolution, draw_magnitudes, lpips_table, transform_images,
                                        write_lpips_table)

GOOD = {"name": "SV", "gan": "g", "layer_range": "coarse", "direction": 0, "magnitude": [-2.0, 3.0],
        "description": "size"}


def _write(tmp_path, payload) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_a_valid_file_is_returned_as_written(tmp_path):
    entries = [GOOD, dict(GOOD, name="B-C_1", layer_range="fine", direction=3, magnitude=[1.0, 1.0])]
    assert load_transformations(_write(tmp_path, {"transformations": entries}), gans=["g"]) == entries


@pytest.mark.parametrize("change,message", [
    ({"name": "a b"}, "name 'a b' may hold letters, digits, '-' and '_' only"),
    ({"layer_range": "mid"}, "layer_range 'mid' is not one of all, coarse, middle, fine"),
    ({"direction": -1}, "direction must be an eigenvector index ≥ 0"),
    ({"direction": 1.5}, "direction must be an eigenvector index ≥ 0"),
    ({"magnitude": [2.0, 1.0]}, "magnitude must be [low, high] with low ≤ high"),
    ({"magnitude": [1.0, 2.0, 3.0]}, "magnitude must be [low, high] with low ≤ high"),
    ({"magnitude": 2.0}, "magnitude must be [low, high] with low ≤ high"),
    ({"gan": "other"}, "gan 'other' is not one of latent.inversion.gans"),
])
def test_each_wrong_field_is_named_with_its_entry(tmp_path, change, message):
    entries = [GOOD, dict(GOOD, name="second", **{k: v for k, v in change.items() if k != "name"})]
    if "name" in change:
        entries[1]["name"] = change["name"]
    with pytest.raises(ConfigError) as error:
        load_transformations(_write(tmp_path, {"transformations": entries}), gans=["g"])
    assert f"transformations[1]: {message}" in str(error.value)
    assert "transformations[0]" not in str(error.value)  # the good entry is not blamed


def test_missing_fields_empty_lists_and_missing_files_are_named(tmp_path):
    partial = {k: v for k, v in GOOD.items() if k not in ("gan", "magnitude")}
    with pytest.raises(ConfigError, match=r"transformations\[0\] lacks gan, magnitude"):
        load_transformations(_write(tmp_path, {"transformations": [partial]}))
    for payload in ({"transformations": []}, {"other": [GOOD]}, [GOOD]):
        with pytest.raises(ConfigError, match="expected a non-empty list under 'transformations:'"):
            load_transformations(_write(tmp_path, payload))
    with pytest.raises(ConfigError, match="does not exist"):
        load_transformations(tmp_path / "missing.yaml")
    assert load_transformations(_write(tmp_path, {"transformations": [GOOD]}), gans=None) == [GOOD]


def test_magnitudes_are_uniform_in_the_range_and_depend_only_on_their_own_seed():
    keys = [f"ISIC_{i:07d}" for i in range(400)]
    values = draw_magnitudes(GOOD, keys, variants=3, seed=5)
    assert values.shape == (400, 3) and values.min() >= -2.0 and values.max() <= 3.0
    assert abs(values.mean() - 0.5) < 0.15 and abs(values.std() - 5 / np.sqrt(12)) < 0.15  # uniform on [−2, 3]
    # an image's magnitude is the same whichever other images are transformed with it
    np.testing.assert_array_equal(draw_magnitudes(GOOD, keys[7:9][::-1], 3, 5), values[7:9][::-1])
    expected = np.random.default_rng([5, zlib.crc32(b"SV"), zlib.crc32(keys[3].encode()), 2]).uniform(-2.0, 3.0)
    assert values[3, 2] == expected
    assert not np.array_equal(values, draw_magnitudes(dict(GOOD, name="other"), keys, 3, 5))
    assert not np.array_equal(values, draw_magnitudes(GOOD, keys, 3, 6))
    assert len(np.unique(values)) == values.size  # variants and keys all differ
    np.testing.assert_array_equal(draw_magnitudes(dict(GOOD, magnitude=[1.5, 1.5]), keys[:4], 2, 0), 1.5)


@pytest.fixture(scope="module")
def tiny_generator():
    torch.manual_seed(0)
    return Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16).eval()


def test_transformed_images_are_the_latents_moved_by_hand(tiny_generator):
    G = tiny_generator
    torch.manual_seed(1)
    ws = G.mapping(torch.randn(3, 16), None).detach()
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    magnitudes = torch.tensor([0.0, 2.5, -1.0])
    ours = transform_images(G, ws, {}, direction, magnitudes, [1, 2])
    moved = ws.clone()
    for n, m in enumerate(magnitudes):
        moved[n, 1] += m * direction
        moved[n, 2] += m * direction
    with torch.no_grad():
        expected = G.synthesis(moved, noise_mode="const").clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    assert ours.dtype == torch.uint8 and torch.equal(ours, expected)
    assert not torch.equal(ours[1], transform_images(G, ws, {}, direction, torch.zeros(3), [1, 2])[1])


def test_resizing_to_the_generator_follows_pillow_and_keeps_matching_sizes():
    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8))
    assert at_resolution(images, 32) is images
    ours = at_resolution(images, 16)
    assert ours.shape == (2, 3, 16, 16) and ours.dtype == torch.uint8
    for n in range(2):
        pil = np.asarray(Image.fromarray(images[n].permute(1, 2, 0).numpy()).resize((16, 16), Image.BILINEAR))
        assert np.abs(ours[n].permute(1, 2, 0).numpy().astype(int) - pil.astype(int)).max() <= 1


def _report(tmp_path, name, lpips_values, threshold=0.2, real_weights=False):
    lpips_values = np.asarray(lpips_values)
    accepted = lpips_values <= threshold
    report = {"transformation": dict(GOOD, name=name), "images": len(lpips_values), "accepted": int(accepted.sum()),
              "rejected": int((~accepted).sum()), "lpips_threshold": threshold, "lpips_mean": lpips_values.mean(),
              "lpips_std": lpips_values.std(), "lpips_to_inversion_mean": lpips_values.mean() / 2,
              "lpips": {"comparable_to_published": real_weights}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def test_table1_rows_from_reports(tmp_path):
    reports = [_report(tmp_path, "A", [0.1, 0.15, 0.3, 0.05]), _report(tmp_path, "B", [0.3, 0.25, 0.1], 0.2, True)]
    table = write_lpips_table(reports, tmp_path / "table1.csv", "archives")
    assert list(table.columns) == TABLE1_COLUMNS
    assert table["transformation"].tolist() == ["A", "B"]
    a, b = table.iloc[0], table.iloc[1]
    assert a["LPIPS"] == round(0.15, 4) and a["LPIPS std"] == round(float(np.std([0.1, 0.15, 0.3, 0.05])), 4)
    assert a["rejected (> threshold)"] == 1 and a["rejected %"] == 25.0 and a["images"] == 4
    assert b["rejected (> threshold)"] == 2 and b["rejected %"] == round(200 / 3, 2)
    assert bool(a["transformation kept"]) and not bool(b["transformation kept"])  # mean 0.217 > 0.2
    assert a["magnitude"] == "[-2.0, 3.0]" and a["generator"] == "g" and a["layer range"] == "coarse"
    assert not bool(a["real weights"]) and bool(b["real weights"])
    assert a["LPIPS to inversion"] == round(0.075, 4)
    written = pd.read_csv(tmp_path / "table1.csv")
    assert written["data"].eq("archives").all() and len(written) == 2
    assert lpips_table([], "demo").columns.tolist() == TABLE1_COLUMNS


def test_every_problem_of_every_entry_is_listed_one_per_line(tmp_path):
    partial = {k: v for k, v in GOOD.items() if k != "description"}
    entries = [partial, dict(GOOD, layer_range="mid"), dict(GOOD, direction=-2), dict(GOOD, name="SV", gan="g")]
    with pytest.raises(ConfigError) as error:
        load_transformations(_write(tmp_path, {"transformations": entries}))
    lines = str(error.value).split("\n")
    assert lines[0] == "invalid transformations:"
    assert lines[1:] == [f"  - {tmp_path / 't.yaml'}: transformations[0] lacks description",
                         f"  - {tmp_path / 't.yaml'}: transformations[1]: layer_range 'mid' is not one of all, coarse, "
                         "middle, fine",
                         f"  - {tmp_path / 't.yaml'}: transformations[2]: name 'SV' is used twice",
                         f"  - {tmp_path / 't.yaml'}: transformations[2]: direction must be an eigenvector index ≥ 0",
                         f"  - {tmp_path / 't.yaml'}: transformations[3]: name 'SV' is used twice"]


def test_resizing_keeps_black_black_and_handles_a_non_square_source():
    black = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert torch.equal(at_resolution(black, 16), torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.equal(at_resolution(white, 8), torch.full((1, 3, 8, 8), 255, dtype=torch.uint8))
    tall = torch.zeros(1, 3, 32, 16, dtype=torch.uint8)  # as wide as the generator, not as high
    assert at_resolution(tall, 16).shape == (1, 3, 16, 16)


def test_table1_rounds_to_four_digits_and_counts_edge_cases(tmp_path):
    single = _report(tmp_path, "one", [0.2])  # one image exactly at the threshold: kept, not rejected
    precise = _report(tmp_path, "p", [0.123456, 0.234567, 0.1])
    table = lpips_table([single, precise], "demo").set_index("transformation")
    assert table.loc["one", "rejected %"] == 0.0 and table.loc["one", "images"] == 1
    assert bool(table.loc["one", "transformation kept"])  # mean 0.2 ≤ threshold 0.2
    mean = np.mean([0.123456, 0.234567, 0.1])
    assert table.loc["p", "LPIPS"] == round(mean, 4) and table.loc["p", "LPIPS to inversion"] == round(mean / 2, 4)
    assert table.loc["p", "description"] == "size" and table.loc["p", "direction"] == 0
    assert table.loc["p", "rejected (> threshold)"] == 1 and table.loc["p", "rejected %"] == round(100 / 3, 2)
    many = _report(tmp_path, "m", [0.3])
    assert lpips_table([many], "demo").iloc[0]["rejected %"] == 100.0  # 1 of 1


def test_a_transformation_s_options_hold_only_its_own_entry_without_its_review(tmp_path):
    """Rerun scope: a transform job's options (and so its options file) change when its own entry or the transform
    settings change, not when another transformation is edited or this one is re-reviewed unchanged."""
    from dermsynth.latent.options import TransformOptions
    from dermsynth.synthetic.options import SyntheticDatasetOptions

    def options(entries, **settings):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"transformations": entries}))
        transform = {"file": str(path), "variants": 1, "lpips_threshold": 0.2, "batch": 8, "seed": 0, "gpus": 0,
                     "runtime_hours": 2, **settings}
        return TransformOptions.from_config({"latent": {"transform": transform}}, name="SV")

    other = dict(GOOD, name="GV", direction=2)
    base = options([GOOD, other])
    assert base.transformation == GOOD and "review" not in base.transformation
    assert options([GOOD, dict(other, magnitude=[-1.0, 1.0])]).digest == base.digest  # another entry edited
    reviewed = dict(GOOD, review={"by": "someone", "on": "2026-11-30"})
    assert options([reviewed, other]).digest == base.digest  # re-reviewed unchanged
    assert options([GOOD, other], gpus=1, runtime_hours=9).digest == base.digest  # job resources
    assert options([dict(GOOD, magnitude=[-1.0, 1.0]), other]).digest != base.digest
    assert options([GOOD, other], variants=2).digest != base.digest
    with pytest.raises(ConfigError, match=r"transformation 'XX' is not in .* \(defined: SV, GV\)"):
        TransformOptions.from_config({"latent": {"transform": {"file": str(tmp_path / "t0.yaml")}}}, name="XX")

    synthetic = {"synthetic": {"sizes": {"SA-2k": 20, "SA-4k": 40}, "seed": 3}}
    sa = SyntheticDatasetOptions.from_config(synthetic, name="SA-2k")
    assert (sa.name, sa.size, sa.seed) == ("SA-2k", 20, 3)
    more = {"synthetic": {"sizes": {"SA-2k": 20, "SA-4k": 50, "SA-6k": 60}, "seed": 3}}
    assert SyntheticDatasetOptions.from_config(more, name="SA-2k").digest == sa.digest  # other sizes: no rerun
    with pytest.raises(ConfigError, match=r"synthetic set 'SA-9k' is not defined under 'synthetic.sizes'"):
        SyntheticDatasetOptions.from_config(synthetic, name="SA-9k")
