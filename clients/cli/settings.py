"""Where the CLI finds the gateway and its credential.

Each comes from the first of: its flag, its environment variable, the configuration the
services read (the file `SAGA_CONFIG` names, else `./saga.toml`, with their `SAGA_…`
overrides — loaded with `services.common.config.load_config`, only when needed), and the
default. So a CLI started beside `make run` or a deployment's `saga.toml` needs no flags.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import grpc

from services.common.config import Config, load_config

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")

Metadata = tuple[tuple[str, str]]
"""gRPC call metadata: the one `authorization` header."""


class Settings:
    """The CLI's view of one invocation: flags first, then environment, then configuration."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str] | None = None) -> None:
        self._args = args
        self._env = dict(os.environ if env is None else env)

    @functools.cached_property
    def _config(self) -> Config:
        # Raises ConfigError (naming key and fix) for a configuration the services would
        # refuse too; the CLI prints it as one line.
        return load_config(env=self._env)

    def data_dir(self) -> Path:
        """--data-dir, $SAGA_DATA_DIR, the configuration's `data_dir`, or `.saga`."""
        if self._args.data_dir:
            return Path(self._args.data_dir)
        if self._env.get("SAGA_DATA_DIR"):
            return Path(self._env["SAGA_DATA_DIR"])
        return self._config.data_path

    def gateway(self) -> str:
        """--gateway, $SAGA_GATEWAY, or the configuration's `services.gateway` address (its
        `target`, else host:port with a wildcard bind address read as 127.0.0.1)."""
        if self._args.gateway:
            return str(self._args.gateway)
        if self._env.get("SAGA_GATEWAY"):
            return self._env["SAGA_GATEWAY"]
        service = self._config.services.gateway
        if service.target:
            return service.target
        host = "127.0.0.1" if service.host in _WILDCARD_HOSTS else service.host
        return f"[{host}]:{service.port}" if ":" in host else f"{host}:{service.port}"

    def channel(self) -> grpc.aio.Channel:
        """A channel to the gateway: TLS when --ca-file/$SAGA_GATEWAY_CA_FILE names the CA
        that signed its certificate or --tls/$SAGA_GATEWAY_TLS=1 asks for the system's
        roots, else plaintext (the local default)."""
        ca_file = self._args.ca_file or self._env.get("SAGA_GATEWAY_CA_FILE", "")
        tls = self._args.tls or self._env.get("SAGA_GATEWAY_TLS", "") in ("1", "true")
        if not ca_file and not tls:
            return grpc.aio.insecure_channel(self.gateway())
        try:
            roots = Path(ca_file).read_bytes() if ca_file else None
        except OSError as error:
            raise SystemExit(f"saga: cannot read the CA file {ca_file}: {error}") from None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.aio.secure_channel(self.gateway(), credentials)

    def metadata(self) -> Metadata:
        """The call metadata that carries the credential."""
        return (("authorization", f"Bearer {self.credential()}"),)

    def credential(self) -> str:
        """--key, $SAGA_API_KEY, or the admin key `make run` wrote to <data_dir>/admin.key."""
        if self._args.key:
            return str(self._args.key)
        if self._env.get("SAGA_API_KEY"):
            return self._env["SAGA_API_KEY"]
        path = self.data_dir() / "admin.key"
        try:
            return path.read_text().strip()
        except OSError:
            raise SystemExit(
                f"saga: no credential: pass --key, set SAGA_API_KEY, or run `make run` "
                f"once to create {path}"
            ) from None
