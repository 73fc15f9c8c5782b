"""One writer per output: an exclusive, advisory lock on an output folder or file.

Snakemake locks its working directory, but a verb run by hand beside a workflow job, a SLURM requeue whose
first instance still runs, or two review pages on one project can still write one output at the same time.
Every verb that writes a folder (or a shared file) holds `exclusive(...)` while it writes:

    with exclusive(out_dir, "train-gan"):
        ...

The lock is `flock` on a file `.dermsynth-lock` inside the folder (or `.<file>.lock` beside a file), holding
the owner's pid, host and verb. The kernel drops it when the process ends, however it ends (SIGKILL
included), so a killed run never leaves a stale lock behind. A second writer is refused at once with one
line: ``another train-gan (pid 1234 on node7, since 10:02:11) is writing to results/gan/cgan``.
`wait=True` waits for the lock instead (for short read-modify-write cycles such as the review app's YAML).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import DermsynthError

LOCK_NAME = ".dermsynth-lock"


class BusyError(DermsynthError):
    """Another process holds the output's lock: who (verb, pid, host, since when) and which output."""


def lock_file_for(target: str | Path) -> Path:
    """The lock file of `target`: `<folder>/.dermsynth-lock` for a folder (existing, or named without a
    suffix), `.<file>.lock` beside a file (hidden, like the folder's)."""
    target = Path(target)
    if target.is_dir() or (not target.exists() and not target.suffix):
        return target / LOCK_NAME
    return target.with_name(f".{target.name}.lock")


def _holder(handle) -> str:
    handle.seek(0)
    try:
        who = json.loads(handle.read() or "{}")
    except ValueError:
        who = {}
    if not who:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(who.get("since", 0)))
    return f"another {who.get('verb', 'dermsynth')} (pid {who.get('pid', '?')} on {who.get('host', '?')}, since {since})"


@contextlib.contextmanager
def exclusive(target: str | Path, verb: str, wait: bool = False, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of output `target` (a folder, created if missing, or a file) for `verb`.

    Raises:
        BusyError: another process holds it (immediately, or after `timeout` seconds with `wait=True`).
        OutputError: the lock file cannot be created (read-only folder, full disk)."""
    # deferred: outputs loads numpy and pandas, and every stage's cli.py imports this module (`dermsynth --help`)
    from .outputs import disk_error
    path = lock_file_for(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as exc:
        raise (disk_error(path, exc) or exc) from None
    try:
        _acquire(handle, Path(target), wait, timeout)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"verb": verb, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.time()}))
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the flock; the file stays (removing it would race with a waiting writer)


def _acquire(handle, target: Path, wait: bool, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise BusyError(f"{_holder(handle)} is writing to {target}; wait for it to finish (or stop it), "
                                "then run again") from None
            if deadline is None:
                fcntl.flock(handle, fcntl.LOCK_EX)
                return
            time.sleep(0.01)
