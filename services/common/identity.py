"""Who may call what: service identities and the per-RPC call matrix of SPEC section 2.

A peer's identity is the URI SAN of its mTLS certificate (`spiffe://saga/<service>`), read
from `context.auth_context()`. The matrix below is the only place that says which service
may call which RPC; everything not listed is refused (PERMISSION_DENIED). Health and
reflection are open to any peer that completed the mTLS handshake.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.pki import SPIFFE_PREFIX

SERVICES = ("gateway", "auth", "vault", "router", "optimizer", "runtime")
"""Every service id. The order means nothing: it is only how tools list the services and
hand out their test ports (`START_ORDER` is the dependency order)."""

START_ORDER = ("vault", "auth", "optimizer", "router", "runtime", "gateway")
"""Callees before their callers. No service needs a peer to start (channels connect lazily),
so the supervisor spawns all six at once; it waits for each to report SERVING in this order
and stops them in the reverse one — the gateway first, so no new work enters while the
services behind it drain."""

DISPLAY_NAMES = {
    "gateway": "gateway",
    "auth": "auth",
    "vault": "token-vault",
    "router": "router",
    "optimizer": "optimizer",
    "runtime": "agent-runtime",
}
"""The names SPEC uses; they are the OpenTelemetry `service.name` of each process."""

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# caller -> fully qualified gRPC service -> methods it may call.
_CALLS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "gateway": {
        "saga.auth.v1.AuthService": (
            "Authenticate",
            "Register",
            "Login",
            "CreateApiKey",
            "ListApiKeys",
            "RevokeApiKey",
            "ListUsers",
            "SetApiKeyLimits",
            "LinkProviderAccount",
            "SetProviderKey",
            "GetJwks",
        ),
        "saga.runtime.v1.RuntimeService": (
            "RunPattern",
            "ListPatterns",
            "GetPattern",
            "ListCapabilities",
            "GetExecution",
            "ListExecutions",
            "WatchExecution",
        ),
        "saga.runtime.v1.PackService": ("GetPackHealth", "ListPacks", "PublishPack"),
        "saga.runtime.v1.LedgerService": ("ImportTransactions",),
        "saga.runtime.v1.SessionService": (
            "CreateSession",
            "GetSession",
            "ListSessions",
            "DeleteSession",
        ),
        "saga.optimizer.v1.OptimizerService": (
            "GetUsage",
            "GetMetrics",
            # AdminService.RankProviders: an operator's view of the ranking (no budget).
            "Rank",
            "UpdateMetrics",
            "SetDefaultStrategy",
            "SetBudget",
            "GetBudget",
        ),
        "saga.router.v1.RouterService": ("ListProviders", "CheckProviders"),
        "saga.vault.v1.VaultService": ("GetStatus", "RotateKey", "Rewrap"),
    },
    # GetJwks for runtime and router: they verify the gateway's request contexts, whose
    # public key auth publishes (SPEC section 2, "The request context").
    "runtime": {
        "saga.router.v1.RouterService": ("Reason", "Embed"),
        "saga.auth.v1.AuthService": ("GetJwks",),
    },
    "router": {
        "saga.optimizer.v1.OptimizerService": (
            "Rank",
            "WatchRankings",
            "RecordOutcomes",
            "ReserveBudget",
            "SettleBudget",
        ),
        "saga.auth.v1.AuthService": ("GetProviderCredential", "GetJwks"),
    },
    "auth": {
        "saga.vault.v1.VaultService": ("PutSecret", "GetSecret", "DeleteSecret", "ListSecrets"),
    },
}


def _invert(calls: Mapping[str, Mapping[str, tuple[str, ...]]]) -> dict[str, frozenset[str]]:
    allowed: dict[str, set[str]] = {}
    for caller, services in calls.items():
        for service, methods in services.items():
            for method in methods:
                allowed.setdefault(f"/{service}/{method}", set()).add(caller)
    return {method: frozenset(callers) for method, callers in allowed.items()}


CALL_MATRIX: Mapping[str, frozenset[str]] = _invert(_CALLS)
"""Full method path (`/saga.router.v1.RouterService/Reason`) -> service ids allowed to call it."""


def caller_may_call(caller: str | None, method: str) -> bool:
    """Whether the peer `caller` (a service id, None when unidentified) may invoke `method`."""
    if caller is None:
        return False
    if method.split("/", 2)[1] in OPEN_SERVICES:
        return True
    return caller in CALL_MATRIX.get(method, ())


def service_of_spiffe_id(uri: str) -> str | None:
    """The service id a SPIFFE id names: `spiffe://saga/<id>` (our CA) or, behind a mesh,
    a Kubernetes service account named after the service (`spiffe://…/sa/<id>`)."""
    if uri.startswith(SPIFFE_PREFIX):
        service = uri[len(SPIFFE_PREFIX) :]
    elif uri.startswith("spiffe://") and "/sa/" in uri:
        service = uri.rsplit("/sa/", 1)[1]
    else:
        return None
    return service if service in SERVICES else None


def peer_service(auth_context: Mapping[str, list[bytes]]) -> str | None:
    """The service id named by a peer's certificate, or None if it names no Saga service."""
    for key in ("peer_spiffe_id", "peer_uri"):
        for value in auth_context.get(key, ()):
            uri = value.decode("ascii", "replace")
            if uri.startswith(SPIFFE_PREFIX):
                return service_of_spiffe_id(uri)
    return None


def mesh_peer_service(xfcc: str) -> str | None:
    """The service id of the immediate peer named by a mesh sidecar's
    `x-forwarded-client-cert` header (the last element is the hop that reached us)."""
    last = xfcc.rsplit(",", 1)[-1]
    for part in last.split(";"):
        key, _, value = part.strip().partition("=")
        if key.upper() == "URI":
            return service_of_spiffe_id(value.strip('"'))
    return None
