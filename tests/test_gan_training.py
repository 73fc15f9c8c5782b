"""Training core at 16²–32² on CPU: exact resume, losses move in the expected directions."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dermsynth.config import schema_defaults
from dermsynth.data.dataset import LmdbImageDataset
from dermsynth.gan.options import TrainingOptions
from dermsynth.gan.training import GanTrainer

NETWORK = dict(z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=2)


@pytest.fixture(scope="module")
def demo_images(ingested_ham):
    """Demo HAM10000 images from the LMDB store, area-downsampled to 16² for speed."""
    manifest = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False).assign(split="train")
    dataset = LmdbImageDataset(ingested_ham / "lmdb", manifest.iloc[:64])
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).float()
    labels = F.one_hot(torch.tensor(dataset.targets), num_classes=len(dataset.classes)).float()
    return F.interpolate(images, size=(16, 16), mode="area").round().to(torch.uint8), labels


def training_options(**settings) -> TrainingOptions:
    """A `gans` entry's TrainingOptions: the schema's defaults (without ADA, as these tests always ran) changed by
    `settings`."""
    return TrainingOptions.from_section({**schema_defaults("gans.*"), "augment": "noaug", **settings})


def _options(**changes) -> TrainingOptions:
    base = training_options(batch=4, r1_gamma=1.0, ema_kimg=0.01, network=NETWORK, seed=3)
    return dataclasses.replace(base, **{"r1_interval": 2, "pl_interval": 2, **changes})


def test_resume_is_bit_exact(demo_images, tmp_path):
    images, _ = demo_images
    straight = GanTrainer(_options(), images)
    for _ in range(6):
        straight.step()

    first = GanTrainer(_options(), images)
    for _ in range(3):
        first.step()
    first.save(tmp_path / "snapshot.pt")
    assert not list(tmp_path.glob("*.tmp"))

    torch.manual_seed(12345)  # whatever the global state was, the checkpoint restores it
    resumed = GanTrainer(_options(), images)
    resumed.load(tmp_path / "snapshot.pt")
    for _ in range(3):
        resumed.step()

    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert straight.opt_G.state_dict()["state"][0]["exp_avg_sq"].equal(resumed.opt_G.state_dict()["state"][0]["exp_avg_sq"])
    assert (straight.step_index, straight.nimg) == (resumed.step_index, resumed.nimg) == (6, 24)


def test_checkpoint_from_other_options_is_refused(demo_images, tmp_path):
    images, _ = demo_images
    trainer = GanTrainer(_options(), images)
    trainer.save(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="other training options"):
        GanTrainer(_options(r1_gamma=10.0), images).load(tmp_path / "a.pt")


def test_discriminator_separates_then_generator_closes_the_gap(demo_images):
    images, _ = demo_images
    trainer = GanTrainer(_options(g_lr=0.0, d_lr=0.002, batch=8, style_mixing_prob=0.0), images)
    gaps = [(lambda s: s["logits_real"] - s["logits_fake"])(trainer.step()) for _ in range(25)]
    assert sum(gaps[-5:]) / 5 > sum(gaps[:5]) / 5 + 0.5  # D learns to tell real from generated

    for group in trainer.opt_D.param_groups:
        group["lr"] = 0.0
    for group in trainer.opt_G.param_groups:
        group["lr"] = 0.002
    with torch.no_grad():
        z = torch.randn(32, NETWORK["z_dim"])
        before = trainer.D(trainer.G(z)).mean().item()
    for _ in range(25):
        trainer.step()
    with torch.no_grad():
        after = trainer.D(trainer.G(z)).mean().item()
    assert after > before  # G moves its samples towards what D calls real


def test_conditional_training_steps(demo_images):
    images, labels = demo_images
    trainer = GanTrainer(_options(), images, labels)
    stats = [trainer.step() for _ in range(3)]
    assert trainer.G.c_dim == labels.shape[1] and trainer.D.c_dim == labels.shape[1]
    assert "r1_penalty" in stats[0] and "pl_penalty" in stats[0]


def test_conditional_batches_keep_each_image_with_its_label_and_fakes_follow_the_label_distribution():
    """Dark images are class 0, bright ones class 1 (a quarter of the set): every real batch pairs each image
    with its own label, and the labels given to generated images are drawn in the data's proportions."""
    g = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 60, (48, 3, 16, 16), generator=g, dtype=torch.uint8)
    bright = torch.randint(195, 256, (16, 3, 16, 16), generator=g, dtype=torch.uint8)
    order = torch.randperm(64, generator=g)
    images = torch.cat([dark, bright])[order]
    labels = F.one_hot(torch.tensor([0] * 48 + [1] * 16)[order], 2).float()
    trainer = GanTrainer(_options(batch=8), images, labels)
    for _ in range(12):
        real, c_real = trainer._real_batch()
        is_bright = real.mean(dim=(1, 2, 3)) > 0
        assert torch.equal(c_real.argmax(dim=1), is_bright.long())
    _, c = trainer._latents(4000, c_real)
    assert c.shape == (4000, 2) and abs(c[:, 1].mean().item() - 0.25) < 0.03


def test_ada_runs_inside_training_and_resumes_with_its_p(demo_images, tmp_path):
    images, _ = demo_images
    options = _options(augment="bgc", augment_p=0.2, ada_target=0.6, ada_interval=2, ada_kimg=0.1)
    straight = GanTrainer(options, images)
    for _ in range(4):
        stats = straight.step()
    assert "ada_rt" in stats and stats["augment_p"] != 0.2  # p adapted
    first = GanTrainer(options, images)
    for _ in range(2):
        first.step()
    first.save(tmp_path / "ada.pt")
    resumed = GanTrainer(options, images)
    resumed.load(tmp_path / "ada.pt")
    for _ in range(2):
        resumed.step()
    assert float(resumed.augment.p) == float(straight.augment.p)
    assert all(torch.equal(a, b) for a, b in zip(straight.G.state_dict().values(), resumed.G.state_dict().values()))


def test_compiled_main_passes_train_alongside_eager_regularisation():
    """compile=True compiles Gmain/Dmain; R1 and path length (both run at step 0) differentiate through
    gradients and must stay eager — a compiled graph would refuse the double backward."""
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    net = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16}
    trainer = GanTrainer(training_options(batch=4, compile=True, network=net, seed=3), images)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    stats = [trainer.step() for _ in range(2)]
    assert "r1_penalty" in stats[0] and "pl_penalty" in stats[0]
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in stats)
    assert trainer._D_main is not trainer.D and trainer._synthesis_main is not trainer.G.synthesis
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
