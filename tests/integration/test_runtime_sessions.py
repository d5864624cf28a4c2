"""The runtime's SessionService called as the gateway calls it (mTLS, a signed request
context): the context's user owns what it creates, a context without scope `sessions` is
refused, a call without one is unauthenticated — the runtime does not take the gateway's
checks on trust."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from saga.runtime.v1 import sessions_pb2, sessions_pb2_grpc
from services.common.context import METADATA_KEY, ContextSigner, load_private_key
from services.common.status import describe
from tests.harness import Stack, stack_for


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The runtime and what it needs to verify contexts (auth's JWKS), without a gateway."""
    async with stack_for(tmp_path_factory.mktemp("sessions"), ["vault", "auth", "runtime"]) as s:
        yield s


def context(stack: Stack, user_id: str, scopes: list[str]) -> tuple[tuple[str, str], ...]:
    """The `saga-context` metadata the gateway would mint for `user_id`."""
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    token = signer.mint(
        execution_id="req_" + "0" * 32,
        user_id=user_id,
        tenant="default",
        scopes=scopes,
        credential_id="key_test",
        ttl_seconds=60,
    )
    return ((METADATA_KEY, token),)


async def test_the_runtime_checks_the_context_itself(stack: Stack) -> None:
    async with stack.channel_as("gateway", "runtime") as ch:
        stub = sessions_pb2_grpc.SessionServiceStub(ch)
        made = await stub.CreateSession(
            sessions_pb2.CreateSessionRequest(title="mine"),
            metadata=context(stack, "usr_a", ["sessions"]),
            timeout=10,
        )
        assert made.session.user_id == "usr_a"
        get = sessions_pb2.GetSessionRequest(session_id=made.session.session_id)
        shown = await stub.GetSession(
            get, metadata=context(stack, "usr_a", ["sessions"]), timeout=10
        )
        assert shown.session.title == "mine"

        refusals = (
            (context(stack, "usr_b", ["sessions"]), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
            (
                context(stack, "usr_a", ["execute"]),
                grpc.StatusCode.PERMISSION_DENIED,
                "SCOPE_MISSING",
            ),
            ((), grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_MISSING"),
        )
        for metadata, code, reason in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetSession(get, metadata=metadata, timeout=10)
            assert (error.value.code(), describe(error.value).reason) == (code, reason)
