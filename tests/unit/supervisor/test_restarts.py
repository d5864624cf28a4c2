"""The supervisor's restart rule, on real child processes that exit as told."""

from __future__ import annotations

import asyncio
import sys

from services.common.backoff import Backoff
from services.common.config import EXIT_CONFIG
from services.supervisor.__main__ import RestartPolicy, keep_running

FAST = RestartPolicy(
    crash_loop_limit=3, crash_loop_window=60, backoff=Backoff(initial=0.01, maximum=0.02)
)


async def child(code: int, after: float = 0.0) -> asyncio.subprocess.Process:
    """A process that exits with `code` after `after` seconds."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import sys, time; time.sleep({after}); sys.exit({code})"
    )


async def test_a_crash_loop_stops_the_supervisor_after_the_limit() -> None:
    started: list[str] = []

    async def restart(service: str) -> asyncio.subprocess.Process:
        started.append(service)
        return await child(3)

    processes = {"router": await child(3), "gateway": await child(0, after=30)}
    try:
        code = await asyncio.wait_for(keep_running(processes, restart, asyncio.Event(), FAST), 20)
    finally:
        processes["gateway"].kill()
        await processes["gateway"].wait()
    assert code == 1
    assert started == ["router", "router"]  # the third exit is the loop: no third restart


async def test_a_configuration_error_is_not_restarted() -> None:
    started: list[str] = []

    async def restart(service: str) -> asyncio.subprocess.Process:
        started.append(service)
        return await child(0, after=30)

    auth = await child(EXIT_CONFIG)
    code = await asyncio.wait_for(keep_running({"auth": auth}, restart, asyncio.Event(), FAST), 20)
    await auth.wait()
    assert (code, started) == (1, [])


async def test_a_lone_crash_is_restarted_and_a_stop_ends_the_watch() -> None:
    stop = asyncio.Event()
    restarted: list[asyncio.subprocess.Process] = []

    async def restart(service: str) -> asyncio.subprocess.Process:
        process = await child(0, after=30)
        restarted.append(process)
        stop.set()  # the operator presses Ctrl-C once the service is back
        return process

    code = await asyncio.wait_for(keep_running({"router": await child(3)}, restart, stop, FAST), 20)
    restarted[0].kill()
    await restarted[0].wait()
    assert (code, len(restarted)) == (0, 1)
