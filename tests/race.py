"""Kill-and-race harness (issue 27, kind 2): two writers at once, and SIGKILL at seeded random moments.

Used by each stage's tests for its writing verbs:

    two = start_together([cmd, cmd], cwd=...)        # two processes on one output, started together
    assert_one_refused(two, "is writing to")          # one finishes, the other is refused in one line
    killed_at(cmd, seed=3, cwd=...)                   # start, SIGKILL after a seeded random delay
    assert_no_partial_outputs(folder)                 # every file under a final name is complete

A "complete" file is one its reader accepts: JSON parses, CSV reads, PNG decodes, .pt loads with
weights_only=True, .npz opens, LMDB stores open. Temporary files (`.*.tmp`) of a killed writer are
allowed: they never carry a final name.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DERMSYNTH = [sys.executable, "-m", "dermsynth"]


@dataclass
class Finished:
    """One process's exit status and output."""
    returncode: int
    stdout: str
    stderr: str


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.update(extra or {})
    return env


def start_together(commands: list[list[str]], cwd: str | Path, env: dict | None = None,
                   timeout: float = 600) -> list[Finished]:
    """Start every command at (nearly) the same moment and wait for all; their exit statuses and output."""
    procs = [subprocess.Popen(c, cwd=cwd, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        done.append(Finished(p.returncode, out, err))
    return done


def assert_one_refused(results: list[Finished], says: str = "is writing to") -> Finished:
    """Exactly one process succeeded and every other exited 2 with one line containing `says` (no
    traceback). Returns the successful one."""
    ok = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert len(ok) == 1, [(r.returncode, r.stderr[-2000:]) for r in results]
    for r in refused:
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    return ok[0]


def killed_at(command: list[str], seed: int, cwd: str | Path, low: float = 0.5, high: float = 20.0,
              env: dict | None = None, ready: str | None = None) -> float:
    """Start `command`, SIGKILL it after a delay drawn from U(low, high) with `seed` (after the line `ready`
    appears on stderr, when given), and return the delay. A process that finished earlier is left alone."""
    delay = random.Random(seed).uniform(low, high)
    proc = subprocess.Popen(command, cwd=cwd, env=_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if ready is not None:
        for line in proc.stderr:
            if ready in line:
                break
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stderr:
        proc.stderr.close()
    return delay


def assert_no_partial_outputs(folder: str | Path) -> list[Path]:
    """Every file under `folder` with a final name is complete (its reader accepts it); returns them."""
    checked = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp") or path.name.startswith("."):
            continue
        _assert_complete(path)
        checked.append(path)
    return checked


def _assert_complete(path: Path) -> None:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif suffix == ".csv":
            import pandas as pd
            pd.read_csv(path)
        elif suffix == ".png":
            from PIL import Image
            with Image.open(path) as image:
                image.load()
        elif suffix == ".pt":
            import torch
            torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npz":
            import numpy as np
            with np.load(path) as archive:
                for key in archive.files:
                    archive[key]
    except Exception as exc:  # noqa: BLE001 — any failure to read is a half-written file
        raise AssertionError(f"{path} is not complete: {exc}") from None


def log_steps_once(log: str | Path, key: str = "step") -> list:
    """The `key` values of a JSON-lines log, asserting that none appears twice (no step logged by two writers
    or twice after a resume)."""
    values = [json.loads(line)[key] for line in Path(log).read_text().splitlines() if line.strip()]
    assert len(values) == len(set(values)), f"{log}: {key} logged twice: {values}"
    return values
