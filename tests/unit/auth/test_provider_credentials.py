"""The provider-credential state machine against the fake Entra ID, over auth's real
database (leases) and a versioned secret store: static keys, the 300 s buffer, refresh and
rotation, 429 backoff honouring Retry-After (the lease released while sleeping), the
failures that end a refresh at once, single flight within and across replicas, and
compare-and-set persistence before a token is returned."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from services.auth.credential import API_KEY, OAUTH_ACCESS_TOKEN
from services.auth.leases import FREE, RefreshLeases
from services.auth.oauth_state import OAuthState
from services.auth.provider_credentials import ProviderCredentials
from services.auth.refresh import RefreshPolicy
from services.auth.secret_store import PROVIDERS_OWNER, oauth_name, user_owner
from services.auth.token_endpoint import TokenEndpoint
from services.common.config import ProviderConfig
from services.common.database import Database
from services.common.errors import SagaError
from tests.clock import Clock
from tests.conftest import Backend
from tests.fakes import entra as fake
from tests.fakes.entra import FakeEntra, access_token
from tests.unit.auth.conftest import open_auth_db
from tests.unit.auth.memory_secrets import MemorySecrets

USER = "usr_ada"
OWNER = user_owner(USER)
NAME = oauth_name("copilot")
SCOPES = ("https://api.example/.default", "offline_access")


def providers(entra: FakeEntra) -> tuple[ProviderConfig, ...]:
    url = entra.token_url()
    return (
        ProviderConfig(
            name="copilot",
            kind="copilot",
            model="gpt",
            credential="oauth_user",
            oauth_token_url=url,
            oauth_client_id="client-1",
            oauth_scopes=SCOPES,
        ),
        ProviderConfig(
            name="copilot-app",
            kind="copilot",
            model="gpt",
            credential="oauth_app",
            oauth_token_url=url,
            oauth_client_id="app-1",
            oauth_scopes=("https://api.example/.default",),
        ),
        ProviderConfig(name="openai", kind="openai", model="gpt", credential="api_key"),
        ProviderConfig(name="unconfigured", kind="copilot", model="gpt", credential="oauth_user"),
        ProviderConfig(name="sim", kind="sim", model="sim"),
    )


@dataclass
class World:
    """A replica's ProviderCredentials, its clock, and the sleeps it took."""

    clock: Clock
    slept: list[float] = field(default_factory=list)
    before_sleep: Callable[[], Awaitable[None]] | None = None
    credentials: ProviderCredentials = field(init=False)

    async def sleep(self, seconds: float) -> None:
        """Record the pause and move the clock by it, taking no real time."""
        if self.before_sleep is not None:
            await self.before_sleep()
        self.slept.append(seconds)
        self.clock.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def entra() -> AsyncIterator[FakeEntra]:
    server = await FakeEntra().start()
    server.register_client("app-1", "app-secret")
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def world_of(
    db: Database,
    vault: MemorySecrets,
    entra: FakeEntra,
    session: aiohttp.ClientSession,
    *,
    jitter: float = 1.0,
    real_sleep: bool = False,
) -> World:
    """A replica. Its clock starts at the real time (the fake dates its tokens with it) and
    moves when the state machine sleeps, so backoffs take no real time — unless
    `real_sleep` (replicas polling each other's lease need real pauses)."""
    world = World(clock=Clock(time.time()))
    world.credentials = ProviderCredentials(
        providers(entra),
        vault,
        TokenEndpoint(session, timeout_seconds=1.0, clock=world.clock),
        RefreshLeases(db, world.clock),
        RefreshPolicy(backoff_base_seconds=1.0),
        clock=time.time if real_sleep else world.clock,
        sleep=asyncio.sleep if real_sleep else world.sleep,
        jitter=lambda: jitter,  # 1.0: the top of the range, backoffs of 1, 2, 4, 8 s
    )
    return world


@pytest.fixture
async def world(
    db: Database, vault: MemorySecrets, entra: FakeEntra, session: aiohttp.ClientSession
) -> AsyncIterator[World]:
    w = world_of(db, vault, entra, session)
    yield w
    await w.credentials.close()


async def linked(world: World, entra: FakeEntra) -> str:
    refresh = entra.issue_refresh_token()
    await world.credentials.link_account("copilot", USER, refresh, [])
    return refresh


async def outcome(world: World, provider: str = "copilot", user: str = USER) -> str:
    try:
        await world.credentials.credential(provider, user)
    except SagaError as error:
        return f"{error.code.name} {error.reason}"
    return "OK"


def stored(vault: MemorySecrets, owner: str = OWNER, name: str = NAME) -> OAuthState:
    return OAuthState.from_payload(vault.rows[(owner, name)].payload)


# ------------------------------------------------------------------------ static keys


async def test_a_static_key_is_returned_as_the_operator_set_it(
    world: World, vault: MemorySecrets
) -> None:
    assert await outcome(world, "openai") == "NOT_FOUND PROVIDER_KEY_NOT_SET"
    assert await world.credentials.set_key("openai", "sk-test-123") == 1
    credential = await world.credentials.credential("openai", "")
    assert (credential.kind, credential.secret, credential.expires_at, credential.version) == (
        API_KEY,
        "sk-test-123",
        None,
        1,
    )
    assert await world.credentials.set_key("openai", "sk-test-456") == 2
    again = await world.credentials.credential("openai", USER)
    assert again.secret == "sk-test-456"  # noqa: S105 (a test key)
    assert vault.rows[(PROVIDERS_OWNER, "openai")].metadata == {"kind": "api_key"}


async def test_keys_are_checked(world: World) -> None:
    async def set_key(provider: str, key: str) -> str:
        try:
            await world.credentials.set_key(provider, key)
        except SagaError as error:
            return error.reason
        return "OK"

    assert await set_key("openai", "sk-" + "a" * 8189) == "OK"
    assert await set_key("openai", "sk-" + "a" * 8190) == "PROVIDER_KEY_INVALID"
    assert await set_key("openai", "") == "PROVIDER_KEY_INVALID"
    assert await set_key("openai", "sk-pasted\n") == "PROVIDER_KEY_INVALID"
    assert await set_key("sim", "sk-x") == "PROVIDER_CREDENTIAL_MISMATCH"
    assert await set_key("nope", "sk-x") == "UNKNOWN_PROVIDER"
    assert await set_key("copilot-app", "client-secret") == "OK"  # an OAuth client secret
    assert await outcome(world, "sim") == "FAILED_PRECONDITION PROVIDER_CREDENTIAL_MISMATCH"


# ---------------------------------------------------------------------- linked accounts


async def test_a_linked_account_is_refreshed_and_the_rotated_token_saved_first(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    assert await outcome(world) == "NOT_FOUND PROVIDER_ACCOUNT_NOT_LINKED"
    refresh = await linked(world, entra)
    credential = await world.credentials.credential("copilot", USER)
    assert entra.count == 1
    assert entra.calls[0].form == {
        "grant_type": "refresh_token",
        "client_id": "client-1",
        "refresh_token": refresh,
        "scope": " ".join(SCOPES),
    }
    assert credential.kind == OAUTH_ACCESS_TOKEN
    assert credential.secret == entra.issued_access_tokens[-1]
    assert credential.expires_at is not None
    assert credential.expires_at > time.time() + 3000
    saved = stored(vault)
    assert saved.access_token == credential.secret
    assert saved.refresh_token not in ("", refresh)  # the rotated one
    assert credential.version == vault.rows[(OWNER, NAME)].version == 2
    # Fresh: the next call makes no call.
    again = await world.credentials.credential("copilot", USER)
    assert (again.secret, entra.count) == (credential.secret, 1)


async def test_the_next_refresh_uses_the_rotated_refresh_token(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    first = await linked(world, entra)
    entra.script(fake.success(expires_in=100))  # under the buffer: refreshed every call
    await world.credentials.credential("copilot", USER)
    rotated = stored(vault).refresh_token
    entra.revoke(first)  # only the rotated one works now
    await world.credentials.credential("copilot", USER)
    assert [c.form["refresh_token"] for c in entra.calls] == [first, rotated]


async def test_link_scopes_replace_the_configured_ones(world: World, entra: FakeEntra) -> None:
    await world.credentials.link_account(
        "copilot", USER, entra.issue_refresh_token(), ["api://x/read", "offline_access"]
    )
    await world.credentials.credential("copilot", USER)
    assert entra.calls[0].form["scope"] == "api://x/read offline_access"


@pytest.mark.parametrize(("expires_in", "calls"), [(400, 1), (200, 2)])
async def test_a_token_with_less_than_the_buffer_left_is_refreshed(
    world: World, entra: FakeEntra, expires_in: int, calls: int
) -> None:
    await linked(world, entra)
    entra.script(fake.success(expires_in=expires_in), fake.success(expires_in=expires_in))
    first = await world.credentials.credential("copilot", USER)
    second = await world.credentials.credential("copilot", USER)
    assert entra.count == calls
    assert (first.secret == second.secret) == (calls == 1)


async def test_a_stored_token_that_cannot_be_dated_is_refreshed(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    refresh = await linked(world, entra)
    for bad in ["opaque-token", access_token(3600, exp="tomorrow"), "a.b.c"]:
        state = OAuthState(refresh, bad, time.time() + 3600, ())
        await vault.put(OWNER, NAME, state.to_payload(), {}, None)
        credential = await world.credentials.credential("copilot", USER)
        assert credential.secret == entra.issued_access_tokens[-1] != bad
        refresh = stored(vault).refresh_token
    assert entra.count == 3


async def test_a_provider_without_a_token_endpoint_says_so(world: World, entra: FakeEntra) -> None:
    await world.credentials.link_account("unconfigured", USER, entra.issue_refresh_token(), [])
    assert await outcome(world, "unconfigured") == (
        "FAILED_PRECONDITION PROVIDER_OAUTH_NOT_CONFIGURED"
    )


async def test_an_unreadable_link_needs_reauthorisation_without_a_call(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    await vault.put(OWNER, NAME, b"not json", {}, None)
    assert await outcome(world) == "FAILED_PRECONDITION REAUTH_REQUIRED"
    assert entra.count == 0


async def test_links_are_checked(world: World, entra: FakeEntra) -> None:
    async def link(provider: str, user: str, refresh: str, scopes: list[str]) -> str:
        try:
            await world.credentials.link_account(provider, user, refresh, scopes)
        except SagaError as error:
            return error.reason
        return "OK"

    rt = entra.issue_refresh_token()
    assert await link("copilot", USER, rt, ["a"] * 32) == "OK"
    assert await link("openai", USER, rt, []) == "PROVIDER_CREDENTIAL_MISMATCH"
    assert await link("copilot-app", USER, rt, []) == "PROVIDER_CREDENTIAL_MISMATCH"
    assert await link("copilot", USER, "", []) == "REFRESH_TOKEN_INVALID"
    assert await link("copilot", USER, "x" * 16385, []) == "REFRESH_TOKEN_INVALID"
    assert await link("copilot", "", rt, []) == "USER_ID_INVALID"
    assert await link("copilot", USER, rt, ["a"] * 33) == "OAUTH_SCOPES_INVALID"
    assert await link("copilot", USER, rt, ["has space"]) == "OAUTH_SCOPES_INVALID"
    assert await outcome(world, user="") == "INVALID_ARGUMENT USER_ID_INVALID"


# ------------------------------------------------------------------------- 429 backoff


async def test_a_429_waits_its_retry_after_then_succeeds(world: World, entra: FakeEntra) -> None:
    await linked(world, entra)
    entra.script(fake.rate_limited("3"), fake.success())
    credential = await world.credentials.credential("copilot", USER)
    assert credential.secret == entra.issued_access_tokens[-1]
    assert entra.count == 2
    assert world.slept == [3.0]  # Retry-After beats the 1 s backoff


async def test_without_retry_after_the_backoff_doubles(world: World, entra: FakeEntra) -> None:
    await linked(world, entra)
    entra.script(*[fake.rate_limited("")] * 3, fake.success())
    await world.credentials.credential("copilot", USER)
    assert world.slept == [1.0, 2.0, 4.0]


async def test_the_jitter_stays_between_half_and_all_of_the_backoff(
    db: Database, vault: MemorySecrets, entra: FakeEntra, session: aiohttp.ClientSession
) -> None:
    w = world_of(db, vault, entra, session, jitter=0.0)  # the bottom of the range
    await linked(w, entra)
    entra.script(*[fake.rate_limited("")] * 3, fake.success())
    await w.credentials.credential("copilot", USER)
    assert w.slept == [0.5, 1.0, 2.0]


async def test_five_429s_are_resource_exhausted_after_five_calls(
    world: World, entra: FakeEntra
) -> None:
    await linked(world, entra)
    entra.script(*[fake.rate_limited("0")] * 6)
    with pytest.raises(SagaError) as err:
        await world.credentials.credential("copilot", USER)
    assert (err.value.code.name, err.value.reason) == (
        "RESOURCE_EXHAUSTED",
        "PROVIDER_TOKEN_RATE_LIMITED",
    )
    assert err.value.retry_after is not None
    assert err.value.retry_after > 0
    assert entra.count == 5
    assert world.slept == [1.0, 2.0, 4.0, 8.0]  # 15 s of the ~31 s budget


async def test_a_retry_after_beyond_the_budget_gives_up_at_once(
    world: World, entra: FakeEntra
) -> None:
    await linked(world, entra)
    entra.script(fake.rate_limited("120"))
    with pytest.raises(SagaError) as err:
        await world.credentials.credential("copilot", USER)
    assert err.value.reason == "PROVIDER_TOKEN_RATE_LIMITED"
    assert err.value.retry_after == 120
    assert (entra.count, world.slept) == (1, [])


async def test_the_lease_is_not_held_while_backing_off(
    world: World, entra: FakeEntra, db: Database
) -> None:
    await linked(world, entra)
    holders: list[str] = []

    async def look() -> None:
        row = await db.fetchrow("SELECT holder FROM refresh_leases")
        holders.append(row["holder"] if row else "none")

    world.before_sleep = look
    entra.script(fake.rate_limited("1"), fake.rate_limited("1"), fake.success())
    await world.credentials.credential("copilot", USER)
    assert holders == [FREE, FREE]  # released (a cool-down marker only) while sleeping
    assert await db.fetchval("SELECT COUNT(*) FROM refresh_leases") == 0  # done: gone


# ---------------------------------------------------------------- failures end at once


@pytest.mark.parametrize("aadsts", [70008, 700082, 700084, 50173])
async def test_invalid_grant_needs_reauthorisation_after_one_call(
    world: World, entra: FakeEntra, aadsts: int
) -> None:
    await linked(world, entra)
    entra.script(fake.invalid_grant(aadsts))
    with pytest.raises(SagaError) as err:
        await world.credentials.credential("copilot", USER)
    assert (err.value.code.name, err.value.reason) == ("FAILED_PRECONDITION", "REAUTH_REQUIRED")
    assert err.value.metadata["aadsts"] == str(aadsts)
    assert (entra.count, world.slept) == (1, [])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (fake.invalid_client(), "UNAUTHENTICATED PROVIDER_CLIENT_INVALID"),
        (fake.server_error(500), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.server_error(502), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.success(delay=1.5), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),  # a timeout
    ],
)
async def test_other_failures_end_the_refresh_after_one_call(
    world: World, entra: FakeEntra, vault: MemorySecrets, reply: fake.Reply, expected: str
) -> None:
    await linked(world, entra)
    before = vault.rows[(OWNER, NAME)]
    entra.script(reply)
    assert await outcome(world) == expected
    assert entra.count == 1
    assert vault.rows[(OWNER, NAME)] == before
    assert await outcome(world) == "OK"  # positive control: the next call succeeds


# ------------------------------------------------------------------------ single flight


async def test_concurrent_callers_share_one_refresh(world: World, entra: FakeEntra) -> None:
    await linked(world, entra)
    entra.script(fake.success(delay=0.3))
    results = await asyncio.gather(
        *(world.credentials.credential("copilot", USER) for _ in range(50))
    )
    assert entra.count == 1
    assert {r.secret for r in results} == {entra.issued_access_tokens[-1]}


async def test_concurrent_callers_share_one_failure(world: World, entra: FakeEntra) -> None:
    await linked(world, entra)
    entra.script(fake.Reply("invalid_grant", aadsts=70008, delay=0.3))
    results = await asyncio.gather(
        *(world.credentials.credential("copilot", USER) for _ in range(20)),
        return_exceptions=True,
    )
    assert entra.count == 1
    assert {getattr(r, "reason", None) for r in results} == {"REAUTH_REQUIRED"}


async def test_replicas_share_one_refresh(
    backend: Backend,
    tmp_path: Path,
    vault: MemorySecrets,
    entra: FakeEntra,
    session: aiohttp.ClientSession,
) -> None:
    dbs = [await open_auth_db(backend, tmp_path) for _ in range(2)]
    replicas = [world_of(d, vault, entra, session, real_sleep=True) for d in dbs]
    try:
        await linked(replicas[0], entra)
        entra.script(fake.success(delay=0.5))
        results = await asyncio.gather(
            *(replicas[i % 2].credentials.credential("copilot", USER) for i in range(50))
        )
        assert entra.count == 1
        assert {r.secret for r in results} == {entra.issued_access_tokens[-1]}
    finally:
        for replica in replicas:
            await replica.credentials.close()
        for d in dbs:
            await d.close()


async def test_a_caller_giving_up_does_not_cancel_the_refresh(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    await linked(world, entra)
    entra.script(fake.success(delay=0.3))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(world.credentials.credential("copilot", USER), 0.05)
    for _ in range(100):
        if stored(vault).access_token:
            break
        await asyncio.sleep(0.05)
    assert stored(vault).access_token == entra.issued_access_tokens[-1]
    assert (await world.credentials.credential("copilot", USER)).secret == (
        entra.issued_access_tokens[-1]
    )
    assert entra.count == 1


# ------------------------------------------------------------------------- persistence


async def test_a_token_that_could_not_be_saved_is_not_returned(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    await linked(world, entra)
    before = vault.rows[(OWNER, NAME)]
    vault.fail_puts = 1  # the vault is down when the token comes back
    with pytest.raises(SagaError) as err:
        await world.credentials.credential("copilot", USER)
    assert (err.value.code.name, err.value.reason) == ("UNAVAILABLE", "PROVIDER_TOKEN_NOT_SAVED")
    unsaved = entra.issued_access_tokens[-1]
    assert unsaved not in repr(err.value)
    assert vault.rows[(OWNER, NAME)] == before
    # Once the vault is back, a refresh (with the old refresh token, still valid) works.
    credential = await world.credentials.credential("copilot", USER)
    assert credential.secret != unsaved
    assert credential.secret == stored(vault).access_token


async def test_a_lost_compare_and_set_with_a_stale_token_is_an_error(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    refresh = await linked(world, entra)

    async def relink(call: fake.Call) -> None:  # a concurrent write while the call is out
        stale = OAuthState(refresh, access_token(10), time.time() + 10, ())
        await vault.put(OWNER, NAME, stale.to_payload(), {}, None)

    entra.on_request = relink
    with pytest.raises(SagaError) as err:
        await world.credentials.credential("copilot", USER)
    assert err.value.reason == "PROVIDER_TOKEN_NOT_SAVED"
    assert stored(vault).access_token != entra.issued_access_tokens[-1]


async def test_a_lost_compare_and_set_with_a_fresh_token_returns_that_token(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    refresh = await linked(world, entra)
    theirs = access_token(3600)

    async def other_replica_saved(call: fake.Call) -> None:
        fresh = OAuthState(refresh, theirs, time.time() + 3600, ())
        await vault.put(OWNER, NAME, fresh.to_payload(), {}, None)

    entra.on_request = other_replica_saved
    credential = await world.credentials.credential("copilot", USER)
    assert credential.secret == theirs != entra.issued_access_tokens[-1]


# ---------------------------------------------------------------------- client credentials


async def test_an_app_token_comes_from_client_credentials_and_is_kept(
    world: World, entra: FakeEntra, vault: MemorySecrets
) -> None:
    assert await outcome(world, "copilot-app", "") == "NOT_FOUND PROVIDER_KEY_NOT_SET"
    assert entra.count == 0
    await world.credentials.set_key("copilot-app", "wrong-secret")
    assert await outcome(world, "copilot-app", "") == "UNAUTHENTICATED PROVIDER_CLIENT_INVALID"
    await world.credentials.set_key("copilot-app", "app-secret")
    credential = await world.credentials.credential("copilot-app", "")
    assert credential.secret == entra.issued_access_tokens[-1]
    assert entra.calls[-1].form == {
        "grant_type": "client_credentials",
        "client_id": "app-1",
        "client_secret": "app-secret",
        "scope": "https://api.example/.default",
    }
    calls = entra.count
    assert (await world.credentials.credential("copilot-app", USER)).secret == credential.secret
    assert entra.count == calls
    kept = json.loads(vault.rows[(PROVIDERS_OWNER, oauth_name("copilot-app"))].payload)
    assert kept["access_token"] == credential.secret
    assert kept["refresh_token"] == ""
