"""Budgets set by an admin, through the gateway and the `saga` CLI: a user's own budget
refuses their runs (BUDGET_EXHAUSTED with QuotaFailure) while another user is unaffected; a
key's budget refuses runs through that key while another key of the same user still works;
a user reads what is left of their own budget, and not another user's."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from saga.gateway.v1 import account_pb2, account_pb2_grpc, execution_pb2_grpc
from services.common.status import describe
from tests.e2e.test_cli import ok, run_cli, saga_cli
from tests.e2e.test_execute import bearer, chat
from tests.harness import Stack, stack_for

TINY = "0.0001"
"""$0.0001 = 100 micro-USD: less than either default provider's most for a call (its 1,024
output tokens), so a run under it is refused before any provider is called."""


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Budgets on, no default: only the users and keys an admin gives a budget are limited.
    async with stack_for(tmp_path_factory.mktemp("budgets"), SAGA_BUDGETS__ENABLED="true") as s:
        yield s


@dataclass(frozen=True)
class Account:
    """A user the admin created, signed in once."""

    email: str
    password: str
    user_id: str
    token: str
    """A session token (JWT) of theirs."""


async def register(stack: Stack, label: str = "budget") -> Account:
    """A user created by the admin (email `<label>.<random>@example.com`), signed in."""
    email, password = f"{label}.{secrets.token_hex(4)}@example.com", "pw " + secrets.token_hex(8)
    async with stack.gateway_channel() as ch:
        accounts = account_pb2_grpc.AccountServiceStub(ch)
        made = await accounts.Register(
            account_pb2.RegisterRequest(email=email, password=password),
            metadata=bearer(stack.admin_key()),
            timeout=30,
        )
        session = await accounts.Login(
            account_pb2.LoginRequest(email=email, password=password), timeout=30
        )
    return Account(email, password, made.user_id, session.access_token)


async def new_user(stack: Stack) -> tuple[str, str]:
    """A user created by the admin; (user id, a session token of theirs)."""
    account = await register(stack)
    return account.user_id, account.token


async def new_key(stack: Stack, token: str) -> tuple[str, str]:
    """A new API key of the user whose session `token` is; (secret, key id)."""
    async with stack.gateway_channel() as ch:
        made = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="budgeted", scopes=["execute", "usage:read"]),
            metadata=bearer(token),
            timeout=10,
        )
    return made.api_key, made.info.key_id


async def run(stack: Stack, credential: str) -> grpc.aio.AioRpcError | None:
    """Execute `chat` as the holder of `credential`: None when it completed, else its error."""
    async with stack.gateway_channel() as ch:
        try:
            events = [
                e
                async for e in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                    chat("hi"), metadata=bearer(credential), timeout=60
                )
            ]
        except grpc.aio.AioRpcError as error:
            return error
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    return None


def assert_refused_by(error: grpc.aio.AioRpcError | None, subject: str) -> None:
    assert error is not None, "the run was not refused"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, describe(error)
    details = describe(error)
    assert (details.reason, details.domain) == ("BUDGET_EXHAUSTED", "optimizer.saga")
    assert [v.subject for v in details.quota_violations] == [subject]


async def test_a_users_budget_refuses_their_runs_and_no_one_elses(stack: Stack) -> None:
    capped, capped_token = await new_user(stack)
    _, other_token = await new_user(stack)
    assert await run(stack, capped_token) is None  # no budget of their own yet: unlimited

    table = ok(saga_cli(stack, "budgets", "set", capped, "--amount", TINY, "--period", "day"))
    assert table.splitlines()[0].split()[:3] == ["BUDGET", "PERIOD", "AMOUNT"]
    assert f"user {capped}" in table
    assert "$0.0001" in table
    assert "admin" in table

    assert_refused_by(await run(stack, capped_token), f"user:{capped}")
    assert await run(stack, other_token) is None  # another user is unaffected

    # Cleared: back to the default (none here), and the user runs again.
    ok(saga_cli(stack, "budgets", "set", capped, "--clear"))
    assert await run(stack, capped_token) is None


async def test_a_keys_budget_refuses_through_that_key_only(stack: Stack) -> None:
    user, token = await new_user(stack)
    capped_key, capped_id = await new_key(stack, token)
    free_key, _ = await new_key(stack, token)
    shown = json.loads(
        ok(saga_cli(stack, "--json", "budgets", "set", user, "--key", capped_id, "--amount", TINY))
    )
    assert shown["budget"]["keyId"] == capped_id
    assert shown["budget"]["budgetMicroUsd"] == "100"

    assert_refused_by(await run(stack, capped_key), f"key:{capped_id}")
    assert await run(stack, free_key) is None  # another key of the same user still works
    assert await run(stack, token) is None  # and so does the user's session

    # The user reads their own budget and their keys' (remaining included), with their key.
    mine = run_cli("--gateway", stack.target("gateway"), "--key", free_key, "budgets", "show")
    table = ok(mine)
    assert f"user {user}" in table
    assert row_of(table, f"key {capped_id}").split()[-1] == "$0.000100"  # nothing spent there
    as_json = json.loads(
        ok(
            run_cli(
                "--gateway", stack.target("gateway"), "--key", free_key, "--json", "budgets", "show"
            )
        )
    )
    assert as_json["user"]["userId"] == user
    assert as_json["user"]["remainingMicroUsd"] == "-1"  # no budget of the user's own
    assert [k["keyId"] for k in as_json["keys"]] == [capped_id]
    assert as_json["keys"][0]["remainingMicroUsd"] == "100"

    # Not another user's (that needs usage:read:all or admin); the admin reads anyone's.
    other, _ = await new_user(stack)
    denied = run_cli(
        "--gateway", stack.target("gateway"), "--key", free_key, "budgets", "show", other
    )
    assert denied.returncode == 1, denied.stdout
    assert "PERMISSION_DENIED" in denied.stderr
    assert f"user {other}" in ok(saga_cli(stack, "budgets", "show", other))


def row_of(table: str, start: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(start))
