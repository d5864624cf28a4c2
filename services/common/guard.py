"""The one wrapper around every RPC handler: tracing, authorization, errors, metrics.

aio server interceptors cannot see the peer's certificate, so instead of deciding in
`intercept_service` the guard returns a wrapped handler that reads `context.auth_context()`
when the call runs. The wrapped handler, per method, is built once and cached.

In order, for every call: the caller must be allowed by the call matrix (PERMISSION_DENIED
otherwise); an RPC the service has not built answers UNIMPLEMENTED; a request body that does
not parse (corrupt bytes, nesting past protobuf's depth limit) is INVALID_ARGUMENT
`REQUEST_MALFORMED`; a `SagaError` becomes its `google.rpc.Status`; an upstream failure
(`grpc.aio.AioRpcError`) is relayed unchanged; any other exception is logged and answered
INTERNAL without internals.

Left to grpc, an unparsable body is answered UNKNOWN with the Python exception in the
message and an ERROR traceback in the log, per request and before anyone is authenticated —
a cheap way to flood the log. The guard parses the body itself, answers it like any bad
input, and logs one WARNING per method and cause a minute, with the count it held back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from opentelemetry.trace import Span

from services.common.errors import (
    InvalidArgument,
    PermissionDenied,
    SagaError,
    Unimplemented,
)
from services.common.identity import caller_may_call, mesh_peer_service, peer_service
from services.common.metrics import RPC_HANDLED, RPC_SECONDS
from services.common.status import abort, status_for
from services.common.telemetry import end_server_span, start_server_span, traced

log = logging.getLogger("saga.rpc")

Context = grpc.aio.ServicerContext[Any, Any]
"""The context every servicer method receives; servicers annotate `context` with it."""
Identify = Callable[[Context], str | None]
"""Names the calling service (None when it cannot be identified)."""

XFCC = "x-forwarded-client-cert"
MALFORMED_LOG_INTERVAL = 60.0


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the guard can answer it."""

    __slots__ = ("cause",)

    def __init__(self, cause: str) -> None:
        self.cause = cause


class _MalformedLog:
    """At most one WARNING per (method, cause) per interval, saying how many it held back."""

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def note(self, method: str, cause: str) -> None:
        key = (method, cause)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # causes are caller-chosen: keep the table bounded
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        log.warning(
            "malformed request",
            extra={"method": method, "cause": cause, "suppressed": self._held.pop(key, 0)},
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data) if deserializer is not None else data
        except Exception as error:  # DecodeError, RecursionError, whatever the parser raises
            return _Malformed(str(error).rsplit(": ", 1)[-1][:80] or type(error).__name__)

    return parse


def certificate_identity(context: Context) -> str | None:
    """The service named by the peer's mTLS certificate."""
    return peer_service(context.auth_context())  # type: ignore[arg-type]


def mesh_identity(context: Context) -> str | None:
    """tls.mode plaintext (inside a mesh that does mTLS): the service named by the
    sidecar's x-forwarded-client-cert header. The sidecar overwrites that header, so a
    workload cannot forge it; without a mesh there is no header and every call is refused."""
    for key, value in context.invocation_metadata() or ():
        if key == XFCC and isinstance(value, str):
            return mesh_peer_service(value)
    return None


def identify_for(tls_mode: str) -> Identify:
    """How a server of this deployment learns which service is calling."""
    return mesh_identity if tls_mode == "plaintext" else certificate_identity


def _not_implemented(behavior: Callable[..., Any]) -> bool:
    # The generated *Servicer base classes answer UNIMPLEMENTED; a method still inherited
    # from one was never built.
    return getattr(behavior, "__module__", "").endswith("_pb2_grpc")


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of a server (see the module docstring)."""

    def __init__(self, domain: str, identify: Identify | None) -> None:
        self.domain = domain
        self.identify = identify
        self._cache: dict[str, Any] = {}
        self._malformed = _MalformedLog()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Return the cached wrapped handler for the called method."""
        method: str = handler_call_details.method
        wrapped = self._cache.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrap(method, handler)
            self._cache[method] = wrapped
        return wrapped

    async def _fail(self, context: Context, error: BaseException) -> NoReturn:
        if not isinstance(error, SagaError | grpc.aio.AioRpcError):
            log.error("unhandled error", exc_info=error)
        await abort(context, status_for(error, self.domain))
        raise AssertionError("unreachable: abort raises")

    async def _admit(
        self, method: str, context: Context, behavior: Callable[..., Any], request: Any
    ) -> None:
        if self.identify is not None:
            caller = self.identify(context)
            if not caller_may_call(caller, method):
                who = caller or "unidentified"
                raise PermissionDenied(
                    f"{who} may not call {method}",
                    reason="CALLER_NOT_ALLOWED",
                    metadata={"caller": who, "method": method},
                )
        if _not_implemented(behavior):
            raise Unimplemented(f"{method} is declared but not implemented yet")
        if isinstance(request, _Malformed):
            self._malformed.note(method, request.cause)
            raise InvalidArgument(
                f"the request body is not a valid message: {request.cause}",
                reason="REQUEST_MALFORMED",
                metadata={"method": method},
            )

    def _record(
        self, method: str, context: Context, start: float, code: str | None, span: Span | None
    ) -> None:
        if code is None:
            got = context.code()
            code = got.name if isinstance(got, grpc.StatusCode) else "UNKNOWN"
        RPC_HANDLED.labels(method, code).inc()
        RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
        if span is not None:
            end_server_span(span, code)

    @staticmethod
    def _span(method: str, context: Context) -> Span | None:
        return start_server_span(method, context.invocation_metadata()) if traced(method) else None

    def _wrap(self, method: str, handler: Any) -> Any:
        # `handler` is a grpc RpcMethodHandler namedtuple: swap in the wrapped behavior, and
        # for a single request the tolerant parser (a stream of requests comes only from
        # another service, RecordOutcomes, and keeps grpc's).
        if not handler.request_streaming:
            handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._unary(method, handler.stream_unary))
        # Streaming handlers either yield responses or `await context.write()` them (as the
        # health servicer's Watch does); the wrapper must keep the same shape.
        if handler.unary_stream is not None:
            behavior = handler.unary_stream
            wrap = self._unary if inspect.iscoroutinefunction(behavior) else self._streaming
            return handler._replace(unary_stream=wrap(method, behavior))
        behavior = handler.stream_stream
        wrap = self._unary if inspect.iscoroutinefunction(behavior) else self._streaming
        return handler._replace(stream_stream=wrap(method, behavior))

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Context) -> Any:
            start = time.perf_counter()
            span = self._span(method, context)
            code: str | None = "OK"
            try:
                await self._admit(method, context, behavior, request)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = None
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as error:
                code = None
                await self._fail(context, error)
            finally:
                self._record(method, context, start, code, span)

        return call

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            start = time.perf_counter()
            span = self._span(method, context)
            code: str | None = "OK"
            try:
                await self._admit(method, context, behavior, request)
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                code = None
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as error:
                code = None
                await self._fail(context, error)
            finally:
                self._record(method, context, start, code, span)

        return call
