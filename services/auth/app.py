"""auth's gRPC service, registered with the shared bootstrap."""

from __future__ import annotations

import asyncio

from services.auth.accounts import Accounts
from services.auth.bootstrap import create_admin_key
from services.auth.servicer import AuthServicer
from services.auth.store import Store
from services.common.context import (
    ContextVerifier,
    ensure_context_keys,
    load_public_key,
    static_keys,
)
from services.common.server import Registration, ServiceHost


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    private_path, public_path = host.config.context_key_paths
    if not host.config.context.public_key_file:
        # Default key location: the key pair is made on first start (by auth or the gateway).
        await asyncio.to_thread(ensure_context_keys, private_path, public_path)
    context_key = await asyncio.to_thread(load_public_key, public_path)

    data = host.config.data_path
    store = await Store.open(data / "auth.db")
    host.on_stop(store.close)
    await create_admin_key(store, data)
    # auth holds the context public key itself: no JWKS round trip to verify a context.
    contexts = ContextVerifier(static_keys(context_key))
    return [Registration.of(AuthServicer([context_key], Accounts(store), contexts))]
