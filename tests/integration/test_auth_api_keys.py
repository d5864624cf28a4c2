"""API keys end to end against a real auth process over mTLS: the first-start admin key,
Authenticate's reasons, and key management that acts only for the user of the request
context, with no more scopes than that context holds."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import grpc
import pytest

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth.api_keys import generate_key, hash_key
from services.common.context import METADATA_KEY, SCOPES, ContextSigner, load_private_key
from services.common.status import describe
from tests.harness import Stack, stack_for
from tests.tamper import changed_at


@pytest.fixture(scope="module")
async def auth(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """auth alone, on a fresh data directory."""
    async with stack_for(tmp_path_factory.mktemp("auth"), ["auth"]) as stack:
        yield stack


def admin_key(stack: Stack) -> str:
    path = stack.data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def context_for(
    stack: Stack, user_id: str, scopes: Sequence[str] = SCOPES
) -> tuple[tuple[str, str]]:
    """`saga-context` metadata as the gateway mints it for a key-management request."""
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    token = signer.mint(
        execution_id="req_x",
        user_id=user_id,
        tenant="default",
        scopes=scopes,
        credential_id="key_test",
        ttl_seconds=60,
    )
    return ((METADATA_KEY, token),)


async def outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason a call ends with (OK, "" on success)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), describe(error).reason
    return grpc.StatusCode.OK, ""


async def principal_of(stack: Stack, credential: str) -> auth_pb2.Principal:
    async with stack.channel_as("gateway", "auth") as ch:
        reply = await auth_pb2_grpc.AuthServiceStub(ch).Authenticate(
            auth_pb2.AuthenticateRequest(credential=credential), timeout=5
        )
    return reply.principal


async def authenticated(stack: Stack, credential: str) -> tuple[grpc.StatusCode, str]:
    return await outcome(principal_of(stack, credential))


async def admin_user(stack: Stack) -> str:
    return (await principal_of(stack, admin_key(stack))).user_id


async def create(
    stack: Stack,
    user_id: str,
    scopes: Sequence[str],
    *,
    context_scopes: Sequence[str] = SCOPES,
    name: str = "test",
    expires_at: float | None = None,
) -> auth_pb2.CreateApiKeyResponse:
    request = auth_pb2.CreateApiKeyRequest(user_id=user_id, name=name, scopes=scopes)
    if expires_at is not None:
        request.expires_at.FromNanoseconds(int(expires_at * 1e9))
    async with stack.channel_as("gateway", "auth") as ch:
        reply: auth_pb2.CreateApiKeyResponse = await auth_pb2_grpc.AuthServiceStub(ch).CreateApiKey(
            request, metadata=context_for(stack, user_id, context_scopes), timeout=5
        )
    return reply


async def test_first_start_writes_a_private_admin_key_with_every_scope(auth: Stack) -> None:
    key = admin_key(auth)  # asserts mode 0600
    principal = await principal_of(auth, key)
    assert list(principal.scopes) == list(SCOPES)
    assert principal.user_id.startswith("usr_admin")
    assert principal.tenant == "default"
    assert principal.kind == auth_pb2.CREDENTIAL_KIND_API_KEY
    assert principal.credential_id.startswith("key_")
    assert not principal.HasField("expires_at")


async def test_a_key_is_created_used_listed_and_revoked(auth: Stack) -> None:
    user_id = await admin_user(auth)
    created = await create(auth, user_id, ["execute"], name="ci")
    secret, info = created.api_key, created.info
    assert secret.startswith("saga_ak_")
    assert info.prefix == secret[:12]
    assert (info.name, list(info.scopes)) == ("ci", ["execute"])

    principal = await principal_of(auth, secret)
    assert list(principal.scopes) == ["execute"]
    assert (principal.user_id, principal.credential_id) == (user_id, info.key_id)

    async with auth.channel_as("gateway", "auth") as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        listed = await stub.ListApiKeys(
            auth_pb2.ListApiKeysRequest(user_id=user_id),
            metadata=context_for(auth, user_id),
            timeout=5,
        )
        assert listed.keys[0].key_id == info.key_id  # newest first
        assert principal.credential_id in [k.key_id for k in listed.keys]
        raw = listed.SerializeToString()
        assert secret.encode() not in raw
        assert hash_key(secret).encode() not in raw
        assert admin_key(auth).encode() not in raw

        revoked = await stub.RevokeApiKey(
            auth_pb2.RevokeApiKeyRequest(user_id=user_id, key_id=info.key_id),
            metadata=context_for(auth, user_id),
            timeout=5,
        )
        assert revoked.info.HasField("revoked_at")
        again = await stub.RevokeApiKey(
            auth_pb2.RevokeApiKeyRequest(user_id=user_id, key_id=info.key_id),
            metadata=context_for(auth, user_id),
            timeout=5,
        )
        assert again.info.revoked_at == revoked.info.revoked_at  # idempotent
    assert await authenticated(auth, secret) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_REVOKED",
    )
    assert await authenticated(auth, admin_key(auth)) == (grpc.StatusCode.OK, "")


async def test_unknown_malformed_and_jwt_credentials_are_refused(auth: Stack) -> None:
    key = admin_key(auth)
    assert await authenticated(auth, key) == (grpc.StatusCode.OK, "")  # positive control
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert await authenticated(auth, generate_key()) == (unauthenticated, "CREDENTIAL_UNKNOWN")
    typo = changed_at(key, 20)
    assert await authenticated(auth, typo) == (unauthenticated, "CREDENTIAL_MALFORMED")
    assert await authenticated(auth, "") == (unauthenticated, "CREDENTIAL_MALFORMED")
    assert await authenticated(auth, "eyJh.eyJz.sig") == (unauthenticated, "CREDENTIAL_UNKNOWN")
    assert await authenticated(auth, "x" * 4097) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CREDENTIAL_TOO_LONG",
    )


async def test_key_management_needs_a_context_for_the_same_user(auth: Stack) -> None:
    user_id = await admin_user(auth)
    request = auth_pb2.ListApiKeysRequest(user_id=user_id)
    async with auth.channel_as("gateway", "auth") as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        assert await outcome(stub.ListApiKeys(request, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CONTEXT_MISSING",
        )
        assert await outcome(
            stub.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(user_id=user_id, name="x", scopes=["execute"]),
                timeout=5,
            )
        ) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_MISSING")
        # Another user without scope admin may neither list nor create this user's keys;
        # an operator's (scope admin) context may list them (the console's Keys page).
        other = context_for(auth, "usr_someone_else", ["execute"])
        assert await outcome(stub.ListApiKeys(request, metadata=other, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CONTEXT_MISMATCH",
        )
        operator = context_for(auth, "usr_someone_else", ["admin"])
        assert await outcome(stub.ListApiKeys(request, metadata=operator, timeout=5)) == (
            grpc.StatusCode.OK,
            "",
        )
        assert await outcome(
            stub.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(user_id=user_id, name="x", scopes=["execute"]),
                metadata=other,
                timeout=5,
            )
        ) == (grpc.StatusCode.PERMISSION_DENIED, "CONTEXT_MISMATCH")
        forged = ((METADATA_KEY, "not.a.token"),)
        assert await outcome(stub.ListApiKeys(request, metadata=forged, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CONTEXT_INVALID",
        )
        # Positive control: the same call with the user's own context.
        mine = context_for(auth, user_id)
        assert await outcome(stub.ListApiKeys(request, metadata=mine, timeout=5)) == (
            grpc.StatusCode.OK,
            "",
        )


async def test_a_key_cannot_carry_more_scopes_than_its_creator_holds(auth: Stack) -> None:
    user_id = await admin_user(auth)
    assert await outcome(create(auth, user_id, ["admin"], context_scopes=["execute"])) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_ESCALATION",
    )
    assert await outcome(create(auth, user_id, ["execute"], context_scopes=["execute"])) == (
        grpc.StatusCode.OK,
        "",
    )


async def test_another_users_key_is_not_found(auth: Stack) -> None:
    user_id = await admin_user(auth)
    key_id = (await create(auth, user_id, ["execute"])).info.key_id
    async with auth.channel_as("gateway", "auth") as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        other = "usr_someone_else"
        assert await outcome(
            stub.RevokeApiKey(
                auth_pb2.RevokeApiKeyRequest(user_id=other, key_id=key_id),
                metadata=context_for(auth, other),
                timeout=5,
            )
        ) == (grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND")
        listed = await stub.ListApiKeys(
            auth_pb2.ListApiKeysRequest(user_id=other), metadata=context_for(auth, other)
        )
        assert list(listed.keys) == []
        assert await outcome(
            stub.RevokeApiKey(
                auth_pb2.RevokeApiKeyRequest(user_id=user_id, key_id=key_id),
                metadata=context_for(auth, user_id),
                timeout=5,
            )
        ) == (grpc.StatusCode.OK, "")


async def test_bad_requests_are_invalid_with_field_violations(auth: Stack) -> None:
    user_id = await admin_user(auth)
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"scopes": []}, "SCOPES_EMPTY", "scopes"),
        ({"scopes": ["execute", "root"]}, "SCOPE_UNKNOWN", "scopes[1]"),
        ({"scopes": ["execute"], "name": "n" * 101}, "NAME_TOO_LONG", "name"),
        ({"scopes": ["execute"], "expires_at": time.time() - 60}, "EXPIRY_INVALID", "expires_at"),
    ]
    for kwargs, reason, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(auth, user_id, **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(err.value)
        assert details.reason == reason
        assert [v.field for v in details.field_violations] == [field]
    # Positive control: the longest name, a future expiry.
    created = await create(auth, user_id, ["execute"], name="n" * 100, expires_at=time.time() + 60)
    assert created.info.HasField("expires_at")


async def test_an_expired_key_is_refused(auth: Stack) -> None:
    user_id = await admin_user(auth)
    expires_at = time.time() + 2
    created = await create(auth, user_id, ["execute"], expires_at=expires_at)
    principal = await principal_of(auth, created.api_key)  # positive control: still valid
    assert principal.expires_at == created.info.expires_at
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)
    assert await authenticated(auth, created.api_key) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_EXPIRED",
    )


async def test_the_log_never_contains_a_key(auth: Stack) -> None:
    user_id = await admin_user(auth)
    created = await create(auth, user_id, ["execute"])
    await principal_of(auth, created.api_key)
    log = auth.read_log("auth")
    # The log was captured, including the lines about this very key.
    assert "admin key created" in log
    assert created.info.key_id in log
    assert created.api_key not in log
    assert admin_key(auth) not in log
    assert hash_key(created.api_key) not in log


async def test_a_restart_keeps_keys_and_leaves_admin_key_alone(tmp_path: Path) -> None:
    async with stack_for(tmp_path, ["auth"]) as stack:
        admin = admin_key(stack)
        written = (stack.data_dir / "admin.key").stat()
        user_id = (await principal_of(stack, admin)).user_id
        created = await create(stack, user_id, ["execute"])
        assert stack.stop("auth") == 0

        await stack.start_all(["auth"])
        after = (stack.data_dir / "admin.key").stat()
        assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
        assert admin_key(stack) == admin
        assert (await principal_of(stack, admin)).user_id == user_id
        assert list((await principal_of(stack, created.api_key)).scopes) == ["execute"]
        assert stack.read_log("auth").count("admin key created") == 1
