"""One token-endpoint call against the fake Entra ID: what each answer means (success,
429 with Retry-After, invalid_grant, invalid_client, other 4xx, 5xx, junk, no answer)."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.auth.token_endpoint import (
    RateLimited,
    TokenEndpoint,
    retry_after_seconds,
)
from services.common.errors import SagaError
from tests.fakes import entra as fake
from tests.fakes.entra import FakeEntra
from tests.harness import free_ports


@pytest.fixture
async def entra() -> AsyncIterator[FakeEntra]:
    server = await FakeEntra().start()
    yield server
    await server.stop()


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    async with aiohttp.ClientSession() as session:
        yield TokenEndpoint(session, timeout_seconds=1.0)


async def exchange(endpoint: TokenEndpoint, entra: FakeEntra, refresh: str) -> str:
    try:
        await endpoint.exchange(
            "copilot",
            entra.token_url(),
            {"grant_type": "refresh_token", "client_id": "c", "refresh_token": refresh},
        )
    except SagaError as error:
        return f"{error.code.name} {error.reason}"
    except RateLimited as limited:
        return f"429 {limited.retry_after}"
    return "OK"


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("7", 0) == 7
    assert retry_after_seconds(" 0 ", 0) == 0
    assert retry_after_seconds("99999999", 0) == 86_400  # bounded
    when = email.utils.formatdate(1_800_000_030, usegmt=True)
    assert retry_after_seconds(when, 1_800_000_000) == 30
    assert retry_after_seconds(email.utils.formatdate(1_700_000_000, usegmt=True), 1.8e9) == 0
    for junk in (None, "", "soon", "-5", "1.5e9"):
        assert retry_after_seconds(junk, 0) is None


async def test_a_success_carries_the_new_tokens(endpoint: TokenEndpoint, entra: FakeEntra) -> None:
    refresh = entra.issue_refresh_token()
    entra.script(fake.success(expires_in=1234))
    grant = await endpoint.exchange(
        "copilot",
        entra.token_url(),
        {"grant_type": "refresh_token", "client_id": "c", "refresh_token": refresh, "scope": "s"},
    )
    assert grant.access_token == entra.issued_access_tokens[-1]
    assert grant.refresh_token not in (None, refresh)
    assert grant.expires_at is not None
    assert entra.calls[-1].form == {
        "grant_type": "refresh_token",
        "client_id": "c",
        "refresh_token": refresh,
        "scope": "s",
    }


async def test_each_answer_has_its_outcome(endpoint: TokenEndpoint, entra: FakeEntra) -> None:
    refresh = entra.issue_refresh_token()
    assert await exchange(endpoint, entra, refresh) == "OK"  # positive control
    cases = [
        (fake.rate_limited("3"), "429 3.0"),
        (fake.rate_limited(""), "429 None"),
        (fake.invalid_grant(70008), "FAILED_PRECONDITION REAUTH_REQUIRED"),
        (fake.invalid_grant(700082), "FAILED_PRECONDITION REAUTH_REQUIRED"),
        (fake.invalid_client(), "UNAUTHENTICATED PROVIDER_CLIENT_INVALID"),
        (fake.bare(401, ""), "UNAUTHENTICATED PROVIDER_CLIENT_INVALID"),
        (
            fake.bare(400, '{"error": "invalid_scope", "error_codes": [70011]}'),
            "FAILED_PRECONDITION PROVIDER_TOKEN_REQUEST_REJECTED",
        ),
        (
            fake.bare(400, '{"error": "interaction_required", "error_codes": [50076]}'),
            "FAILED_PRECONDITION REAUTH_REQUIRED",
        ),
        (fake.server_error(500), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.server_error(503), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.bare(200, "<html>sign in</html>"), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.bare(200, '{"token_type": "Bearer"}'), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.bare(200, "x" * 100_000), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),
        (fake.success(delay=2.0), "UNAVAILABLE PROVIDER_TOKEN_UNAVAILABLE"),  # timeout 1 s
    ]
    for reply, expected in cases:
        entra.script(reply)
        assert await exchange(endpoint, entra, refresh) == expected, reply
    assert await exchange(endpoint, entra, "rt.never-issued") == (
        "FAILED_PRECONDITION REAUTH_REQUIRED"
    )


async def test_the_aadsts_code_is_reported_not_the_description(
    endpoint: TokenEndpoint, entra: FakeEntra
) -> None:
    entra.script(fake.invalid_grant(50173))
    with pytest.raises(SagaError) as err:
        await endpoint.exchange("copilot", entra.token_url(), {"grant_type": "refresh_token"})
    assert err.value.metadata == {
        "provider": "copilot",
        "oauthError": "invalid_grant",
        "aadsts": "50173",
    }
    assert "AADSTS" not in err.value.message


async def test_an_unreachable_endpoint_is_unavailable(endpoint: TokenEndpoint) -> None:
    (port,) = free_ports(1)
    with pytest.raises(SagaError) as err:
        await endpoint.exchange("copilot", f"http://127.0.0.1:{port}/t/oauth2/v2.0/token", {})
    assert (err.value.code.name, err.value.reason) == ("UNAVAILABLE", "PROVIDER_TOKEN_UNAVAILABLE")


async def test_an_endpoint_without_a_session_opens_its_own_and_closes_it(
    entra: FakeEntra,
) -> None:
    own = TokenEndpoint(None, timeout_seconds=1.0)
    await own.close()  # nothing opened yet: nothing to close
    entra.script(fake.success())
    assert await exchange(own, entra, entra.issue_refresh_token()) == "OK"
    session = own._client()
    await own.close()
    assert session.closed
