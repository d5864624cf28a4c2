"""What the HTTP engines share: the pooled session, the provider's timeouts, the credential,
HTTP failures mapped to the error taxonomy (`http_errors`), and the usage of a call as it
goes (`progress`).

`HttpEngine.stream` does one provider call: get the credential (a 401 drops it and fetches
it again once: a rotated key or a revoked token is picked up without failing the call),
POST the body, map an error status with its body to a `ProviderError`, then hand the answer
to the subclass's parser — line by line for a stream, so every delta is passed on the moment
its line arrives, or one JSON body in COMPLETE mode. A connection that breaks, a malformed
line and a stream that ends before the answer did are transient failures (another provider
may well succeed) carrying the usage consumed so far, estimated.

Timeouts (from the provider's configuration): `connect_timeout_ms` to open a connection;
`first_token_timeout_ms` from the call's start to its first text (streams only: a complete
answer has no first token before its last); `idle_timeout_ms` between two chunks of a
stream once text has come (a stall mid-answer fails the attempt like a cut stream, and the
router continues the answer on the next provider); `total_timeout_ms` for the whole call.
Each read waits at most until the deadline that applies, so a provider that hangs is left on
time.

The URL: each engine appends its endpoint to `base_url` (`endpoint`), after normalising what
can be: a trailing slash, and the version segment an engine adds itself (see each engine).
A 404 or 405 means the URL or the model is wrong — a configuration error, never retried,
whose ErrorInfo names the URL path (`urlPath`; the query and host are left out).
Fetching the credential is bounded by its own call's deadline (auth's), not by these: a slow
auth is not the provider's fault.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from services.common.config import ProviderConfig
from services.common.errors import SagaError
from services.router.engines.base import (
    Caller,
    CredentialLookup,
    EngineEvent,
    EngineRequest,
    ProviderCredentialFailed,
    ProviderError,
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnauthenticated,
    ProviderUnavailable,
)
from services.router.engines.http_errors import parse_retry_after, shown
from services.router.engines.progress import Deadlines, Progress

log = logging.getLogger("saga.router.engines")

MAX_LINE_BYTES = 1 << 20
"""Longest stream line accepted (a chunk carries a token or a few: far less)."""
MAX_BODY_BYTES = 8 << 20
"""Largest complete (non-streamed) answer accepted."""
MAX_ERROR_BYTES = 64 << 10
"""Of an error body, only this much is read."""


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (defensive parsing)."""
    return value if isinstance(value, dict) else {}


def endpoint(base_url: str, suffix: str, *, strip: tuple[str, ...] = (), empty: str = "") -> str:
    """`suffix` appended to the path of `base_url`, its query kept (Azure's `api-version`):
    a trailing slash and then one trailing segment of `strip` (one the engine adds itself)
    are removed first, and an empty path becomes `empty`."""
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/")
    for tail in strip:
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    return urlunsplit(parts._replace(path=(path or empty) + suffix))


def as_int(value: Any) -> int | None:
    """`value` if it is a non-negative JSON integer, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class HttpEngine:
    """Base of the engines that call a provider over HTTP (see the module docstring).

    Subclasses say where and what to POST and how to read the answer. The session is
    created on first use (inside the event loop) and closed by `close` only when this
    engine created it; a session passed in belongs to the caller.
    """

    def __init__(
        self,
        provider: ProviderConfig,
        credential: CredentialLookup | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.provider = provider
        self._credential = credential
        self._session = session
        self._owns_session = session is None
        self.endpoint = self.url()
        """Where calls are POSTed (worked out once)."""

    # --- what a subclass provides -----------------------------------------------------

    def url(self) -> str:
        """Where calls are POSTed, from the provider's `base_url` (see `endpoint`)."""
        raise NotImplementedError

    def headers(self, secret: str) -> dict[str, str]:
        """The request headers, the credential `secret` included (empty: no credential)."""
        raise NotImplementedError

    def body(self, request: EngineRequest) -> dict[str, Any]:
        """The JSON body of `request`."""
        raise NotImplementedError

    def error_of(
        self, status: int, payload: Any, text: str, retry_after: float | None
    ) -> ProviderError:
        """The error a failed answer (status, parsed JSON body or None, raw text) means;
        `status` is 0 for an error event inside a stream."""
        raise NotImplementedError

    def read_stream(
        self, lines: AsyncIterator[str], progress: Progress
    ) -> AsyncGenerator[EngineEvent, None]:
        """Parse a streamed answer: deltas via `progress.text`, then one `Finish`."""
        raise NotImplementedError

    def read_complete(self, payload: Any, progress: Progress) -> list[EngineEvent]:
        """Parse a complete (non-streamed) answer's JSON."""
        raise NotImplementedError

    # --- the call ---------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connect = self.provider.connect_timeout_ms / 1000
            self._session = aiohttp.ClientSession(
                # 0 = no pool limit: the router's own limits bound the calls in flight.
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
                timeout=aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the session if this engine created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    async def _secret(self, caller: Caller, stale: str = "") -> str:
        if self.provider.credential == "none":
            return ""
        if self._credential is None:
            raise ProviderUnauthenticated(
                f"{self.provider.name}: no credential source is configured for "
                f"credential {self.provider.credential!r}"
            )
        try:
            return await self._credential(caller, stale=stale)
        except SagaError as error:
            log.warning(
                "provider credential unavailable",
                extra={"provider": self.provider.name, "reason": error.reason},
            )
            raise ProviderCredentialFailed(
                f"{self.provider.name}: no credential ({error.reason})", error
            ) from error

    async def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        """Call the provider (see the module docstring)."""
        deadlines = Deadlines(self.provider, request.stream)
        progress = Progress(request, deadlines)
        secret = await self._secret(request.caller)
        body = json.dumps(self.body(request)).encode()
        try:
            response = await self._post(body, secret, deadlines)
            if response.status == 401 and self._credential is not None:
                secret, response = await self._with_fresh_secret(
                    request.caller, secret, body, response, deadlines
                )
            async with response:
                if response.status >= 300:
                    raise await self._failed(response, secret, deadlines)
                if request.stream and response.content_type != "application/json":
                    progress.streamed = True
                    lines = self._lines(response, deadlines)
                    events = self.read_stream(lines, progress)
                    async with aclosing(lines), aclosing(events):
                        async for event in events:
                            yield event
                else:
                    payload = self._json(await deadlines.wait(self._read(response)))
                    for event in self.read_complete(payload, progress):
                        yield event
        except ProviderError as error:
            if error.usage is None:
                error.usage = progress.usage()
            self._log_failure(error)
            raise
        except aiohttp.ClientError as error:
            failure = self._transport_error(error, progress)
            self._log_failure(failure)
            raise failure from None

    async def post_json(self, url: str, body: dict[str, Any], caller: Caller) -> Any:
        """POST `body` to `url` (another endpoint of the provider, e.g. its embeddings) with
        the call's credential, deadlines and error mapping; the parsed JSON answer."""
        deadlines = Deadlines(self.provider, streamed=False)
        secret = await self._secret(caller)
        data = json.dumps(body).encode()
        try:
            response = await self._post(data, secret, deadlines, url)
            if response.status == 401 and self._credential is not None:
                secret, response = await self._with_fresh_secret(
                    caller, secret, data, response, deadlines, url
                )
            async with response:
                if response.status >= 300:
                    raise await self._failed(response, secret, deadlines, url)
                return self._json(await deadlines.wait(self._read(response)))
        except ProviderError as error:
            self._log_failure(error)
            raise
        except aiohttp.ClientError as error:
            failure = self._transport_error(error, None)
            self._log_failure(failure)
            raise failure from None

    async def _with_fresh_secret(
        self,
        caller: Caller,
        secret: str,
        body: bytes,
        refused: aiohttp.ClientResponse,
        deadlines: Deadlines,
        url: str = "",
    ) -> tuple[str, aiohttp.ClientResponse]:
        """After a 401: drop the refused secret, fetch it again and, when it changed, send
        the call once more (else the 401 stands)."""
        log.info("provider refused the credential; fetching it again", extra=self._ids())
        try:
            fresh = await self._secret(caller, stale=secret)
        except BaseException:
            refused.release()
            raise
        if fresh == secret:
            return secret, refused
        refused.release()
        return fresh, await self._post(body, fresh, deadlines, url)

    def _ids(self) -> dict[str, str]:
        return {"provider": self.provider.name, "providerKind": self.provider.kind}

    async def _post(
        self, body: bytes, secret: str, deadlines: Deadlines, url: str = ""
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json", **self.headers(secret)}
        target = url or self.endpoint
        return await deadlines.wait(self._client().post(target, data=body, headers=headers))

    async def _failed(
        self, response: aiohttp.ClientResponse, secret: str, deadlines: Deadlines, url: str = ""
    ) -> ProviderError:
        raw = await deadlines.wait(self._read(response, MAX_ERROR_BYTES, whole=False))
        text = raw.decode("utf-8", "replace")
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = None
        error = self.error_of(
            response.status, payload, shown(text, secret), parse_retry_after(response.headers)
        )
        # The provider's own message may echo the key (OpenAI's 401 does, partly masked).
        error.message = shown(error.message, secret)
        if isinstance(error, ProviderMisconfigured):
            path = urlsplit(url or self.endpoint).path
            error.metadata["urlPath"] = shown(path, secret)
            error.message += f" (POST {path}: check base_url and model)"
        error.args = (error.message,)
        return error

    async def _read(
        self, response: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES, *, whole: bool = True
    ) -> bytes:
        """The body, at most `limit` bytes: a larger answer fails when `whole`, else (an
        error body) is cut."""
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = await response.content.read(limit - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        if whole and await response.content.read(1):
            raise ProviderUnavailable(f"{self.provider.name}: answer larger than {limit} bytes")
        return b"".join(chunks)

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise ProviderUnavailable(f"{self.provider.name}: malformed JSON answer") from None

    async def _lines(
        self, response: aiohttp.ClientResponse, deadlines: Deadlines
    ) -> AsyncGenerator[str, None]:
        """The answer's lines without their endings. The body is read as it arrives, one
        deadline wait per chunk rather than per line (a chunk usually holds a whole event:
        its `data:` line and the blank line after it), and split here; a line may span
        chunks, up to `MAX_LINE_BYTES`."""
        content = response.content
        parts: list[bytes] = []  # the start of a line not yet ended
        held = 0
        while True:
            chunk = await deadlines.wait(content.readany())
            if not chunk:
                if parts:
                    yield b"".join(parts).decode("utf-8", "replace").rstrip("\r")
                return
            if b"\n" not in chunk:
                held += len(chunk)
                if held > MAX_LINE_BYTES:
                    raise self._line_too_long()
                parts.append(chunk)
                continue
            if parts:
                parts.append(chunk)
                chunk = b"".join(parts)  # once per line that spanned chunks: linear
                parts, held = [], 0
            lines = chunk.split(b"\n")
            rest = lines.pop()
            for raw in lines:
                if len(raw) > MAX_LINE_BYTES:
                    raise self._line_too_long()
                yield raw.decode("utf-8", "replace").rstrip("\r")
            if rest:
                if len(rest) > MAX_LINE_BYTES:
                    raise self._line_too_long()
                parts, held = [rest], len(rest)

    def _line_too_long(self) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"{self.provider.name}: stream line longer than {MAX_LINE_BYTES} bytes"
        )

    def _transport_error(
        self, error: aiohttp.ClientError, progress: Progress | None
    ) -> ProviderError:
        name = self.provider.name
        usage = progress.usage() if progress is not None else None
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return ProviderTimeout(
                f"{name}: no connection within {self.provider.connect_timeout_ms} ms"
            )
        if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return ProviderUnavailable(f"{name}: the stream broke off", usage=usage)
        if isinstance(error, aiohttp.ClientConnectorError):
            cause = error.os_error.strerror or type(error.os_error).__name__
            return ProviderUnavailable(f"{name}: cannot connect ({cause})")
        return ProviderUnavailable(f"{name}: {type(error).__name__}", usage=usage)

    def _log_failure(self, error: ProviderError) -> None:
        log.warning(
            "provider call failed",
            extra={
                **self._ids(),
                "kind": error.kind.value,
                "httpStatus": error.http_status,
                "error": error.message,
                "partial": error.usage is not None,
            },
        )

    def malformed(self, what: str) -> ProviderUnavailable:
        """The failure of an answer that does not parse (a transient provider fault)."""
        return ProviderUnavailable(f"{self.provider.name}: malformed {what}")
