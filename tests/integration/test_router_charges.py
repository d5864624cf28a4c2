"""Provider cost and the caller's charge over real processes (auth, optimizer, router), one
stack per `accounting.charge_policy`: a call whose first provider fails with a 5xx before any
text, whose second is cut by a 5xx mid-stream, and whose third answers. Final, the ledger
(GetUsage, by provider) and the budget (settled to the charge) show the cost and the charge
side by side — streamed (the cut attempt's text reached the caller) and in complete mode
(none of it did)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.status import describe
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import NO_CIRCUITS
from tests.integration.test_router_resilience import PROVIDERS, call, usage_rows

CHAIN = ["down", "cut", "cheap"]  # 5xx at once, 5xx after 3 tokens, answers

# Policy -> whether the cut attempt is charged: (streamed, complete).
CUT_CHARGED = {
    "all_attempts": (True, True),
    "delivered_only": (True, False),
    "waive_upstream_failures": (False, False),
}


@pytest.fixture(scope="module", params=sorted(CUT_CHARGED))
def policy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
async def stack(policy: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("charges"),
        ["auth", "optimizer", "router"],
        config=PROVIDERS,
        SAGA_OPTIMIZER__SUCCESS_RATE_FLOOR="0",
        SAGA_ACCOUNTING__CHARGE_POLICY=policy,
        SAGA_BUDGETS__PER_USER_MICRO_USD="1000000000",
        **NO_CIRCUITS,
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


async def spent(stack: Stack, user: str, expected: int) -> int:
    """What the user's budget has spent, once its settlement reached `expected` (or after
    ~5 s: what it is then)."""
    async with stack.channel_as("gateway", "optimizer") as ch:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        for _ in range(100):
            reply = await stub.GetBudget(optimizer_pb2.GetBudgetRequest(user_id=user), timeout=5)
            if reply.user.spent_micro_usd == expected:
                break
            await asyncio.sleep(0.05)
    return reply.user.spent_micro_usd


@pytest.mark.parametrize("complete", [False, True], ids=["streamed", "complete"])
async def test_the_ledger_keeps_every_cost_and_charges_by_the_policy(
    stack: Stack, runtime: grpc.aio.Channel, policy: str, complete: bool
) -> None:
    user = "usr_charge_" + secrets.token_hex(4)
    mode = common_pb2.RESPONSE_MODE_COMPLETE if complete else common_pb2.RESPONSE_MODE_STREAMING
    got = await call(
        stack,
        runtime,
        user=user,
        preferred_providers=CHAIN,
        allow_fallback=True,
        response_mode=mode,
    )
    assert got.error is None, describe(got.error)
    final = got.events[-1].final
    down, cut, cheap = final.attempts
    assert [a.provider for a in final.attempts] == CHAIN
    assert (down.cost_micro_usd, down.charge_micro_usd) == (0, 0)  # nothing generated
    assert cut.cost_micro_usd > 0  # the provider billed the cut stream, whatever the policy
    charged = CUT_CHARGED[policy][complete]
    assert cut.charge_micro_usd == (cut.cost_micro_usd if charged else 0)
    assert cheap.charge_micro_usd == cheap.cost_micro_usd > 0
    cost = down.cost_micro_usd + cut.cost_micro_usd + cheap.cost_micro_usd
    charge = cut.charge_micro_usd + cheap.charge_micro_usd
    assert (final.cost_micro_usd, final.charge_micro_usd) == (cost, charge)
    # The ledger: every attempt's cost, and what the caller is charged, side by side.
    rows = await usage_rows(stack, user, 3)
    assert {p: (r.calls, r.cost_micro_usd, r.charge_micro_usd) for p, r in rows.items()} == {
        "down": (1, 0, 0),
        "cut": (1, cut.cost_micro_usd, cut.charge_micro_usd),
        "cheap": (1, cheap.cost_micro_usd, cheap.charge_micro_usd),
    }
    # The budget limits what the caller is charged: it settled to the charge.
    assert await spent(stack, user, charge) == charge
