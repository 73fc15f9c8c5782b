"""Line-based progress with rate and ETA: readable both on a terminal and in a Snakemake log."""

from __future__ import annotations

import sys
import time


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Prints `desc: done/total (pct) rate unit/s ETA …` at most every `interval` seconds."""

    def __init__(self, total: int, desc: str, unit: str = "img", interval: float = 5.0,
                 stream=None):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count `n` more items done; print a line when `interval` seconds have passed or the total is reached."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_text = _fmt_seconds(eta) if eta != float("inf") else "?"
        print(f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) {rate:.1f} {self.unit}/s "
              f"elapsed {_fmt_seconds(elapsed)} ETA {eta_text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Print the final line, unless the last update already printed the total."""
        if self.done < self.total or self.total == 0:
            self._print(time.monotonic())
