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
import select
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


# Every verb imports torch and more before it reaches its lock: seconds that vary from run to run, enough for
# one writer to finish before the other has started. A primed process makes those imports first, says so on
# its ready pipe, and runs the verb only when the harness says go, so the writers meet at their locks.
_PRIMER = """
import importlib, os, sys
for name in ("torch", "torchvision", "numpy", "pandas", "cv2", "lmdb", "timm", "dermsynth.cli",
             "dermsynth.data.ingest", "dermsynth.gan.run", "dermsynth.gan.generate", "dermsynth.classify.train",
             "dermsynth.latent.encoders"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
from dermsynth.cli import main
os.write(int(os.environ.pop("DERMSYNTH_RACE_READY_FD")), b"r")
sys.stdin.readline()
raise SystemExit(main(sys.argv[1:]))
"""


def _primed(command: list[str]) -> list[str]:
    """`command` run through the primer when it is a `python -m dermsynth …` command (else unchanged)."""
    if command[:len(DERMSYNTH)] != DERMSYNTH:
        return command
    return [sys.executable, "-c", _PRIMER, *command[len(DERMSYNTH):]]


def start_together(commands: list[list[str]], cwd: str | Path, env: dict | None = None,
                   timeout: float = 600) -> list[Finished]:
    """Start every command, let each `dermsynth` command finish its imports, then release them all at once
    (`_PRIMER`) and wait for all; their exit statuses and output."""
    ready_read, ready_write = os.pipe()
    procs = []
    try:
        for command in commands:
            primed = _primed(command)
            extra = {"DERMSYNTH_RACE_READY_FD": str(ready_write)} if primed is not command else {}
            procs.append(subprocess.Popen(primed, cwd=cwd, env=_env({**(env or {}), **extra}), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          pass_fds=(ready_write,)))
        os.close(ready_write)
        ready_write = None
        primed = sum(_primed(c) is not c for c in commands)
        ready = 0
        while ready + sum(p.poll() is not None for p in procs) < primed:  # a byte per primed process
            if select.select([ready_read], [], [], 0.2)[0]:
                ready += len(os.read(ready_read, primed - ready))
        for p in procs:
            try:
                p.stdin.write("go\n")
                p.stdin.flush()
            except BrokenPipeError:  # it ended before the go (its exit status tells why)
                pass
    finally:
        os.close(ready_read)
        if ready_write is not None:
            os.close(ready_write)
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
