"""The gateway's gRPC services, registered with the shared bootstrap.

The contracts are declared in full; RPCs not built yet are inherited from the generated base
servicers, which the guard answers with UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from __future__ import annotations

from saga.gateway.v1 import (
    account_pb2_grpc,
    admin_pb2_grpc,
    execution_pb2_grpc,
    pack_health_pb2_grpc,
    sessions_pb2_grpc,
    usage_pb2_grpc,
)
from services.common.server import Registration, ServiceHost


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    return [
        Registration.unbuilt(execution_pb2_grpc.ExecutionServiceServicer),
        Registration.unbuilt(pack_health_pb2_grpc.PackHealthServiceServicer),
        Registration.unbuilt(sessions_pb2_grpc.SessionServiceServicer),
        Registration.unbuilt(usage_pb2_grpc.UsageServiceServicer),
        Registration.unbuilt(account_pb2_grpc.AccountServiceServicer),
        Registration.unbuilt(admin_pb2_grpc.AdminServiceServicer),
    ]
