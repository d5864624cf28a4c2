"""The dev PKI: identities in the certificates, private keys unreadable by others, idempotent."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from services.common.pki import ensure_dev_pki, identity_uri, service_cert_paths


def test_certificates_name_their_service_and_keys_are_private(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path, ["router", "auth"])
    for service in ("router", "auth"):
        paths = service_cert_paths(tmp_path, service)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity_uri(service)]
        assert service in san.get_values_for_type(x509.DNSName)
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
        ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
        cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_second_call_keeps_existing_files_and_adds_missing_ones(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path, ["router"])
    before = service_cert_paths(tmp_path, "router").cert.read_bytes()
    ensure_dev_pki(tmp_path, ["router", "vault"])
    assert service_cert_paths(tmp_path, "router").cert.read_bytes() == before
    vault = x509.load_pem_x509_certificate(service_cert_paths(tmp_path, "vault").cert.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    vault.verify_directly_issued_by(ca)
