"""No secret in any log: one run through the gateway with all six real processes that uses
every kind of secret Saga handles — a password (Register, Login, a wrong one too), API keys
(the admin key, created keys), the JWT from Login, an operator's provider key
(SetProviderKey, used by the `openai` engine), and an OAuth refresh token
(LinkProviderAccount) that auth exchanges at a fake Entra ID for an access token the `copilot`
engine calls with (and a rotated refresh token that auth stores). Then every service's log is
read: first it must be the run's log (its execution ids are there), then no secret may be in
it — raw, base64 (standard and URL-safe, padded or not, at any byte alignment) or
URL-encoded."""

from __future__ import annotations

import asyncio
import base64
import secrets
import urllib.parse
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import options_pb2
from saga.gateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
)
from services.common.identity import SERVICES
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat
from tests.fakes.entra import FakeEntra, copilot_toml
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import stack_for
from tests.raw_http2 import grpc_call

TOKENS = 6
MIN_NEEDLE = 12
"""Shorter encodings of a secret could match by chance; every secret here is much longer."""


def config(fake: FakeProviders, entra: FakeEntra) -> str:
    """An operator-keyed OpenAI provider and a Copilot provider on users' Entra ID tokens."""
    return f"""
[router]
circuit_cooldown_seconds = 0.5

[[providers]]
name = "openai-main"
kind = "openai"
model = "gpt-4o-mini"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
first_token_timeout_ms = 5000

{copilot_toml(fake.base_url("copilot"), entra, "first_token_timeout_ms = 5000")}"""


ENV = {
    "SAGA_AUTH__ARGON2_MEMORY_KIB": "64",
    "SAGA_AUTH__ARGON2_TIME_COST": "1",
    "SAGA_GATEWAY__ACCOUNT_CALLS_PER_MINUTE": "1000",
    # The most verbose logs: a secret logged at any level must be caught.
    "SAGA_TELEMETRY__LOG_LEVEL": "debug",
}


def encodings(secret: str) -> set[str]:
    """Every form of `secret` the logs are searched for: raw, URL-encoded, and base64 in both
    alphabets, padded and not. For base64, the characters that depend only on the secret are
    taken at each of the three byte alignments it may have inside a longer encoded value (e.g.
    `Bearer <secret>` or `user:<secret>` encoded whole)."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for shift in range(3):
            shifted = encode(b"\0" * shift + raw).decode().rstrip("=")
            # Skip the groups that also encode the bytes before and after the secret.
            forms.add(shifted[4 if shift else 0 : len(shifted) - 4])
    assert all(len(f) >= MIN_NEEDLE for f in forms), secret
    return forms


def test_encodings_find_a_secret_wherever_it_sits() -> None:
    secret = "rt." + secrets.token_urlsafe(32)
    needles = encodings(secret)
    for prefix in (b"", b"x", b"Bearer ", b"user:pass-"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(prefix + secret.encode() + b"!").decode()
            assert any(n in encoded for n in needles), (prefix, encode)
    assert any(n in f"q?token={urllib.parse.quote(secret, safe='')}&x=1" for n in needles)
    # The negative control: another secret of the same shape is not found.
    other = "rt." + secrets.token_urlsafe(32)
    assert not any(n in base64.b64encode(other.encode()).decode() for n in needles)


async def test_no_secret_reaches_any_log(tmp_path: Path) -> None:
    entra = await FakeEntra().start()
    provider_key = f"sk-op-{secrets.token_urlsafe(24)}"
    fake = FakeProviders(api_key=provider_key)
    # Copilot accepts exactly the access tokens the fake Entra ID has issued (a live view).
    fake.copilot_tokens = entra.issued_access_tokens  # type: ignore[assignment]
    await fake.start()
    fake.defaults["openai"] = Script(tokens=TOKENS)
    fake.defaults["copilot"] = Script(tokens=TOKENS)
    password = "pw " + secrets.token_urlsafe(15)
    wrong_password = "pw " + secrets.token_urlsafe(15)
    used: dict[str, str] = {"provider key": provider_key, "password": password}
    used["wrong password"] = wrong_password
    execution_ids: list[str] = []
    try:
        async with stack_for(tmp_path, config=config(fake, entra), **ENV) as stack:
            admin = stack.admin_key()
            used["admin key"] = admin
            async with stack.gateway_channel() as ch:
                accounts = account_pb2_grpc.AccountServiceStub(ch)
                operator = admin_pb2_grpc.AdminServiceStub(ch)
                executions = execution_pb2_grpc.ExecutionServiceStub(ch)

                async def execute(key: str, provider: str) -> list[execution_pb2.ExecuteResponse]:
                    request = chat(f"hello {provider}")
                    request.options.CopyFrom(
                        options_pb2.ExecuteOptions(preferred_providers=[provider])
                    )
                    return [
                        e
                        async for e in executions.Execute(request, metadata=bearer(key), timeout=60)
                    ]

                await operator.SetProviderKey(
                    admin_pb2.SetProviderKeyRequest(provider="openai-main", api_key=provider_key),
                    metadata=bearer(admin),
                    timeout=10,
                )
                email = f"logs.{secrets.token_hex(4)}@example.com"
                user = await accounts.Register(
                    account_pb2.RegisterRequest(email=email, password=password),
                    metadata=bearer(admin),  # self-registration is closed: the admin creates it
                    timeout=30,
                )
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await accounts.Login(
                        account_pb2.LoginRequest(email=email, password=wrong_password), timeout=30
                    )
                assert describe(err.value).reason == "LOGIN_FAILED"
                jwt = (
                    await accounts.Login(
                        account_pb2.LoginRequest(email=email, password=password), timeout=30
                    )
                ).access_token
                used["access token (JWT)"] = jwt
                created = await accounts.CreateApiKey(
                    account_pb2.CreateApiKeyRequest(name="logs", scopes=["execute"]),
                    metadata=bearer(admin),
                    timeout=10,
                )
                used["created API key"] = created.api_key
                own = await accounts.CreateApiKey(
                    account_pb2.CreateApiKeyRequest(name="mine", scopes=["execute"]),
                    metadata=bearer(jwt),
                    timeout=10,
                )
                used["user's API key"] = own.api_key
                await operator.LinkProviderAccount(
                    admin_pb2.LinkProviderAccountRequest(
                        provider="copilot",
                        user_id=user.user_id,
                        refresh_token=entra.issue_refresh_token(),
                    ),
                    metadata=bearer(admin),
                    timeout=10,
                )

                # The operator's key, through the openai engine.
                keyed = await execute(created.api_key, "openai-main")
                # The user's Entra ID token: auth refreshes it, the copilot engine calls with it.
                linked = await execute(jwt, "copilot")
                # The user's own API key on the same linked account (the token now cached).
                again = await execute(own.api_key, "copilot")

            # The live admin key with one byte that is not UTF-8, sent as raw HTTP/2 (no grpc
            # client would): grpc cannot decode it and logs the value it could not decode.
            reply = await asyncio.to_thread(
                grpc_call,
                stack.ports["gateway"].port,
                "/saga.gateway.v1.ExecutionService/Execute",
                [(b"authorization", f"Bearer {admin}".encode() + b"\xff")],
                chat("raw").SerializeToString(),
            )
            assert b"grpc-status" in reply
            assert b"Invalid encoding" not in reply

            for events in (keyed, linked, again):
                kinds = [e.WhichOneof("event") for e in events]
                assert (kinds[0], kinds[-1]) == ("accepted", "completed"), kinds
                assert "provider_switched" not in kinds
                text = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
                assert text == answer_text(TOKENS)
                execution_ids.append(events[0].accepted.execution_id)
            # Each secret did its work: the provider key at OpenAI, the refresh token at Entra
            # ID, and the access token at Copilot.
            assert {s.headers.get("Authorization") for s in fake.requests("openai")} == {
                f"Bearer {provider_key}"
            }
            assert [c.form["grant_type"] for c in entra.calls] == ["refresh_token"]
            copilot = fake.requests("copilot")
            assert len(copilot) == 2
            assert all(s.authorized for s in copilot)
            assert {s.headers["Authorization"] for s in copilot} == {
                f"Bearer {entra.issued_access_tokens[-1]}"
            }
            for i, token in enumerate(entra.issued_refresh_tokens):
                used[f"refresh token {i}"] = token
            for i, token in enumerate(entra.issued_access_tokens):
                used[f"provider access token {i}"] = token

            # The optimizer logs each outcome it records, after the stream (outbox) — wait for
            # them before stopping, so the logs are the whole run's.
            for _ in range(150):
                if all(e in stack.read_log("optimizer") for e in execution_ids):
                    break
                await asyncio.sleep(0.1)
    finally:
        await fake.stop()
        await entra.stop()

    logs = {service: stack.read_log(service) for service in SERVICES}
    # First: these are the run's logs, captured from every process, with grpc's complaint
    # about the undecodable header among them.
    assert all(logs.values()), [s for s, text in logs.items() if not text]
    assert "Invalid encoding" in logs["gateway"]
    everything = "\n".join(logs.values())
    for execution_id in execution_ids:
        assert execution_id in everything, f"{execution_id} is in no log"
    # Then: no secret, in any form, in any of them.
    # 7 passwords, keys and the JWT; the linked and the rotated refresh tokens; the access token.
    assert len(used) == 10
    leaks = [
        (service, name)
        for service, text in logs.items()
        for name, secret in used.items()
        if any(form in text for form in encodings(secret))
    ]
    assert leaks == []
