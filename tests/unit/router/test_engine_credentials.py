"""The router's provider-credential cache (`ProviderCredentials`) against a fake auth gRPC
server on loopback: per-(provider, user) entries, the expiry margin and the static-key TTL,
single flight, stale secrets, the caller's context forwarded, and auth's errors intact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.common.config import ProviderConfig
from services.common.errors import Code, FailedPrecondition, NotFound, SagaError
from services.common.status import RemoteError, abort, to_status_proto
from services.router.credentials import ProviderCredentials
from services.router.engines.base import Caller
from tests.clock import Clock

START = 1_700_000_000.0
SHARED = ProviderConfig(name="openai", kind="openai", model="m", credential="api_key")
PER_USER = ProviderConfig(name="copilot", kind="copilot", model="m", credential="oauth_user")
ALICE = Caller("usr_alice", "ctx-alice")
BOB = Caller("usr_bob", "ctx-bob")


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    """GetProviderCredential as auth answers it: secrets per (provider, user), each call
    recorded with the context it carried; `failure` makes it refuse."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.calls: list[tuple[str, str, str | None]] = []
        self.delay = 0.0
        self.failure: SagaError | None = None
        self.version = 0

    async def GetProviderCredential(
        self, request: auth_pb2.GetProviderCredentialRequest, context: Any
    ) -> auth_pb2.GetProviderCredentialResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.calls.append((request.provider, request.user_id, metadata.get("saga-context")))
        await asyncio.sleep(self.delay)
        if self.failure is not None:
            await abort(context, to_status_proto(self.failure, "auth.saga"))
        secret, expires = self.secrets[(request.provider, request.user_id)]
        self.version += 1
        reply = auth_pb2.GetProviderCredentialResponse(secret=secret, version=self.version)
        if expires is not None:
            reply.expires_at.CopyFrom(timestamp_pb2.Timestamp(seconds=int(expires)))
        return reply


@pytest.fixture
async def auth() -> AsyncIterator[tuple[FakeAuth, grpc.aio.Channel]]:
    fake = FakeAuth()  # type: ignore[abstract]  # a fake serves only the RPC under test
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield fake, channel
    await channel.close(None)
    await server.stop(None)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def test_a_static_key_is_cached_until_its_ttl_then_read_again(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("openai", "")] = ("sk-one", None)
    credentials = ProviderCredentials(channel, clock=clock)
    assert await credentials.get(SHARED, ALICE) == "sk-one"
    clock.now += 59
    assert await credentials.get(SHARED, BOB) == "sk-one"  # shared: one entry for everyone
    assert len(fake.calls) == 1
    fake.secrets[("openai", "")] = ("sk-two", None)  # the operator changed the key
    clock.now += 2
    assert await credentials.get(SHARED, ALICE) == "sk-two"
    assert [c[:2] for c in fake.calls] == [("openai", ""), ("openai", "")]


async def test_an_oauth_token_is_cached_until_a_minute_before_it_expires(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("copilot", "usr_alice")] = ("tok-a1", START + 400)
    credentials = ProviderCredentials(channel, clock=clock)
    assert await credentials.get(PER_USER, ALICE) == "tok-a1"
    clock.now = START + 339
    assert await credentials.get(PER_USER, ALICE) == "tok-a1"
    assert len(fake.calls) == 1
    fake.secrets[("copilot", "usr_alice")] = ("tok-a2", START + 900)
    clock.now = START + 341
    assert await credentials.get(PER_USER, ALICE) == "tok-a2"
    assert len(fake.calls) == 2
    # A token with less life left than the margin is used, and never cached past its expiry.
    fake.secrets[("copilot", "usr_bob")] = ("tok-brief", START + 371)
    assert await credentials.get(PER_USER, BOB) == "tok-brief"
    assert await credentials.get(PER_USER, BOB) == "tok-brief"
    assert len(fake.calls) == 4


async def test_each_user_has_their_own_token_fetched_with_their_context(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("copilot", "usr_alice")] = ("tok-alice", START + 3600)
    fake.secrets[("copilot", "usr_bob")] = ("tok-bob", START + 3600)
    credentials = ProviderCredentials(channel, clock=clock)
    assert await credentials.get(PER_USER, ALICE) == "tok-alice"
    assert await credentials.get(PER_USER, BOB) == "tok-bob"
    assert fake.calls == [
        ("copilot", "usr_alice", "ctx-alice"),
        ("copilot", "usr_bob", "ctx-bob"),
    ]


async def test_a_call_without_a_context_sends_none(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("openai", "")] = ("sk-one", None)
    await ProviderCredentials(channel, clock=clock).get(SHARED, Caller())
    assert fake.calls == [("openai", "", None)]


async def test_a_crowd_on_a_cold_entry_makes_one_call_to_auth(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("copilot", "usr_alice")] = ("tok-alice", START + 3600)
    fake.delay = 0.2
    credentials = ProviderCredentials(channel, clock=clock)
    secrets = await asyncio.gather(*(credentials.get(PER_USER, ALICE) for _ in range(50)))
    assert set(secrets) == {"tok-alice"}
    assert len(fake.calls) == 1


async def test_a_waiter_that_gives_up_does_not_cancel_the_fetch_for_the_others(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("openai", "")] = ("sk-one", None)
    fake.delay = 0.3
    credentials = ProviderCredentials(channel, clock=clock)
    impatient = asyncio.create_task(credentials.get(SHARED, ALICE))
    patient = asyncio.create_task(credentials.get(SHARED, BOB))
    await asyncio.sleep(0.1)
    impatient.cancel()
    assert await patient == "sk-one"
    assert impatient.cancelled()
    assert len(fake.calls) == 1


async def test_a_stale_secret_is_dropped_once_and_fetched_again(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("openai", "")] = ("sk-old", None)
    credentials = ProviderCredentials(channel, clock=clock)
    assert await credentials.get(SHARED, ALICE) == "sk-old"
    fake.secrets[("openai", "")] = ("sk-new", None)
    assert await credentials.get(SHARED, ALICE, stale="sk-old") == "sk-new"
    # A second caller that also saw sk-old refused finds the fresh one: no extra call.
    assert await credentials.get(SHARED, BOB, stale="sk-old") == "sk-new"
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    "failure",
    [
        FailedPrecondition("the refresh token was rejected", reason="REAUTH_REQUIRED"),
        NotFound("no key is set for openai", reason="PROVIDER_KEY_NOT_SET"),
    ],
)
async def test_auths_refusal_reaches_the_caller_intact_and_is_not_cached(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock, failure: SagaError
) -> None:
    fake, channel = auth
    fake.failure = failure
    credentials = ProviderCredentials(channel, clock=clock)
    with pytest.raises(RemoteError) as caught:
        await credentials.get(SHARED, ALICE)
    error = caught.value
    assert (error.code, error.reason, error.domain) == (failure.code, failure.reason, "auth.saga")
    assert error.message == failure.message
    # Control: once auth has the credential, the next call gets it.
    fake.failure = None
    fake.secrets[("openai", "")] = ("sk-one", None)
    assert await credentials.get(SHARED, ALICE) == "sk-one"
    assert len(fake.calls) == 2


async def test_an_unreachable_auth_is_unavailable_decided_by_the_router(clock: Clock) -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        with pytest.raises(RemoteError) as caught:
            await ProviderCredentials(channel, clock=clock).get(SHARED, ALICE)
        assert caught.value.code is Code.UNAVAILABLE
        assert caught.value.domain == "router.saga"
    finally:
        await channel.close(None)


async def test_the_lookup_an_engine_gets_is_bound_to_its_provider(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    fake.secrets[("copilot", "usr_alice")] = ("tok-alice", START + 3600)
    lookup = ProviderCredentials(channel, clock=clock).lookup(PER_USER)
    assert await lookup(ALICE) == "tok-alice"
    assert fake.calls[0][:2] == ("copilot", "usr_alice")


async def test_the_cache_stays_bounded_however_many_users_call(
    auth: tuple[FakeAuth, grpc.aio.Channel], clock: Clock
) -> None:
    fake, channel = auth
    credentials = ProviderCredentials(channel, clock=clock, max_entries=4)
    for i in range(10):  # tokens of an hour, users who call once
        fake.secrets[("copilot", f"usr_{i}")] = (f"tok-{i}", clock.now + 3600)
        assert await credentials.get(PER_USER, Caller(f"usr_{i}", "ctx")) == f"tok-{i}"
        assert len(credentials) <= 4
    assert await credentials.get(PER_USER, Caller("usr_9", "ctx")) == "tok-9"
    assert len(fake.calls) == 10  # the newest entry is kept
    clock.now += 7200  # the two cached tokens expire; three new users call
    for name in ("usr_a", "usr_b", "usr_c"):
        fake.secrets[("copilot", name)] = (f"tok-{name}", clock.now + 3600)
        await credentials.get(PER_USER, Caller(name, "ctx"))
    assert len(credentials) == 3  # full at usr_c: the expired two made room, live ones kept
    await credentials.get(PER_USER, Caller("usr_a", "ctx"))
    assert len(fake.calls) == 13
