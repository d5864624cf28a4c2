"""auth's gRPC service, registered with the shared bootstrap."""

from __future__ import annotations

import asyncio

from services.auth.servicer import AuthServicer
from services.common.context import ensure_context_keys, load_public_key
from services.common.server import Registration, ServiceHost


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    private_path, public_path = host.config.context_key_paths
    if not host.config.context.public_key_file:
        # Default key location: the key pair is made on first start (by auth or the gateway).
        await asyncio.to_thread(ensure_context_keys, private_path, public_path)
    context_key = await asyncio.to_thread(load_public_key, public_path)
    return [Registration.of(AuthServicer([context_key]))]
