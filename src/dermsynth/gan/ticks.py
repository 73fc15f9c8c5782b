"""What `dermsynth gan train` prints while it trains: one line per tick, as StyleGAN users read them.

A tick is `tick_kimg` thousand images (whole steps; `TickSettings`). At the end of each tick, and at the last
step, rank 0 prints

    train-gan cgan: tick 3 kimg 0.150/0.504 (30%) time 41s sec/tick 12.9 sec/kimg 258.0 maint 1.2 G 0.912
        D 1.204 R1 0.0310 PL 0.0052 augment 0.018 gpumem 3.41GB left 1m37s

(one line): kimg done / the run's total (the steps the run really takes, `steps × batch`: the count never
passes it), time since this process started training, seconds of training in the tick (snapshots excluded),
seconds per kimg, seconds spent on snapshots and logs in the tick (`maint`), the losses averaged over the
tick's steps — G's non-saturating loss, D's logistic loss, the R1 penalty and the path-length penalty over the
steps that computed them (lazy regularisation) —, ADA's augment p, the peak GPU memory of the tick (`cpu` when
training on the CPU) and the time left at the run's pace so far. After each snapshot and the final network:
`train-gan cgan: wrote <path>`. On a terminal a live kimg bar (`progress.Progress`) runs below those lines.

The losses are summed as the trainer returns them (0-d tensors on the training device, `GanTrainer.step`) and
turned into numbers only at the tick, so the reporter adds no host synchronisation to a step: on a GPU the sums
stay there until the tick line reads them (plain floats are summed the same way). The line format follows
stylegan2-ada-pytorch's `training_loop.py` status line (tick, kimg, sec/tick, sec/kimg, maintenance, gpumem,
augment; Karras et al. 2020, NVlabs), written anew here.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..options import Settings
from ..progress import Progress, format_seconds

AUTO_TICKS = 10  # tick_kimg null: a tenth of the run …
MAX_AUTO_TICK_KIMG = 4.0  # … at most StyleGAN2-ADA's kimg_per_tick
TICK_LOSSES = (("loss_G", "G"), ("loss_D", "D"), ("r1_penalty", "R1"), ("pl_penalty", "PL"))


@dataclass
class TickSettings(Settings):
    """How often GAN training prints a tick line (`gans.<gan>.tick_kimg`, also a federated run's, for its
    hospital-alone baselines): `tick_kimg` thousand images, or None for a tenth of the run (at most 4 kimg)."""

    schema_section = ("gans.*", "federated.*")

    tick_kimg: float | None


def tick_steps(settings: TickSettings, total_steps: int, batch: int) -> int:
    """Steps per tick (≥ 1): `tick_kimg` thousand images of `batch` rounded up to whole steps, or with
    `tick_kimg` None a tenth of the run's `total_steps × batch` images, at most 4 kimg."""
    kimg = settings.tick_kimg
    if kimg is None:
        kimg = min(MAX_AUTO_TICK_KIMG, total_steps * batch / 1000 / AUTO_TICKS)
    return max(1, math.ceil(round(kimg * 1000 / batch, 6)))


class TickReporter:
    """The console of one training run on rank 0: counts the steps (`step`), prints a tick line when a tick is
    done (`end_tick`) and a line per written file (`wrote`); time spent inside `maintenance()` (snapshots, logs,
    sample grids) is kept out of sec/tick and sec/kimg and shown as `maint`.

    `desc`: the line prefix (`train-gan <gan>`); `nimg`/`total_nimg`: images shown so far (a resumed run's
    start) and at the end (steps × batch); `device`: the training device (GPU memory is read there)."""

    def __init__(self, desc: str, nimg: int, total_nimg: int, device: torch.device, stream=None):
        self.desc, self.total_nimg, self.device = desc, total_nimg, torch.device(device)
        self.stream = stream or sys.stderr
        self.progress = Progress(max(total_nimg - nimg, 0), desc, unit="kimg", scale=1e-3, stream=self.stream,
                                 lines=False)  # a live bar on a terminal; the tick lines stand for it in a log
        self.tick = 0
        self.start, self._start_nimg = time.perf_counter(), nimg
        self._decimals = 3 if total_nimg < 10_000 else 1
        self._first_tick_end: tuple[float, int] | None = None  # (time, nimg) after the first tick: the pace's start
        self._reset(nimg)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _reset(self, nimg: int) -> None:
        self.tick_start, self.tick_nimg, self.maint = time.perf_counter(), nimg, 0.0
        self.sums: dict[str, float | torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.augment_p: float | torch.Tensor | None = None

    def step(self, stats: dict, images: int) -> None:
        """Count one step of `images` images and add its `stats` (the trainer's: losses, penalties when
        computed, `augment_p`) to the tick's sums, as they are (no `.item()`)."""
        for key, _ in TICK_LOSSES:
            if key in stats:
                value = stats[key]
                value = value.detach() if isinstance(value, torch.Tensor) else value
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        if "augment_p" in stats:
            self.augment_p = stats["augment_p"]
        self.progress.update(images)

    @contextmanager
    def maintenance(self):
        """Time the block as maintenance (snapshots, logs): kept out of the tick's sec/tick and sec/kimg."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.maint += time.perf_counter() - started

    def end_tick(self, nimg: int) -> str:
        """Print and return the tick line for the images shown up to `nimg`; the next tick starts here."""
        now = time.perf_counter()
        self.tick += 1
        line = self.line(now, nimg)
        self.progress.write(line)
        if self._first_tick_end is None:
            self._first_tick_end = (now, nimg)
        self._reset(nimg)
        return line

    def line(self, now: float, nimg: int) -> str:
        """The tick line's text (see the module docstring) for the tick ending at `now` with `nimg` shown."""
        d = self._decimals
        tick_kimg = max(nimg - self.tick_nimg, 1) / 1000
        sec_tick = max(now - self.tick_start - self.maint, 0.0)
        losses = " ".join(f"{label} {float(self.sums[key]) / self.counts[key]:.4g}"
                          for key, label in TICK_LOSSES if self.counts.get(key))
        augment = f" augment {float(self.augment_p):.3f}" if self.augment_p is not None else ""
        pct = 100.0 * nimg / self.total_nimg if self.total_nimg else 100.0
        return (f"{self.desc}: tick {self.tick} kimg {nimg / 1000:.{d}f}/{self.total_nimg / 1000:.{d}f} "
                f"({pct:.0f}%) time {format_seconds(now - self.start)} sec/tick {sec_tick:.1f} "
                f"sec/kimg {sec_tick / tick_kimg:.1f} maint {self.maint:.1f} {losses}{augment} "
                f"gpumem {self._memory()} left {self._left(now, nimg)}")

    def _memory(self) -> str:
        """Peak GPU memory allocated in the tick (GB; reset for the next), or `cpu`."""
        if self.device.type != "cuda":
            return "cpu"
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        torch.cuda.reset_peak_memory_stats(self.device)
        return f"{peak:.2f}GB"

    def _left(self, now: float, nimg: int) -> str:
        """Time left at the run's pace: wall time (maintenance included) per image since the first tick ended
        (the first tick alone carries start-up costs), or over the first tick while it is the only one."""
        start_time, start_nimg = self._first_tick_end or (self.start, self._start_nimg)
        shown = nimg - start_nimg
        if shown <= 0:
            return "?"
        return format_seconds((now - start_time) / shown * max(self.total_nimg - nimg, 0))

    def wrote(self, path: str | Path) -> None:
        """Print `<desc>: wrote <path>` (a snapshot, the final network)."""
        self.progress.write(f"{self.desc}: wrote {path}")

    def close(self) -> None:
        """End the live bar (nothing to do in a log file)."""
        self.progress.close()
