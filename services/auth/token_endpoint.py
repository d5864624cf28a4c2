"""One call to an OAuth2 token endpoint (Entra ID v2.0 by default), and what its answer
means (RFC 6749 section 5; Microsoft identity platform error codes).

* 200 with an access token: a `TokenGrant`.
* 429: `RateLimited` (with the Retry-After); the caller backs off and tries again.
* `invalid_grant`, `interaction_required`, `consent_required`, `login_required` (Entra ID:
  AADSTS70008 expired, 700082 inactive too long, 700084 SPA token lifetime, 50173 password
  changed, …): FAILED_PRECONDITION `REAUTH_REQUIRED` — the user must link the account
  again; never retried.
* 401, `invalid_client`, `unauthorized_client`: UNAUTHENTICATED `PROVIDER_CLIENT_INVALID`
  — the client id or secret is wrong.
* another 4xx (`invalid_scope`, `invalid_request`, …): FAILED_PRECONDITION
  `PROVIDER_TOKEN_REQUEST_REJECTED` — the provider's OAuth configuration is wrong.
* 5xx, a network error, a timeout, an unreadable answer: UNAVAILABLE
  `PROVIDER_TOKEN_UNAVAILABLE` (with RetryInfo).

Nothing secret is logged or put in an error: not the form (it carries the refresh token or
client secret), not the answer's tokens. The `error_description` is not echoed either (only
the error and its AADSTS code), since providers may quote request values in it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.common.errors import FailedPrecondition, Unauthenticated, Unavailable

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("saga.auth.oauth")

MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 16 * 1024
MAX_EXPIRES_IN = 366 * 86_400
REAUTH_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
)
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
_AADSTS = re.compile(r"AADSTS(\d{4,9})")


@dataclass(frozen=True)
class TokenGrant:
    """A successful answer: the new access token, when the endpoint says it expires, and
    the rotated refresh token if one was issued."""

    access_token: str
    expires_at: float | None
    refresh_token: str | None


class RateLimited(Exception):
    """The endpoint answered 429; `retry_after` is its Retry-After in seconds, if any."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("token endpoint rate limited")
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) as seconds from `now`."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - now, 86_400.0))


def _aadsts(body: Mapping[str, Any]) -> str:
    codes = body.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return str(codes[0])
    description = body.get("error_description")
    found = _AADSTS.search(description) if isinstance(description, str) else None
    return found.group(1) if found else ""


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ValueError("token endpoint answer too large")
        chunks.append(chunk)
    return b"".join(chunks)


class TokenEndpoint:
    """Calls token endpoints over one pooled aiohttp session: `session` (tests share one),
    or, when None, one of its own opened on the first exchange and closed by `close`. Most
    deployments have no OAuth provider: aiohttp (~8 MiB resident) is imported only then."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._owned: aiohttp.ClientSession | None = None
        self._timeout_seconds = timeout_seconds
        self._clock = clock

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = self._owned = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session this endpoint opened itself (a given one is the caller's)."""
        if self._owned is not None:
            await self._owned.close()

    async def exchange(self, provider: str, url: str, form: Mapping[str, str]) -> TokenGrant:
        """POST `form` (a refresh_token or client_credentials grant) to `url`."""
        import aiohttp

        try:
            async with self._client().post(
                url,
                data=dict(form),
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(
                    response.headers.get("Retry-After"), self._clock()
                )
                raw = await _read_bounded(response)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning(
                "token endpoint unreachable",
                extra={"provider": provider, "error": type(error).__name__},
            )
            raise Unavailable(
                "the provider's token endpoint is unreachable",
                reason="PROVIDER_TOKEN_UNAVAILABLE",
                retry_after=1.0,
                metadata={"provider": provider},
            ) from None
        body = _json_object(raw)
        if status == 200 and body is not None:
            return self._grant(provider, body)
        if status == 429:
            raise RateLimited(retry_after)
        oauth_error = str(body.get("error", "")) if body is not None else ""
        code = _aadsts(body) if body is not None else ""
        details = {"provider": provider, "oauthError": oauth_error[:64], "aadsts": code}
        log.warning("token endpoint refused", extra={**details, "status": status})
        if oauth_error in REAUTH_ERRORS:
            raise FailedPrecondition(
                "the linked account must be authorised again (link it anew)",
                reason="REAUTH_REQUIRED",
                metadata=details,
            )
        if status == 401 or oauth_error in CLIENT_ERRORS:
            raise Unauthenticated(
                "the provider refused the OAuth client credentials",
                reason="PROVIDER_CLIENT_INVALID",
                metadata=details,
            )
        if 400 <= status < 500:
            raise FailedPrecondition(
                f"the provider's token endpoint refused the request ({status})",
                reason="PROVIDER_TOKEN_REQUEST_REJECTED",
                metadata={**details, "status": str(status)},
            )
        raise Unavailable(
            f"the provider's token endpoint failed ({status})",
            reason="PROVIDER_TOKEN_UNAVAILABLE",
            retry_after=retry_after or 1.0,
            metadata={**details, "status": str(status)},
        )

    def _grant(self, provider: str, body: Mapping[str, Any]) -> TokenGrant:
        access = body.get("access_token")
        refresh = body.get("refresh_token")
        expires_in = _number(body.get("expires_in"))
        if (
            not isinstance(access, str)
            or not access
            or len(access) > MAX_TOKEN_CHARS
            or (refresh is not None and (not isinstance(refresh, str) or not refresh))
            or (isinstance(refresh, str) and len(refresh) > MAX_TOKEN_CHARS)
        ):
            log.warning("token endpoint answer unusable", extra={"provider": provider})
            raise Unavailable(
                "the provider's token endpoint answered without a usable token",
                reason="PROVIDER_TOKEN_UNAVAILABLE",
                retry_after=1.0,
                metadata={"provider": provider},
            )
        expires_at = None
        if expires_in is not None and 0 < expires_in <= MAX_EXPIRES_IN:
            expires_at = self._clock() + expires_in
        return TokenGrant(access_token=access, expires_at=expires_at, refresh_token=refresh)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    # Entra v2.0 sends an integer; v1.0 and some providers send a numeric string.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
