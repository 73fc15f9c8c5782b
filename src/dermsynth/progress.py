"""Progress of a long loop, readable on a terminal and in a Snakemake log file.

On a terminal (the stream is a TTY) a live tqdm bar: done/total, rate, elapsed and time left, redrawn in place.
Anywhere else (a Snakemake or SLURM log file, a pipe) the same facts as plain lines — `desc: done/total (pct) rate
unit/s elapsed … ETA …` — at most every `interval` seconds and once at the end, never a carriage return, so a log
file holds whole lines only.

Why tqdm and not rich: tqdm is already installed as a dependency of lpips, clean-fid and zennit-crp, imports in a
few milliseconds (rich's progress pulls in its console, markup and live-display machinery, which the Snakefile and
`dermsynth --help` would not use), and its `write` prints a line above a live bar without tearing it — what the GAN
training's tick lines need. Neither library writes useful lines to a log file (tqdm redraws with `\\r`, rich
renders nothing until the end), so the plain lines are ours in both cases.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

PLAIN_INTERVAL_S = 30.0  # a plain line at most this often in a log file: a day-long job writes ~3000 lines, not 10⁵


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal (a live bar can be drawn); False for files, pipes, closed
    streams and objects without `isatty`."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_seconds(seconds: float) -> str:
    """`seconds` as `1h02m`, `3m07s` or `42s` (negative counts as 0; rounded down to whole seconds)."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts the items of a loop towards `total` (`unit`s: images, steps, …; `scale` multiplies both for display,
    e.g. 0.001 to show images as kimg) and shows it: a live tqdm bar when `stream` (default stderr) is a terminal,
    else a plain line at most every `interval` seconds (default `PLAIN_INTERVAL_S`) and at the end. `lines=False`
    leaves the plain lines out (a caller that prints its own, such as GAN training's tick lines).

    The count never passes the total: a caller whose total was an estimate sets the true one with `set_total`
    once it knows it. Should a count still pass the total (a caller's bug, which tests look for), the total grows
    with it — progress is never shown above 100% and never stops a job."""

    def __init__(self, total: int, desc: str, unit: str = "img", interval: float | None = None, stream=None,
                 scale: float = 1.0, lines: bool = True):
        self.total, self.desc, self.unit, self.scale = int(total), desc, unit, scale
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.stream = stream or sys.stderr
        self.lines = lines
        self.done = 0
        self.start = self._last = time.monotonic()
        self._closed = False
        self.bar = self._bar() if is_terminal(self.stream) else None

    def _bar(self) -> tqdm:
        decimals = 0 if self.scale == 1 else 3
        return tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream, dynamic_ncols=True,
                    mininterval=0.5, unit_scale=self.scale if self.scale != 1 else False,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| " f"{{n:.{decimals}f}}/{{total:.{decimals}f}} "
                               "{unit} [{elapsed}<{remaining}, {rate_fmt}]")

    def set_total(self, total: int) -> None:
        """Replace an estimated total by the true one (never less than what is already done)."""
        self.total = max(int(total), self.done)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        """Count `n` more items done; the bar redraws (a terminal), or a plain line is printed when `interval`
        seconds have passed or the total is reached (a count past the total raises the total with it)."""
        if self.done + n > self.total:
            self.set_total(self.done + n)
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done == self.total:
            self._last = now
            self._print(now)

    def write(self, line: str) -> None:
        """Print one whole line on the stream (above the live bar on a terminal, without tearing it)."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: `desc: done/total (pct) rate unit/s elapsed … ETA …` (scaled by `scale`)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        decimals = 0 if self.scale == 1 else 3
        return (f"{self.desc}: {self.done * self.scale:.{decimals}f}/{self.total * self.scale:.{decimals}f} "
                f"({pct:.0f}%) {rate * self.scale:.1f} {self.unit}/s elapsed {format_seconds(elapsed)} ETA {eta}")

    def _print(self, now: float) -> None:
        if self.lines:
            print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar, or print the final plain line unless the last update already printed the total.
        Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.done < self.total or self.total == 0:
            self._print(time.monotonic())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
