"""The JSON/SSE facade of the public contract (SPEC 3.1): each route is a gateway RPC.

`Facade.table()` is the one list of routes: aiohttp's router is built from it, and so is
the OpenAPI document at `/openapi.json` (`openapi.py`), so the two cannot drift. A unary
route reads its RPC's request from the path and the query (GET, DELETE) or from the JSON
body (POST), calls the servicer method the gRPC door calls, and answers its reply as JSON."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf.message import Message

from saga.gateway.v1 import (
    account_pb2,
    admin_pb2,
    execution_pb2,
    pack_health_pb2,
    patterns_pb2,
    sessions_pb2,
    usage_pb2,
)
from services.common.asof import resolve_asof
from services.common.errors import SagaError
from services.common.freshness import check_fresh
from services.common.server import Registration, ServiceHost
from services.common.status import status_for
from services.gateway.account import AccountServicer
from services.gateway.admin import AdminServicer
from services.gateway.execution import ExecutionServicer
from services.gateway.pack_health import PackHealthServicer, pack_state
from services.gateway.patterns import PatternServicer
from services.gateway.sessions import SessionServicer
from services.gateway.usage import UsageServicer
from services.gateway.web.calls import (
    UnaryMethod,
    call_unary,
    from_json,
    headers_of,
    invoke,
    read_json,
    to_json,
    with_path,
)
from services.gateway.web.context import HttpCallContext
from services.gateway.web.errors import DOMAIN, error_body, error_response, retry_after_seconds
from services.gateway.web.executions import Runs
from services.gateway.web.middleware import Handler
from services.gateway.web.openapi import document
from services.gateway.web.query import query_fields, refuse_query

S = TypeVar("S")


@dataclass(frozen=True)
class Route:
    """One facade route: what aiohttp serves and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    request: type[Message] | None = None
    """The RPC's request: the JSON body (POST) or the path and query parameters."""
    response: type[Message] | None = None
    """The JSON answer (None: described in `openapi.py`)."""
    events: type[Message] | None = None
    """The SSE events' message, when the route streams."""
    rpc: str = ""
    credential: bool = True
    """Whether the route takes a bearer credential (Login and this document need none)."""

    @property
    def body(self) -> bool:
        """Whether the request comes as a JSON body."""
        return self.method == "POST"


class Facade:
    """The facade's handlers, over the gateway's servicers."""

    def __init__(
        self,
        executions: ExecutionServicer,
        sessions: SessionServicer,
        usage: UsageServicer,
        patterns: PatternServicer,
        packs: PackHealthServicer,
        accounts: AccountServicer,
        admin: AdminServicer,
        timeout: float,
    ) -> None:
        self._executions = executions
        self._sessions = sessions
        self._usage = usage
        self._patterns = patterns
        self._packs = packs
        self._accounts = accounts
        self._admin = admin
        self._timeout = timeout
        self._runs = Runs(executions, timeout)
        self._document: dict[str, Any] | None = None

    @classmethod
    def over(cls, registrations: Sequence[Registration], host: ServiceHost) -> Facade:
        """The facade over the servicers the gateway registered for its gRPC door."""

        def one(kind: type[S]) -> S:
            for r in registrations:
                if isinstance(r.servicer, kind):
                    return r.servicer
            raise LookupError(f"the gateway registered no {kind.__name__}")

        return cls(
            one(ExecutionServicer),
            one(SessionServicer),
            one(UsageServicer),
            one(PatternServicer),
            one(PackHealthServicer),
            one(AccountServicer),
            one(AdminServicer),
            host.config.http.request_timeout_seconds,
        )

    def _unary(self, method: UnaryMethod, request_type: type[Message], body: bool) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if body:
                refuse_query(request.query)
                fields = with_path(await read_json(request), request.match_info)
            else:
                fields = query_fields(request.query, request_type.DESCRIPTOR, request.match_info)
            message = from_json(fields, request_type)
            return await call_unary(method, message, request, self._timeout)

        return handle

    def _rpc(
        self,
        method: str,
        path: str,
        servicer: object,
        rpc: str,
        request: type[Message],
        response: type[Message],
        summary: str,
        *,
        credential: bool = True,
    ) -> Route:
        handler = self._unary(getattr(servicer, rpc), request, method == "POST")
        name = _rpc_name(request, rpc)
        return Route(
            method, path, handler, summary, request, response, rpc=name, credential=credential
        )

    async def pack_health(self, request: web.Request) -> web.StreamResponse:
        """GET /health/pack: 200 with the health of the pack serving `asof` when it is
        fresh; otherwise 503 with that health (`estimated_ready` while it warms), the
        freshness gate's refusal as the error, and `Retry-After` when it says when."""
        fields = query_fields(request.query, pack_health_pb2.GetPackHealthRequest.DESCRIPTOR)
        message = from_json(fields, pack_health_pb2.GetPackHealthRequest)
        context = HttpCallContext(request, self._timeout)
        try:
            reply = await invoke(self._packs.GetPackHealth, message, context, self._timeout)
        except Exception as error:
            return error_response(error, headers_of(context))
        headers = headers_of(context)
        try:
            # The gate's own rule, as an Execute of a pattern that reads pack data meets it.
            check_fresh(
                pack_state(reply.health, resolve_asof(message.asof)),
                False,
                datetime.datetime.now(datetime.UTC),
            )
        except SagaError as refusal:
            status = status_for(refusal, DOMAIN)
            if (seconds := retry_after_seconds(status)) is not None:
                headers["Retry-After"] = str(seconds)
            body = {"health": to_json(reply.health), **error_body(status)}
            return web.json_response(body, status=503, headers=headers)
        return web.json_response(to_json(reply), headers=headers)

    async def openapi(self, request: web.Request) -> web.Response:
        """GET /openapi.json: the OpenAPI 3.1 document of these routes."""
        if self._document is None:
            self._document = document(self.table())
        return web.json_response(self._document)

    def table(self) -> list[Route]:
        """Every facade route."""
        ex, se, us, pa = self._executions, self._sessions, self._usage, self._patterns
        return [
            Route(
                "POST",
                "/v1/execute",
                self._runs.execute,
                "Run a pattern: one JSON answer when it ends, or its events as SSE "
                "(Accept: text/event-stream)",
                execution_pb2.ExecuteRequest,
                events=execution_pb2.ExecuteResponse,
                rpc="saga.gateway.v1.ExecutionService/Execute",
            ),
            self._rpc(
                "GET",
                "/v1/executions",
                ex,
                "ListExecutions",
                execution_pb2.ListExecutionsRequest,
                execution_pb2.ListExecutionsResponse,
                "The caller's executions, newest first, filtered and paged",
            ),
            self._rpc(
                "GET",
                "/v1/executions/{execution_id}",
                ex,
                "GetExecution",
                execution_pb2.GetExecutionRequest,
                execution_pb2.GetExecutionResponse,
                "One execution (another user's is 404)",
            ),
            Route(
                "GET",
                "/v1/executions/{execution_id}/events",
                self._runs.watch,
                "A run's events as SSE, after `after_sequence` or the Last-Event-ID header",
                execution_pb2.WatchExecutionRequest,
                events=execution_pb2.WatchExecutionResponse,
                rpc="saga.gateway.v1.ExecutionService/WatchExecution",
            ),
            self._rpc(
                "POST",
                "/v1/sessions",
                se,
                "CreateSession",
                sessions_pb2.CreateSessionRequest,
                sessions_pb2.CreateSessionResponse,
                "Create a session",
            ),
            self._rpc(
                "GET",
                "/v1/sessions",
                se,
                "ListSessions",
                sessions_pb2.ListSessionsRequest,
                sessions_pb2.ListSessionsResponse,
                "The caller's sessions, most recently updated first",
            ),
            self._rpc(
                "GET",
                "/v1/sessions/{session_id}",
                se,
                "GetSession",
                sessions_pb2.GetSessionRequest,
                sessions_pb2.GetSessionResponse,
                "One session with its stages",
            ),
            self._rpc(
                "DELETE",
                "/v1/sessions/{session_id}",
                se,
                "DeleteSession",
                sessions_pb2.DeleteSessionRequest,
                sessions_pb2.DeleteSessionResponse,
                "Delete a session and its stages",
            ),
            self._rpc(
                "GET",
                "/v1/usage",
                us,
                "GetUsage",
                usage_pb2.GetUsageRequest,
                usage_pb2.GetUsageResponse,
                "Tokens and cost, grouped",
            ),
            self._rpc(
                "GET",
                "/v1/usage/budget",
                us,
                "GetBudget",
                usage_pb2.GetBudgetRequest,
                usage_pb2.GetBudgetResponse,
                "What is left of a budget this period",
            ),
            self._rpc(
                "GET",
                "/v1/patterns",
                pa,
                "ListPatterns",
                patterns_pb2.ListPatternsRequest,
                patterns_pb2.ListPatternsResponse,
                "The patterns the caller can run",
            ),
            self._rpc(
                "GET",
                "/v1/patterns/{pattern_id}",
                pa,
                "GetPattern",
                patterns_pb2.GetPatternRequest,
                patterns_pb2.GetPatternResponse,
                "One pattern with its inputs schema",
            ),
            self._rpc(
                "GET",
                "/v1/packs",
                self._packs,
                "ListPacks",
                pack_health_pb2.ListPacksRequest,
                pack_health_pb2.ListPacksResponse,
                "Known pricing packs, newest asof first",
            ),
            Route(
                "GET",
                "/health/pack",
                self.pack_health,
                "200 when the pricing pack serving asof is fresh; 503 with Retry-After otherwise",
                pack_health_pb2.GetPackHealthRequest,
                pack_health_pb2.GetPackHealthResponse,
                rpc="saga.gateway.v1.PackHealthService/GetPackHealth",
            ),
            *self._account_routes(),
            *self._admin_routes(),
            Route("GET", "/openapi.json", self.openapi, "This document", credential=False),
        ]

    def _account_routes(self) -> list[Route]:
        """Signing in and the caller's own API keys (what the console's Keys page uses)."""
        ac = self._accounts
        return [
            self._rpc(
                "POST",
                "/v1/login",
                ac,
                "Login",
                account_pb2.LoginRequest,
                account_pb2.LoginResponse,
                "Exchange email and password for an access token (limited per address)",
                credential=False,
            ),
            self._rpc(
                "GET",
                "/v1/api-keys",
                ac,
                "ListApiKeys",
                account_pb2.ListApiKeysRequest,
                account_pb2.ListApiKeysResponse,
                "The caller's API keys (never their secrets), newest first",
            ),
            self._rpc(
                "POST",
                "/v1/api-keys",
                ac,
                "CreateApiKey",
                account_pb2.CreateApiKeyRequest,
                account_pb2.CreateApiKeyResponse,
                "Create an API key for the caller; its secret is answered only this once",
            ),
            self._rpc(
                "DELETE",
                "/v1/api-keys/{key_id}",
                ac,
                "RevokeApiKey",
                account_pb2.RevokeApiKeyRequest,
                account_pb2.RevokeApiKeyResponse,
                "Revoke one of the caller's API keys",
            ),
        ]

    def _admin_routes(self) -> list[Route]:
        """The operator's read-and-check routes (scope `admin`, as over gRPC)."""
        ad = self._admin
        return [
            self._rpc(
                "GET",
                "/v1/admin/providers",
                ad,
                "ListProviders",
                admin_pb2.ListProvidersRequest,
                admin_pb2.ListProvidersResponse,
                "Configured providers with circuit state, health, prices and limits",
            ),
            self._rpc(
                "POST",
                "/v1/admin/providers/check",
                ad,
                "CheckProviders",
                admin_pb2.CheckProvidersRequest,
                admin_pb2.CheckProvidersResponse,
                "Probe providers now",
            ),
            self._rpc(
                "GET",
                "/v1/admin/providers/metrics",
                ad,
                "GetProviderMetrics",
                admin_pb2.GetProviderMetricsRequest,
                admin_pb2.GetProviderMetricsResponse,
                "Providers' live latency, time-to-first-token and success rate",
            ),
            self._rpc(
                "POST",
                "/v1/admin/providers/rank",
                ad,
                "RankProviders",
                admin_pb2.RankProvidersRequest,
                admin_pb2.RankProvidersResponse,
                "How the optimizer ranks the providers for a strategy now",
            ),
            self._rpc(
                "POST",
                "/v1/admin/budgets",
                ad,
                "SetBudget",
                admin_pb2.SetBudgetRequest,
                admin_pb2.SetBudgetResponse,
                "Set or clear a user's budget, or one of their API keys' spend cap",
            ),
            self._rpc(
                "POST",
                "/v1/admin/packs",
                ad,
                "PublishPack",
                admin_pb2.PublishPackRequest,
                admin_pb2.PublishPackResponse,
                "Publish a pricing pack (reconciled in the background)",
            ),
            self._rpc(
                "GET",
                "/v1/admin/users",
                ad,
                "ListUsers",
                admin_pb2.ListUsersRequest,
                admin_pb2.ListUsersResponse,
                "Every user, oldest first, a page at a time",
            ),
            self._rpc(
                "GET",
                "/v1/admin/users/{user_id}/api-keys",
                ad,
                "ListUserApiKeys",
                admin_pb2.ListUserApiKeysRequest,
                admin_pb2.ListUserApiKeysResponse,
                "Any user's API keys (never their secrets), newest first",
            ),
            self._rpc(
                "DELETE",
                "/v1/admin/users/{user_id}/api-keys/{key_id}",
                ad,
                "RevokeUserApiKey",
                admin_pb2.RevokeUserApiKeyRequest,
                admin_pb2.RevokeUserApiKeyResponse,
                "Revoke any user's API key",
            ),
            self._rpc(
                "POST",
                "/v1/admin/api-keys/{key_id}/limits",
                ad,
                "SetApiKeyLimits",
                admin_pb2.SetApiKeyLimitsRequest,
                admin_pb2.SetApiKeyLimitsResponse,
                "Set (or, with zeros, clear) any API key's own rate limits",
            ),
            self._rpc(
                "GET",
                "/v1/admin/vault",
                ad,
                "GetVaultStatus",
                admin_pb2.GetVaultStatusRequest,
                admin_pb2.GetVaultStatusResponse,
                "Vault state and key usage (never secrets)",
            ),
        ]

    def routes(self) -> list[web.RouteDef]:
        """The facade's routes, for aiohttp."""
        return [web.route(r.method, r.path, r.handler) for r in self.table()]


def _rpc_name(request: type[Message], method: str) -> str:
    """`saga.gateway.v1.ExecutionService/ListExecutions`: the RPC a route is."""
    for service in request.DESCRIPTOR.file.services_by_name.values():
        if method in service.methods_by_name:
            return f"{service.full_name}/{method}"
    raise ValueError(f"no RPC {method} takes {request.DESCRIPTOR.full_name}")
