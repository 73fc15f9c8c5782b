"""The site kit: one hospital's SuperNode from a site file (`dermsynth federated join --site site.yaml`).

Across real sites every hospital runs only its own SuperNode, next to its own archive, and nothing is shared but the
network connection to the coordinator's SuperLink (docs/federated.md, 'Across sites'). A site file (YAML) says
everything that SuperNode needs; relative paths are read from the file's folder:

    hospital: hospital_1                     # the hospital's name in the run (one of the run's `hospitals`)
    superlink: fl.coordinator.example.org:9092
    root_certificates: ca.crt                # the consortium's CA certificate (verifies the SuperLink over TLS)
    private_key: hospital_1.key              # the site's SuperNode key (OpenSSH, P-384); null: no authentication
    insecure: false                          # true only for a SuperLink on this machine's loopback (a local test)
    lmdb: /data/isic/lmdb                    # the hospital's LMDB store (dermsynth data ingest)
    federated_csv: /data/isic/federated.csv  # key,hospital,split,label,group: at least this hospital's rows
    state_dir: /data/fed-state               # the hospital's local training state between rounds
    device: cuda                             # cpu | cuda | auto
    threads: 8                               # CPU threads for torch (0: torch's default)
    runtime_port: 9094                       # the SuperNode's own Runtime API port on 127.0.0.1

`dermsynth federated certs --site-kits` writes one per site with the consortium's files beside it.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import yaml

from ..errors import ConfigError, DermsynthError
from .deploy import check_insecure, flower_command, split_address, stop_tree

REQUIRED = ("hospital", "superlink", "lmdb", "federated_csv", "state_dir")
PATH_KEYS = ("root_certificates", "private_key", "lmdb", "federated_csv", "state_dir")


@dataclass(frozen=True)
class Site:
    """One site's SuperNode (the site file's keys, paths absolute). `root_certificates` / `private_key`: None when
    absent (no TLS: `insecure`, loopback only / no SuperNode authentication)."""

    hospital: str
    superlink: str
    lmdb: str
    federated_csv: str
    state_dir: str
    root_certificates: str | None = None
    private_key: str | None = None
    insecure: bool = False
    device: str = "auto"
    threads: int = 0
    runtime_port: int = 9094

    def node_config(self) -> str:
        """The SuperNode's `--node-config` (`client.Hospital.from_node_config` reads it)."""
        return (f"hospital={self.hospital!r} lmdb={self.lmdb!r} federated-csv={self.federated_csv!r} "
                f"state-dir={self.state_dir!r} device={self.device!r} threads={self.threads}")

    def command(self, max_retries: int | None = None) -> list[str]:
        """The `flower-supernode` command line of this site."""
        transport = ["--insecure"] if self.insecure else ["--root-certificates", self.root_certificates]
        auth = ["--auth-supernode-private-key", self.private_key] if self.private_key else []
        retries = ["--max-retries", str(max_retries)] if max_retries is not None else []
        return [flower_command("flower-supernode"), *transport, *auth, "--superlink", self.superlink,
                "--port", str(self.runtime_port), *retries, "--node-config", self.node_config()]


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"site file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"site file {path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"site file {path}: must be a mapping of keys (hospital, superlink, …; "
                          "see dermsynth federated join --help)")
    known = {f.name for f in fields(Site)}
    unknown, missing = sorted(set(data) - known), [k for k in REQUIRED if data.get(k) in (None, "")]
    if unknown or missing:
        raise ConfigError(f"site file {path}: " + "; ".join(
            ([f"unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})"] if unknown else []) +
            ([f"set {', '.join(missing)}"] if missing else [])))
    return data


def _check_types(data: dict, path: Path) -> None:
    wrong = [key for key, kind in (("insecure", bool), ("threads", int), ("runtime_port", int))
             if key in data and (not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)))]
    wrong += [key for key in ("hospital", "superlink", "device", *PATH_KEYS)
              if data.get(key) is not None and not isinstance(data[key], str)]
    if data.get("device", "auto") not in ("auto", "cpu", "cuda"):
        wrong.append("device (cpu, cuda or auto)")
    if wrong:
        raise ConfigError(f"site file {path}: wrong type or value of {', '.join(wrong)}")


def load_site(path: str | Path) -> Site:
    """Read and check a site file (module docstring): its keys and types, the transport (TLS needs
    `root_certificates`, a readable PEM certificate; `insecure` only for a loopback SuperLink), the private key
    (an OpenSSH elliptic-curve key), the data (the LMDB folder exists; federated.csv has rows of `hospital`).
    The state folder is created. Raises ConfigError or DermsynthError in one line naming the file and key."""
    path = Path(path).resolve()
    data = _read(path)
    _check_types(data, path)
    for key in PATH_KEYS:
        if data.get(key):
            data[key] = str((path.parent / Path(data[key]).expanduser()).resolve())
    site = Site(**data)
    split_address(site.superlink)
    _check_transport(site, path)
    _check_data(site, path)
    Path(site.state_dir).mkdir(parents=True, exist_ok=True)
    return site


def _check_transport(site: Site, path: Path) -> None:
    if site.insecure:
        check_insecure(site.superlink, f"site file {path}: insecure: true")
        if site.root_certificates:
            raise ConfigError(f"site file {path}: insecure: true and root_certificates contradict each other; drop one")
        if site.private_key:
            raise ConfigError(f"site file {path}: insecure: true and private_key contradict each other: SuperNode "
                              "authentication needs TLS (set root_certificates and insecure: false, or private_key: "
                              "null for a SuperLink without authentication)")
    elif not site.root_certificates:
        raise ConfigError(f"site file {path}: set root_certificates (the consortium's ca.crt): the SuperLink at "
                          f"{site.superlink} is reached over TLS")
    else:
        from .certs import load_certificate  # deferred: cryptography only for a TLS site
        try:
            load_certificate(site.root_certificates)
        except DermsynthError as exc:
            raise ConfigError(f"site file {path}: root_certificates: {exc}") from None
    if site.private_key:
        # deferred: cryptography only for an authenticated site
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_ssh_private_key  # deferred: as above
        try:
            key = load_ssh_private_key(Path(site.private_key).read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"site file {path}: private_key {site.private_key} is not a readable OpenSSH private "
                              f"key without passphrase ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"site file {path}: private_key {site.private_key} is not an elliptic-curve key (Flower "
                              "needs a NIST curve: ssh-keygen -t ecdsa -b 384)")


def _check_data(site: Site, path: Path) -> None:
    if not Path(site.lmdb).is_dir():
        raise ConfigError(f"site file {path}: lmdb {site.lmdb} is not a folder (the hospital's LMDB store, written "
                          "by dermsynth data ingest)")
    try:
        table = pd.read_csv(site.federated_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"site file {path}: federated_csv {site.federated_csv} cannot be read ({exc})") from None
    if not {"key", "hospital", "label"} <= set(table.columns):
        raise ConfigError(f"site file {path}: federated_csv {site.federated_csv} lacks the columns key, hospital, "
                          "label")
    if not (table["hospital"] == site.hospital).any():
        found = ", ".join(sorted(set(table["hospital"]))[:5]) or "none"
        raise ConfigError(f"site file {path}: federated_csv {site.federated_csv} has no rows of hospital "
                          f"{site.hospital!r} (it has: {found})")


def write_site_kit(folder: str | Path, hospital: str, ca: Path, private_key: Path | None, superlink: str) -> Path:
    """A site's kit in `folder`: a copy of the CA certificate, its private key (0600) and public key when given, and
    a `site.yaml` naming them, the SuperLink address and placeholders for the data paths (the site fills them in:
    `load_site` refuses the placeholders, naming the key). Returns the site file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, folder / "ca.crt")
    if private_key is not None:
        shutil.copyfile(private_key, folder / private_key.name)
        (folder / private_key.name).chmod(0o600)
        shutil.copyfile(private_key.with_suffix(".pub"), folder / private_key.with_suffix(".pub").name)
    text = (f"# dermsynth federated join --site site.yaml (docs/federated.md, 'Across sites'). Relative paths: from this\n"
            f"# folder. Fill in the data paths: the hospital's own LMDB store and federated table.\n"
            f"hospital: {hospital}\nsuperlink: {superlink}\nroot_certificates: ca.crt\n"
            f"private_key: {private_key.name if private_key is not None else 'null'}\ninsecure: false\n"
            f"lmdb: /path/to/{hospital}/lmdb\nfederated_csv: /path/to/{hospital}/federated.csv\n"
            f"state_dir: fed-state\ndevice: auto\nthreads: 0\nruntime_port: 9094\n")
    (folder / "site.yaml").write_text(text)
    return folder / "site.yaml"


def command_line(site_file: str | Path, max_retries: int | None = None) -> str:
    """The checked site's `flower-supernode` command as one shell line (`join --print-command`)."""
    return shlex.join(load_site(site_file).command(max_retries))


def write_consortium(out: str | Path, addresses: list[str], sites: list[str], port: int, days: int,
                     site_kits: bool, keys_only: bool) -> None:
    """`dermsynth federated certs`: the sites' key pairs alone (`keys_only`), or a test consortium for the SuperLink
    `addresses` (127.0.0.1, ::1 and localhost added: the SuperLink's SuperExec dials it there;
    `certs.make_consortium`) and, with `site_kits`, a kit per site under `<out>/sites/<site>/` whose site file
    names the first address and `port`. Says what it wrote on stderr. Raises DermsynthError without addresses
    (unless `keys_only`), for a bad address or site name."""
    from .certs import make_consortium, make_site_keys  # deferred: cryptography only here and for TLS sites
    out = Path(out)
    if keys_only:
        for site in sites:
            private, public = make_site_keys(out, site)
            print(f"federated certs: {private} (stays at {site}), {public} (to the coordinator)", file=sys.stderr)
        return
    if not addresses:
        raise DermsynthError("federated certs: give --superlink-address (the SuperLink's host name or IP address as "
                             "the sites dial it), or --keys-only for key pairs alone")
    names = list(dict.fromkeys([*addresses, "127.0.0.1", "::1", "localhost"]))
    made = make_consortium(out, names, sites, days=days)
    print(f"federated certs: {made.ca}, {made.superlink_cert} (SANs {', '.join(names)}), key pairs of "
          f"{', '.join(sites)} in {out}", file=sys.stderr)
    if site_kits:
        host = addresses[0]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for site, (private, _) in made.sites.items():
            print(f"federated certs: {write_site_kit(out / 'sites' / site, site, made.ca, private, address)}",
                  file=sys.stderr)


def join(site_file: str | Path, max_retries: int | None = None) -> int:
    """`dermsynth federated join`: check the site file (`load_site`) and run its SuperNode in the foreground until
    it stops (SIGINT or SIGTERM stop it and everything it started). Returns 0 when it stopped on a signal or by
    itself without error. Raises DermsynthError when the SuperNode exits with an error (Flower logs its exit code
    305 when it could not connect or was refused — a key the SuperLink has not registered, a CA that did not sign
    the SuperLink's certificate, an address not reached; the process itself exits 1)."""
    site = load_site(site_file)
    print(f"federated join: {site.hospital}'s SuperNode → {site.superlink} "
          f"({'no TLS, loopback' if site.insecure else 'TLS'}"
          f"{', authenticated' if site.private_key else ''}), state in {site.state_dir}", file=sys.stderr)
    process = subprocess.Popen(site.command(max_retries))
    stopped = []

    def stop(signum, _frame):
        stopped.append(signum)
        stop_tree(process)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status != 0 and not stopped:
        raise DermsynthError(f"the SuperNode of {site.hospital} stopped with exit status {status}; its output is above "
                             "(Flower's 'Exit Code: 305' there: it could not connect or was refused — is its public key "
                             "registered at the SuperLink, root_certificates the consortium's CA, the address "
                             "reachable?)")
    return 0


__all__ = ["Site", "command_line", "join", "load_site", "write_consortium", "write_site_kit"]
