"""Budgets over real processes, on SQLite and PostgreSQL: 20 concurrent reservations from
the router against a nearly spent budget never overshoot it, a refusal carries
RESOURCE_EXHAUSTED + QuotaFailure, settling frees the rest, reservations are idempotent, and
Rank for a user with nothing left excludes every candidate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from services.common.status import describe
from tests.conftest import Backend
from tests.harness import Stack, stack_for

PROVIDERS = """
[budgets]
per_user_micro_usd = 100000
period = "month"
degrade_ratio = 0.9

[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"
quality = 0.3
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 1_000_000

[[providers]]
name = "smart"
kind = "sim"
model = "sim-smart"
quality = 0.9
input_micro_usd_per_mtok = 10_000_000
output_micro_usd_per_mtok = 10_000_000
"""
BUDGET = 100_000


@pytest.fixture
async def stack(tmp_path: Path, backend: Backend) -> AsyncIterator[Stack]:
    async with stack_for(tmp_path, ["optimizer"], config=PROVIDERS, **backend.env()) as s:
        yield s


@pytest.fixture
async def router(stack: Stack) -> AsyncIterator[optimizer_pb2_grpc.OptimizerServiceAsyncStub]:
    async with stack.channel_as("router", "optimizer") as ch:
        yield optimizer_pb2_grpc.OptimizerServiceStub(ch)


def reserve(reservation_id: str, user: str, amount: int) -> optimizer_pb2.ReserveBudgetRequest:
    return optimizer_pb2.ReserveBudgetRequest(
        reservation_id=reservation_id,
        user_id=user,
        execution_id=f"exe_{reservation_id}",
        amount_micro_usd=amount,
    )


async def test_twenty_concurrent_reservations_never_overshoot_the_budget(
    router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    spent = await router.ReserveBudget(reserve("setup", "usr_a", 85_000), timeout=5)
    assert spent.remaining_micro_usd == 15_000
    await router.SettleBudget(
        optimizer_pb2.SettleBudgetRequest(reservation_id="setup", cost_micro_usd=85_000),
        timeout=5,
    )

    async def attempt(n: int) -> grpc.StatusCode:
        try:
            await router.ReserveBudget(reserve(f"r{n}", "usr_a", 2_000), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(attempt(n) for n in range(20)))
    # Seven of 2,000 fit in 15,000; never an eighth.
    assert codes.count(grpc.StatusCode.OK) == 7
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 13
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ReserveBudget(reserve("late", "usr_a", 1_001), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = describe(err.value)
    assert (details.reason, details.domain) == ("BUDGET_EXHAUSTED", "optimizer.saga")
    assert details.metadata["remainingMicroUsd"] == "1000"
    assert [v.subject for v in details.quota_violations] == ["user:usr_a"]
    assert details.metadata["period"] in details.quota_violations[0].description
    # Positive control: what is left still fits, and settling cheaper frees the rest.
    last = await router.ReserveBudget(reserve("late", "usr_a", 1_000), timeout=5)
    assert (last.remaining_micro_usd, last.degrade_to_cheapest) == (0, True)
    one = f"r{codes.index(grpc.StatusCode.OK)}"
    settled = await router.SettleBudget(
        optimizer_pb2.SettleBudgetRequest(reservation_id=one, cost_micro_usd=500), timeout=5
    )
    assert settled.remaining_micro_usd == 1_500
    after = await router.ReserveBudget(reserve("after", "usr_a", 1_500), timeout=5)
    assert after.remaining_micro_usd == 0


async def test_reservations_are_idempotent_and_settling_an_unknown_one_is_not_found(
    router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    first = await router.ReserveBudget(reserve("once", "usr_b", 10_000), timeout=5)
    assert (first.remaining_micro_usd, first.degrade_to_cheapest) == (90_000, False)
    assert len(first.period) == len("2026-11")
    await router.ReserveBudget(reserve("other", "usr_b", 5_000), timeout=5)
    assert await router.ReserveBudget(reserve("once", "usr_b", 10_000), timeout=5) == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ReserveBudget(reserve("once", "usr_b", 10_001), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert describe(err.value).reason == "RESERVATION_CONFLICT"
    settle = optimizer_pb2.SettleBudgetRequest(reservation_id="once", cost_micro_usd=3_000)
    assert (await router.SettleBudget(settle, timeout=5)).remaining_micro_usd == 92_000
    assert (await router.SettleBudget(settle, timeout=5)).remaining_micro_usd == 92_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.SettleBudget(
            optimizer_pb2.SettleBudgetRequest(reservation_id="never", cost_micro_usd=1), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert describe(err.value).reason == "RESERVATION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ReserveBudget(reserve("neg", "usr_b", -1), timeout=5)
    assert describe(err.value).reason == "BUDGET_REQUEST_INVALID"
    assert [v.field for v in describe(err.value).field_violations] == ["amount_micro_usd"]


async def test_rank_for_a_user_follows_their_budget(
    router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    quality = optimizer_pb2.RankRequest(strategy=common_pb2.STRATEGY_QUALITY, user_id="usr_c")
    fresh = await router.Rank(quality, timeout=5)
    assert [r.provider for r in fresh.ranked] == ["smart", "cheap"]
    assert fresh.strategy == common_pb2.STRATEGY_QUALITY
    # Past the degrade ratio (90%), the user's calls are ranked CHEAPEST.
    await router.ReserveBudget(reserve("big", "usr_c", 95_000), timeout=5)
    near = await router.Rank(quality, timeout=5)
    assert near.strategy == common_pb2.STRATEGY_CHEAPEST
    # 500 + 500 tokens: cheap costs 1,000 (fits the 5,000 left), smart 10,000 (does not).
    assert [r.provider for r in near.ranked] == ["cheap"]
    assert [(e.provider, e.reason) for e in near.excluded] == [
        ("smart", ranking_pb2.EXCLUSION_REASON_BUDGET_EXHAUSTED)
    ]
    await router.ReserveBudget(reserve("rest", "usr_c", 5_000), timeout=5)
    spent = await router.Rank(quality, timeout=5)
    assert list(spent.ranked) == []
    assert {(e.provider, e.reason) for e in spent.excluded} == {
        ("cheap", ranking_pb2.EXCLUSION_REASON_BUDGET_EXHAUSTED),
        ("smart", ranking_pb2.EXCLUSION_REASON_BUDGET_EXHAUSTED),
    }
    # Positive control: without a user, or for another user, nothing is excluded.
    anyone = await router.Rank(
        optimizer_pb2.RankRequest(strategy=common_pb2.STRATEGY_QUALITY), timeout=5
    )
    assert [r.provider for r in anyone.ranked] == ["smart", "cheap"]


async def test_budgets_are_for_the_router(stack: Stack) -> None:
    async with stack.channel_as("gateway", "optimizer") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await optimizer_pb2_grpc.OptimizerServiceStub(ch).ReserveBudget(
                reserve("gw", "usr_d", 1), timeout=5
            )
        assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    async with stack.channel_as("router", "optimizer") as ch:
        ok = await optimizer_pb2_grpc.OptimizerServiceStub(ch).ReserveBudget(
            reserve("gw", "usr_d", 1), timeout=5
        )
        assert ok.remaining_micro_usd == BUDGET - 1


async def test_without_a_budget_every_reservation_is_granted(tmp_path: Path) -> None:
    async with (
        stack_for(
            tmp_path, ["optimizer"], config=PROVIDERS.replace("per_user_micro_usd = 100000", "")
        ) as lone,
        lone.channel_as("router", "optimizer") as ch,
    ):
        router = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        grant = await router.ReserveBudget(reserve("free", "usr_e", 10**12), timeout=5)
        assert (grant.remaining_micro_usd, grant.degrade_to_cheapest) == (-1, False)
        settled = await router.SettleBudget(
            optimizer_pb2.SettleBudgetRequest(reservation_id="free", cost_micro_usd=10),
            timeout=5,
        )
        assert settled.remaining_micro_usd == -1


async def test_an_admin_sets_user_and_key_budgets_through_the_gateways_twin(
    stack: Stack, router: optimizer_pb2_grpc.OptimizerServiceAsyncStub
) -> None:
    async with stack.channel_as("gateway", "optimizer") as ch:
        gateway = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        user = await gateway.SetBudget(
            optimizer_pb2.SetBudgetRequest(user_id="usr_f", amount_micro_usd=500, period="day"),
            timeout=5,
        )
        assert (user.budget.budget_micro_usd, user.budget.own, user.budget.period_kind) == (
            500,
            True,
            "day",
        )
        key = await gateway.SetBudget(
            optimizer_pb2.SetBudgetRequest(user_id="usr_f", key_id="key_f", amount_micro_usd=50),
            timeout=5,
        )
        assert (key.budget.key_id, key.budget.period_kind) == ("key_f", "month")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await gateway.SetBudget(
                optimizer_pb2.SetBudgetRequest(user_id="usr_f", amount_micro_usd=-1), timeout=5
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert describe(bad.value).field_violations[0].field == "amount_micro_usd"

        # The router reserves against both: the key's cap first refuses through that key.
        keyed = reserve("f1", "usr_f", 51)
        keyed.key_id = "key_f"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router.ReserveBudget(keyed, timeout=5)
        refusal = describe(err.value)
        assert refusal.reason == "BUDGET_EXHAUSTED"
        assert [v.subject for v in refusal.quota_violations] == ["key:key_f"]
        assert refusal.metadata["remainingMicroUsd"] == "50"
        granted = await router.ReserveBudget(reserve("f2", "usr_f", 400), timeout=5)
        assert granted.remaining_micro_usd == 100  # the user's own 500, not the default

        shown = await gateway.GetBudget(optimizer_pb2.GetBudgetRequest(user_id="usr_f"), timeout=5)
        assert (shown.user.held_micro_usd, shown.user.remaining_micro_usd) == (400, 100)
        assert [(k.key_id, k.remaining_micro_usd) for k in shown.keys] == [("key_f", 50)]
        # Another user has the configured default.
        other = await gateway.GetBudget(optimizer_pb2.GetBudgetRequest(user_id="usr_g"), timeout=5)
        assert (other.user.budget_micro_usd, other.user.own) == (BUDGET, False)
    # Setting budgets is the gateway's (an admin's), not the router's.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await router.SetBudget(
            optimizer_pb2.SetBudgetRequest(user_id="usr_f", amount_micro_usd=10**9), timeout=5
        )
    assert describe(denied.value).reason == "CALLER_NOT_ALLOWED"
