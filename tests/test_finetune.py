"""Fine-tuning from a checkpoint (issue 30): `gans.<name>.init` starts G, D, G_ema and w_avg from it (optimisers and
ADA fresh), Freeze-D keeps the discriminator's first layers fixed, an unconditional source starts a conditional run,
an architecture that does not fit is refused in one line, and the fine-tuning experiment script runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dermsynth.config import schema_defaults
from dermsynth.errors import ConfigError
from dermsynth.gan.interop.imported import CheckpointImportError
from dermsynth.gan.networks import seed_latents
from dermsynth.gan.options import TrainGanOptions, TrainingOptions
from dermsynth.gan.run import train_gan
from dermsynth.gan.training import GanTrainer, discriminator_layers

REPO = Path(__file__).resolve().parents[1]
NETWORK = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 16}


def _options(**overrides) -> TrainingOptions:
    return TrainingOptions.from_section({**schema_defaults("gans.*"), "seed": 0, "batch": 4, "augment": "noaug",
                                         "network": NETWORK, **overrides})


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _source(tmp_path, steps: int = 2, labels=None) -> Path:
    trainer = GanTrainer(_options(seed=7), _images(seed=1), labels)
    for _ in range(steps):
        trainer.step()
    path = tmp_path / "source.pt"
    trainer.save(path)
    return path


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_G_D_G_ema_and_w_avg_from_the_checkpoint_with_fresh_optimisers(tmp_path):
    source = torch.load(_source(tmp_path), weights_only=True)
    trainer = GanTrainer(_options(init=str(tmp_path / "source.pt")), _images())
    assert _equal(trainer.G.state_dict(), source["G"]) and _equal(trainer.D.state_dict(), source["D"])
    assert _equal(trainer.G_ema.state_dict(), source["G_ema"])
    assert not _equal(source["G"], source["G_ema"])  # G and G_ema really are two networks here
    assert torch.count_nonzero(trainer.G.mapping.w_avg) > 0
    assert trainer.opt_G.state_dict()["state"] == {} and trainer.step_index == 0
    assert trainer.init_source["sha256"] and trainer.init_source["format"] == "dermsynth"
    trainer.step()  # trains on from there


def test_freeze_d_keeps_the_first_layers_fixed_and_the_rest_trains(tmp_path):
    trainer = GanTrainer(_options(init=str(_source(tmp_path)), freeze_d=3), _images())
    layers = discriminator_layers(trainer.D)
    assert [name for name, _ in layers[:4]] == ["from_rgb", "blocks.0.conv0", "blocks.0.conv1", "blocks.0.skip"]
    before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    for _ in range(2):
        trainer.step()
    after = trainer.D.state_dict()
    for name in ("from_rgb.weight", "from_rgb.bias", "blocks.0.conv0.weight", "blocks.0.conv1.bias"):
        assert torch.equal(before[name], after[name]), name
    for name in ("blocks.0.skip.weight", "blocks.1.conv0.weight", "fc.weight", "out.weight"):
        assert not torch.equal(before[name], after[name]), name
    assert all(p.requires_grad is False for p in trainer.frozen_d)


def test_freeze_d_refused_in_one_line_when_it_cannot_mean_anything(tmp_path):
    with pytest.raises(ConfigError, match="no init is set"):
        GanTrainer(_options(freeze_d=2), _images())
    n = len(discriminator_layers(GanTrainer(_options(), _images()).D))
    with pytest.raises(ConfigError, match=f"at most {n}"):
        GanTrainer(_options(init=str(_source(tmp_path)), freeze_d=n + 1), _images())


def test_conditional_run_from_an_unconditional_source_starts_as_the_source_for_every_class(tmp_path):
    source = GanTrainer(_options(), _images())  # built from seed 0, trained a step
    source.step()
    source.save(tmp_path / "u.pt")
    labels = torch.eye(3)[torch.arange(8) % 3]
    trainer = GanTrainer(_options(init=str(tmp_path / "u.pt"), seed=3), _images(), labels)
    assert trainer.G.c_dim == 3 and trainer.G_ema.mapping.embed is not None
    z = seed_latents(range(4), 16)
    with torch.no_grad():
        expected = source.G_ema(z, None, noise_mode="const")
        for k in range(3):
            got = trainer.G_ema(z, torch.eye(3)[[k] * 4], noise_mode="const")
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    D, Ds = trainer.D.state_dict(), source.D.state_dict()
    assert all(torch.equal(D[k], Ds[k]) for k in Ds if not k.startswith(("out.", "mapping.")))
    assert D["out.weight"].shape[0] == trainer.D.cmap_dim


def test_an_init_of_another_architecture_is_refused_in_one_line_naming_the_hyper_parameter(tmp_path):
    path = _source(tmp_path)
    with pytest.raises(CheckpointImportError) as caught:
        GanTrainer(_options(init=str(path), network={**NETWORK, "channel_max": 32}), _images())
    message = str(caught.value)
    assert "\n" not in message and "channel_base/channel_max" in message and str(path) in message
    with pytest.raises(CheckpointImportError, match="w_dim: 16 in the file, 32 in this run"):
        GanTrainer(_options(init=str(path), network={**NETWORK, "w_dim": 32}), _images())


def test_train_gan_records_the_init_file_and_its_change_is_another_run(gan_setup, tmp_path, capsys):
    cfg, lmdb, manifest = gan_setup
    source = train_gan(TrainGanOptions.from_config(cfg, gan="tiny"), lmdb, manifest, tmp_path / "source")
    cfg["gans"]["tuned"] = {**cfg["gans"]["tiny"], "init": str(source), "freeze_d": 2}
    final = train_gan(TrainGanOptions.from_config(cfg, gan="tuned"), lmdb, manifest, tmp_path / "tuned")
    record = json.loads((tmp_path / "tuned" / "network-final.json").read_text())
    assert record["init"]["sha256"] == json.loads(torch.load(final, weights_only=True)["fingerprint"])["init"]["sha256"]
    assert record["init"]["format"] == "dermsynth" and record["provenance"]["config"]["spec"]["freeze_d"] == 2


def test_finetune_fid_script_runs_at_a_tiny_size(gan_setup, tmp_path):
    _, lmdb, manifest = gan_setup
    out = tmp_path / "ft"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "finetune-fid"), "--source-lmdb", str(lmdb),
                             "--source-manifest", str(manifest), "--target-lmdb", str(lmdb), "--target-manifest",
                             str(manifest), "--out", str(out), "--network", json.dumps(NETWORK), "--source-kimg",
                             "0.008", "--kimg", "0.008", "--batch", "4", "--seeds", "0", "--freeze-d", "0", "2",
                             "--fid-samples", "8", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in record["runs"]] == ["scratch", "finetune-freezeD0", "finetune-freezeD2"]
    assert all(r["kimg"] == 0.008 and r["fid"] == r["fid"] and r["fid"] >= 0 for r in record["runs"])
    assert "| scratch |" in (out / "results.md").read_text()


def test_a_run_without_init_or_freeze_d_keeps_the_fingerprint_an_earlier_version_recorded():
    """Runs started before fine-tuning existed resume: their recipe had neither key, and an unset `init` /
    `freeze_d: 0` adds neither; a set one does (another run)."""
    from dermsynth.gan.run import _recipe
    plain = _recipe(_options())
    assert "init" not in plain and "freeze_d" not in plain
    assert _recipe(_options(freeze_d=2))["freeze_d"] == 2
