"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd from Debian's packages.

Everything lives in one folder (config, state, logs, a munge key and socket); two GPUs are declared
as GRES backed by placeholder files, which is enough for SLURM to schedule GPU requests on a
machine without GPUs. Run as a script to keep a cluster up by hand:

    python tests/slurm/cluster.py /tmp/slurm     # then: export SLURM_CONF=/tmp/slurm/slurm.conf
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MARKER = "# dermsynth test cluster"
SYSTEM_CONF_DIR = Path("/etc/slurm")
NODE = socket.gethostname().split(".")[0]  # slurmctld insists on running on its SlurmctldHost
PARTITION = "debug"


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing); .ci/run installs them with apt"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")).split()[1])
    return kib // 1024 - 1024


@dataclass
class Cluster:
    root: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for link in self.links:
            if link.is_symlink() and Path(os.readlink(link)).parent == self.root:
                link.unlink()


def _write_config(root: Path) -> None:
    cpus, memory = os.cpu_count() or 2, _memory_mb()
    for i in range(2):  # character devices (like /dev/null): slurmd checks the type, nothing opens them
        device = root / f"fake-gpu{i}"
        if not device.exists():
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "slurm.conf").write_text(f"""\
{MARKER}
ClusterName=dermsynth-test
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"{MARKER}\nNodeName={NODE} Name=gpu File={root}/fake-gpu[0-1]\n")


def _link_default_config(root: Path) -> list[Path]:
    """Make the test cluster's config the default one (/etc/slurm), as on a real cluster.

    Needed because snakemake-executor-plugin-slurm-jobstep drops SLURM_CONF from the environment
    of the `srun` it runs each job step with, so steps only find a config at the default path.
    A config there that is not ours is never touched.
    """
    SYSTEM_CONF_DIR.mkdir(parents=True, exist_ok=True)
    links = []
    for name in ("slurm.conf", "gres.conf"):
        target = SYSTEM_CONF_DIR / name
        if target.exists() and not target.read_text().startswith(MARKER):
            raise RuntimeError(f"{target} belongs to a real SLURM installation; not starting a test cluster here")
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(root / name)
        links.append(target)
    return links


def start(root: str | Path, timeout: float = 60.0) -> Cluster:
    root = Path(root)
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_config(root)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cluster = Cluster(root, links=_link_default_config(root))
    logs = open(root / "daemons.out", "ab")
    cluster.processes.append(subprocess.Popen(
        ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
         f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"],
        stdout=logs, stderr=logs))
    time.sleep(0.5)
    cluster.processes.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
                                              stdout=logs, stderr=logs, env=cluster.env))
    time.sleep(1.0)
    cluster.processes.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(cluster.conf)],
                                              stdout=logs, stderr=logs, env=cluster.env))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T").strip()
        except subprocess.CalledProcessError:
            state = ""
        if state.startswith("idle"):
            return cluster
        if any(p.poll() is not None for p in cluster.processes):
            break
        time.sleep(0.5)
    cluster.stop()
    logs_text = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in root.glob("*.log"))
    raise RuntimeError(f"the test SLURM cluster did not come up:\n{logs_text}\n"
                       f"{(root / 'daemons.out').read_text()[-2000:]}")


if __name__ == "__main__":
    cluster = start(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dermsynth-slurm")
    print(f"up: export SLURM_CONF={cluster.conf}   (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.stop()
