"""Certificates and keys of a federation (`dermsynth federated certs`), with `cryptography`.

A consortium needs (Flower ≥ 1.42, docs/federated.md, 'Across sites'):

- a CA: `ca.crt` (every SuperNode and the `flwr` CLI verify the SuperLink with it) and `ca.key` (stays with whoever
  signs; only needed to sign another SuperLink certificate);
- the SuperLink's TLS certificate `superlink.crt` + key `superlink.key`, signed by the CA, whose subject alternative
  names are the addresses the sites connect to (an IP address as an IP SAN, a name as a DNS SAN: TLS checks the
  address a SuperNode dials against them);
- one key pair per site for SuperNode authentication: `<site>.key` (the private key, OpenSSH format, stays at the
  site: `flower-supernode --auth-supernode-private-key`) and `<site>.pub` (the public key, OpenSSH format, which
  the coordinator registers: `flwr supernode register <site>.pub`). Flower accepts NIST elliptic curves; P-384 here.

A site that makes its own key pair (`ssh-keygen -t ecdsa -b 384 -N "" -f hospital_1.key`) sends only the `.pub`.
Private keys are written with mode 0600. Keys and certificates are PEM (certificates) or OpenSSH (site keys).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import DermsynthError

CURVE = ec.SECP384R1
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Consortium:
    """The files `make_consortium` wrote: `ca` (ca.crt), `ca_key`, `superlink_cert`, `superlink_key`, and per site
    its (private key, public key) paths."""

    ca: Path
    ca_key: Path
    superlink_cert: Path
    superlink_key: Path
    sites: dict[str, tuple[Path, Path]]


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:  # created 0600 before anything is written into it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(path, 0o600)
    else:
        path.write_bytes(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def san_entry(address: str) -> x509.GeneralName:
    """The subject-alternative-name entry of one SuperLink address (host, without port): an IP SAN for an IPv4/IPv6
    literal, a DNS SAN otherwise. Raises DermsynthError for an empty address or one with a port or a scheme."""
    host = address.strip()
    if not host or "/" in host or (host.count(":") == 1):
        raise DermsynthError(f"SuperLink address {address!r}: give the host name or IP address the sites dial, "
                             "without port or scheme (e.g. fl.hospital-a.org or 192.0.2.10)")
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dermsynth federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca(folder: Path, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (P-384, `days` valid): writes `folder/ca.crt` and `folder/ca.key` (0600)."""
    key = ec.generate_private_key(CURVE())
    name = _name("dermsynth federation CA")
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    _write(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write(folder / "ca.key", _pem_key(key), private=True)
    return key, cert


def make_superlink_cert(folder: Path, ca_key, ca_cert: x509.Certificate, addresses: list[str], days: int) -> Path:
    """The SuperLink's TLS certificate signed by the CA, its SANs `addresses` (`san_entry`): writes
    `folder/superlink.crt` and `folder/superlink.key` (0600); returns the certificate's path."""
    if not addresses:
        raise DermsynthError("the SuperLink certificate needs at least one address (--superlink-address)")
    key = ec.generate_private_key(CURVE())
    cert = (_builder(_name(addresses[0]), ca_cert.subject, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName([san_entry(a) for a in addresses]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    _write(folder / "superlink.key", _pem_key(key), private=True)
    return _write(folder / "superlink.crt", cert.public_bytes(serialization.Encoding.PEM))


def make_site_keys(folder: Path, site: str) -> tuple[Path, Path]:
    """A site's SuperNode authentication key pair (P-384, OpenSSH): `folder/<site>.key` (0600) and
    `folder/<site>.pub`. Raises DermsynthError for a name that is not a plain file name."""
    if not SITE_NAME.match(site):
        raise DermsynthError(f"site name {site!r}: use letters, digits, '_', '-', '.' (it names the key files)")
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (_write(folder / f"{site}.key", private, private=True),
            _write(folder / f"{site}.pub", public + f" {site}\n".encode()))


def make_consortium(folder: str | Path, addresses: list[str], sites: list[str], days: int = 365) -> Consortium:
    """A test consortium in `folder`: CA, SuperLink certificate for `addresses`, a key pair per site (see the module
    docstring). Existing files are replaced. Raises DermsynthError for a bad address or site name."""
    folder = Path(folder)
    for address in addresses:
        san_entry(address)  # every address checked before anything is written
    ca_key, ca_cert = make_ca(folder, days)
    cert = make_superlink_cert(folder, ca_key, ca_cert, addresses, days)
    keys = {site: make_site_keys(folder, site) for site in sites}
    return Consortium(folder / "ca.crt", folder / "ca.key", cert, folder / "superlink.key", keys)


def load_certificate(path: str | Path) -> x509.Certificate:
    """A PEM certificate. Raises DermsynthError naming the file when it is missing or not a PEM certificate."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise DermsynthError(f"{path}: not a readable PEM certificate ({exc})") from None


def certificate_names(path: str | Path) -> list[str]:
    """The subject alternative names (IP addresses and DNS names, as text) of the PEM certificate at `path`."""
    try:
        san = load_certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


__all__ = ["CURVE", "Consortium", "certificate_names", "load_certificate", "make_ca", "make_consortium",
           "make_site_keys", "make_superlink_cert", "san_entry"]
