"""Neighbours in latent space (issue 17, part 2): N latents at exactly distance d, and `generate --neighbors`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dermsynth.cli import main
from dermsynth.gan.neighbors import key_id, neighbour_latents, sphere_offsets
from dermsynth.gan.networks import Generator
from dermsynth.gan.pixels import render_ws

D = 0.1  # the study's distance


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=256, channel_max=16).eval()
    path = tmp_path_factory.mktemp("neighbours") / "tiny" / "network-final.pt"
    path.parent.mkdir()
    torch.save({"options": json.dumps({"network": {"z_dim": 16, "w_dim": 16, "channel_base": 256,
                                                   "channel_max": 16}}), "G_ema": G.state_dict()}, path)
    return G, path


def _layer_distances(ws: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """ws (M·count, L, D), centres (M, L, D) → distances (M·count, L) of each layer to its centre's."""
    count = len(ws) // len(centres)
    return np.linalg.norm(ws.astype(np.float64) - np.repeat(centres, count, axis=0).astype(np.float64), axis=-1)


def test_sphere_offsets_have_the_distance_and_no_preferred_direction():
    offsets = sphere_offsets(4000, 8, D, np.random.default_rng(1))
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), D, rtol=1e-12)
    assert np.abs(offsets.mean(axis=0)).max() < 0.03 * D  # uniform directions: the mean is ≈ 0 (σ ≈ 0.0056 D)
    with pytest.raises(ValueError):
        sphere_offsets(3, 8, -0.1, np.random.default_rng(0))


def test_every_layer_of_every_neighbour_is_at_the_distance_and_the_draw_is_seeded():
    centres = torch.randn(3, 5, 16) * 3  # W+ centres: layers differ
    moved = neighbour_latents(centres, [7, 8, 9], count=6, distance=D, seed=4)
    assert moved.shape == (3, 6, 5, 16) and moved.dtype == torch.float32
    distances = (moved.double() - centres.double()[:, None]).norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, D), atol=1e-5)
    offsets = moved.double() - centres.double()[:, None]  # one offset vector on every layer
    assert torch.allclose(offsets, offsets[:, :, :1].expand_as(offsets), atol=1e-5)
    assert torch.equal(moved, neighbour_latents(centres, [7, 8, 9], 6, D, seed=4))
    assert not torch.equal(moved, neighbour_latents(centres, [7, 8, 9], 6, D, seed=5))
    alone = neighbour_latents(centres[1:2], [8], 6, D, seed=4)  # a centre's neighbours ignore the other centres
    assert torch.equal(alone[0], moved[1])
    plain_w = neighbour_latents(centres[:, 0], [7, 8, 9], 6, D, seed=4)  # (M, w_dim) centres: plain W
    assert plain_w.shape == (3, 6, 1, 16)


def test_generate_neighbors_around_seeds(network, tmp_path):
    G, path = network
    argv = ["gan", "generate", "--network", str(path), "--seeds", "3,11", "--neighbors", "4", "--radius", str(D),
            "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    saved = np.load(tmp_path / "a" / "neighbors.npz")
    distances = _layer_distances(saved["ws"], saved["centre_ws"])
    np.testing.assert_allclose(distances, D, atol=1e-5)
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert len(manifest) == 8 and manifest["key"].tolist()[0] == "tiny-seed0000003-nb000"
    assert (manifest["centre"] == np.repeat(["tiny-seed0000003", "tiny-seed0000011"], 4)).all()
    np.testing.assert_array_equal(saved["ws"], np.load(tmp_path / "b" / "neighbors.npz")["ws"])  # deterministic
    for key in manifest["key"]:
        assert (tmp_path / "a" / f"{key}.png").read_bytes() == (tmp_path / "b" / f"{key}.png").read_bytes()
    with torch.no_grad():  # the centre is the seed's mapped w
        z = torch.from_numpy(np.random.RandomState(3).randn(1, 16)).float()
        np.testing.assert_allclose(saved["centre_ws"][0], G.mapping(z, None)[0].numpy(), atol=1e-6)


def _projection(G, tmp_path, keys=("ISIC_1", "ISIC_2", "ISIC_3")):
    generator = torch.Generator().manual_seed(2)
    ws = torch.randn(len(keys), G.num_ws, G.w_dim, generator=generator)  # W+: every layer its own
    noise = [torch.randn(len(keys), 1, r, r, generator=generator) for r in G.synthesis.noise_resolutions()]
    path = tmp_path / "projection.npz"
    from dermsynth.latent.identity import generator_digest
    np.savez(path, keys=np.array(keys), labels=np.array(["malignant", "benign", "malignant"]), ws=ws.numpy(),
             generator=np.array(generator_digest(G)),  # the generator projected into, as `project` records it
             **{f"noise{i}": m.numpy() for i, m in enumerate(noise)})
    return path, ws, noise


def test_generate_neighbors_around_stored_latents_keeps_class_key_and_noise(network, tmp_path):
    G, path = network
    npz, ws, noise = _projection(G, tmp_path)
    out = tmp_path / "set"
    assert main(["gan", "generate", "--network", str(path), "--latents", str(npz), "--keys", "ISIC_3", "ISIC_1",
                 "--neighbors", "3", "--radius", str(D), "--format", "lmdb", "--out", str(out),
                 "--device", "cpu"]) == 0
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest["source_key"].tolist() == ["ISIC_3"] * 3 + ["ISIC_1"] * 3
    assert manifest["label"].tolist() == ["malignant"] * 6 and set(manifest["split"]) == {"train"}
    saved = np.load(out / "neighbors.npz")
    np.testing.assert_array_equal(saved["centre_ws"], ws[[2, 0]].numpy())
    np.testing.assert_allclose(_layer_distances(saved["ws"], saved["centre_ws"]), D, atol=1e-5)
    from dermsynth.data.dataset import read_images
    images = read_images(out / "lmdb", manifest["key"].tolist())
    assert images.shape == (6, 3, 16, 16)
    same = render_ws(G, torch.from_numpy(saved["ws"][:3]), [m[[2, 2, 2]] for m in noise])  # the centre's noise
    assert torch.equal(images[:3], same)


def test_at_distance_zero_a_neighbour_is_its_centres_reconstruction(network, tmp_path):
    G, path = network
    npz, ws, noise = _projection(G, tmp_path)
    assert main(["gan", "generate", "--network", str(path), "--latents", str(npz), "--neighbors", "2", "--radius", "0",
                 "--out", str(tmp_path / "zero"), "--device", "cpu"]) == 0
    from PIL import Image
    first = np.asarray(Image.open(tmp_path / "zero" / "ISIC_2-nb001.png")).transpose(2, 0, 1)
    assert np.array_equal(first, render_ws(G, ws[1:2], [m[1:2] for m in noise])[0].numpy())


def test_key_ids_are_the_crc32_of_the_key():
    import zlib
    assert key_id("ISIC_0000001") == zlib.crc32(b"ISIC_0000001")


@pytest.mark.parametrize("flags", [["--seeds", "1", "--latents", "x.npz", "--neighbors", "2", "--radius", "0.1"],
                                   ["--seeds", "1", "--neighbors", "2"],
                                   ["--keys", "a", "--seeds", "1", "--neighbors", "2", "--radius", "0.1"],
                                   ["--neighbors", "2", "--radius", "0.1"]])
def test_generate_neighbors_refuses_unclear_centres(network, tmp_path, flags, capsys):
    _, path = network
    assert main(["gan", "generate", "--network", str(path), *flags, "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert "error" in capsys.readouterr().err
