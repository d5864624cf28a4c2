"""The storage watch's hysteresis: N failed probes in a row hold readiness, M good ones in a
row release it; a streak broken halfway changes nothing."""

from __future__ import annotations

from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from services.common.config import StorageConfig
from services.common.readiness import Readiness
from services.common.storage_watch import HOLD, StorageWatch


class Answers:
    """A database whose probes answer as scripted (a stand-in for the network, not for
    our own code)."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self, within: float) -> bool:
        return self.up


async def probes(watch: StorageWatch, count: int) -> None:
    for _ in range(count):
        await watch.probe_once()


async def test_failures_in_a_row_hold_readiness_and_successes_in_a_row_release_it() -> None:
    readiness = Readiness(health_aio.HealthServicer())
    await readiness.start(["saga.a.v1.AService"])
    db = Answers()
    watch = StorageWatch(db, readiness, StorageConfig(probe_failures=3, probe_successes=2))
    db.up = False
    await probes(watch, 2)
    db.up = True
    await probes(watch, 1)
    db.up = False
    await probes(watch, 2)
    assert readiness.ready, "two failures, a success, two failures: no streak of three"
    await probes(watch, 1)
    assert readiness.holds == {HOLD: "storage unreachable"}
    assert not watch.reachable
    db.up = True
    await probes(watch, 1)
    db.up = False
    await probes(watch, 1)
    db.up = True
    await probes(watch, 1)
    assert not readiness.ready, "no two good probes in a row yet"
    await probes(watch, 1)
    assert readiness.ready
    assert watch.reachable
