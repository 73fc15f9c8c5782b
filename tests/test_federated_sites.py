"""Federated training across sites (issue 31): certificates, TLS, plain text only on loopback, the site kit.

The certificates are checked with Python's own TLS (OpenSSL through `ssl`), not with the code that made them; the
site kit through `dermsynth federated join`. The runs with real Flower processes (a TLS run with authenticated
SuperNodes equal to the insecure one, an uninvited SuperNode refused, dropout and rejoin under TLS) are in
tests/test_federated.py beside the insecure runs they are compared with; here a SuperLink over TLS and a SuperNode
that does not hold the consortium's CA.
"""

from __future__ import annotations

import dataclasses

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from dermsynth.config import validate_config
from dermsynth.errors import ConfigError, DermsynthError
from dermsynth.federated.certs import make_consortium
from dermsynth.federated.deploy import CONNECTION, Federation, Security, check_insecure, flower_command
from dermsynth.federated.launch import APP_FOLDER
from dermsynth.federated.options import TrainFederatedOptions
from dermsynth.federated.sites import load_site, write_site_kit

from .conftest import demo_config


def _handshake(consortium, server_name: str) -> str:
    """A TLS handshake over a socket pair: server with the SuperLink's certificate, client verifying against the
    consortium's CA and `server_name`; returns the negotiated version. Raises ssl.SSLCertVerificationError."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(consortium.superlink_cert, consortium.superlink_key)
    client_ctx = ssl.create_default_context(cafile=str(consortium.ca))
    a, b = socket.socketpair()
    errors = []

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_name) as c:
            c.sendall(b"x")
            return c.version()
    finally:
        thread.join(timeout=10)


def test_the_superlink_certificate_verifies_for_its_addresses_only(tmp_path):
    made = make_consortium(tmp_path, ["fl.example.org", "192.0.2.10", "127.0.0.1"], ["hospital_1", "hospital_2"])
    for name in ("fl.example.org", "192.0.2.10", "127.0.0.1"):
        assert _handshake(made, name).startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"):
        _handshake(made, "other.example.org")
    other = make_consortium(tmp_path / "other", ["fl.example.org"], [])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer|self-signed|verify failed"):
        _handshake(type(made)(other.ca, other.ca_key, made.superlink_cert, made.superlink_key, {}), "fl.example.org")
    cert = x509.load_pem_x509_certificate(made.superlink_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org"]  # an IP is an IP SAN, not a DNS name
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10", "127.0.0.1"]


def test_site_keys_are_p384_openssh_pairs_and_private_files_are_0600(tmp_path):
    made = make_consortium(tmp_path, ["127.0.0.1"], ["hospital_1"])
    private, public = made.sites["hospital_1"]
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert load_ssh_public_key(public.read_bytes()).public_numbers() == key.public_key().public_numbers()
    for path in (private, made.ca_key, made.superlink_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    with pytest.raises(DermsynthError, match="without port"):
        make_consortium(tmp_path / "x", ["fl.example.org:9092"], [])


@pytest.mark.parametrize("address", ["127.0.0.1:9092", "localhost:9092", "[::1]:9092", "127.0.0.2:1"])
def test_plain_text_is_allowed_on_loopback(address):
    check_insecure(address, "test")


@pytest.mark.parametrize("address", ["10.0.0.5:9092", "fl.example.org:9092", "0.0.0.0:9092", "[2001:db8::1]:9092"])
def test_plain_text_is_refused_off_loopback(address):
    with pytest.raises(DermsynthError, match="not loopback") as info:
        check_insecure(address, "site file x.yaml: insecure: true")
    assert "\n" not in str(info.value) and "x.yaml" in str(info.value)


def _run_config(**changes) -> dict:
    raw = demo_config(Path("/nonexistent"))
    raw["federated"]["isic"].update(changes)
    return validate_config(raw, workflow=True)


def test_authentication_without_tls_and_secure_aggregation_are_refused_in_one_line():
    assert TrainFederatedOptions.from_config(_run_config(tls=True, supernode_auth=True), "isic").security.supernode_auth
    for changes, said in (({"supernode_auth": True}, "needs tls: true"),
                          ({"secure_aggregation": True}, "legacy strategy API"),
                          ({"tls": True, "supernode_auth": True, "runtime": "simulation"}, "needs runtime: deployment")):
        with pytest.raises(ConfigError, match=said) as info:
            TrainFederatedOptions.from_config(_run_config(**changes), "isic")
        assert "\n" not in str(info.value) and "federated.isic" in str(info.value)


def test_fine_tuning_keys_in_a_federated_run_are_refused_naming_them():
    """`init`/`freeze_d` reach `federated.*` through the shared generator properties, but a hospital cannot read the
    coordinator's checkpoint: the config check (check-config, the Snakefile) and the options both refuse them."""
    for changes, said in (({"init": "results/gan/ham10000/network-final.pt"}, "'federated.isic': init: not available"),
                          ({"init": "x.pt", "freeze_d": 2}, "'federated.isic': init and freeze_d: not available")):
        with pytest.raises(ConfigError, match=said):
            _run_config(**changes)
    options = TrainFederatedOptions.from_config(_run_config(), "isic")  # an options file written by hand
    with pytest.raises(ConfigError, match="federated.isic: freeze_d: not available"):
        dataclasses.replace(options, training={**options.training, "freeze_d": 1})


# --- the site kit ----------------------------------------------------------------------------------------------
@pytest.fixture()
def site_data(tmp_path):
    (tmp_path / "lmdb").mkdir()
    pd.DataFrame([{"key": "a", "hospital": "hospital_1", "split": "train", "label": "nv", "group": "p1"}]).to_csv(
        tmp_path / "federated.csv", index=False)
    return tmp_path


def _site_file(folder: Path, data: Path, **changes) -> Path:
    made = make_consortium(folder / "certs", ["fl.example.org"], ["hospital_1"])
    kit = write_site_kit(folder / "kit", "hospital_1", made.ca, made.sites["hospital_1"][0], "fl.example.org:9092")
    site = {**yaml.safe_load(kit.read_text()), "lmdb": str(data / "lmdb"),
            "federated_csv": str(data / "federated.csv"), **changes}
    kit.write_text(yaml.safe_dump(site))
    return kit


def _join(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dermsynth.cli", "federated", "join", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_site_kit_gives_the_supernode_its_tls_key_and_data(tmp_path, site_data):
    site_file = _site_file(tmp_path, site_data)
    site = load_site(site_file)
    command = site.command()
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "kit" / "ca.crt")
    assert command[command.index("--auth-supernode-private-key") + 1] == str(tmp_path / "kit" / "hospital_1.key")
    assert command[command.index("--superlink") + 1] == "fl.example.org:9092" and "--insecure" not in command
    assert "hospital='hospital_1'" in site.node_config() and (tmp_path / "kit" / "fed-state").is_dir()
    printed = _join("--site", str(site_file), "--print-command")
    assert printed.returncode == 0 and "--root-certificates" in printed.stdout


@pytest.mark.parametrize("changes, said", [
    ({"insecure": True, "root_certificates": None}, "not loopback"),
    ({"root_certificates": None}, "set root_certificates"),
    ({"hospital": "hospital_9"}, "no rows of hospital 'hospital_9'"),
    ({"lmdb": "/nonexistent/lmdb"}, "is not a folder"),
    ({"port": 1}, "unknown keys port"),
    ({"private_key": "ca.crt"}, "not a readable OpenSSH private key"),
    ({"insecure": True, "root_certificates": None, "superlink": "127.0.0.1:9092"},
     "SuperNode authentication needs TLS"),
    ({"root_certificates": "missing.crt"}, "root_certificates:"),
])
def test_a_wrong_site_file_is_refused_in_one_line_naming_it(tmp_path, site_data, changes, said):
    site_file = _site_file(tmp_path, site_data, **changes)
    result = _join("--site", str(site_file), "--print-command")
    assert result.returncode == 2 and said in result.stderr and str(site_file) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


# --- a SuperLink over TLS: a SuperNode without the consortium's CA cannot connect ------------------------------
def test_a_supernode_without_the_consortiums_ca_cannot_connect(tmp_path, site_data):
    made = make_consortium(tmp_path / "certs", ["127.0.0.1", "localhost"], [])
    stranger = make_consortium(tmp_path / "stranger", ["127.0.0.1"], ["hospital_1"])  # another CA, its own key
    security = Security(made.ca, made.superlink_cert, made.superlink_key)
    with Federation(APP_FOLDER, tmp_path / "flower", tmp_path / "logs", {}, security=security) as federation:
        kit = write_site_kit(tmp_path / "kit", "hospital_1", stranger.ca, None, f"127.0.0.1:{federation.port}")
        site = {**yaml.safe_load(kit.read_text()), "lmdb": str(site_data / "lmdb"),
                "federated_csv": str(site_data / "federated.csv"), "runtime_port": _free_port()}
        kit.write_text(yaml.safe_dump(site))
        result = _join("--site", str(kit), "--max-retries", "1")
        listed = subprocess.run([flower_command("flwr"), "supernode", "ls", CONNECTION, "--format", "json"],
                                capture_output=True, text=True, env=federation.env, timeout=120)
    assert result.returncode == 2 and "the SuperNode of hospital_1 stopped with exit status" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr
    # the flwr CLI verifies the SuperLink with the right CA; no SuperNode ever registered
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert json.loads(listed.stdout[listed.stdout.index("{"):]).get("nodes", []) == []
    config = (tmp_path / "flower" / "home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
