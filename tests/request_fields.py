"""Every field of every request message in the contract, and what Saga does with it.

SPEC: never a fake success — a field that is accepted must be acted on, or refused until it
is. This table is the record of that promise and `tests/test_request_fields.py` keeps it
true: a field added to a proto fails the guard until it gets a row here, and each row is
checked against the code.

* `acted(module)`: the module acts on the field (checked: the module names it).
* `UNBUILT_RPC`: the whole RPC answers UNIMPLEMENTED (checked: no servicer defines it).

The gateway's public requests are relayed to an inner service's request (`RELAYED`); the
guard checks that each public field has a namesake of the same type there, whose row says
what happens to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Acted:
    """The field is acted on in `module` (a path from the repository root)."""

    module: str


@dataclass(frozen=True)
class UnbuiltRpc:
    """The field's RPC answers UNIMPLEMENTED as a whole."""


Verdict = Acted | UnbuiltRpc

UNBUILT_RPC = UnbuiltRpc()


def acted(module: str) -> Acted:
    return Acted(module)


RELAYED: dict[str, str] = {
    "saga.gateway.v1.RegisterRequest": "saga.auth.v1.RegisterRequest",
    "saga.gateway.v1.LoginRequest": "saga.auth.v1.LoginRequest",
    "saga.gateway.v1.CreateApiKeyRequest": "saga.auth.v1.CreateApiKeyRequest",
    "saga.gateway.v1.RevokeApiKeyRequest": "saga.auth.v1.RevokeApiKeyRequest",
    "saga.gateway.v1.SetProviderKeyRequest": "saga.auth.v1.SetProviderKeyRequest",
    "saga.gateway.v1.SetApiKeyLimitsRequest": "saga.auth.v1.SetApiKeyLimitsRequest",
    "saga.gateway.v1.ListUsersRequest": "saga.auth.v1.ListUsersRequest",
    "saga.gateway.v1.ListUserApiKeysRequest": "saga.auth.v1.ListApiKeysRequest",
    "saga.gateway.v1.RevokeUserApiKeyRequest": "saga.auth.v1.RevokeApiKeyRequest",
    "saga.gateway.v1.LinkProviderAccountRequest": "saga.auth.v1.LinkProviderAccountRequest",
    "saga.gateway.v1.PublishPackRequest": "saga.runtime.v1.PublishPackRequest",
    "saga.gateway.v1.ImportTransactionsRequest": "saga.runtime.v1.ImportTransactionsRequest",
    "saga.gateway.v1.CheckProvidersRequest": "saga.router.v1.CheckProvidersRequest",
    "saga.gateway.v1.UpdateMetricsRequest": "saga.optimizer.v1.UpdateMetricsRequest",
    "saga.gateway.v1.SetDefaultStrategyRequest": "saga.optimizer.v1.SetDefaultStrategyRequest",
    "saga.gateway.v1.SetBudgetRequest": "saga.optimizer.v1.SetBudgetRequest",
    "saga.gateway.v1.GetProviderMetricsRequest": "saga.optimizer.v1.GetMetricsRequest",
    "saga.gateway.v1.RankProvidersRequest": "saga.optimizer.v1.RankRequest",
    "saga.gateway.v1.RewrapVaultRequest": "saga.vault.v1.RewrapRequest",
    "saga.gateway.v1.ExecuteRequest": "saga.runtime.v1.RunPatternRequest",
    "saga.gateway.v1.GetExecutionRequest": "saga.runtime.v1.GetExecutionRequest",
    "saga.gateway.v1.ListExecutionsRequest": "saga.runtime.v1.ListExecutionsRequest",
    "saga.gateway.v1.WatchExecutionRequest": "saga.runtime.v1.WatchExecutionRequest",
    "saga.gateway.v1.GetPackHealthRequest": "saga.runtime.v1.GetPackHealthRequest",
    "saga.gateway.v1.ListPacksRequest": "saga.runtime.v1.ListPacksRequest",
    "saga.gateway.v1.GetPatternRequest": "saga.runtime.v1.GetPatternRequest",
    "saga.gateway.v1.CreateSessionRequest": "saga.runtime.v1.CreateSessionRequest",
    "saga.gateway.v1.GetSessionRequest": "saga.runtime.v1.GetSessionRequest",
    "saga.gateway.v1.ListSessionsRequest": "saga.runtime.v1.ListSessionsRequest",
    "saga.gateway.v1.DeleteSessionRequest": "saga.runtime.v1.DeleteSessionRequest",
    "saga.gateway.v1.GetUsageRequest": "saga.optimizer.v1.GetUsageRequest",
    "saga.gateway.v1.GetBudgetRequest": "saga.optimizer.v1.GetBudgetRequest",
}
"""Public request message → the inner request it is relayed as."""

FIELDS: dict[str, dict[str, Verdict]] = {
    "saga.auth.v1.AuthenticateRequest": {
        "credential": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.RegisterRequest": {
        "email": acted("services/auth/servicer.py"),
        "password": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.LoginRequest": {
        "email": acted("services/auth/servicer.py"),
        "password": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.CreateApiKeyRequest": {
        "user_id": acted("services/auth/servicer.py"),
        "name": acted("services/auth/servicer.py"),
        "scopes": acted("services/auth/servicer.py"),
        "expires_at": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.ListApiKeysRequest": {
        "user_id": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.ListUsersRequest": {
        "page_size": acted("services/auth/servicer.py"),
        "page_token": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.RevokeApiKeyRequest": {
        "user_id": acted("services/auth/servicer.py"),
        "key_id": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.SetApiKeyLimitsRequest": {
        "key_id": acted("services/auth/servicer.py"),
        "requests_per_minute": acted("services/auth/servicer.py"),
        "concurrent_executions": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.SetProviderKeyRequest": {
        "provider": acted("services/auth/servicer.py"),
        "api_key": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.LinkProviderAccountRequest": {
        "provider": acted("services/auth/servicer.py"),
        "user_id": acted("services/auth/servicer.py"),
        "refresh_token": acted("services/auth/servicer.py"),
        "scopes": acted("services/auth/servicer.py"),
    },
    "saga.auth.v1.GetProviderCredentialRequest": {
        "provider": acted("services/auth/servicer.py"),
        "user_id": acted("services/auth/servicer.py"),
    },
    "saga.optimizer.v1.RankRequest": {
        "strategy": acted("services/optimizer/servicer.py"),
        "weights": acted("services/optimizer/servicer.py"),
        "weights.cost": acted("services/optimizer/messages.py"),
        "weights.latency": acted("services/optimizer/messages.py"),
        "weights.quality": acted("services/optimizer/messages.py"),
        "weights.reliability": acted("services/optimizer/messages.py"),
        "candidates": acted("services/optimizer/servicer.py"),
        "required_capabilities": acted("services/optimizer/servicer.py"),
        "estimated_input_tokens": acted("services/optimizer/servicer.py"),
        "estimated_output_tokens": acted("services/optimizer/servicer.py"),
        "user_id": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.WatchRankingsRequest": {
        "strategies": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.RecordOutcomesRequest": {
        "outcomes": acted("services/optimizer/servicer.py"),
        "outcomes.outcome_id": acted("services/optimizer/servicer.py"),
        "outcomes.user_id": acted("services/optimizer/servicer.py"),
        "outcomes.session_id": acted("services/optimizer/ledger.py"),
        "outcomes.execution_id": acted("services/optimizer/servicer.py"),
        "outcomes.step_id": acted("services/optimizer/servicer.py"),
        "outcomes.provider": acted("services/optimizer/servicer.py"),
        "outcomes.model": acted("services/optimizer/servicer.py"),
        "outcomes.usage": acted("services/optimizer/servicer.py"),
        "outcomes.usage.input_tokens": acted("services/optimizer/servicer.py"),
        "outcomes.usage.output_tokens": acted("services/optimizer/servicer.py"),
        "outcomes.usage.total_tokens": acted("services/common/outcome_bounds.py"),
        "outcomes.usage.cached_tokens": acted("services/optimizer/ledger.py"),
        "outcomes.usage.estimated": acted("services/optimizer/ledger.py"),
        "outcomes.usage.cache_write_tokens": acted("services/optimizer/ledger.py"),
        "outcomes.cost_micro_usd": acted("services/optimizer/servicer.py"),
        "outcomes.latency_ms": acted("services/optimizer/servicer.py"),
        "outcomes.ttft_ms": acted("services/optimizer/servicer.py"),
        "outcomes.status": acted("services/optimizer/servicer.py"),
        "outcomes.error_reason": acted("services/optimizer/servicer.py"),
        "outcomes.retry_count": acted("services/optimizer/ledger.py"),
        "outcomes.price_table_version": acted("services/optimizer/servicer.py"),
        "outcomes.estimated": acted("services/optimizer/ledger.py"),
        "outcomes.occurred_at": acted("services/optimizer/ledger.py"),
        "outcomes.pattern_id": acted("services/optimizer/ledger.py"),
        "outcomes.charge_micro_usd": acted("services/optimizer/ledger.py"),
        "outcomes.traceparent": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.GetMetricsRequest": {
        "providers": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.UpdateMetricsRequest": {
        "priors": acted("services/optimizer/servicer.py"),
        "priors.provider": acted("services/optimizer/servicer.py"),
        "priors.p50_latency_ms": acted("services/optimizer/messages.py"),
        "priors.p99_latency_ms": acted("services/optimizer/messages.py"),
        "priors.p50_ttft_ms": acted("services/optimizer/messages.py"),
        "priors.p99_ttft_ms": acted("services/optimizer/messages.py"),
        "priors.success_rate": acted("services/optimizer/messages.py"),
        "priors.quality": acted("services/optimizer/messages.py"),
        "priors.reset_samples": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.SetDefaultStrategyRequest": {
        "strategy": acted("services/optimizer/servicer.py"),
        "weights": acted("services/optimizer/servicer.py"),
        "weights.cost": acted("services/optimizer/messages.py"),
        "weights.latency": acted("services/optimizer/messages.py"),
        "weights.quality": acted("services/optimizer/messages.py"),
        "weights.reliability": acted("services/optimizer/messages.py"),
    },
    "saga.optimizer.v1.GetUsageRequest": {
        "start_date": acted("services/optimizer/servicer.py"),
        "end_date": acted("services/optimizer/servicer.py"),
        "user_id": acted("services/optimizer/servicer.py"),
        "group_by": acted("services/optimizer/servicer.py"),
        "all_users": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.ReserveBudgetRequest": {
        "reservation_id": acted("services/optimizer/servicer.py"),
        "user_id": acted("services/optimizer/servicer.py"),
        "execution_id": acted("services/optimizer/servicer.py"),
        "amount_micro_usd": acted("services/optimizer/servicer.py"),
        "key_id": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.SettleBudgetRequest": {
        "reservation_id": acted("services/optimizer/servicer.py"),
        "cost_micro_usd": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.SetBudgetRequest": {
        "user_id": acted("services/optimizer/servicer.py"),
        "key_id": acted("services/optimizer/servicer.py"),
        "amount_micro_usd": acted("services/optimizer/servicer.py"),
        "period": acted("services/optimizer/servicer.py"),
        "clear": acted("services/optimizer/servicer.py"),
    },
    "saga.optimizer.v1.GetBudgetRequest": {
        "user_id": acted("services/optimizer/servicer.py"),
    },
    "saga.router.v1.ReasonRequest": {
        "messages": acted("services/router/servicer.py"),
        "messages.role": acted("services/router/servicer.py"),
        "messages.content": acted("services/router/servicer.py"),
        "system_prompt": acted("services/router/servicer.py"),
        "max_tokens": acted("services/router/servicer.py"),
        "temperature": acted("services/router/servicer.py"),
        "stop": acted("services/router/servicer.py"),
        "response_mode": acted("services/router/servicer.py"),
        "strategy": acted("services/router/servicer.py"),
        "preferred_providers": acted("services/router/servicer.py"),
        "pinned_provider": acted("services/router/servicer.py"),
        "allow_fallback": acted("services/router/servicer.py"),
        "accounting": acted("services/router/servicer.py"),
        "accounting.user_id": acted("services/router/servicer.py"),
        "accounting.session_id": acted("services/router/servicer.py"),
        "accounting.execution_id": acted("services/router/servicer.py"),
        "accounting.step_id": acted("services/router/servicer.py"),
        "accounting.pattern_id": acted("services/router/servicer.py"),
        "max_cost_micro_usd": acted("services/router/servicer.py"),
        "allowed_providers": acted("services/router/servicer.py"),
        "weights": acted("services/router/servicer.py"),
        "weights.cost": acted("services/router/servicer.py"),
        "weights.latency": acted("services/router/servicer.py"),
        "weights.quality": acted("services/router/servicer.py"),
        "weights.reliability": acted("services/router/servicer.py"),
        "messages.tool_calls": acted("services/router/servicer.py"),
        "messages.tool_calls.id": acted("services/router/servicer.py"),
        "messages.tool_calls.name": acted("services/router/servicer.py"),
        "messages.tool_calls.arguments_json": acted("services/router/servicer.py"),
        "messages.tool_call_id": acted("services/router/servicer.py"),
        "tools": acted("services/router/servicer.py"),
        "tools.name": acted("services/router/servicer.py"),
        "tools.description": acted("services/router/servicer.py"),
        "tools.parameters_json": acted("services/router/servicer.py"),
        "tools.strict": acted("services/router/servicer.py"),
        "tool_choice": acted("services/router/servicer.py"),
        "tool_choice.mode": acted("services/router/servicer.py"),
        "tool_choice.name": acted("services/router/servicer.py"),
        "parallel_tool_calls": acted("services/router/servicer.py"),
        "response_format": acted("services/router/servicer.py"),
        "response_format.type": acted("services/router/servicer.py"),
        "response_format.name": acted("services/router/servicer.py"),
        "response_format.schema_json": acted("services/router/servicer.py"),
        "response_format.strict": acted("services/router/servicer.py"),
        "top_p": acted("services/router/servicer.py"),
        "seed": acted("services/router/servicer.py"),
        "presence_penalty": acted("services/router/servicer.py"),
        "frequency_penalty": acted("services/router/servicer.py"),
        "end_user": acted("services/router/servicer.py"),
    },
    "saga.router.v1.EmbedRequest": {
        "inputs": acted("services/router/servicer.py"),
        "dimensions": acted("services/router/servicer.py"),
        "preferred_providers": acted("services/router/servicer.py"),
        "pinned_provider": acted("services/router/servicer.py"),
        "allowed_providers": acted("services/router/servicer.py"),
        "allow_fallback": acted("services/router/servicer.py"),
        "accounting": acted("services/router/servicer.py"),
        "accounting.user_id": acted("services/router/servicer.py"),
        "accounting.session_id": acted("services/router/servicer.py"),
        "accounting.execution_id": acted("services/router/servicer.py"),
        "accounting.step_id": acted("services/router/servicer.py"),
        "accounting.pattern_id": acted("services/router/servicer.py"),
        "max_cost_micro_usd": acted("services/router/servicer.py"),
    },
    "saga.router.v1.CheckProvidersRequest": {
        "providers": acted("services/router/servicer.py"),
    },
    "saga.runtime.v1.GetPackHealthRequest": {
        "asof": acted("services/runtime/pack_servicer.py"),
        "pack_id": acted("services/runtime/pack_servicer.py"),
    },
    "saga.runtime.v1.ListPacksRequest": {
        "page_size": acted("services/runtime/pack_servicer.py"),
        "page_token": acted("services/runtime/pack_servicer.py"),
    },
    "saga.runtime.v1.PublishPackRequest": {
        "asof": acted("services/runtime/pack_servicer.py"),
        "prices": acted("services/runtime/pack_servicer.py"),
        "prices.symbol": acted("services/runtime/pack_servicer.py"),
        "prices.price_micro": acted("services/runtime/pack_servicer.py"),
        "prices.currency": acted("services/runtime/pack_servicer.py"),
        "prices.source": acted("services/runtime/pack_servicer.py"),
        "source": acted("services/runtime/pack_servicer.py"),
    },
    "saga.runtime.v1.ImportTransactionsRequest": {
        "csv": acted("services/runtime/ledger_service.py"),
        "expected_head": acted("services/runtime/ledger_service.py"),
    },
    "saga.runtime.v1.RunPatternRequest": {
        "pattern_id": acted("services/runtime/servicer.py"),
        "inputs": acted("services/runtime/servicer.py"),
        "asof": acted("services/runtime/servicer.py"),
        "session_id": acted("services/runtime/servicer.py"),
        "options": acted("services/runtime/servicer.py"),
        "options.strategy": acted("services/runtime/servicer.py"),
        "options.preferred_providers": acted("services/runtime/servicer.py"),
        "options.allow_stale_pack": acted("services/runtime/pins.py"),
        "options.export": acted("services/runtime/servicer.py"),
        "options.export_format": acted("services/runtime/servicer.py"),
        "options.idempotency_key": acted("services/runtime/servicer.py"),
        "options.max_cost_micro_usd": acted("services/runtime/servicer.py"),
        "options.detach_on_disconnect": acted("services/runtime/servicer.py"),
        "options.allowed_providers": acted("services/runtime/servicer.py"),
        "options.disable_fallback": acted("services/runtime/servicer.py"),
        "options.weights": acted("services/runtime/servicer.py"),
        "options.weights.cost": acted("services/runtime/servicer.py"),
        "options.weights.latency": acted("services/runtime/servicer.py"),
        "options.weights.quality": acted("services/runtime/servicer.py"),
        "options.weights.reliability": acted("services/runtime/servicer.py"),
        "options.pricing_pack_id": acted("services/runtime/pins.py"),
        "options.ledger_commit_hash": acted("services/runtime/pins.py"),
        "execution_id": acted("services/runtime/servicer.py"),
    },
    "saga.runtime.v1.GetPatternRequest": {
        "pattern_id": acted("services/runtime/servicer.py"),
    },
    "saga.runtime.v1.GetExecutionRequest": {
        "execution_id": acted("services/runtime/servicer.py"),
    },
    "saga.runtime.v1.ListExecutionsRequest": {
        "page_size": acted("services/runtime/servicer.py"),
        "page_token": acted("services/runtime/servicer.py"),
        "status": acted("services/runtime/execution_queries.py"),
        "pattern_id": acted("services/runtime/execution_queries.py"),
        "created_after": acted("services/runtime/execution_queries.py"),
        "created_before": acted("services/runtime/execution_queries.py"),
        "user_id": acted("services/runtime/execution_queries.py"),
        "all_users": acted("services/runtime/execution_queries.py"),
    },
    "saga.runtime.v1.WatchExecutionRequest": {
        "execution_id": acted("services/runtime/servicer.py"),
        "after_sequence": acted("services/runtime/servicer.py"),
    },
    "saga.runtime.v1.CreateSessionRequest": {
        "title": acted("services/runtime/session_servicer.py"),
        "metadata": acted("services/runtime/session_servicer.py"),
    },
    "saga.runtime.v1.GetSessionRequest": {
        "session_id": acted("services/runtime/session_servicer.py"),
    },
    "saga.runtime.v1.ListSessionsRequest": {
        "page_size": acted("services/runtime/session_servicer.py"),
        "page_token": acted("services/runtime/session_servicer.py"),
    },
    "saga.runtime.v1.DeleteSessionRequest": {
        "session_id": acted("services/runtime/session_servicer.py"),
    },
    "saga.vault.v1.PutSecretRequest": {
        "owner": acted("services/vault/servicer.py"),
        "name": acted("services/vault/servicer.py"),
        "payload": acted("services/vault/servicer.py"),
        "metadata": acted("services/vault/servicer.py"),
        "metadata.key": acted("services/vault/servicer.py"),
        "metadata.value": acted("services/vault/bounds.py"),
        "expected_version": acted("services/vault/servicer.py"),
    },
    "saga.vault.v1.GetSecretRequest": {
        "owner": acted("services/vault/servicer.py"),
        "name": acted("services/vault/servicer.py"),
        "version": acted("services/vault/servicer.py"),
    },
    "saga.vault.v1.DeleteSecretRequest": {
        "owner": acted("services/vault/servicer.py"),
        "name": acted("services/vault/servicer.py"),
        "expected_version": acted("services/vault/servicer.py"),
    },
    "saga.vault.v1.ListSecretsRequest": {
        "owner": acted("services/vault/servicer.py"),
        "page_size": acted("services/vault/servicer.py"),
        "page_token": acted("services/vault/servicer.py"),
    },
    "saga.vault.v1.RewrapRequest": {
        "batch_size": acted("services/vault/servicer.py"),
    },
}
"""Inner request message → field path (nested with dots) → its verdict."""
