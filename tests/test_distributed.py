"""Data-parallel training in two real processes (gloo on CPU): each rank takes its half of every global
batch, and averaging the gradients makes the step the one process would take on the whole batch."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dermsynth.config import schema_defaults
from dermsynth.gan.distributed import World
from dermsynth.gan.options import TrainingOptions
from dermsynth.gan.training import GanTrainer

SECTION = dict(batch=4, mirror=False, augment="noaug", seed=3,
               network={"z_dim": 8, "w_dim": 8, "mapping_layers": 1, "channel_base": 64, "channel_max": 8})


def _options() -> TrainingOptions:
    """The schema's `gans` defaults with `SECTION`, regularised every 2 steps (so that 4 steps hold both)."""
    return replace(TrainingOptions.from_section({**schema_defaults("gans.*"), **SECTION}), r1_interval=2,
                   pl_interval=2)


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _linear_step(world: World, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One SGD step of a linear least-squares model on this rank's rows: mean loss, averaged gradients."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1, bias=True).double()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = (model(x).squeeze(1) - y).square().mean()
    loss.backward()
    world.average_gradients(model.parameters())
    optimiser.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _rank(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        world = World(rank, 2, rank)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
        half = slice(4 * rank, 4 * rank + 4)
        trainer = GanTrainer(_options(), _images(), world=world)
        batches = [trainer._real_batch()[0] for _ in range(3)]
        for _ in range(2):
            trainer.step()
        world.assert_in_sync(trainer.G)
        drifted = False
        if rank == 1:
            with torch.no_grad():
                next(trainer.G.parameters()).add_(1.0)
        try:
            world.assert_in_sync(trainer.G)
        except RuntimeError:
            drifted = True
        out[rank] = {"linear": _linear_step(world, x[half], y[half]), "batches": batches,
                     "mean": world.mean(torch.tensor([float(rank + 1)])), "drifted": drifted,
                     "G0": {k: v.clone() for k, v in trainer.G.state_dict().items()}}
    finally:
        dist.destroy_process_group()


def _run(rank, init_file, result_file):
    out = {}
    _rank(rank, init_file, out)
    torch.save(out[rank], result_file)


def test_each_rank_takes_its_half_and_the_averaged_step_equals_one_process(tmp_path):
    context = mp.get_context("spawn")
    processes = [context.Process(target=_run, args=(r, str(tmp_path / "init"), str(tmp_path / f"rank{r}.pt")))
                 for r in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
        assert p.exitcode == 0
    results = {r: torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)}

    # the data: rank r's real images are rows [2r, 2r + 2) of the global batch one process would take
    single = GanTrainer(_options(), _images())
    for step in range(3):
        whole = single._real_batch()[0]
        torch.testing.assert_close(torch.cat([results[0]["batches"][step], results[1]["batches"][step]]), whole)
        assert not torch.equal(results[0]["batches"][step], results[1]["batches"][step])

    # the step: mean loss on each half, gradients averaged = one process on all 8 rows
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    expected = _linear_step(World(), x, y)
    torch.testing.assert_close(results[0]["linear"], expected)
    torch.testing.assert_close(results[1]["linear"], expected)

    # the GAN itself: both ranks hold the same weights after their steps, and a drift is detected
    for name, value in results[0]["G0"].items():
        if name != next(iter(results[0]["G0"])):  # the first tensor is the one rank 1 perturbed
            assert torch.equal(value, results[1]["G0"][name]), name
    assert results[0]["drifted"] and results[1]["drifted"]
    assert results[0]["mean"].item() == results[1]["mean"].item() == 1.5
