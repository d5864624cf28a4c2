"""The vault's gRPC services, registered with the shared bootstrap.

The contracts are declared in full; RPCs not built yet are inherited from the generated base
servicers, which the guard answers with UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from __future__ import annotations

from saga.vault.v1 import vault_pb2_grpc
from services.common.server import Registration, ServiceHost


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    return [
        Registration.unbuilt(vault_pb2_grpc.VaultServiceServicer),
    ]
