"""Provider credentials end to end: real auth and token-vault processes over mTLS and the
fake Entra ID on loopback. Static keys set by an operator and read by the router; a user's
OAuth token only with that user's request context; the 300 s buffer; 429 backoff; the
failures that end a refresh (invalid_grant after one call, 401, 500); client credentials;
compare-and-set persistence before the token is returned (a lost CAS, a vault stopped
mid-refresh); and no secret in auth's log."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import grpc
import pytest

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from services.common.context import METADATA_KEY, ContextSigner, load_private_key
from services.common.status import describe
from tests.fakes import entra as fake
from tests.fakes.entra import FakeEntra, access_token
from tests.harness import Stack, stack_for

Metadata = tuple[tuple[str, str], ...]

SECRETS_USED: set[str] = set()
"""Every key, password and token the tests of this module used."""


def config(entra: FakeEntra) -> str:
    url = entra.token_url()
    return f"""
[[providers]]
name = "sim-fast"
kind = "sim"
model = "sim-small"

[[providers]]
name = "openai-main"
kind = "openai"
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"
credential = "api_key"

[[providers]]
name = "copilot"
kind = "copilot"
model = "gpt-4o"
base_url = "http://127.0.0.1:9"
credential = "oauth_user"
oauth_token_url = "{url}"
oauth_client_id = "saga-client"
oauth_scopes = ["https://api.example/.default", "offline_access"]

[[providers]]
name = "copilot-app"
kind = "copilot"
model = "gpt-4o"
base_url = "http://127.0.0.1:9"
credential = "oauth_app"
oauth_token_url = "{url}"
oauth_client_id = "saga-app"
oauth_scopes = ["https://api.example/.default"]
"""


ENV = {
    "SAGA_AUTH__ARGON2_MEMORY_KIB": "64",
    "SAGA_AUTH__ARGON2_TIME_COST": "1",
    "SAGA_AUTH__OAUTH_BACKOFF_BASE_SECONDS": "0.05",
    "SAGA_AUTH__OAUTH_REQUEST_TIMEOUT_SECONDS": "3",
}


@pytest.fixture(scope="module")
async def entra() -> AsyncIterator[FakeEntra]:
    server = await FakeEntra().start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def stack(entra: FakeEntra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """auth and the vault, configured with the fake Entra ID's token endpoint."""
    async with stack_for(
        tmp_path_factory.mktemp("provider-credentials"),
        ["vault", "auth"],
        config=config(entra),
        **ENV,
    ) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_entra(entra: FakeEntra) -> None:
    entra.reset()


def context(stack: Stack, user_id: str, scopes: Sequence[str] = ("execute",)) -> Metadata:
    """`saga-context` as the gateway mints it (and the router forwards it)."""
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    token = signer.mint(
        execution_id=f"exe_{secrets.token_hex(16)}",
        user_id=user_id,
        tenant="default",
        scopes=scopes,
        credential_id="key_test",
        ttl_seconds=60,
    )
    return ((METADATA_KEY, token),)


async def outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), describe(error).reason
    return grpc.StatusCode.OK, ""


async def new_user(stack: Stack) -> str:
    password = "pw " + secrets.token_urlsafe(12)
    SECRETS_USED.add(password)
    async with stack.channel_as("gateway", "auth") as ch:
        reply = await auth_pb2_grpc.AuthServiceStub(ch).Register(
            auth_pb2.RegisterRequest(
                email=f"u{secrets.token_hex(4)}@example.com", password=password
            ),
            metadata=context(stack, "usr_operator", ("admin",)),  # self-registration is closed
            timeout=10,
        )
    return str(reply.user_id)


async def link(
    stack: Stack, user_id: str, refresh_token: str, metadata: Metadata | None = None
) -> auth_pb2.LinkProviderAccountResponse:
    SECRETS_USED.add(refresh_token)
    async with stack.channel_as("gateway", "auth") as ch:
        reply: auth_pb2.LinkProviderAccountResponse = await auth_pb2_grpc.AuthServiceStub(
            ch
        ).LinkProviderAccount(
            auth_pb2.LinkProviderAccountRequest(
                provider="copilot", user_id=user_id, refresh_token=refresh_token
            ),
            metadata=metadata if metadata is not None else context(stack, user_id),
            timeout=10,
        )
    return reply


async def linked_user(stack: Stack, entra: FakeEntra) -> str:
    user_id = await new_user(stack)
    await link(stack, user_id, entra.issue_refresh_token())
    return user_id


async def credential(
    stack: Stack,
    provider: str,
    user_id: str = "",
    metadata: Metadata | None = None,
    caller: str = "router",
) -> auth_pb2.GetProviderCredentialResponse:
    async with stack.channel_as(caller, "auth") as ch:
        reply: auth_pb2.GetProviderCredentialResponse = await auth_pb2_grpc.AuthServiceStub(
            ch
        ).GetProviderCredential(
            auth_pb2.GetProviderCredentialRequest(provider=provider, user_id=user_id),
            metadata=metadata or (),
            timeout=60,
        )
    SECRETS_USED.add(reply.secret)
    return reply


async def user_credential(stack: Stack, user_id: str) -> auth_pb2.GetProviderCredentialResponse:
    return await credential(stack, "copilot", user_id, context(stack, user_id))


async def set_key(
    stack: Stack, provider: str, key: str, metadata: Metadata | None = None, caller: str = "gateway"
) -> auth_pb2.SetProviderKeyResponse:
    SECRETS_USED.add(key)
    if metadata is None:
        metadata = context(stack, "usr_operator", ("admin",))
    async with stack.channel_as(caller, "auth") as ch:
        reply: auth_pb2.SetProviderKeyResponse = await auth_pb2_grpc.AuthServiceStub(
            ch
        ).SetProviderKey(
            auth_pb2.SetProviderKeyRequest(provider=provider, api_key=key),
            metadata=metadata,
            timeout=10,
        )
    return reply


async def vault_put(stack: Stack, owner: str, name: str, payload: bytes) -> None:
    async with stack.channel_as("auth", "vault") as ch:
        await vault_pb2_grpc.VaultServiceStub(ch).PutSecret(
            vault_pb2.PutSecretRequest(owner=owner, name=name, payload=payload), timeout=5
        )


async def vault_get(stack: Stack, owner: str, name: str) -> dict[str, object]:
    async with stack.channel_as("auth", "vault") as ch:
        reply = await vault_pb2_grpc.VaultServiceStub(ch).GetSecret(
            vault_pb2.GetSecretRequest(owner=owner, name=name), timeout=5
        )
    decoded: dict[str, object] = json.loads(reply.payload)
    return decoded


# ------------------------------------------------------------------------ static keys


async def test_an_operators_key_reaches_the_router(stack: Stack) -> None:
    assert await outcome(credential(stack, "openai-main")) == (
        grpc.StatusCode.NOT_FOUND,
        "PROVIDER_KEY_NOT_SET",
    )
    key = "sk-" + secrets.token_urlsafe(24)
    written = await set_key(stack, "openai-main", key)
    reply = await credential(stack, "openai-main")
    assert (reply.kind, reply.secret, reply.version) == (
        auth_pb2.PROVIDER_CREDENTIAL_KIND_API_KEY,
        key,
        written.version,
    )
    assert not reply.HasField("expires_at")
    newer = "sk-" + secrets.token_urlsafe(24)
    assert (await set_key(stack, "openai-main", newer)).version == written.version + 1
    assert (await credential(stack, "openai-main")).secret == newer


async def test_setting_a_key_needs_an_admin_context_through_the_gateway(stack: Stack) -> None:
    key = "sk-" + secrets.token_urlsafe(24)
    user = context(stack, "usr_someone", ("execute",))
    assert await outcome(set_key(stack, "openai-main", key, user)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_MISSING",
    )
    assert await outcome(set_key(stack, "openai-main", key, ())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CONTEXT_MISSING",
    )
    assert await outcome(set_key(stack, "openai-main", key, caller="router")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )
    assert await outcome(set_key(stack, "sim-fast", key)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_CREDENTIAL_MISMATCH",
    )
    assert await outcome(set_key(stack, "openai-main", key)) == (grpc.StatusCode.OK, "")


async def test_bad_keys_are_invalid(stack: Stack) -> None:
    for bad in ("", "sk-with a space", "k" * 8193):
        assert await outcome(set_key(stack, "openai-main", bad)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PROVIDER_KEY_INVALID",
        )
    assert await outcome(set_key(stack, "no-such-provider", "sk-x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PROVIDER",
    )


# ---------------------------------------------------------------------- who may ask


async def test_a_users_token_needs_that_users_context(stack: Stack, entra: FakeEntra) -> None:
    user_id = await linked_user(stack, entra)
    other = await new_user(stack)
    assert await outcome(credential(stack, "copilot", user_id, context(stack, other))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONTEXT_MISMATCH",
    )
    assert await outcome(credential(stack, "copilot", user_id)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CONTEXT_MISSING",
    )
    assert await outcome(
        credential(stack, "copilot", user_id, context(stack, user_id), caller="gateway")
    ) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )
    assert entra.count == 0  # nothing was refreshed for a refused caller
    # Positive control: the router with the user's own context.
    reply = await user_credential(stack, user_id)
    assert reply.kind == auth_pb2.PROVIDER_CREDENTIAL_KIND_OAUTH_ACCESS_TOKEN
    assert reply.secret == entra.issued_access_tokens[-1]
    assert entra.count == 1


async def test_linking_acts_for_the_user_or_an_admin(stack: Stack, entra: FakeEntra) -> None:
    user_id, other = await new_user(stack), await new_user(stack)
    refresh = entra.issue_refresh_token()
    assert await outcome(link(stack, user_id, refresh, context(stack, other))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONTEXT_MISMATCH",
    )
    assert await outcome(link(stack, user_id, refresh, ())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CONTEXT_MISSING",
    )
    assert (await link(stack, user_id, refresh)).version == 1  # the user's own context
    admin = context(stack, "usr_operator", ("admin",))
    assert (await link(stack, user_id, refresh, admin)).version == 2  # an operator
    assert await outcome(link(stack, "usr_nobody", refresh, admin)) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert await outcome(link(stack, user_id, "", context(stack, user_id))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REFRESH_TOKEN_INVALID",
    )
    assert await outcome(credential(stack, "copilot", other, context(stack, other))) == (
        grpc.StatusCode.NOT_FOUND,
        "PROVIDER_ACCOUNT_NOT_LINKED",
    )


# -------------------------------------------------------------------------- refreshing


@pytest.mark.parametrize(("expires_in", "calls"), [(400, 1), (200, 2)])
async def test_a_token_with_less_than_300_s_left_is_refreshed(
    stack: Stack, entra: FakeEntra, expires_in: int, calls: int
) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(fake.success(expires_in), fake.success(expires_in))
    first = await user_credential(stack, user_id)
    second = await user_credential(stack, user_id)
    assert entra.count == calls
    assert (first.secret == second.secret) == (calls == 1)
    assert second.expires_at.seconds > 0


async def test_the_rotated_refresh_token_is_saved_before_the_token_is_returned(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await new_user(stack)
    original = entra.issue_refresh_token()
    await link(stack, user_id, original)
    reply = await user_credential(stack, user_id)
    saved = await vault_get(stack, f"user:{user_id}", "oauth:copilot")
    assert saved["access_token"] == reply.secret
    assert saved["refresh_token"] == entra.issued_refresh_tokens[-1] != original
    assert entra.calls[0].form["refresh_token"] == original
    assert entra.calls[0].form["scope"] == "https://api.example/.default offline_access"


async def test_a_429_is_waited_out_then_the_refresh_succeeds(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(fake.rate_limited("1"), fake.success())
    reply = await user_credential(stack, user_id)
    assert reply.secret == entra.issued_access_tokens[-1]
    assert entra.count == 2
    assert entra.calls[1].at - entra.calls[0].at >= 0.95  # Retry-After: 1 was honoured


async def test_five_429s_are_resource_exhausted(stack: Stack, entra: FakeEntra) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(*[fake.rate_limited("0")] * 5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user_credential(stack, user_id)
    details = describe(err.value)
    assert (err.value.code(), details.reason, details.domain) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "PROVIDER_TOKEN_RATE_LIMITED",
        "auth.saga",
    )
    assert details.retry_after is not None
    assert entra.count == 5


async def test_invalid_grant_needs_reauthorisation_after_one_call(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(fake.invalid_grant(70008))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user_credential(stack, user_id)
    details = describe(err.value)
    assert (err.value.code(), details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REAUTH_REQUIRED",
    )
    assert details.metadata["aadsts"] == "70008"
    assert entra.count == 1
    # Linking again fixes it.
    await link(stack, user_id, entra.issue_refresh_token())
    assert (await user_credential(stack, user_id)).secret == entra.issued_access_tokens[-1]


@pytest.mark.parametrize(
    ("reply", "code", "reason"),
    [
        (fake.invalid_client(), grpc.StatusCode.UNAUTHENTICATED, "PROVIDER_CLIENT_INVALID"),
        (fake.server_error(500), grpc.StatusCode.UNAVAILABLE, "PROVIDER_TOKEN_UNAVAILABLE"),
    ],
)
async def test_endpoint_failures_keep_their_meaning(
    stack: Stack, entra: FakeEntra, reply: fake.Reply, code: grpc.StatusCode, reason: str
) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(reply)
    assert await outcome(user_credential(stack, user_id)) == (code, reason)
    assert entra.count == 1
    assert (await outcome(user_credential(stack, user_id)))[0] == grpc.StatusCode.OK


async def test_an_app_token_comes_from_client_credentials(stack: Stack, entra: FakeEntra) -> None:
    client_secret = "cs-" + secrets.token_urlsafe(16)
    entra.register_client("saga-app", client_secret)
    await set_key(stack, "copilot-app", client_secret)
    reply = await credential(stack, "copilot-app")
    assert reply.secret == entra.issued_access_tokens[-1]
    assert entra.calls[-1].form["grant_type"] == "client_credentials"
    assert entra.calls[-1].form["client_secret"] == client_secret
    assert (await credential(stack, "copilot-app")).secret == reply.secret  # kept
    assert entra.count == 1


# ------------------------------------------------------------------------- persistence


async def test_a_lost_compare_and_set_returns_an_error_never_the_token(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await new_user(stack)
    refresh = entra.issue_refresh_token()
    await link(stack, user_id, refresh)
    stale = json.dumps(
        {"refresh_token": refresh, "access_token": access_token(10), "expires_at": 0, "scopes": []}
    ).encode()

    async def concurrent_write(call: fake.Call) -> None:
        # Another writer changes the secret while auth waits for the token endpoint.
        await vault_put(stack, f"user:{user_id}", "oauth:copilot", stale)

    entra.on_request = concurrent_write
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user_credential(stack, user_id)
    assert (err.value.code(), describe(err.value).reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "PROVIDER_TOKEN_NOT_SAVED",
    )
    unsaved = entra.issued_access_tokens[-1]
    assert unsaved not in str(err.value)
    saved = await vault_get(stack, f"user:{user_id}", "oauth:copilot")
    assert saved["access_token"] != unsaved  # the concurrent write stands
    entra.on_request = None
    assert (await user_credential(stack, user_id)).secret != unsaved  # positive control


async def test_concurrent_calls_in_one_process_make_one_refresh(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await linked_user(stack, entra)
    entra.script(fake.success(delay=0.5))
    replies = await asyncio.gather(*(user_credential(stack, user_id) for _ in range(20)))
    assert entra.count == 1
    assert {r.secret for r in replies} == {entra.issued_access_tokens[-1]}


async def test_a_vault_stopped_mid_refresh_means_an_error_not_the_token(
    stack: Stack, entra: FakeEntra
) -> None:
    user_id = await linked_user(stack, entra)

    async def stop_vault(call: fake.Call) -> None:
        assert await asyncio.to_thread(stack.stop, "vault") == 0

    entra.on_request = stop_vault
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await user_credential(stack, user_id)
        assert (err.value.code(), describe(err.value).reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "PROVIDER_TOKEN_NOT_SAVED",
        )
        assert entra.issued_access_tokens[-1] not in str(err.value)
    finally:
        entra.on_request = None
        stack.start("vault")
        await stack.wait_serving("vault")
    # Positive control: with the vault back, the same call succeeds (the channel reconnects).
    for _ in range(40):
        code, _reason = await outcome(user_credential(stack, user_id))
        if code == grpc.StatusCode.OK:
            break
        await asyncio.sleep(0.25)
    assert code == grpc.StatusCode.OK


# ---------------------------------------------------------------------- log secrecy


async def test_auths_log_holds_no_secret(stack: Stack, entra: FakeEntra) -> None:
    user_id = await linked_user(stack, entra)
    await user_credential(stack, user_id)
    log = stack.read_log("auth")
    # Captured: lines about this very refresh are there.
    assert "provider token refreshed" in log
    assert f"user:{user_id}" in log
    used = SECRETS_USED | set(entra.issued_access_tokens) | set(entra.issued_refresh_tokens)
    assert len(used) > 20
    for secret in used:
        if not secret:
            continue
        forms = {
            secret,
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret),
            base64.b64encode(secret.encode()).decode(),
            base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        }
        for form in forms:
            assert form not in log, "a secret reached auth's log"
        for part in secret.split("."):  # a JWT's signature or body alone is secret too
            if len(part) > 24:
                assert part not in log


async def test_a_token_endpoint_without_tls_is_refused_at_start(tmp_path: Path) -> None:
    loopback = config(FakeEntra())
    insecure = loopback.replace("http://127.0.0.1:0/", "http://login.example.com/")
    async with stack_for(tmp_path, [], config=insecure) as stack:
        process = stack.start("auth")
        assert await asyncio.to_thread(process.wait, 30) == 78  # EX_CONFIG
        assert "providers[2].oauth_token_url" in stack.read_log("auth")
        # Positive control: the same configuration with a loopback endpoint starts.
        (tmp_path / "saga.toml").write_text(loopback)
        await stack.start_all(["auth"])
