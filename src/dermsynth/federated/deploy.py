"""Run a federated StyleGAN2 run as real Flower processes on this machine.

Deployment runtime (`runtime: deployment`, what the workflow runs): one `flower-superlink` and one
`flower-supernode` per hospital, each a separate OS process on 127.0.0.1 with ports chosen free at run time
(insecure mode, i.e. without TLS, only because every connection stays on the loopback interface; see
docs/federated.md for a multi-site deployment with certificates). Each SuperNode gets its hospital, that
hospital's data paths and its state folder by `--node-config`. The run is submitted with `flwr run` (its own
Flower home and app folder under `<out>/flower/`), and when it ends or fails every process is stopped (its
process tree, SIGTERM then SIGKILL) and its log kept under `<out>/logs/`.

Simulation runtime (`runtime: simulation`): a SuperLink with `--simulation` (Flower's Simulation Runtime, Ray),
`num-supernodes` = the number of hospitals; node i plays hospital i (sorted names) and reads the paths from the
run config.

One writer per run folder: the launcher holds its lock (`locks.exclusive`) for the whole run, after proving the
folder writable. Before anything starts, the folder's state is compared with the run's fingerprint
(`server.run_fingerprint`, recorded in `run-fingerprint.json`): state of another run (or of an older dermsynth
without a fingerprint) is set aside (`superseded-<time>/`, one line naming what differs) and the run starts at
round 1. The data part of the fingerprint reaches the ServerApp as a file named in the run config.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import DermsynthError

APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "dermsynth-federated"
version = "1.0.0"
description = "Federated StyleGAN2(-ADA) across hospitals (dermsynth)"
license = "MIT"
dependencies = []

[tool.flwr.app]
publisher = "dermsynth"

[tool.flwr.app.components]
serverapp = "dermsynth.federated.app:server_app"
clientapp = "dermsynth.federated.app:client_app"

[tool.flwr.app.config]
options = ""
out = ""
lmdb = ""
federated-csv = ""
state-root = ""
device = "auto"
threads = "0"
fingerprint = ""
"""
CONNECTION = "dermsynth"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_command(name: str) -> str:
    """The path of Flower's command `name` (flower-superlink, flower-supernode, flwr): the one installed beside
    this Python (a virtual environment need not be activated), else the first on PATH. Raises DermsynthError when
    Flower is not installed."""
    import shutil
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise DermsynthError(f"Flower's `{name}` command is not installed (pip install \"flwr[simulation]>=1.42\", "
                             "part of dermsynth's dependencies)")
    return found


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    """Block until 127.0.0.1:`port` accepts connections; DermsynthError if `process` exits first or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DermsynthError(f"{what} exited with status {process.returncode} before listening; see {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DermsynthError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


def _running(processes) -> list:
    """The processes still running (a zombie has exited: only its parent can reap it)."""
    import psutil
    alive = []
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


def _signal_all(processes, sig: int, grace: float) -> list:
    """Send `sig` to each process; return those still running after up to `grace` seconds."""
    for p in processes:
        try:
            p.send_signal(sig)
        except Exception:  # gone meanwhile (psutil.NoSuchProcess) or not ours
            continue
    deadline = time.monotonic() + grace
    alive = _running(processes)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = _running(alive)
    return alive


def stop_tree(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop `process` and every process it started (SIGTERM, then SIGKILL after `grace` seconds), and reap it."""
    import psutil
    try:
        parent = psutil.Process(process.pid)
        tree = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        tree = []
    alive = _signal_all(tree, signal.SIGTERM, grace)
    _signal_all(alive, signal.SIGKILL, grace)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def stop_leftovers(record: Path) -> int:
    """SIGKILL the processes listed in `record` (`Federation._record_processes`) that still run (same pid and
    start time); returns how many."""
    import json

    import psutil
    if not record.exists():
        return 0
    stopped = 0
    for pid, started in json.loads(record.read_text()):
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) < 0.01:
                process.kill()
                stopped += 1
        except psutil.NoSuchProcess:
            continue
    if stopped:
        print(f"stopped {stopped} process(es) left by an earlier, killed run", file=sys.stderr)
    record.unlink()
    return stopped


def _die_with_parent() -> None:
    """In the child before exec: receive SIGKILL when the launcher dies (Linux), so a killed job leaves nothing."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Federation:
    """A SuperLink and SuperNodes as processes on 127.0.0.1, with logs in `log_dir` and Flower's home and the app
    folder in `flower_dir`. `nodes`: hospital name → its `--node-config` entries (deployment), or None for the
    Simulation Runtime with `simulated_nodes` virtual SuperNodes. Use as a context manager: every process is
    stopped on exit."""

    def __init__(self, flower_dir: str | Path, log_dir: str | Path, nodes: dict[str, dict] | None,
                 simulated_nodes: int = 0, node_env: dict[str, dict] | None = None):
        self.flower_dir, self.log_dir = Path(flower_dir), Path(log_dir)
        self.nodes, self.simulated_nodes, self.node_env = nodes, simulated_nodes, node_env or {}
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.supernodes: dict[str, subprocess.Popen] = {}
        # Flower starts its own helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name: this Python's
        # scripts first on PATH, so they come from the same environment even when it is not activated.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, "FLWR_HOME": str(self.flower_dir / "home"),
                    "FLWR_DISABLE_UPDATE_CHECK": "1"}

    def __enter__(self) -> "Federation":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, command: list[str], log_name: str, env: dict | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / log_name, "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                    preexec_fn=_die_with_parent)

    def start(self) -> None:
        """Stop leftovers of a killed earlier run, start the SuperLink, wait until it listens, write the Flower
        home and app, start every SuperNode."""
        stop_leftovers(self.flower_dir / "pids.json")
        self.port = free_port()
        command = [flower_command("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
                   "--disable-runtime-dependency-installation"]
        if self.nodes is None:
            command.append("--simulation")
        self.superlink = self._spawn(command, "superlink.log")
        wait_for_port(self.port, self.superlink, "flower-superlink", self.log_dir / "superlink.log")
        self._write_flower_files()
        for hospital in self.nodes or {}:
            self.start_supernode(hospital)

    def _write_flower_files(self) -> None:
        home, app = self.flower_dir / "home", self.flower_dir / "app"
        home.mkdir(parents=True, exist_ok=True)
        app.mkdir(parents=True, exist_ok=True)
        (app / "pyproject.toml").write_text(APP_PYPROJECT)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "127.0.0.1:{self.port}"', "insecure = true"]
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def start_supernode(self, hospital: str) -> subprocess.Popen:
        """Start (or restart) the SuperNode of `hospital` with its node config; returns its process."""
        config = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.nodes[hospital].items())
        command = [flower_command("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                   "--port", str(free_port()), "--node-config", f"hospital={hospital!r} {config}"]
        self.supernodes[hospital] = self._spawn(command, f"supernode-{hospital}.log", self.node_env.get(hospital))
        return self.supernodes[hospital]

    def kill_supernode(self, hospital: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the SuperNode of `hospital` and every process it started (a hospital going down)."""
        import psutil
        process = self.supernodes[hospital]
        try:
            tree = psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        process.wait()

    def submit(self, run_config: dict[str, str], log_name: str = "flwr-run.log") -> int:
        """`flwr run <app> dermsynth --stream --run-config ...`: submit the run and stream its log until it ends;
        returns flwr's exit status."""
        overrides = " ".join(f"{k}={str(v)!r}" for k, v in run_config.items())
        command = [flower_command("flwr"), "run", str(self.flower_dir / "app"), CONNECTION, "--stream", "--run-config", overrides]
        if self.nodes is None:
            command += ["--federation-config", f"num-supernodes={self.simulated_nodes}"]
        process = self._spawn(command, log_name)
        while True:
            try:
                return process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._record_processes()

    def _record_processes(self) -> None:
        """Write every live process of the federation (pid, start time) to `pids.json`: Flower starts its apps
        in sessions of their own, which a SIGKILL of this job's process group does not reach; the next start
        stops what is still alive of them (`stop_leftovers`)."""
        import json

        import psutil
        found = []
        for process in self.processes():
            try:
                root = psutil.Process(process.pid)
                found += [(p.pid, p.create_time()) for p in [root, *root.children(recursive=True)]]
            except psutil.NoSuchProcess:
                continue
        from ..outputs import write_text
        write_text(self.flower_dir / "pids.json", json.dumps(found))

    def processes(self) -> list[subprocess.Popen]:
        """The SuperLink and SuperNode processes started so far."""
        return [p for p in [self.superlink, *self.supernodes.values()] if p is not None]

    def stop(self) -> None:
        """Stop every SuperNode, then the SuperLink (each with the processes it started)."""
        for process in [*self.supernodes.values(), self.superlink]:
            if process is not None:
                stop_tree(process)


def gpu_assignment(hospitals: list[str], gpus_per_node: int) -> dict[str, dict]:
    """Each hospital's `CUDA_VISIBLE_DEVICES`: consecutive slices of `gpus_per_node` of the job's visible GPUs
    (SLURM's allocation, else 0…n−1). Raises DermsynthError when the job sees fewer GPUs than the nodes need."""
    if gpus_per_node <= 0:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(len(hospitals) * gpus_per_node)]
    if len(ids) < len(hospitals) * gpus_per_node:
        raise DermsynthError(f"{len(hospitals)} SuperNodes × {gpus_per_node} GPU(s) need {len(hospitals) * gpus_per_node} "
                             f"GPUs; this job sees {len(ids)} (CUDA_VISIBLE_DEVICES={visible})")
    return {h: {"CUDA_VISIBLE_DEVICES": ",".join(ids[i * gpus_per_node:(i + 1) * gpus_per_node])}
            for i, h in enumerate(hospitals)}


def node_configs(hospitals: list[str], lmdb, federated_csv, state_root, device: str, threads: int) -> dict[str, dict]:
    """Each hospital's `--node-config`: its data paths and state folder (absolute) and its device."""
    return {h: {"lmdb": str(Path(lmdb).resolve()), "federated-csv": str(Path(federated_csv).resolve()),
                "state-dir": str((Path(state_root) / h).resolve()), "device": device, "threads": threads}
            for h in hospitals}


def check_store(options, lmdb) -> None:
    """Before any process starts: the LMDB store is the run's dataset, at the run's resolution, with the run's
    classes (what every hospital's generator is built for). Raises DermsynthError naming the mismatch."""
    import json
    index = json.loads((Path(lmdb) / "index.json").read_text())
    found = (index.get("dataset"), int(index.get("resolution", 0)), list(index.get("classes") or []))
    wanted = (options.dataset, int(options.resolution), list(options.label_classes))
    if found != wanted:
        raise DermsynthError(f"{lmdb} holds dataset {found[0]} at {found[1]}² with classes {found[2]}; federated run "
                             f"{options.run} is configured for {wanted[0]} at {wanted[1]}² with classes {wanted[2]} "
                             "(pass the run's dataset's LMDB store, or re-ingest it with the configured resolution)")


def check_hospital_sizes(options, federated_csv) -> None:
    """Before any process starts: every hospital of the run has at least one batch of training images (of the
    run's classes). Raises DermsynthError naming the hospitals, their counts and the fix."""
    import pandas as pd
    table = pd.read_csv(federated_csv, dtype=str, keep_default_na=False)
    if options.training.get("classes"):
        table = table[table["label"].isin(options.training["classes"])]
    counts = table["hospital"].value_counts()
    batch = options.training["batch"]
    small = {h: int(counts.get(h, 0)) for h in options.hospitals if counts.get(h, 0) < batch}
    if small:
        listed = ", ".join(f"{h}: {n}" for h, n in small.items())
        raise DermsynthError(f"{federated_csv}: hospitals with fewer training images than one batch of {batch} "
                             f"({listed}); lower federated.{options.run}.batch or give those hospitals more images "
                             "(datasets.<dataset>.federated.hospitals)")


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file ('' when absent)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_federated(options, lmdb, federated_csv, out_dir, device: str = "auto", threads: int = 0,
                  gpus: int = 0) -> Path:
    """`dermsynth train-federated`: run `options` (a `TrainFederatedOptions`) on this machine in its runtime and
    return network-final.pt. `threads`: CPU threads of the whole job, shared among the SuperNodes; `gpus`: the job's
    GPUs, shared equally among the SuperNodes, each its own (`gpu_assignment`; device cuda). Every process is
    stopped when the run ends, fails or this process is interrupted.

    Raises:
        BusyError: another process is writing to `out_dir`.
        OutputError: `out_dir` is not writable.
        DermsynthError: `gpus` is not a multiple of the number of hospitals, the store or hospitals do not fit
            the run, or the run did not produce network-final.pt (with the log's last lines)."""
    from ..locks import exclusive
    from ..outputs import check_writable
    out_dir = Path(out_dir).resolve()
    check_writable(out_dir)
    with exclusive(out_dir, "train-federated"):
        return _run_federated(options, lmdb, federated_csv, out_dir, device, threads, gpus)


LAUNCHER_STATE = ("checkpoint.pt", "checkpoint.json", "clients", "logs", "messages.jsonl", "progress.json", "rounds.csv")


def own_state(options, lmdb, federated_csv, out_dir: Path) -> Path:
    """Compare the run folder's state with the run's fingerprint; set aside state of another run (or without a
    recorded fingerprint: an older dermsynth's), record the fingerprint (`run-fingerprint.json`) and write the data
    part for the ServerApp. Returns that data file (`flower/data-fingerprint.json`)."""
    import json

    from ..fingerprint import differences, set_aside
    from ..outputs import write_json
    from .server import RUN_FINGERPRINT, data_fingerprint, run_fingerprint
    data = data_fingerprint(options, lmdb, federated_csv)
    fingerprint = json.loads(json.dumps(run_fingerprint(options, data)))
    record = out_dir / RUN_FINGERPRINT
    # only what train-federated itself writes: other rules write into the run folder too (alone/<hospital>/ by the
    # hospital-alone baselines, the sample sheet), and those belong to their own jobs
    state = [p.name for p in out_dir.iterdir() if p.name in LAUNCHER_STATE or p.name.startswith("network-")]
    recorded = json.loads(record.read_text()) if record.exists() else None
    found = differences(recorded, fingerprint)
    if state and found:
        set_aside(out_dir, state + ([RUN_FINGERPRINT] if record.exists() else []),
                  f"its state belongs to another run ({'; '.join(found[:4])})", f"train-federated {options.run}")
    if found:
        write_json(record, fingerprint)
    data_file = out_dir / "flower" / "data-fingerprint.json"
    write_json(data_file, data)
    return data_file


def _run_federated(options, lmdb, federated_csv, out_dir: Path, device: str, threads: int, gpus: int) -> Path:
    logs, state_root = out_dir / "logs", out_dir / "clients"
    hospitals = list(options.hospitals)
    if gpus % len(hospitals):
        raise DermsynthError(f"{gpus} GPUs cannot be shared equally among {len(hospitals)} SuperNodes")
    check_store(options, lmdb)
    check_hospital_sizes(options, federated_csv)
    data_file = own_state(options, lmdb, federated_csv, out_dir)
    options_file = options.write(out_dir / "flower")
    run_config = {"options": str(Path(options_file).resolve()), "out": str(out_dir), "fingerprint": str(data_file)}
    node_env = gpu_assignment(hospitals, gpus // len(hospitals))
    device = "cuda" if gpus else device
    threads = max(1, threads // len(hospitals)) if threads else 0
    if options.federation["runtime"] == "simulation":
        nodes, run_config = None, {**run_config, "lmdb": str(Path(lmdb).resolve()),
                                   "federated-csv": str(Path(federated_csv).resolve()),
                                   "state-root": str(state_root), "device": device, "threads": threads}
    else:
        nodes = node_configs(hospitals, lmdb, federated_csv, state_root, device, threads)
    final = out_dir / "network-final.pt"
    final.unlink(missing_ok=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes on SIGTERM too
    try:
        with Federation(out_dir / "flower", logs, nodes, len(hospitals), node_env) as federation:
            print(f"train-federated {options.run}: SuperLink on 127.0.0.1:{federation.port}, "
                  f"{options.federation['runtime']} runtime, hospitals {', '.join(hospitals)}", file=sys.stderr)
            status = federation.submit(run_config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status != 0 or not final.exists():
        raise DermsynthError(f"the federated run {options.run} did not finish (flwr run exit status {status}); "
                             f"last lines of {logs / 'flwr-run.log'}:\n{tail(logs / 'flwr-run.log')}")
    return final


__all__ = ["Federation", "free_port", "node_configs", "run_federated", "stop_tree", "tail"]
