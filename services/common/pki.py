"""The local development PKI: one CA and one certificate per service, made on first start.

Each certificate carries the service's identity as a URI SAN (`spiffe://saga/<service>`),
which is what the authorization layer reads from the peer. Keys are written 0600. Several
processes may start at once, so creation happens under an exclusive file lock and is
idempotent: whoever comes second finds the files and leaves them alone.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_PREFIX = "spiffe://saga/"
_VALIDITY = dt.timedelta(days=365)


def identity_uri(service: str) -> str:
    """The URI SAN that names `service` in its certificate."""
    return f"{SPIFFE_PREFIX}{service}"


@dataclass(frozen=True)
class CertPaths:
    """Where one service's certificate, key and the CA bundle it trusts live."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle) as PEM bytes."""
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file only its owner can read (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_leaf(
    service: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(service)),
        x509.DNSName(service),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def ensure_dev_pki(directory: Path, services: list[str], ca_name: str = "Saga dev CA") -> None:
    """Create the CA and any missing service certificate under `directory` (idempotent)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
        if ca_cert_path.exists() and ca_key_path.exists():
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        else:
            ca_key, ca_cert = _new_ca(ca_name)
            write_private(ca_key_path, _key_pem(ca_key))
            ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for service in services:
            paths = service_cert_paths(directory, service)
            if paths.cert.exists() and paths.key.exists():
                continue
            key, cert = _new_leaf(service, ca_key, ca_cert)
            write_private(paths.key, _key_pem(key))
            paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def service_cert_paths(directory: Path, service: str) -> CertPaths:
    """The conventional file names of `service`'s certificate under a PKI directory."""
    return CertPaths(
        cert=directory / f"{service}.pem",
        key=directory / f"{service}.key",
        ca=directory / "ca.pem",
    )
