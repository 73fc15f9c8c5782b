"""Flower's processes of a federated run on this machine: start them, submit the app, stop them.

Deployment runtime: one `flower-superlink` and one `flower-supernode` per hospital, each a separate OS process on
127.0.0.1 with ports chosen free at run time. Without `Security` they talk without TLS (`--insecure`), which is
allowed only because every connection stays on the loopback interface (`check_insecure` refuses it for any other
address); with it, over TLS (the SuperLink's certificate signed by the run's CA, every SuperNode and the `flwr` CLI
verifying it) and, with node keys, with Flower's SuperNode authentication (the SuperLink accepts only the public keys
registered through `flwr supernode register`). Each SuperNode gets its `--node-config` (its hospital, that
hospital's data paths and state folder). Simulation Runtime: a
SuperLink with `--simulation` (Flower's Simulation Runtime, Ray) and `num-supernodes` virtual SuperNodes.

The run is submitted with `flwr run <app folder> <connection> --run-config <file>` (a Flower home of its own under
the run's `flower/` folder, so nothing is written to ~/.flwr); when it ends or fails every process is stopped (its
process tree, SIGTERM then SIGKILL) and its log kept. What to run — the checks, the node configs, the run config —
is the launcher's (`launch.py`).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..errors import DermsynthError
from ..outputs import write_text

CONNECTION = "dermsynth"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets: `[::1]:9092`) → (host without brackets, port). Raises DermsynthError naming
    the address when it has no port."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DermsynthError(f"SuperLink address {address!r}: write host:port (e.g. fl.example.org:9092, "
                             "[2001:db8::1]:9092)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine's loopback interface: `localhost` or a loopback IP (127.0.0.0/8, ::1). Any
    other name counts as remote (no DNS lookup: a name can resolve differently tomorrow)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_insecure(address: str, what: str) -> None:
    """Refuse plain-text transport (`--insecure`) for a SuperLink `address` (host:port) that is not loopback.
    Raises DermsynthError in one line naming `what` (the file or flag that asked for it) and the fix."""
    host, _ = split_address(address)
    if not is_loopback(host):
        raise DermsynthError(f"{what}: insecure (no TLS) is allowed only on this machine's loopback interface, and "
                             f"the SuperLink address {address} is not loopback; use TLS (the consortium's ca.crt as "
                             "root certificates: dermsynth federated certs makes one for a test consortium)")


@dataclass(frozen=True)
class Security:
    """TLS and SuperNode authentication of a `Federation` (docs/federated.md, 'Across sites').

    `ca`: the CA certificate every SuperNode and the `flwr` CLI verify the SuperLink with; `superlink_cert`,
    `superlink_key`: the SuperLink's TLS certificate (SANs: the addresses dialled, 127.0.0.1 included: the SuperLink's
    own SuperExec dials it there) and key; `node_keys`: hospital → its SuperNode's private key (OpenSSH; its public
    key beside it, the same name with `.pub`: `certs.make_site_keys`); empty: no SuperNode authentication."""

    ca: Path
    superlink_cert: Path
    superlink_key: Path
    node_keys: dict[str, Path] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        """Whether the SuperLink accepts only registered SuperNodes (`--enable-supernode-auth`)."""
        return bool(self.node_keys)

    def superlink_args(self) -> list[str]:
        """flower-superlink's TLS (and authentication) flags."""
        args = ["--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(self.superlink_cert),
                "--ssl-keyfile", str(self.superlink_key)]
        return args + (["--enable-supernode-auth"] if self.authenticated else [])

    def supernode_args(self, hospital: str) -> list[str]:
        """flower-supernode's flags for `hospital`: the CA to verify the SuperLink with, its private key."""
        args = ["--root-certificates", str(self.ca)]
        return args + (["--auth-supernode-private-key", str(self.node_keys[hospital])] if self.authenticated else [])

    def public_key(self, hospital: str) -> Path:
        """The public key (OpenSSH) registered for `hospital`: `<private key without suffix>.pub`."""
        return self.node_keys[hospital].with_suffix(".pub")

    def describe(self) -> str:
        """A few words for the launcher's start line."""
        return f"TLS, {len(self.node_keys)} SuperNode keys registered" if self.authenticated else "TLS"


def flower_command(name: str) -> str:
    """The path of Flower's command `name` (flower-superlink, flower-supernode, flwr): the one installed beside
    this Python (a virtual environment need not be activated), else the first on PATH. Raises DermsynthError when
    Flower is not installed."""
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
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Federation:
    """A SuperLink and SuperNodes as processes on 127.0.0.1 that run the Flower app folder `app`, with logs in
    `log_dir` and Flower's home (and the record of live processes) in `flower_dir`. `nodes`: hospital name → its
    `--node-config` entries (deployment), or None for the Simulation Runtime with `simulated_nodes` virtual
    SuperNodes; `node_env`: hospital → extra environment of its SuperNode (`CUDA_VISIBLE_DEVICES`); `security`:
    TLS and SuperNode keys (`Security`; None: no TLS, loopback only). Use as a context manager: every process is
    stopped on exit."""

    def __init__(self, app: str | Path, flower_dir: str | Path, log_dir: str | Path, nodes: dict[str, dict] | None,
                 simulated_nodes: int = 0, node_env: dict[str, dict] | None = None, security: Security | None = None):
        self.app, self.flower_dir, self.log_dir = Path(app), Path(flower_dir), Path(log_dir)
        self.nodes, self.simulated_nodes, self.node_env = nodes, simulated_nodes, node_env or {}
        self.security = security
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
        home's connection to it, register the SuperNodes' public keys (with authentication), start every
        SuperNode."""
        stop_leftovers(self.flower_dir / "pids.json")
        self.port = free_port()
        transport = self.security.superlink_args() if self.security else ["--insecure"]
        command = [flower_command("flower-superlink"), *transport, "--host", "127.0.0.1", "--port", str(self.port),
                   "--disable-runtime-dependency-installation"]
        if self.nodes is None:
            command.append("--simulation")
        self.superlink = self._spawn(command, "superlink.log")
        wait_for_port(self.port, self.superlink, "flower-superlink", self.log_dir / "superlink.log")
        self._write_flower_home()
        if self.security and self.security.authenticated and self.nodes:
            self.register_supernodes(list(self.nodes))
        for hospital in self.nodes or {}:
            self.start_supernode(hospital)

    def _write_flower_home(self) -> None:
        """`<flower_dir>/home/config.toml`: the SuperLink connection `dermsynth` (the one `flwr run` uses), over TLS
        verified with the run's CA when there is `security`."""
        home = self.flower_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        transport = (f"root-certificates = {json.dumps(str(Path(self.security.ca).resolve()))}" if self.security
                     else "insecure = true")
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "127.0.0.1:{self.port}"', transport]
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def register_supernodes(self, hospitals: list[str]) -> None:
        """`flwr supernode register <hospital's public key> dermsynth` for each of `hospitals` (in parallel: each is
        a `flwr` process), output to `logs/register-supernodes.log`. Raises DermsynthError naming the hospitals whose
        key the SuperLink did not accept."""
        def register(hospital: str) -> tuple[str, subprocess.CompletedProcess]:
            command = [flower_command("flwr"), "supernode", "register", str(self.security.public_key(hospital)),
                       CONNECTION, "--name", hospital]
            return hospital, subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=300)

        with ThreadPoolExecutor(max_workers=len(hospitals)) as pool:
            results = list(pool.map(register, hospitals))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "register-supernodes.log", "a") as log:
            for hospital, result in results:
                log.write(f"{hospital}: exit {result.returncode}\n{result.stdout}{result.stderr}\n")
        failed = [hospital for hospital, result in results if result.returncode != 0]
        if failed:
            raise DermsynthError(f"the SuperLink did not register the public keys of {', '.join(failed)}; see "
                                 f"{self.log_dir / 'register-supernodes.log'}")

    def start_supernode(self, hospital: str) -> subprocess.Popen:
        """Start (or restart) the SuperNode of `hospital` with its node config; returns its process."""
        config = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.nodes[hospital].items())
        transport = self.security.supernode_args(hospital) if self.security else ["--insecure"]
        command = [flower_command("flower-supernode"), *transport, "--superlink", f"127.0.0.1:{self.port}",
                   "--port", str(free_port()), "--node-config", f"hospital={hospital!r} {config}"]
        self.supernodes[hospital] = self._spawn(command, f"supernode-{hospital}.log", self.node_env.get(hospital))
        return self.supernodes[hospital]

    def kill_supernode(self, hospital: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the SuperNode of `hospital` and every process it started (a hospital going down)."""
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

    def submit(self, run_config: str | Path, log_name: str = "flwr-run.log") -> int:
        """`flwr run <app> dermsynth --stream --run-config <run_config>` (a TOML file of run-config values, keys of
        the app's `[tool.flwr.app.config]`): submit the run and stream its log to `log_name` until it ends; returns
        flwr's exit status. Nothing is written into the app folder (`flwr run` bundles it in memory)."""
        command = [flower_command("flwr"), "run", str(self.app), CONNECTION, "--stream",
                   "--run-config", str(run_config)]
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
        found = []
        for process in self.processes():
            try:
                root = psutil.Process(process.pid)
                found += [(p.pid, p.create_time()) for p in [root, *root.children(recursive=True)]]
            except psutil.NoSuchProcess:
                continue
        write_text(self.flower_dir / "pids.json", json.dumps(found))

    def processes(self) -> list[subprocess.Popen]:
        """The SuperLink and SuperNode processes started so far."""
        return [p for p in [self.superlink, *self.supernodes.values()] if p is not None]

    def stop(self) -> None:
        """Stop every SuperNode, then the SuperLink (each with the processes it started)."""
        for process in [*self.supernodes.values(), self.superlink]:
            if process is not None:
                stop_tree(process)


__all__ = ["Federation", "Security", "check_insecure", "flower_command", "free_port", "is_loopback", "split_address",
           "stop_leftovers", "stop_tree", "wait_for_port"]
