"""`saga.gateway.v1.AdminService`: operator actions (scope `admin`), each relayed to its owner.

Operators act through the gateway with an admin credential; no operator certificate reaches
the inner services (SPEC section 2).
"""

from __future__ import annotations

from saga.gateway.v1 import admin_pb2 as pb
from saga.gateway.v1 import admin_pb2_grpc
from services.gateway.edge import Edge
from services.gateway.relay import Relay, admin_relay, admin_stream_relay

ADMIN_RELAYS = {
    "SetProviderKey": ("/saga.auth.v1.AuthService/SetProviderKey", pb.SetProviderKeyResponse),
    "LinkProviderAccount": (
        "/saga.auth.v1.AuthService/LinkProviderAccount",
        pb.LinkProviderAccountResponse,
    ),
    "SetApiKeyLimits": (
        "/saga.auth.v1.AuthService/SetApiKeyLimits",
        pb.SetApiKeyLimitsResponse,
    ),
    "ListUsers": ("/saga.auth.v1.AuthService/ListUsers", pb.ListUsersResponse),
    "ListUserApiKeys": ("/saga.auth.v1.AuthService/ListApiKeys", pb.ListUserApiKeysResponse),
    "RevokeUserApiKey": ("/saga.auth.v1.AuthService/RevokeApiKey", pb.RevokeUserApiKeyResponse),
    "PublishPack": ("/saga.runtime.v1.PackService/PublishPack", pb.PublishPackResponse),
    "ListProviders": ("/saga.router.v1.RouterService/ListProviders", pb.ListProvidersResponse),
    "CheckProviders": ("/saga.router.v1.RouterService/CheckProviders", pb.CheckProvidersResponse),
    "UpdateMetrics": (
        "/saga.optimizer.v1.OptimizerService/UpdateMetrics",
        pb.UpdateMetricsResponse,
    ),
    "SetDefaultStrategy": (
        "/saga.optimizer.v1.OptimizerService/SetDefaultStrategy",
        pb.SetDefaultStrategyResponse,
    ),
    "SetBudget": ("/saga.optimizer.v1.OptimizerService/SetBudget", pb.SetBudgetResponse),
    "GetVaultStatus": ("/saga.vault.v1.VaultService/GetStatus", pb.GetVaultStatusResponse),
    "RotateVaultKey": ("/saga.vault.v1.VaultService/RotateKey", pb.RotateVaultKeyResponse),
    "ImportTransactions": (
        "/saga.runtime.v1.LedgerService/ImportTransactions",
        pb.ImportTransactionsResponse,
    ),
    "GetProviderMetrics": (
        "/saga.optimizer.v1.OptimizerService/GetMetrics",
        pb.GetProviderMetricsResponse,
    ),
    "RankProviders": ("/saga.optimizer.v1.OptimizerService/Rank", pb.RankProvidersResponse),
}
"""Gateway method -> (owner's method, gateway response type); a test checks the wire twins."""

ADMIN_STREAM_RELAYS = {
    "RewrapVault": ("/saga.vault.v1.VaultService/Rewrap", pb.RewrapVaultResponse),
}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Every AdminService RPC: check scope `admin`, relay (see ADMIN_RELAYS)."""

    def __init__(self, edge: Edge, relay: Relay) -> None:
        self._edge = edge
        self._relay = relay

    SetProviderKey = admin_relay(*ADMIN_RELAYS["SetProviderKey"])
    LinkProviderAccount = admin_relay(*ADMIN_RELAYS["LinkProviderAccount"])
    SetApiKeyLimits = admin_relay(*ADMIN_RELAYS["SetApiKeyLimits"])
    ListUsers = admin_relay(*ADMIN_RELAYS["ListUsers"])
    ListUserApiKeys = admin_relay(*ADMIN_RELAYS["ListUserApiKeys"])
    RevokeUserApiKey = admin_relay(*ADMIN_RELAYS["RevokeUserApiKey"])
    PublishPack = admin_relay(*ADMIN_RELAYS["PublishPack"])
    ListProviders = admin_relay(*ADMIN_RELAYS["ListProviders"])
    CheckProviders = admin_relay(*ADMIN_RELAYS["CheckProviders"])
    UpdateMetrics = admin_relay(*ADMIN_RELAYS["UpdateMetrics"])
    SetDefaultStrategy = admin_relay(*ADMIN_RELAYS["SetDefaultStrategy"])
    SetBudget = admin_relay(*ADMIN_RELAYS["SetBudget"])
    GetVaultStatus = admin_relay(*ADMIN_RELAYS["GetVaultStatus"])
    RotateVaultKey = admin_relay(*ADMIN_RELAYS["RotateVaultKey"])
    ImportTransactions = admin_relay(*ADMIN_RELAYS["ImportTransactions"])
    GetProviderMetrics = admin_relay(*ADMIN_RELAYS["GetProviderMetrics"])
    RankProviders = admin_relay(*ADMIN_RELAYS["RankProviders"])
    RewrapVault = admin_stream_relay(*ADMIN_STREAM_RELAYS["RewrapVault"])
