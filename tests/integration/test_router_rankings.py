"""The router never waits for the optimizer: configuration order before any snapshot, the
snapshot once the optimizer is up (reconnecting by itself), the last snapshot after the
optimizer went away."""

from __future__ import annotations

import asyncio
from pathlib import Path

from saga.execution.v1 import common_pb2
from tests.harness import stack_for
from tests.integration.test_router_reason import (
    PROVIDERS,
    eventually_first,
    first_attempt,
    mint,
    new_execution_id,
    request,
    stream_reason,
)


async def test_reason_works_without_and_after_the_optimizer(tmp_path: Path) -> None:
    cheapest = common_pb2.STRATEGY_CHEAPEST
    async with (
        stack_for(tmp_path, ["auth", "router"], config=PROVIDERS) as stack,
        stack.channel_as("runtime", "router") as ch,
    ):
        # No optimizer yet: configuration order ("smart" is listed first).
        assert await first_attempt(ch, stack, strategy=cheapest) == "smart"
        exe = new_execution_id()
        got = await stream_reason(ch, request(exe), mint(stack, exe))
        assert got.error is None
        assert got.events[-1].final.provider == "smart"

        # The optimizer comes up: the router's watch reconnects and ranks from it.
        await stack.start_all(["optimizer"])
        await eventually_first(ch, stack, "cheap", within=30.0, strategy=cheapest)

        # The optimizer goes away: the last snapshot stays in use, calls still stream.
        assert await asyncio.to_thread(stack.stop, "optimizer") == 0
        exe = new_execution_id()
        got = await stream_reason(ch, request(exe, strategy=cheapest), mint(stack, exe))
        assert got.error is None
        assert got.events[-1].final.provider == "cheap"
        assert got.events[-1].final.usage.output_tokens == 6
    # Reports to the stopped optimizer failed quietly: logged, never raised into a call.
    assert "Traceback" not in stack.read_log("router").split('"msg": "Failed to detach')[0]
