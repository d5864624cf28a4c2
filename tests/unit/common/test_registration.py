"""`Registration.of(servicer, raw_responses=…)`: the named RPCs send the bytes the servicer
yields as they are, the others are served as the generated registration would serve them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.server import Registration

SERVING = health_pb2.HealthCheckResponse.SERVING


class RawWatch(health_pb2_grpc.HealthServicer):
    """Check answers a message; Watch yields responses it serialized itself."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Watch(  # type: ignore[override]
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[bytes]:
        for status in (SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
            yield health_pb2.HealthCheckResponse(status=status).SerializeToString()


async def test_raw_responses_are_sent_as_the_servicer_serialized_them() -> None:
    registration = Registration.of(RawWatch(), raw_responses={"Watch"})
    assert registration.name == "grpc.health.v1.Health"
    server = grpc.aio.server()
    registration.add(registration.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            checked = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            watched = [r.status async for r in stub.Watch(health_pb2.HealthCheckRequest())]
    finally:
        await server.stop(None)
    assert checked.status == SERVING
    assert watched == [SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def test_an_unknown_rpc_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"grpc\.health\.v1\.Health has no RPC \['Wach'\]"):
        Registration.of(RawWatch(), raw_responses={"Wach"})


def test_without_raw_responses_the_generated_registration_is_used() -> None:
    registration = Registration.of(RawWatch())
    assert registration.add is health_pb2_grpc.add_HealthServicer_to_server


class OnlyCheck(health_pb2_grpc.HealthServicer):
    """One RPC of two built."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=SERVING)


def test_a_service_is_built_when_any_of_its_rpcs_is() -> None:
    assert Registration.of(RawWatch()).built
    assert Registration.of(OnlyCheck()).built
    # Nothing overridden: every RPC is the generated UNIMPLEMENTED stub (not ready in health).
    assert not Registration.unbuilt(health_pb2_grpc.HealthServicer).built
    assert not Registration.of(health_pb2_grpc.HealthServicer()).built
