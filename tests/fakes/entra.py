"""A fake Entra ID (Microsoft identity platform v2.0) token endpoint: a real aiohttp server
on 127.0.0.1 (an ephemeral port) answering `POST /{tenant}/oauth2/v2.0/token` as Entra does.

Requests are form-encoded (`application/x-www-form-urlencoded`). Two grants:

* `refresh_token` (with `client_id`, `refresh_token`, `scope`, optionally `client_secret`):
  the refresh token must be one this fake issued (`issue_refresh_token`) and not revoked
  (`revoke`), else `invalid_grant` AADSTS70000; a success rotates it (a new refresh token in
  the answer; the old one stays valid, as Entra's do until they expire).
* `client_credentials` (with `client_id`, `client_secret`, `scope`): the pair must be
  registered (`register_client`), else 401 `invalid_client` AADSTS7000215.

A success is `{token_type, scope, expires_in, ext_expires_in, access_token,
refresh_token}`, the access token a JWT-shaped string (RS256 header, claims with `exp`,
an unverifiable signature) — Saga reads its `exp` and nothing else. Errors carry Entra's
body: `{error, error_description: "AADSTS<code>: …\\r\\nTrace ID: …\\r\\nCorrelation ID:
…\\r\\nTimestamp: …", error_codes: [code], timestamp, trace_id, correlation_id,
error_uri}`.

What the next requests get is scriptable: `script(*replies)` queues `Reply`s taken in
order (then the grant's normal answer): a success with a chosen `expires_in`, 429 with
`Retry-After`, `invalid_grant` with an AADSTS code, 401 `invalid_client`, 5xx, or a bare
status; each may be delayed (slow responses), and `on_request` runs a coroutine while a
request is being answered (to change the world mid-refresh). Every request is recorded
(`calls`: time, form) and every token issued is kept (`issued_access_tokens`,
`issued_refresh_tokens`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AADSTS_DESCRIPTIONS = {
    70000: "The provided grant is invalid or malformed.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    700082: "The refresh token has expired due to inactivity.",
    700084: "The refresh token was issued to a single page app (SPA), and therefore has a "
    "fixed, limited lifetime of 1.00:00:00, which can't be extended.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is "
    "needed. The user might have changed or reset their password.",
    7000215: "Invalid client secret provided.",
    700016: "Application with identifier was not found in the directory.",
    50196: "The server terminated an operation because it encountered a client request loop.",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `kind`: success, rate_limited, invalid_grant, invalid_client,
    server_error, or status (a bare `status` with `body`)."""

    kind: str = "success"
    expires_in: int = 3600
    retry_after: str = "1"
    """The Retry-After header of a 429 ("" = none)."""
    aadsts: int = 70008
    status: int = 500
    body: str = ""
    delay: float = 0.0
    """Seconds before answering (a slow endpoint)."""
    rotate: bool = True
    """Whether a success carries a new refresh token."""


def success(expires_in: int = 3600, *, delay: float = 0.0, rotate: bool = True) -> Reply:
    """A token answer whose access token lives `expires_in` seconds."""
    return Reply("success", expires_in=expires_in, delay=delay, rotate=rotate)


def rate_limited(retry_after: str = "1", *, delay: float = 0.0) -> Reply:
    """429 Too Many Requests with a Retry-After header ("" = none)."""
    return Reply("rate_limited", retry_after=retry_after, delay=delay)


def invalid_grant(aadsts: int = 70008) -> Reply:
    """400 invalid_grant with an AADSTS code (70008, 700082, 700084, 50173, …)."""
    return Reply("invalid_grant", aadsts=aadsts)


def invalid_client() -> Reply:
    """401 invalid_client (AADSTS7000215: wrong client secret)."""
    return Reply("invalid_client", aadsts=7000215)


def server_error(status: int = 500, *, delay: float = 0.0) -> Reply:
    """A 5xx with Entra's error body."""
    return Reply("server_error", status=status, delay=delay)


def bare(status: int, body: str = "") -> Reply:
    """Any status with any body, as given."""
    return Reply("status", status=status, body=body)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def access_token(expires_in: float, *, subject: str = "fake-user", exp: Any = None) -> str:
    """A JWT-shaped access token expiring in `expires_in` seconds (or with claim `exp` as
    given, e.g. a string, to test defensive parsing)."""
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "kid": "fake-entra"}
    claims = {
        "aud": "https://api.example",
        "iss": "https://login.microsoftonline.com/fake-tenant/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + int(expires_in) if exp is None else exp,
        "oid": subject,
        "jti": secrets.token_hex(8),
    }
    return ".".join(
        [
            _b64(json.dumps(header).encode()),
            _b64(json.dumps(claims).encode()),
            _b64(secrets.token_bytes(64)),
        ]
    )


@dataclass
class Call:
    """One request the fake received."""

    at: float
    tenant: str
    form: dict[str, str]


@dataclass
class FakeEntra:
    """The fake endpoint; `await start()` before use, `await stop()` after."""

    calls: list[Call] = field(default_factory=list)
    issued_access_tokens: list[str] = field(default_factory=list)
    issued_refresh_tokens: list[str] = field(default_factory=list)
    on_request: Callable[[Call], Awaitable[None]] | None = None
    _script: deque[Reply] = field(default_factory=deque)
    _refresh_tokens: set[str] = field(default_factory=set)
    _clients: dict[str, str] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> FakeEntra:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def token_url(self, tenant: str = "fake-tenant") -> str:
        """The token endpoint URL for `tenant`."""
        return f"http://127.0.0.1:{self.port}/{tenant}/oauth2/v2.0/token"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order."""
        self._script.extend(replies)

    def reset(self) -> None:
        """Forget calls, scripts and the request hook."""
        self.calls.clear()
        self._script.clear()
        self.on_request = None

    def issue_refresh_token(self) -> str:
        """A refresh token the fake will accept (as a user's sign-in would yield)."""
        token = "rt." + secrets.token_urlsafe(32)
        self._refresh_tokens.add(token)
        self.issued_refresh_tokens.append(token)
        return token

    def revoke(self, refresh_token: str) -> None:
        """Make a refresh token invalid (as a password change does)."""
        self._refresh_tokens.discard(refresh_token)

    def register_client(self, client_id: str, client_secret: str) -> None:
        """Accept `client_secret` for `client_id` in the client-credentials grant."""
        self._clients[client_id] = client_secret

    @property
    def count(self) -> int:
        """How many token requests arrived."""
        return len(self.calls)

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(400, "invalid_request", 900144)
        form = {k: str(v) for k, v in (await request.post()).items()}
        call = Call(at=time.monotonic(), tenant=request.match_info["tenant"], form=form)
        self.calls.append(call)
        reply = self._script.popleft() if self._script else Reply()
        if self.on_request is not None:
            await self.on_request(call)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.kind == "rate_limited":
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            response = self._error(429, "temporarily_unavailable", 50196)
            response.headers.update(headers)
            return response
        if reply.kind == "invalid_grant":
            return self._error(400, "invalid_grant", reply.aadsts)
        if reply.kind == "invalid_client":
            return self._error(401, "invalid_client", reply.aadsts)
        if reply.kind == "server_error":
            return self._error(reply.status, "server_error", 500011)
        if reply.kind == "status":
            return web.Response(status=reply.status, text=reply.body)
        return self._grant(form, reply)

    def _grant(self, form: dict[str, str], reply: Reply) -> web.Response:
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("refresh_token") not in self._refresh_tokens:
                return self._error(400, "invalid_grant", 70000)
            if (
                "client_secret" in form
                and self._clients.get(form.get("client_id", "")) != (form["client_secret"])
            ):
                return self._error(401, "invalid_client", 7000215)
        elif grant == "client_credentials":
            if self._clients.get(form.get("client_id", "")) != form.get("client_secret"):
                return self._error(401, "invalid_client", 7000215)
        else:
            return self._error(400, "unsupported_grant_type", 70003)
        token = access_token(reply.expires_in)
        self.issued_access_tokens.append(token)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": form.get("scope", ""),
            "expires_in": reply.expires_in,
            "ext_expires_in": reply.expires_in,
            "access_token": token,
        }
        if grant == "refresh_token" and reply.rotate:
            body["refresh_token"] = self.issue_refresh_token()
        return web.json_response(body)

    @staticmethod
    def _error(status: int, error: str, code: int) -> web.Response:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        description = AADSTS_DESCRIPTIONS.get(code, "An error occurred.")
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }
        return web.json_response(body, status=status)


def copilot_toml(base_url: str, entra: FakeEntra, extra: str = "") -> str:
    """A `[[providers]]` table of a `copilot` provider at `base_url` on users' Entra ID
    tokens, refreshed at `entra` (`extra`: more lines of the table)."""
    return f"""
[[providers]]
name = "copilot"
kind = "copilot"
model = "gpt-4o"
base_url = "{base_url}"
credential = "oauth_user"
oauth_token_url = "{entra.token_url()}"
oauth_client_id = "saga-client"
oauth_scopes = ["https://api.example/.default", "offline_access"]
{extra}
"""
