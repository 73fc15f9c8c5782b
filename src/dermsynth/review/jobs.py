"""Long work of the review page (an optimisation projection: 1000 Adam steps, minutes on a CPU) in a worker
thread the browser session owns, one at a time per server process.

A `Job` runs `work(on_step)` in a daemon thread; the work calls `on_step(done, total)` after every step (the
projector's loop: `latent.project.project(on_step=…)`), which records the progress and raises `Cancelled` when
the job was cancelled (`Job.cancel`: the choice changed, the Cancel button) or its session is gone
(`alive()` false for longer than `GRACE` seconds: the browser tab was closed). `SLOT` holds the running job:
`SLOT.start` refuses a second one (`Busy`, naming the running one) until the first has ended. The thread prints
one line on stderr when it ends (finished, cancelled and why, failed), which is where the server's log shows it.

Torch-free: the work function brings the model.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DermsynthError

GRACE = 3.0  # seconds a session may be disconnected (a network blip, a reconnect) before its job is cancelled
RUNNING, FINISHED, CANCELLED, FAILED = "running", "finished", "cancelled", "failed"


class Cancelled(Exception):
    """Raised inside the work (from `on_step`) to end a cancelled job."""


class Busy(DermsynthError):
    """Another job is running; `job` is that one."""

    def __init__(self, job: "Job"):
        super().__init__(f"another projection is running ({job.label}: step {job.done}/{job.total}); it must end "
                         "(or be cancelled on its page) before a new one starts")
        self.job = job


@dataclass(eq=False)
class Job:
    """One piece of work in its thread. `key` identifies what it is for (the page compares it with its current
    choice), `owner` the session that started it; `done`/`total` count steps; `state` is RUNNING, FINISHED,
    CANCELLED or FAILED; `result` holds what the work returned, `error` a one-line message, `reason` why it was
    cancelled."""
    key: tuple
    label: str
    total: int
    owner: str
    alive: Callable[[], bool] = lambda: True
    done: int = 0
    state: str = RUNNING
    result: Any = None
    error: str = ""
    reason: str = ""
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _gone_since: float | None = None

    def cancel(self, reason: str) -> None:
        """Ask the work to stop at its next step (it ends within one step); a no-op once it has ended."""
        if self.state == RUNNING and not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()

    def on_step(self, done: int, total: int) -> None:
        """The work's per-step call: records (done, total); raises Cancelled when cancelled or the session is
        gone for more than GRACE seconds."""
        self.done, self.total = int(done), int(total)
        if not self.alive():
            now = time.monotonic()
            self._gone_since = self._gone_since or now
            if now - self._gone_since > GRACE:
                self.cancel("the page was closed")
        else:
            self._gone_since = None
        if self._cancel.is_set():
            raise Cancelled(self.reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self.state == RUNNING


class Slot:
    """At most one running job (per process: every session of one `dermsynth review` server shares it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current: Job | None = None

    def start(self, job: Job, work: Callable[[Callable[[int, int], None]], Any]) -> Job:
        """Run `work(job.on_step)` in a new daemon thread as `job`. Raises Busy when a job is running."""
        with self._lock:
            if self.current is not None and self.current.running:
                raise Busy(self.current)
            self.current = job
        job.thread = threading.Thread(target=self._run, args=(job, work), name=f"dermsynth-projection {job.label}",
                                      daemon=True)
        job.thread.start()
        return job

    def _run(self, job: Job, work) -> None:
        try:
            job.result = work(job.on_step)
            job.state = FINISHED
        except Cancelled:
            job.state = CANCELLED
        except Exception as exc:  # the page shows it; the thread must not die silently
            job.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            job.state = FAILED
        finally:
            seconds = time.monotonic() - job.started
            ending = {FINISHED: "finished", CANCELLED: f"cancelled ({job.reason})",
                      FAILED: f"failed: {job.error}"}.get(job.state, job.state)
            print(f"dermsynth review: projection of {job.label} {ending} at step {job.done}/{job.total} after "
                  f"{seconds:.0f} s", file=sys.stderr, flush=True)


SLOT = Slot()
