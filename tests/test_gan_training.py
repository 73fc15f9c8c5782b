"""Training core at 16²–32² on CPU: exact resume, losses move in the expected directions."""

from __future__ import annotations

import dataclasses
import math
import traceback

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from dermsynth.config import schema_defaults
from dermsynth.data.dataset import LmdbImageDataset
from dermsynth.gan.options import TrainingOptions
from dermsynth.gan.training import LOSS_KEYS, PHASES, GanTrainer, TrainingDivergedError

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


# --- issue 32: no host synchronisation inside a step ------------------------------------------------------------
def _synthetic(n=32, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = F.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    return images, labels


def _busy_options(**changes) -> TrainingOptions:
    """ADA (bgc, p adjusted every 2 steps), style mixing, R1 and path length every 2 steps: every phase active."""
    return _options(**{"augment": "bgc", "augment_p": 0.2, "ada_target": 0.6, "ada_kimg": 0.1, "ada_interval": 2,
                       "style_mixing_prob": 0.9, **changes})


class _ScalarReads(TorchDispatchMode):
    """Counts `aten::_local_scalar_dense` (a tensor's value read back by the host: `.item()`, `float()`, `bool()`,
    `.tolist()` — on a GPU each waits for the device) and `aten::lift_fresh` (a tensor made from Python data, which
    a GPU step would copy over), leaving out reads of `host_tensors` (Adam's step counters: on the CPU the foreach
    Adam keeps them on the host; on CUDA the trainer's fused Adam reads nothing)."""

    def __init__(self, host_tensors=()):
        super().__init__()
        self.host = {t.data_ptr() for t in host_tensors}
        self.reads, self.made = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == "_local_scalar_dense" and args[0].data_ptr() not in self.host:
            self.reads.append("".join(traceback.format_stack(limit=6)))
        if func.overloadpacket.__name__ == "lift_fresh" and not any(
                "torch/optim/" in frame.filename for frame in traceback.extract_stack()):
            self.made += 1  # (the CPU's foreach Adam makes its step increment so)
        return func(*args, **(kwargs or {}))


def test_sixteen_steps_read_nothing_back_from_the_device():
    """Between ticks nothing is read back: 16 steps of a conditional trainer with ADA, style mixing, R1 and path length
    dispatch no `_local_scalar_dense` (and make no tensor from Python data); the tick's one read then finds no
    divergence and the statistics are 0-d tensors, read as numbers by the caller."""
    images, labels = _synthetic()
    trainer = GanTrainer(_busy_options(), images, labels)
    trainer.step()  # Adam's state exists from here on
    counters = [s["step"] for opt in (trainer.opt_G, trainer.opt_D) for s in opt.state.values()]
    with _ScalarReads(counters) as mode:
        stats = [trainer.step() for _ in range(16)]
    assert mode.reads == [], mode.reads[0]
    assert mode.made == 0
    assert sum("pl_penalty" in s for s in stats) == sum("r1_penalty" in s for s in stats) == 8
    assert sum("ada_rt" in s for s in stats) == 8
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for s in stats for v in s.values())
    trainer.check_diverged()  # nothing diverged
    assert float(stats[-1]["augment_p"]) == float(trainer.augment.p)


def test_adaptive_p_in_training_moves_as_the_formula_on_the_same_logits():
    """p ← clamp(p + sign(r_t − target)·batch·interval/(ada_kimg·1000), 0, 1), r_t the mean sign of D's real logits
    over the last `interval` steps (Karras et al. 2020, ADA §2.3), recomputed in Python floats from the logits
    the trainer gave ADA; the trainer's p and r_t agree to the bit after every step."""
    images, _ = _synthetic()
    options = _busy_options(ada_kimg=0.02)  # large steps of p (0.4), so both directions and the clamp happen
    trainer = GanTrainer(options, images)
    seen = []
    accumulate = trainer.ada.accumulate

    def recording(logits):
        seen.append(logits.detach().clone())
        accumulate(logits)

    trainer.ada.accumulate = recording
    window, step_size = [], options.batch * options.ada_interval / (options.ada_kimg * 1000)
    p = float(torch.tensor(options.augment_p, dtype=torch.float32))  # p is a float32 buffer
    moved = set()
    for _ in range(12):
        stats = trainer.step()
        window += torch.sign(seen[-1]).flatten().tolist()
        if trainer.step_index % options.ada_interval == 0:
            rt = sum(window) / len(window)
            assert float(stats["ada_rt"]) == rt
            before, p = p, min(max(p + math.copysign(step_size, rt - options.ada_target), 0.0), 1.0)
            p = float(torch.tensor(p, dtype=torch.float32))  # p is a float32 buffer
            moved.add("up" if p > before else "down" if p < before else "clamped")
            window = []
        else:
            assert "ada_rt" not in stats
        assert float(stats["augment_p"]) == p
    assert len(moved) >= 2  # the test saw p move in more than one way


def test_adaptive_p_state_keeps_the_checkpoint_format_and_resumes_a_half_window():
    """`state()` holds plain numbers ({"p", "signs_sum", "count"}, as checkpoints always did) and `restore` continues
    the window: the same p after the next adjustment as without the interruption."""
    from dermsynth.gan.augment import AdaptiveP, AugmentPipe
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(8, generator=g) + 0.3 for _ in range(8)]
    straight = AdaptiveP(AugmentPipe("bgc", 0.5), target=0.6, interval=4, ada_kimg=0.1, batch=8)
    for step, batch in enumerate(logits, 1):
        straight.accumulate(batch)
        straight.update(step)
    first = AdaptiveP(AugmentPipe("bgc", 0.5), target=0.6, interval=4, ada_kimg=0.1, batch=8)
    for step, batch in enumerate(logits[:6], 1):
        first.accumulate(batch)
        first.update(step)
    state = first.state()
    assert set(state) == {"p", "signs_sum", "count"} and isinstance(state["signs_sum"], float) and state["count"] == 16
    resumed = AdaptiveP(AugmentPipe("bgc", 0.0), target=0.6, interval=4, ada_kimg=0.1, batch=8)
    resumed.restore({"p": state["p"], "signs_sum": state["signs_sum"], "count": state["count"]})
    for step, batch in enumerate(logits[6:], 7):
        resumed.accumulate(batch)
        resumed.update(step)
    assert float(resumed.pipe.p) == float(straight.pipe.p)


def diverged_losses(stats: dict) -> list[str]:
    """The losses of one step's statistics, read back on the host, when every one of them is NaN or infinite (the
    independent count the trainer's on-device record is checked against), else []."""
    losses = {k: float(stats[k]) for k in LOSS_KEYS if k in stats}
    return sorted(losses) if losses and not any(math.isfinite(v) for v in losses.values()) else []


def test_diverged_losses_are_those_of_a_step_whose_losses_are_all_non_finite():
    assert diverged_losses({"loss_G": float("nan"), "loss_D": float("inf"), "augment_p": 0.0}) == ["loss_D", "loss_G"]
    assert diverged_losses({"loss_G": float("nan"), "loss_D": 0.7}) == []
    assert diverged_losses({"augment_p": float("nan")}) == []


def test_divergence_is_found_at_the_check_naming_the_first_all_non_finite_step_and_nothing_is_saved(tmp_path):
    """Huge learning rates: the steps themselves raise nothing (no read back); `check_diverged` names the first step
    whose losses were all NaN or infinite — found here independently from the returned statistics — and `save`
    refuses to write."""
    images, _ = _synthetic()
    trainer = GanTrainer(_options(g_lr=1e30, d_lr=1e30), images)
    stats = [trainer.step() for _ in range(30)]
    first = next(i + 1 for i, s in enumerate(stats) if diverged_losses(s))
    with pytest.raises(TrainingDivergedError, match=rf"training diverged at step {first}: "
                                                    rf"{', '.join(diverged_losses(stats[first - 1]))} are all NaN"):
        trainer.check_diverged()
    with pytest.raises(TrainingDivergedError, match=f"step {first}"):
        trainer.save(tmp_path / "diverged.pt")
    assert not list(tmp_path.iterdir())


def test_foreach_ema_equals_the_per_parameter_formula():
    """G_ema ← G + β·(G_ema − G), β = 0.5^(batch / min(ema_kimg·1000, nimg·ema_rampup)) (StyleGAN2-ADA's
    training_loop.py), for every parameter; buffers copied."""
    images, _ = _synthetic()
    trainer = GanTrainer(_options(ema_kimg=0.05), images)
    for _ in range(3):
        trainer.step()
    with torch.no_grad():  # G_ema away from G, so the update has something to do
        for p in trainer.G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = [p.clone() for p in trainer.G_ema.parameters()]
    o = trainer.options
    beta = 0.5 ** (o.batch / min(o.ema_kimg * 1000, trainer.nimg * o.ema_rampup))
    trainer._update_ema()
    for ema, old, p in zip(trainer.G_ema.parameters(), before, trainer.G.parameters()):
        torch.testing.assert_close(ema, p.detach() + beta * (old - p.detach()), rtol=1e-6, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(trainer.G_ema.buffers(), trainer.G.buffers()))


def test_style_mixing_takes_later_layers_from_a_second_latent():
    """With probability 1 the ws switch to another latent's from a cutoff in [1, num_ws) on; with probability 0
    they are unchanged (cutoff = num_ws), both decided on the device."""
    images, _ = _synthetic()
    trainer = GanTrainer(_options(style_mixing_prob=1.0), images)
    z = torch.randn(4, NETWORK["z_dim"])
    with torch.no_grad():
        ws = trainer.G.mapping(z, None)
        cutoffs = set()
        for _ in range(20):
            mixed = trainer._mix_styles(ws, z, None)
            same = (mixed == ws).all(dim=2).all(dim=0)  # (num_ws,) layers kept
            cutoff = int(same.sum())
            assert 1 <= cutoff < ws.shape[1] and same[:cutoff].all() and not same[cutoff:].any()
            cutoffs.add(cutoff)
        assert len(cutoffs) > 1
        trainer.options = dataclasses.replace(trainer.options, style_mixing_prob=0.0)
        assert torch.equal(trainer._mix_styles(ws, z, None), ws)


def test_every_phase_is_labelled_for_the_profiler():
    images, _ = _synthetic()
    trainer = GanTrainer(_busy_options(), images)
    trainer.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        trainer.step()  # step 2 (index 1): no regularisation
        trainer.step()  # index 2: R1, path length, an ADA adjustment
    names = {event.key for event in profile.key_averages()}
    assert set(PHASES) <= names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu-check runs it)")
def test_cuda_steps_never_synchronise_with_the_host():
    """On a GPU, PyTorch's sync debug mode flags every synchronising call (a read back, a copy from pageable memory,
    nonzero, …): 16 steps with every phase active make none — networks, augmentation and optimisers included."""
    import warnings
    images, labels = _synthetic()
    trainer = GanTrainer(_busy_options(), images, labels, device="cuda")
    for _ in range(2):  # kernels built or loaded, optimiser state allocated
        trainer.step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(16):
                trainer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    assert syncs == [], f"{len(syncs)} synchronising calls, at {sorted(set(syncs))}"
    trainer.check_diverged()
