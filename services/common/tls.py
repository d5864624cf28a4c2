"""Transport credentials for servers and channels, from the `[tls]` configuration."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from services.common.config import Config
from services.common.identity import SERVICES
from services.common.pki import CertPaths, ensure_dev_pki, service_cert_paths


def cert_paths(config: Config, service: str) -> CertPaths | None:
    """The certificate files `service` presents, or None in plaintext mode."""
    if config.tls.mode == "plaintext":
        return None
    if config.tls.mode == "files":
        return CertPaths(
            cert=Path(config.tls.cert_file),
            key=Path(config.tls.key_file),
            ca=Path(config.tls.ca_file),
        )
    ensure_dev_pki(config.pki_dir, list(SERVICES))
    return service_cert_paths(config.pki_dir, service)


def server_credentials(config: Config, service: str) -> grpc.ServerCredentials | None:
    """mTLS server credentials that require a client certificate from our CA."""
    paths = cert_paths(config, service)
    if paths is None:
        return None
    chain, key, ca = paths.read()
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(config: Config, service: str) -> grpc.ChannelCredentials | None:
    """mTLS channel credentials presenting `service`'s certificate."""
    paths = cert_paths(config, service)
    if paths is None:
        return None
    chain, key, ca = paths.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


def _public_files(config: Config) -> tuple[str, str] | None:
    gateway = config.gateway
    if not gateway.public_cert_file:
        return None
    return gateway.public_cert_file, gateway.public_key_file


def public_server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS (no client certificate: callers authenticate by bearer credential) for the
    gateway's public gRPC port, or None for plaintext."""
    files = _public_files(config)
    if files is None:
        return None
    chain, key = (Path(f).read_bytes() for f in files)
    return grpc.ssl_server_credentials([(key, chain)])


def public_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The same certificate for the HTTP port (TLS 1.2 or later), or None for plaintext."""
    files = _public_files(config)
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(*files)
    return context
