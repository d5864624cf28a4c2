"""A circuit breaker per agent, over real processes: with the router down, `llm` steps fail
UNAVAILABLE; after `runtime.agent_circuit_failures` of them in a row the `llm` agent's
circuit opens, its next step fails fast AGENT_CIRCUIT_OPEN with RetryInfo, ListCapabilities
shows it OPEN for every llm capability (the other agents' CLOSED), and so does
`saga_runtime_agent_circuit_state`."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from saga.router.v1 import providers_pb2
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.status import describe
from tests.harness import metric, stack_for
from tests.integration.test_runtime_run_pattern import chat_request, context_for, new_execution_id


async def test_an_agent_that_keeps_failing_fails_fast_until_its_cooldown(tmp_path: Path) -> None:
    async with stack_for(
        tmp_path,
        ["auth", "runtime"],  # no router: every llm step fails UNAVAILABLE
        SAGA_RUNTIME__AGENT_CIRCUIT_FAILURES="2",
        SAGA_RUNTIME__AGENT_CIRCUIT_COOLDOWN_SECONDS="600",
    ) as stack:
        async with stack.channel_as("gateway", "runtime") as ch:
            stub = runtime_pb2_grpc.RuntimeServiceStub(ch)
            reasons = []
            for _ in range(3):
                execution_id = new_execution_id()
                call = stub.RunPattern(
                    chat_request(execution_id, prompt="Hi"),
                    metadata=context_for(stack, execution_id),
                    timeout=30,
                )
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    _ = [event async for event in call]
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE
                reasons.append(describe(error.value))
            listed = await stub.ListCapabilities(runtime_pb2.ListCapabilitiesRequest(), timeout=5)
        assert "AGENT_CIRCUIT_OPEN" not in [d.reason for d in reasons[:2]]
        opened = reasons[2]
        assert (opened.reason, opened.domain) == ("AGENT_CIRCUIT_OPEN", "runtime.saga")
        assert opened.metadata["agent"] == "llm"
        assert opened.retry_after is not None
        assert 0 < opened.retry_after <= 600
        states = {c.name: c.circuit_state for c in listed.capabilities}
        assert states["llm.complete"] == providers_pb2.CIRCUIT_STATE_OPEN
        assert states["llm.extract"] == providers_pb2.CIRCUIT_STATE_OPEN
        assert states["ledger.positions"] == providers_pb2.CIRCUIT_STATE_CLOSED
        gauge = "saga_runtime_agent_circuit_state"
        assert await metric(stack, "runtime", gauge, agent="llm") == 2
        assert await metric(stack, "runtime", gauge, agent="financial_analyst") == 1
