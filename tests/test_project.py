"""Projection into W / W+: the loss falls, and a generated image's latent is recovered better than the mean."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from dermsynth.config import schema_defaults
from dermsynth.gan.networks import Generator
from dermsynth.gan.pixels import render_ws
from dermsynth.latent.project import ProjectionOptions, noise_regularization, project
from dermsynth.metrics import extractors


def _options(**changes) -> ProjectionOptions:
    """The schema's `latent.projection` settings (and the projector's constants) changed by `changes`."""
    constants = {k: v for k, v in changes.items() if k in ProjectionOptions.method_constants}
    settings = {k: v for k, v in changes.items() if k not in constants}
    return replace(ProjectionOptions.from_section({**schema_defaults("latent.projection"), **settings}), **constants)


class PixelDistance(nn.Module):
    """Mean squared pixel difference per image: a transparent distance for checking the optimiser."""

    def forward(self, a, b):
        return (a - b).square().mean(dim=[1, 2, 3])


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=32, mapping_layers=2)
    return G.eval().requires_grad_(False)


def _targets(G, n=4, seed=7):
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = G.mapping(z, None)
        images = G.synthesis(ws, noise_mode="none")
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8), ws


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_recovers_a_generated_image_better_than_the_mean_w(generator, space):
    targets, _ = _targets(generator)
    options = _options(steps=150, space=space, w_avg_samples=2000, initial_lr=0.05)
    result = project(generator, targets, PixelDistance(), options)
    curve = result["lpips_curve"]
    assert result["ws"].shape == (4, generator.num_ws, 16)
    assert (curve[-10:].mean(dim=0) < curve[0]).all()  # every image's loss fell
    recon = render_ws(generator, result["ws"], result["noise"]).float()
    with torch.no_grad():
        z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
        mean_w = generator.mapping(z, None)[:, 0].mean(dim=0)
        mean_image = render_ws(generator, mean_w[None, None].repeat(1, generator.num_ws, 1)).float()
    error = (recon - targets.float()).square().mean(dim=[1, 2, 3])
    baseline = (mean_image - targets.float()).square().mean(dim=[1, 2, 3])
    assert (error < baseline).all()


def test_lpips_projection_loss_falls(generator):
    with pytest.warns(UserWarning):
        lpips, _ = extractors.lpips_model(net="vgg")
    targets, _ = _targets(generator, n=2)
    result = project(generator, targets, lpips, _options(steps=40, w_avg_samples=1000))
    curve = result["lpips_curve"]
    assert (curve[-5:].mean(dim=0) < curve[:5].mean(dim=0)).all()


def test_noise_regularisation_is_small_for_white_noise_and_large_for_smooth_maps():
    generator = torch.Generator().manual_seed(0)
    white = [torch.randn(2, 1, 32, 32, generator=generator)]
    smooth = [nn.functional.interpolate(torch.randn(2, 1, 4, 4, generator=generator), size=32, mode="bilinear")]
    smooth = [m / m.std() for m in smooth]
    assert noise_regularization(white).shape == (2,)
    assert (noise_regularization(smooth) > 100 * noise_regularization(white)).all()


def test_images_in_a_batch_do_not_influence_each_other(generator):
    """Per-image losses are summed, so image 0 follows the same path alone or in a batch (without the
    random w perturbation, whose stream depends on the batch size)."""
    targets, _ = _targets(generator, n=3)
    quiet = _options(steps=20, w_avg_samples=500, initial_noise_factor=0.0)
    together = project(generator, targets, PixelDistance(), quiet)
    alone = project(generator, targets[:1], PixelDistance(), quiet)
    torch.testing.assert_close(together["lpips_curve"][:, 0], alone["lpips_curve"][:, 0], rtol=1e-4, atol=1e-6)


def test_project_command_writes_latents_report_and_grid(gan_setup, tmp_path):
    """`dermsynth latent project` on a trained generator: latents per image key, a report, a preview; by hand
    (--config + --gan) and with the options file the workflow writes, the same latents."""
    import json

    import numpy as np
    import yaml

    from dermsynth.cli import main
    from dermsynth.gan.options import TrainGanOptions
    from dermsynth.gan.run import train_gan
    from dermsynth.latent.options import ProjectOptions
    cfg, lmdb, manifest = gan_setup
    network = train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest, tmp_path / "gan", device="cpu")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    common = ["--network", str(network), "--lmdb", str(lmdb), "--manifest", str(manifest), "--device", "cpu"]
    assert main(["latent", "project", "--config", str(tmp_path / "config.yaml"), "--gan", "tiny", *common,
                 "--out", str(tmp_path / "p.npz"), "--preview", str(tmp_path / "p.png")]) == 0
    saved = np.load(tmp_path / "p.npz")
    report = json.loads((tmp_path / "p.json").read_text())
    assert saved["ws"].shape[0] == len(saved["keys"]) == report["images"] == 4
    assert [row["key"] for row in report["per_image"]] == list(saved["keys"])
    assert report["lpips_vgg_curve"]["last"] <= report["lpips_vgg_curve"]["first"]
    assert (tmp_path / "p.png").stat().st_size > 1000
    options = ProjectOptions.from_config(cfg, gan="tiny")
    assert report["provenance"]["step"] == "project" and report["provenance"]["config"] == options.to_dict()
    assert main(["latent", "project", "--options", options.write(tmp_path / "options"), *common,
                 "--out", str(tmp_path / "f.npz"), "--preview", str(tmp_path / "f.png")]) == 0
    by_file = np.load(tmp_path / "f.npz")
    assert list(by_file["keys"]) == list(saved["keys"])
    np.testing.assert_array_equal(by_file["ws"], saved["ws"])
