"""SeFa: directions against an independent numpy eigen-decomposition, layer ranges, and effect sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermsynth.gan.networks import Generator
from dermsynth.latent.sefa import PreviewSettings, apply_direction, factorize, preview_grid, style_layers_in
from dermsynth.metrics import extractors


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return Generator(z_dim=32, w_dim=32, img_resolution=64, channel_base=512, channel_max=32).eval()


def test_directions_match_numpy_eigh_of_the_row_normalised_styles(generator):
    factors = factorize(generator, "all")
    directions, eigenvalues = factors["directions"], factors["eigenvalues"]
    assert directions.shape == (32, 32)
    assert np.all(np.diff(eigenvalues) <= 1e-12)  # sorted, largest first
    # every row of A has unit length, so the eigenvalues of AᵀA sum to its number of rows (channels)
    channels = sum(affine.weight.shape[0] for _, _, affine in style_layers_in(generator, "all"))
    assert eigenvalues.sum() == pytest.approx(channels, rel=1e-10)
    # Independent: stack the affine weights from the state dict, normalise rows, eigh of AᵀA.
    state = generator.state_dict()
    rows = []
    for name, _ in generator.synthesis.style_layers():
        res, layer = name.split(".")
        block = int(np.log2(int(res[1:]))) - 2
        w = state[f"synthesis.blocks.{block}.{layer}.affine.weight"].double().numpy() / np.sqrt(32)
        rows.append(w)
    a = np.concatenate(rows)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1]
    np.testing.assert_allclose(eigenvalues, values[order], rtol=1e-8, atol=1e-8)
    for i in range(5):  # well-separated leading eigenvalues: vectors equal up to sign
        assert abs(abs(directions[i] @ vectors[:, order[i]]) - 1) < 1e-8


def test_layer_ranges_partition_the_styles_by_resolution(generator):
    ranges = {r: style_layers_in(generator, r) for r in ("coarse", "middle", "fine")}
    names = [name for r in ranges.values() for _, name, _ in r]
    assert sorted(names) == sorted(name for name, _ in generator.synthesis.style_layers())
    assert all(int(name.split(".")[0][1:]) <= 8 for _, name, _ in ranges["coarse"])
    assert {name.split(".")[0] for _, name, _ in ranges["fine"]} == {"b64"}
    fine = factorize(generator, "fine")
    assert fine["ws_indices"] == [generator.num_ws - 3, generator.num_ws - 2, generator.num_ws - 1]
    with pytest.raises(ValueError, match="unknown layer range 'medium'; choose from all, coarse, middle, fine"):
        factorize(generator, "medium")


def test_moving_along_a_direction_touches_only_its_layers(generator):
    ws = torch.randn(2, generator.num_ws, 32)
    moved = apply_direction(ws, torch.ones(32), torch.tensor([1.0, -2.0]), [3, 4])
    assert torch.equal(moved[:, [0, 1, 2, 5]], ws[:, [0, 1, 2, 5]])
    torch.testing.assert_close(moved[1, 3] - ws[1, 3], torch.full((32,), -2.0))


def test_top_direction_changes_images_more_than_a_low_one(generator):
    """The top direction maximises the change of all styles; the image (LPIPS) follows."""
    with pytest.warns(UserWarning):
        lpips, _ = extractors.lpips_alex()
    factors = factorize(generator, "all")
    torch.manual_seed(1)
    ws = generator.mapping(torch.randn(16, 32), None)
    base = generator.synthesis(ws, noise_mode="const")

    def change(index):
        direction = torch.from_numpy(factors["directions"][index]).float()
        moved = generator.synthesis(apply_direction(ws, direction, 3.0, factors["ws_indices"]), noise_mode="const")
        return lpips(base, moved).mean().item()
    with torch.no_grad():
        assert change(0) > change(31)


def test_preview_grid_layout(generator):
    preview = PreviewSettings(directions=2, samples=3, magnitude=3.0, steps=5, truncation_psi=0.7, seed=0)
    grid = preview_grid(generator, factorize(generator, "coarse"), preview)
    assert grid.shape == (2 * 3 * 64, 5 * 64, 3) and grid.dtype == np.uint8
    middle = grid[:64, 2 * 64:3 * 64]  # magnitude 0 in the middle column: the unedited image
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unedited = generator(z, truncation_psi=0.7, noise_mode="const")[0].clamp(-1, 1).add(1).mul(127.5).round()
    np.testing.assert_array_equal(middle, unedited.to(torch.uint8).permute(1, 2, 0).numpy())
    assert not np.array_equal(middle, grid[:64, :64])


def test_conditional_preview_shows_the_chosen_class():
    """A conditional generator's preview is drawn for one class: the middle (unedited) column equals the
    generator's own image of that class; class_index None means the first class."""
    torch.manual_seed(2)
    G = Generator(z_dim=16, w_dim=16, c_dim=3, img_resolution=16, channel_base=128, channel_max=16).eval()
    factors = factorize(G, "all")
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))

    def unedited(class_index):
        c = torch.nn.functional.one_hot(torch.tensor([class_index] * 2), 3).float()
        with torch.no_grad():
            images = G(z, c, truncation_psi=0.7, noise_mode="const").clamp(-1, 1).add(1).mul(127.5).round()
        return torch.cat(list(images.to(torch.uint8)), dim=1).permute(1, 2, 0).numpy()  # samples stacked in rows

    preview = PreviewSettings(directions=1, samples=2, magnitude=3.0, steps=3, truncation_psi=0.7, seed=4)
    grids = {k: preview_grid(G, factors, preview, class_index=k) for k in (None, 0, 2)}
    for k, expected_class in ((None, 0), (0, 0), (2, 2)):
        np.testing.assert_array_equal(grids[k][:, 16:32], unedited(expected_class))
    assert not np.array_equal(grids[0], grids[2])


def test_a_range_with_fewer_channels_than_w_dims_gets_a_full_basis_with_zero_eigenvalues():
    """The middle range of a narrow generator has 3 × 8 = 24 style rows for 64 w dimensions: the 24 leading
    directions span A's row space, the other 40 are its null space (A·d = 0) with eigenvalue 0."""
    torch.manual_seed(3)
    G = Generator(z_dim=8, w_dim=64, img_resolution=16, channel_base=128, channel_max=8).eval()
    factors = factorize(G, "middle")
    assert factors["layer_range"] == "middle" and factors["layer_names"] == ["b16.conv0", "b16.conv1", "b16.torgb"]
    a = torch.cat([layer.effective_weight().detach().double() for _, _, layer in style_layers_in(G, "middle")]).numpy()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert a.shape == (24, 64) and factors["directions"].shape == (64, 64)
    np.testing.assert_allclose(factors["eigenvalues"][24:], 0.0)
    np.testing.assert_allclose(a @ factors["directions"][24:].T, 0.0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(a @ factors["directions"][:24].T, axis=0) ** 2,
                               factors["eigenvalues"][:24], rtol=1e-9)
    with pytest.raises(ValueError, match=r"the generator \(16²\) has no modulated layers in range 'fine'"):
        factorize(G, "fine")
    everything = factorize(G)  # the default range is every modulated layer
    assert everything["layer_range"] == "all" and len(everything["layer_names"]) == len(G.synthesis.style_layers())


def test_sefa_command_by_hand_equals_by_options_file_and_reads_every_option(generator, tmp_path):
    """`dermsynth latent sefa` with --config + --layer-range (by hand) and with the options file the workflow writes:
    the same directions and preview (what a verb reads is audited statically: tests/test_settings.py)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dermsynth.config import load_config
    from dermsynth.latent.options import SefaOptions
    repo = Path(__file__).resolve().parents[1]
    network = tmp_path / "network-final.pt"
    torch.save({"options": json.dumps({"network": {"z_dim": 32, "w_dim": 32, "channel_base": 512,
                                                   "channel_max": 32}}),
                "G_ema": generator.state_dict()}, network)
    config = repo / "config" / "config.yaml"
    options = SefaOptions.from_config(load_config(config, workflow=True), layers="coarse").write(tmp_path / "options")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"hand": ["--config", str(config), "--layer-range", "coarse"], "file": ["--options", options]}
    for name, flags in runs.items():
        command = [sys.executable, "-m", "dermsynth.cli", "latent", "sefa", *flags, "--network", str(network), "--device", "cpu",
                   "--out", str(tmp_path / f"{name}.npz"), "--preview", str(tmp_path / f"{name}.png")]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=repo)
        assert done.returncode == 0, done.stderr
    hand, file = np.load(tmp_path / "hand.npz"), np.load(tmp_path / "file.npz")
    np.testing.assert_array_equal(hand["directions"], file["directions"])
    assert (tmp_path / "hand.png").read_bytes() == (tmp_path / "file.png").read_bytes()
    summary = json.loads((tmp_path / "file.json").read_text())
    assert summary["layer_range"] == "coarse" and summary["provenance"]["config"]["layers"] == "coarse"
    command = [sys.executable, "-m", "dermsynth.cli", "latent", "sefa", "--options", options, "--layer-range", "fine",
               "--network", str(network), "--out", str(tmp_path / "x.npz"), "--preview", str(tmp_path / "x.png")]
    failed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=repo)
    assert failed.returncode == 2 and "--layer-range fine disagrees" in failed.stderr
