"""Readiness holds: every built name NOT_SERVING while any hold is set, liveness never held,
nothing SERVING again once a graceful shutdown began."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from services.common.readiness import Readiness

NAMES = ("saga.a.v1.AService", "saga.a.v1.BService")


async def statuses(health: health_aio.HealthServicer) -> dict[str, str]:
    out = {}
    for name in ("", *NAMES):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), None)
        out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return out


async def test_a_hold_keeps_every_name_not_serving_until_the_last_hold_is_released() -> None:
    health = health_aio.HealthServicer()
    readiness = Readiness(health)
    readiness.hold_at_start("sealed", "the vault is sealed")
    await readiness.start(NAMES)
    assert await statuses(health) == {
        "": "SERVING",
        NAMES[0]: "NOT_SERVING",
        NAMES[1]: "NOT_SERVING",
    }
    await readiness.hold("storage", "storage unreachable")
    await readiness.release("sealed")
    assert (await statuses(health))[NAMES[0]] == "NOT_SERVING"
    assert readiness.holds == {"storage": "storage unreachable"}
    await readiness.release("storage")
    assert await statuses(health) == dict.fromkeys(("", *NAMES), "SERVING")


async def test_no_release_brings_a_name_back_after_the_graceful_shutdown_began() -> None:
    health = health_aio.HealthServicer()
    readiness = Readiness(health)
    await readiness.start(NAMES)
    await readiness.hold("storage", "storage unreachable")
    await readiness.enter_graceful_shutdown()
    await readiness.release("storage")
    assert set((await statuses(health)).values()) == {"NOT_SERVING"}
