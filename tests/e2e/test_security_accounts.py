"""Accounts through the gateway with all six real processes: self-registration is closed by
default (an anonymous or non-admin Register is refused, an admin's creates the user) and open
when configured; Register refuses a bad email, a weak password and a taken address with their
reasons; Login gives a JWT that Execute accepts
and a wrong password does not; the JWT verifies offline against the JWKS the gateway
publishes, from Python (pyjwt) and from Node.js (built-in `crypto` only)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from saga.gateway.v1 import account_pb2, account_pb2_grpc
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat, timed_events
from tests.harness import ROOT, Stack, stack_for

VERIFY_JWT = ROOT / "tests" / "e2e" / "node" / "verify_jwt.js"
ISSUER, AUDIENCE = "saga-auth", "saga"

ENV = {
    # Cheap hashing for tests (the policy, not the cost, is under test here).
    "SAGA_AUTH__ARGON2_MEMORY_KIB": "64",
    "SAGA_AUTH__ARGON2_TIME_COST": "1",
    # Every test here signs up or in from 127.0.0.1; the per-address limit is tested elsewhere.
    "SAGA_GATEWAY__ACCOUNT_CALLS_PER_MINUTE": "1000",
}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """All six services, for this module's sign-ups and sign-ins."""
    async with stack_for(tmp_path_factory.mktemp("accounts"), **ENV) as s:
        yield s


def new_email() -> str:
    return f"user.{secrets.token_hex(4)}@Example.COM"


def new_password() -> str:
    return "correct horse " + secrets.token_urlsafe(9)


async def register(
    stack: Stack, email: str, password: str, key: str | None = ""
) -> account_pb2.RegisterResponse:
    """Register through the gateway: as the admin by default (self-registration is closed),
    as the holder of `key`, or anonymously with `key=None`."""
    key = stack.admin_key() if key == "" else key
    async with stack.gateway_channel() as ch:
        reply: account_pb2.RegisterResponse = await account_pb2_grpc.AccountServiceStub(
            ch
        ).Register(
            account_pb2.RegisterRequest(email=email, password=password),
            metadata=bearer(key) if key is not None else None,
            timeout=30,
        )
    return reply


async def login(stack: Stack, email: str, password: str) -> account_pb2.LoginResponse:
    async with stack.gateway_channel() as ch:
        reply: account_pb2.LoginResponse = await account_pb2_grpc.AccountServiceStub(ch).Login(
            account_pb2.LoginRequest(email=email, password=password), timeout=30
        )
    return reply


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def gateway_jwks(stack: Stack) -> dict[str, Any]:
    """The JWKS from the gateway's AccountService.GetJwks (no credential), as JSON."""
    async with stack.gateway_channel() as ch:
        reply = await account_pb2_grpc.AccountServiceStub(ch).GetJwks(
            account_pb2.GetJwksRequest(), timeout=10
        )
    fields = ("kty", "crv", "x", "y", "kid", "alg", "use")
    return {"keys": [{f: getattr(k, f) for f in fields if getattr(k, f)} for k in reply.keys]}


def flip_signature_byte(token: str) -> str:
    """`token` with one bit of its signature flipped (the header and claims untouched)."""
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def node_verify(token: str, jwks: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the Node.js verifier; its exit code and its JSON answer."""
    result = subprocess.run(
        ["node", str(VERIFY_JWT)],
        input=json.dumps({"token": token, "jwks": jwks, "iss": ISSUER, "aud": AUDIENCE}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


async def test_self_registration_is_closed_by_default_and_an_admin_creates_users(
    stack: Stack,
) -> None:
    email, password = new_email(), new_password()
    anonymous = await refused(register(stack, email, password, key=None))
    details = describe(anonymous)
    assert (anonymous.code(), details.reason, details.domain) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "REGISTRATION_CLOSED",
        "auth.saga",
    )
    assert "admin" in anonymous.details()

    # The admin creates the account (the positive control); its user may not create others.
    created = await register(stack, email, password)
    assert created.email == email.lower()
    token = (await login(stack, email, password)).access_token
    by_user = await refused(register(stack, new_email(), new_password(), key=token))
    assert (by_user.code(), describe(by_user).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "REGISTRATION_CLOSED",
    )
    # A credential that is no credential is refused as such, not as a closed registration.
    bogus = await refused(register(stack, new_email(), new_password(), key="saga_nokey"))
    assert bogus.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_open_self_registration_lets_anyone_register(tmp_path: Path) -> None:
    async with stack_for(
        tmp_path, ["vault", "auth", "gateway"], **ENV, SAGA_AUTH__SELF_REGISTRATION="open"
    ) as open_stack:
        email, password = new_email(), new_password()
        created = await register(open_stack, email, password, key=None)
        assert created.email == email.lower()
        assert (await login(open_stack, email, password)).access_token.count(".") == 2


async def test_register_refuses_bad_input_with_reasons(stack: Stack) -> None:
    email, password = new_email(), new_password()

    bad_email = await refused(register(stack, "not-an-email", password))
    details = describe(bad_email)
    assert (bad_email.code(), details.reason, details.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMAIL_INVALID",
        "auth.saga",
    )
    assert [v.field for v in details.field_violations] == ["email"]

    weak = await refused(register(stack, email, "short"))
    details = describe(weak)
    assert (weak.code(), details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_TOO_SHORT")
    assert [v.field for v in details.field_violations] == ["password"]

    # Positive control: the same email with a good password is accepted, normalised.
    created = await register(stack, email, password)
    assert created.user_id
    assert created.email == email.lower()

    taken = await refused(register(stack, email, new_password()))
    assert (taken.code(), describe(taken).reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "EMAIL_TAKEN",
    )


async def test_a_login_jwt_executes_and_a_wrong_password_does_not_log_in(stack: Stack) -> None:
    email, password = new_email(), new_password()
    await register(stack, email, password)

    wrong = await refused(login(stack, email, password + "x"))
    details = describe(wrong)
    assert (wrong.code(), details.reason, details.domain) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_FAILED",
        "auth.saga",
    )

    issued = await login(stack, email, password)  # the positive control
    assert issued.token_type == "Bearer"  # noqa: S105 (the scheme, not a secret)
    assert issued.access_token.count(".") == 2
    events = [e async for _, e in timed_events(stack, chat("hello as a user"), issued.access_token)]
    kinds = [e.WhichOneof("event") for e in events]
    assert (kinds[0], kinds[-1]) == ("accepted", "completed")
    assert "token" in kinds

    # An altered JWT is no credential at all; the JWT itself is (the positive control).
    altered = flip_signature_byte(issued.access_token)
    async with stack.gateway_channel() as ch:
        accounts = account_pb2_grpc.AccountServiceStub(ch)
        error = await refused(
            accounts.ListApiKeys(
                account_pb2.ListApiKeysRequest(), metadata=bearer(altered), timeout=10
            )
        )
        own = await accounts.ListApiKeys(
            account_pb2.ListApiKeysRequest(), metadata=bearer(issued.access_token), timeout=10
        )
    assert list(own.keys) == []
    assert (error.code(), describe(error).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_UNKNOWN",
    )


async def test_the_jwt_verifies_against_the_jwks_in_python_and_node(stack: Stack) -> None:
    email, password = new_email(), new_password()
    user = await register(stack, email, password)
    token = (await login(stack, email, password)).access_token
    jwks = await gateway_jwks(stack)
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid in {k["kid"] for k in jwks["keys"]}

    # Python: pyjwt with the key the JWKS names, the algorithm pinned.
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == user.user_id
    assert "execute" in claims["scope"].split()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            flip_signature_byte(token),
            key.key,
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
        )

    # Node.js: built-in crypto only.
    code, answer = await asyncio.to_thread(node_verify, token, jwks)
    assert (code, answer["valid"]) == (0, True), answer
    assert answer["claims"]["sub"] == user.user_id
    code, answer = await asyncio.to_thread(node_verify, flip_signature_byte(token), jwks)
    assert (code, answer) == (1, {"valid": False, "error": "bad signature"})


async def test_an_expired_key_stops_at_its_expiry_not_at_the_cache_ttl(stack: Stack) -> None:
    # This module's gateway caches credentials for the default 10 s.
    async with stack.gateway_channel() as ch:
        accounts = account_pb2_grpc.AccountServiceStub(ch)
        request = account_pb2.CreateApiKeyRequest(name="brief", scopes=["execute"])
        request.expires_at.FromNanoseconds(time.time_ns() + 2_000_000_000)
        created = await accounts.CreateApiKey(
            request, metadata=bearer(stack.admin_key()), timeout=10
        )
        listing = account_pb2.ListApiKeysRequest()
        # Used (and so cached) while it lives: the positive control.
        await accounts.ListApiKeys(listing, metadata=bearer(created.api_key), timeout=10)
        await asyncio.sleep(max(0.0, created.info.expires_at.ToNanoseconds() / 1e9 - time.time()))
        await asyncio.sleep(0.3)
        expired = await refused(
            accounts.ListApiKeys(listing, metadata=bearer(created.api_key), timeout=10)
        )
    assert (expired.code(), describe(expired).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_EXPIRED",
    )
