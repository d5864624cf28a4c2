"""The vault's gRPC service, registered with the shared bootstrap.

Start-up order matters: the keyring is loaded (and its file's mode checked) before anything
else, so an unsafe or malformed keyring ends the process with exit 78 and a message naming
the file and the fix; then the database is opened and the keyring is checked against the
canary, which decides whether the vault serves or stays sealed.
"""

from __future__ import annotations

import asyncio
import logging
import os

from services.common.guard import identify_for
from services.common.server import Registration, ServiceHost
from services.vault.audit import AuditLog
from services.vault.barrier import Barrier
from services.vault.keyring_sources import keyring_source
from services.vault.schema import MIGRATIONS
from services.vault.servicer import VaultServicer
from services.vault.store import SecretStore

log = logging.getLogger("saga.vault")


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    # A bad keyring raises KeyringError, a ConfigError: the bootstrap exits 78 with it.
    source = keyring_source(config.vault, config.data_path, os.environ)
    keyring = await asyncio.to_thread(source.load)

    store = SecretStore(await host.open_database(MIGRATIONS))
    host.on_stop(store.close)
    barrier = await Barrier.open(store, source, keyring)
    audit = AuditLog(store, lambda: barrier.keyring)
    registration = Registration.of(
        VaultServicer(barrier, audit, identify_for(config.tls.mode), config.vault.rewrap_batch_size)
    )
    if barrier.sealed:
        host.hold_readiness("sealed", barrier.sealed_reason)
    return [registration]
