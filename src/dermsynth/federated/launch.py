"""`dermsynth federated train`: check the inputs, own the run folder, start Flower's processes on the app folder.

`run_federated` composes the steps: the checks (`checks.py`) before anything starts; the run folder's state
compared with the run's fingerprint (`own_state`); Flower's inputs — the options file, the run config (a TOML
file of `[tool.flwr.app.config]` values: options, out, fingerprint and the round settings; for the Simulation
Runtime also the data paths) and each SuperNode's `--node-config` and GPUs; then the processes (`deploy.Federation`)
running the app folder `flower-app/` beside this module, as it is in the repository (`flwr run` bundles it in
memory and writes nothing into it).

Deployment runtime (`runtime: deployment`, what the workflow runs): one SuperNode per hospital, each given its
hospital, that hospital's data paths and state folder (`node_configs`). With `tls` the run gets a CA, a SuperLink
certificate for 127.0.0.1/localhost and, with `supernode_auth`, a key pair per hospital, made afresh at each start
under `<out>/flower/certs/` (`security`). Simulation Runtime (`runtime: simulation`):
node i plays hospital i (sorted names) and reads the paths from the run config.

One writer per run folder: the launcher holds its lock (`locks.exclusive`) for the whole run, after proving the
folder writable. Before anything starts, the folder's state is compared with the run's fingerprint
(`server.run_fingerprint`, recorded in `run-fingerprint.json`): state of another run (or of an older dermsynth
without a fingerprint) is set aside (`superseded-<time>/`, one line naming what differs) and the run starts at
round 1. The data part of the fingerprint reaches the ServerApp as a file named in the run config.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from ..errors import DermsynthError
from ..fingerprint import differences, set_aside
from ..locks import exclusive
from ..outputs import check_writable, write_json, write_text
from .checks import check_run
from .deploy import Federation, Security
from .options import TrainFederatedOptions
from .server import RUN_FINGERPRINT, data_fingerprint, run_fingerprint

APP_FOLDER = Path(__file__).resolve().parent / "flower-app"
# only what train-federated itself writes: other rules write into the run folder too (alone/<hospital>/ by the
# hospital-alone baselines, the sample sheet), and those belong to their own jobs
LAUNCHER_STATE = ("checkpoint.pt", "checkpoint.json", "clients", "logs", "messages.jsonl", "progress.json",
                  "rounds.csv")


def app_folder() -> Path:
    """The Flower app folder (`flower-app/` beside this module: pyproject.toml and README.md). Raises
    DermsynthError when it is missing (a dermsynth installed without its package data)."""
    if not (APP_FOLDER / "pyproject.toml").is_file():
        raise DermsynthError(f"the Flower app folder {APP_FOLDER} is missing (dermsynth was installed without its "
                             "package data); reinstall dermsynth from the repository")
    return APP_FOLDER


def gpu_assignment(hospitals: list[str], gpus_per_node: int) -> dict[str, dict]:
    """Each hospital's `CUDA_VISIBLE_DEVICES`: consecutive slices of `gpus_per_node` of the job's visible GPUs
    (SLURM's allocation, else 0…n−1). Raises DermsynthError when the job sees fewer GPUs than the nodes need."""
    if gpus_per_node <= 0:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(len(hospitals) * gpus_per_node)]
    if len(ids) < len(hospitals) * gpus_per_node:
        raise DermsynthError(f"{len(hospitals)} SuperNodes × {gpus_per_node} GPU(s) need "
                             f"{len(hospitals) * gpus_per_node} GPUs; this job sees {len(ids)} (CUDA_VISIBLE_DEVICES={visible})")
    return {h: {"CUDA_VISIBLE_DEVICES": ",".join(ids[i * gpus_per_node:(i + 1) * gpus_per_node])}
            for i, h in enumerate(hospitals)}


def security(options: TrainFederatedOptions, folder: Path) -> Security | None:
    """The run's transport (`options.security`): None without TLS; otherwise a CA, a SuperLink certificate for
    127.0.0.1, ::1 and localhost and, with `supernode_auth`, one key pair per hospital, written to `folder`
    (`certs.make_consortium`, replaced at each start: the SuperLink's key lives as long as the run)."""
    if not options.security.tls:
        return None
    from .certs import make_consortium  # deferred: cryptography is needed only for a TLS run
    sites = list(options.hospitals) if options.security.supernode_auth else []
    made = make_consortium(folder, ["127.0.0.1", "::1", "localhost"], sites)
    return Security(made.ca, made.superlink_cert, made.superlink_key, {h: made.sites[h][0] for h in sites})


def node_configs(hospitals: list[str], lmdb, federated_csv, state_root, device: str, threads: int) -> dict[str, dict]:
    """Each hospital's `--node-config`: its data paths and state folder (absolute) and its device."""
    return {h: {"lmdb": str(Path(lmdb).resolve()), "federated-csv": str(Path(federated_csv).resolve()),
                "state-dir": str((Path(state_root) / h).resolve()), "device": device, "threads": threads}
            for h in hospitals}


def simulation_config(lmdb, federated_csv, state_root, device: str, threads: int) -> dict:
    """The run-config entries the Simulation Runtime's virtual SuperNodes read their data paths from."""
    return {"lmdb": str(Path(lmdb).resolve()), "federated-csv": str(Path(federated_csv).resolve()),
            "state-root": str(Path(state_root).resolve()), "device": device, "threads": threads}


def run_config(options: TrainFederatedOptions, options_file, out_dir, data_file=None) -> dict:
    """The run config of a run: its options file, output folder, data-fingerprint file (None: none; absolute
    paths: Flower's apps run in other working folders) and its round settings (`RoundSettings.to_run_config`)."""
    return {"options": str(Path(options_file).resolve()), "out": str(Path(out_dir).resolve()),
            "fingerprint": str(Path(data_file).resolve()) if data_file else "", **options.federation.to_run_config()}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (same escapes)
    raise TypeError(f"a run-config value must be a bool, number or string, not {value!r}")


def write_run_config(path, values: dict) -> Path:
    """Write `values` (run-config key → bool, int, float or str) as a TOML file for `flwr run --run-config`; returns
    its path. Raises TypeError for another kind of value, OutputError when it cannot be written."""
    write_text(path, "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items()))
    return Path(path)


def own_state(options: TrainFederatedOptions, lmdb, federated_csv, out_dir: Path) -> Path:
    """Compare the run folder's state with the run's fingerprint; set aside state of another run (or without a
    recorded fingerprint: an older dermsynth's), record the fingerprint (`run-fingerprint.json`) and write the data
    part for the ServerApp. Returns that data file (`flower/data-fingerprint.json`)."""
    data = data_fingerprint(options, lmdb, federated_csv)
    fingerprint = json.loads(json.dumps(run_fingerprint(options, data)))
    record = out_dir / RUN_FINGERPRINT
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


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file ('' when absent)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_federated(options: TrainFederatedOptions, lmdb, federated_csv, out_dir, device: str = "auto",
                  threads: int = 0, gpus: int = 0) -> Path:
    """`dermsynth federated train`: run `options` on this machine in its runtime and return network-final.pt.
    `device`: every SuperNode's (auto: CUDA when there is a GPU); `threads`: CPU threads of the whole job, shared
    among the SuperNodes; `gpus`: the job's GPUs, shared equally among the SuperNodes, each its own
    (`gpu_assignment`; device cuda). Every process is stopped when the run ends, fails or this process is
    interrupted (SIGINT, SIGTERM).

    Raises:
        BusyError: another process is writing to `out_dir`.
        OutputError: `out_dir` is not writable.
        DermsynthError: `gpus` is not a multiple of the number of hospitals, the store or hospitals do not fit
            the run (`checks.check_run`), or the run did not produce network-final.pt (with the log's last lines)."""
    out_dir = Path(out_dir).resolve()
    check_writable(out_dir)
    with exclusive(out_dir, "train-federated"):
        check_run(options, lmdb, federated_csv, gpus)
        federation, values = _prepare(options, lmdb, federated_csv, out_dir, device, threads, gpus)
        status = _submit(federation, write_run_config(out_dir / "flower" / "run-config.toml", values), options)
        return _result(options, out_dir, status)


def _prepare(options: TrainFederatedOptions, lmdb, federated_csv, out_dir: Path, device: str, threads: int,
             gpus: int) -> tuple[Federation, dict]:
    """The run folder owned (`own_state`), the options file written, an old network-final.pt removed; returns the
    processes to start and the run config."""
    data_file = own_state(options, lmdb, federated_csv, out_dir)
    values = run_config(options, options.write(out_dir / "flower"), out_dir, data_file)
    hospitals, state_root = list(options.hospitals), out_dir / "clients"
    device = "cuda" if gpus else device
    threads = max(1, threads // len(hospitals)) if threads else 0
    nodes = None
    if options.runtime == "simulation":
        values.update(simulation_config(lmdb, federated_csv, state_root, device, threads))
    else:
        nodes = node_configs(hospitals, lmdb, federated_csv, state_root, device, threads)
    federation = Federation(app_folder(), out_dir / "flower", out_dir / "logs", nodes, len(hospitals),
                            gpu_assignment(hospitals, gpus // len(hospitals)),
                            security(options, out_dir / "flower" / "certs"))
    (out_dir / "network-final.pt").unlink(missing_ok=True)  # the run's result is the one this run writes
    return federation, values


def _submit(federation: Federation, run_config_file: Path, options: TrainFederatedOptions) -> int:
    """Start the processes, submit the run, wait for it; every process stopped at the end (SIGTERM included)."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes on SIGTERM too
    try:
        with federation:
            transport = federation.security.describe() if federation.security else "no TLS (loopback only)"
            print(f"train-federated {options.run}: SuperLink on 127.0.0.1:{federation.port} ({transport}), "
                  f"{options.runtime} runtime, hospitals {', '.join(options.hospitals)}, app {federation.app}",
                  file=sys.stderr)
            return federation.submit(run_config_file)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _result(options: TrainFederatedOptions, out_dir: Path, status: int) -> Path:
    """network-final.pt of a finished run. Raises DermsynthError with the end of flwr's log when there is none."""
    final, log = out_dir / "network-final.pt", out_dir / "logs" / "flwr-run.log"
    if status != 0 or not final.exists():
        raise DermsynthError(f"the federated run {options.run} did not finish (flwr run exit status {status}); "
                             f"last lines of {log}:\n{tail(log)}")
    return final


__all__ = ["APP_FOLDER", "LAUNCHER_STATE", "app_folder", "gpu_assignment", "node_configs", "own_state",
           "run_config", "run_federated", "security", "simulation_config", "tail", "write_run_config"]
