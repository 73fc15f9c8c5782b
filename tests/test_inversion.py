"""e4e and HyperStyle on a tiny generator at 32² (CPU): losses fall, HyperStyle beats its W-encoder,
training resumes exactly, the progressive schedule holds the offsets at zero, inversions are stored per key."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dermsynth.config import schema_defaults
from dermsynth.gan.networks import Generator
from dermsynth.gan.pixels import to_uint8
from dermsynth.latent.encoders import accumulate, deltas_from_factors, hyper_layers, ws_resolutions
from dermsynth.latent.inversion import (E4eOptions, HyperStyleOptions, invert, ms_ssim, progressive_offsets,
                                        reconstruction_report, train_e4e, train_hyperstyle)
from dermsynth.metrics.extractors import lpips_model


@pytest.fixture(scope="module")
def tiny():
    """A random tiny generator and 48 of its own images (an encoder can invert those exactly in principle)."""
    warnings.simplefilter("ignore", UserWarning)
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, mapping_layers=2).eval()
    G.requires_grad_(False)
    with torch.no_grad():
        images = to_uint8(G(torch.randn(48, 16), noise_mode="const"))
    lpips, _ = lpips_model(net="alex")
    return G, images, lpips


def e4e_options(**overrides) -> E4eOptions:
    settings = dict(backbone="resnet18", input_resolution=32, steps=40, batch=8, lr=3e-4, progressive_start=10,
                    progressive_every=5, checkpoint_steps=1000, log_steps=1, pretrained=False, seed=3)
    return E4eOptions.from_section({**schema_defaults("latent.e4e"), **settings, **overrides})


def test_e4e_reconstruction_loss_falls(tiny, tmp_path):
    G, images, lpips = tiny
    _, history = train_e4e(G, images, e4e_options(), lpips, tmp_path / "ckpt.pt")
    first = np.mean([h["l2"] for h in history[:5]])
    last = np.mean([h["l2"] for h in history[-5:]])
    assert last < 0.8 * first


def test_offsets_stay_off_until_the_progressive_start(tiny, tmp_path):
    G, images, lpips = tiny
    options = e4e_options(steps=3, progressive_start=100)
    encoder, history = train_e4e(G, images, options, lpips, tmp_path / "ckpt.pt")
    assert all(h["active_ws"] == 1 for h in history)
    ws, offsets = encoder(images[:4])
    assert torch.equal(offsets, torch.zeros_like(offsets))
    assert torch.allclose(ws, ws[:, :1].expand_as(ws))  # one w for every layer: a code in W
    assert [progressive_offsets(e4e_options(), s, G.num_ws) for s in (0, 9, 10, 14, 15, 1000)] == \
        [0, 0, 1, 1, 2, G.num_ws - 1]
    assert ws_resolutions(G) == [4, 8, 8, 16, 16, 32, 32, 32]


def test_e4e_resumes_exactly_after_a_kill(tiny, tmp_path):
    """Six steps straight vs three steps, a 'kill' (the checkpoint is all that survives), three more."""
    G, images, lpips = tiny
    options = e4e_options(steps=6, checkpoint_steps=3, progressive_start=2, progressive_every=1)
    straight, _ = train_e4e(G, images, options, lpips, tmp_path / "straight.pt")
    train_e4e(G, images, e4e_options(steps=6, checkpoint_steps=3, progressive_start=2, progressive_every=1),
              lpips, tmp_path / "resumed.pt")  # leaves resumed.pt at step 3 …
    state = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert state["step"] == 3
    resumed, _ = train_e4e(G, images, options, lpips, tmp_path / "resumed.pt")  # … and continues from there
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_hyperstyle_refinement_beats_its_w_encoder_on_held_out_images(tiny, tmp_path):
    G, images, lpips = tiny
    train, held_out = images[:40], images[40:]
    encoder, _ = train_e4e(G, train, e4e_options(steps=30), lpips, tmp_path / "e4e.pt")
    options = _hyper_options(steps=25, batch=8, iterations=3, layer_ranges=["all"], checkpoint_steps=1000, seed=0)
    hyper, history = train_hyperstyle(G, encoder, train, options, lpips, tmp_path / "hyper.pt")
    assert history[0]["l2_per_iteration"][0] == pytest.approx(history[0]["l2_per_iteration"][-1])  # Δ starts at 0
    result = invert(G, encoder, held_out, hyper, iterations=3)
    alex, _ = lpips_model(net="alex")
    initial = reconstruction_report(held_out, result["stages"][0], alex)
    refined = reconstruction_report(held_out, result["stages"][-1], alex)
    assert refined["l2"] < initial["l2"]
    assert set(result["factors"]) == {name for name, _, _ in hyper_layers(G, ["all"])}
    a, b = result["factors"]["b16.conv1"]
    assert a.shape == (8, 16, 3 * options.rank) and b.shape == (8, 16, 3 * options.rank)


def test_kernel_offsets_scale_each_samples_kernel():
    """Δ applied through the synthesis network equals generating with the scaled kernel itself."""
    torch.manual_seed(1)
    G = Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, mapping_layers=1).eval()
    ws = G.mapping(torch.randn(2, 8), None)
    delta = 0.3 * torch.randn(2, 8, 8)
    with torch.no_grad():
        offset = G.synthesis(ws, noise_mode="const", weight_deltas={"b8.conv1": delta})
        layer = G.synthesis.blocks[1].conv1
        original = layer.weight.clone()
        for i in range(2):  # one sample at a time with its kernel replaced
            layer.weight.copy_(original * (1 + delta[i][..., None, None]))
            single = G.synthesis(ws[i:i + 1], noise_mode="const")
            torch.testing.assert_close(offset[i:i + 1], single, atol=1e-5, rtol=1e-5)
        layer.weight.copy_(original)
        assert not torch.allclose(offset, G.synthesis(ws, noise_mode="const"))


def test_accumulated_factors_sum_the_increments():
    a1, b1, a2, b2 = (torch.randn(2, 5, 3), torch.randn(2, 4, 3), torch.randn(2, 5, 3), torch.randn(2, 4, 3))
    factors = accumulate(accumulate(None, {"x": (a1, b1)}), {"x": (a2, b2)})
    expected = a1 @ b1.transpose(1, 2) + a2 @ b2.transpose(1, 2)
    torch.testing.assert_close(deltas_from_factors(factors)["x"], expected)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    torch.manual_seed(0)
    images = (torch.rand(3, 3, 64, 64) * 255).to(torch.uint8)
    same, window = ms_ssim(images, images)
    assert window == 3 and np.allclose(same, 1.0, atol=1e-5)
    noisy = (images.float() + 40 * torch.randn_like(images.float())).clamp(0, 255).to(torch.uint8)
    assert (ms_ssim(images, noisy)[0] < 0.95).all()
    assert np.isnan(ms_ssim(images[..., :32, :32], images[..., :32, :32])[0]).all()  # undefined at 32²


def _hyper_options(**overrides) -> HyperStyleOptions:
    settings = dict(backbone="resnet18", input_resolution=32, steps=4, batch=4, lr=3e-4, iterations=2,
                    layer_ranges=["middle"], log_steps=1, pretrained=False, checkpoint_steps=2, seed=5)
    return HyperStyleOptions.from_section({**schema_defaults("latent.hyperstyle"), **settings, **overrides})


def test_hyperstyle_resumes_exactly_after_a_kill(tiny, tmp_path):
    """Four steps straight vs two steps (the checkpoint is all a killed run leaves) and two more."""
    G, images, lpips = tiny
    encoder, _ = train_e4e(G, images, e4e_options(steps=2), lpips, tmp_path / "e4e.pt")
    straight, _ = train_hyperstyle(G, encoder, images, _hyper_options(), lpips, tmp_path / "straight.pt")
    killed, _ = train_hyperstyle(G, encoder, images, _hyper_options(steps=2, checkpoint_steps=1), lpips,
                                 tmp_path / "resumed.pt")  # checkpoints at step 1 only (never at its last step)
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["step"] == 1
    resumed, history = train_hyperstyle(G, encoder, images, _hyper_options(), lpips, tmp_path / "resumed.pt")
    assert [h["step"] for h in history] == [1, 2, 3]  # started at the checkpoint's step 1, not at 0
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), killed.state_dict().values()))


def test_resuming_with_other_options_is_refused_and_schedule_options_are_not_options(tiny, tmp_path):
    from dermsynth.latent.inversion import checkpoint_differences
    G, images, lpips = tiny
    train_e4e(G, images, e4e_options(steps=3, checkpoint_steps=2), lpips, tmp_path / "e4e.pt")  # leaves step 2
    assert checkpoint_differences(tmp_path / "e4e.pt", e4e_options(steps=9, checkpoint_steps=5, log_steps=3)) == []
    with pytest.raises(ValueError, match=r"other training options \(lr, seed\)"):
        train_e4e(G, images, e4e_options(steps=3, checkpoint_steps=2, lr=1e-3, seed=4), lpips, tmp_path / "e4e.pt")
    encoder, _ = train_e4e(G, images, e4e_options(steps=3, checkpoint_steps=7), lpips, tmp_path / "e4e.pt")
    train_hyperstyle(G, encoder, images, _hyper_options(steps=3, checkpoint_steps=2), lpips, tmp_path / "h.pt")
    with pytest.raises(ValueError, match=r"other training options \(layer_ranges, rank\)"):
        train_hyperstyle(G, encoder, images, _hyper_options(steps=3, rank=2, layer_ranges=["all"]), lpips,
                         tmp_path / "h.pt")
    torch.save({"step": 1}, tmp_path / "old.pt")  # a checkpoint that records no options is not resumed either
    assert checkpoint_differences(tmp_path / "old.pt", _hyper_options()) == ["options"]


def test_merging_inversion_chunks_checks_keys_and_row_counts(tmp_path):
    import pandas as pd

    from dermsynth.latent.run_inversion import StoredInversion, _merge_chunks
    frame = pd.DataFrame({"key": [f"k{i}" for i in range(5)], "label": "nv", "split": "train"})
    chunks = []
    for start, keys in ((0, ["k0", "k1", "k2"]), (3, ["k3", "k4"])):
        path = tmp_path / f"chunk-{start:08d}.pt"
        n = len(keys)
        torch.save({"keys": keys, "ws": torch.arange(n * 4.0).reshape(n, 2, 2) + start,
                    "factors": {"b8.conv1": [torch.ones(n, 3, 1).half(), torch.ones(n, 2, 1).half()]}}, path)
        chunks.append(path)
    _merge_chunks(chunks, tmp_path / "inv", frame, ["b8.conv1"])
    stored = StoredInversion(tmp_path / "inv")
    ws, deltas = stored.latents(["k4", "k0"])
    torch.testing.assert_close(ws, torch.stack([torch.arange(4.0, 8.0).reshape(2, 2) + 3,
                                                torch.arange(4.0).reshape(2, 2)]))
    assert deltas["b8.conv1"].shape == (2, 3, 2)
    with pytest.raises(RuntimeError, match="the inversion chunks hold 3 rows for 3 keys, but the split has 5"):
        _merge_chunks(chunks[:1], tmp_path / "inv2", frame, ["b8.conv1"])
    torch.save({"keys": ["k3", "k4"], "ws": torch.zeros(3, 2, 2), "factors": {}}, chunks[1])  # 3 rows for 2 keys
    with pytest.raises(RuntimeError, match="6 rows for 5 keys"):
        _merge_chunks(chunks, tmp_path / "inv3", frame, [])
    assert not (tmp_path / "inv2").exists() and not (tmp_path / "inv3").exists()
