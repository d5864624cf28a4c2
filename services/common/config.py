"""Configuration: one `saga.toml` plus `SAGA_…` environment overrides, validated at start.

The schema is a tree of frozen dataclasses; each field's metadata documents it. Values come
from (lowest to highest precedence) the defaults here, the TOML file, and environment
variables named after the key path: `SAGA_DATA_DIR`, `SAGA_TLS__MODE`,
`SAGA_SERVICES__ROUTER__PORT` (levels joined by a double underscore). `SAGA_CONFIG` names the
file. Every problem is reported as a `ConfigError` that names the key and the fix; the
bootstrap prints it and exits with `EXIT_CONFIG` — never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.common.strategy import Strategy

EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: "configuration error"
ENV_PREFIX = "SAGA_"
ENV_CONFIG_FILE = "SAGA_CONFIG"
CLIENT_ENV = {
    "SAGA_API_KEY": "the credential the `saga` CLI sends (default: <data_dir>/admin.key)",
    "SAGA_GATEWAY": "the gateway address the `saga` CLI dials (default: 127.0.0.1:50051)",
    "SAGA_GATEWAY_CA_FILE": "the CA the `saga` CLI trusts for a gateway serving TLS",
    "SAGA_GATEWAY_TLS": "1: the `saga` CLI dials the gateway over TLS with the system's CAs",
}
"""Variables for clients, not services: accepted beside the configuration's overrides."""


class ConfigError(Exception):
    """A configuration value is missing, unknown or invalid; the message says how to fix it."""


def _doc(text: str, **rules: Any) -> dict[str, Any]:
    return {"doc": text, **rules}


@dataclass(frozen=True)
class ServiceConfig:
    """Where one service listens, and how its peers reach it."""

    port: int = field(metadata=_doc("gRPC service port (mTLS for internal services)", min=1))
    probe_port: int = field(metadata=_doc("plaintext grpc.health.v1 probe port", min=1))
    metrics_port: int = field(metadata=_doc("Prometheus /metrics port; 0 disables it", min=0))
    host: str = field(default="127.0.0.1", metadata=_doc("address the servers bind to"))
    target: str = field(
        default="",
        metadata=_doc(
            "how peers dial this service, e.g. dns:///router.saga.svc:50054; empty means host:port"
        ),
    )
    http_port: int = field(
        default=0, metadata=_doc("HTTP/JSON facade port (gateway only); 0 disables it", min=0)
    )

    def dial_target(self) -> str:
        """The address a peer passes to its channel."""
        return self.target or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServicesConfig:
    """The six services, with SPEC section 5's default local ports."""

    gateway: ServiceConfig = field(
        default_factory=lambda: ServiceConfig(50051, 50061, 9101, http_port=8080)
    )
    auth: ServiceConfig = field(default_factory=lambda: ServiceConfig(50052, 50062, 9102))
    vault: ServiceConfig = field(default_factory=lambda: ServiceConfig(50053, 50063, 9103))
    router: ServiceConfig = field(default_factory=lambda: ServiceConfig(50054, 50064, 9104))
    optimizer: ServiceConfig = field(default_factory=lambda: ServiceConfig(50055, 50065, 9105))
    runtime: ServiceConfig = field(default_factory=lambda: ServiceConfig(50056, 50066, 9106))

    def get(self, service: str) -> ServiceConfig:
        """The config of the service with id `service` (e.g. "router")."""
        value = getattr(self, service)
        assert isinstance(value, ServiceConfig)
        return value


@dataclass(frozen=True)
class TlsConfig:
    """How services authenticate each other."""

    mode: str = field(
        default="dev",
        metadata=_doc(
            "dev: a local CA and per-service certificates made under <data_dir>/pki; "
            "files: certificates the operator mounts (cert_file, key_file, ca_file); "
            "plaintext: no TLS between services (only inside a mesh that already does mTLS)",
            choices=("dev", "files", "plaintext"),
        ),
    )
    cert_file: str = field(default="", metadata=_doc("this service's certificate (mode files)"))
    key_file: str = field(default="", metadata=_doc("this service's private key (mode files)"))
    ca_file: str = field(default="", metadata=_doc("CA bundle peers are checked against"))


@dataclass(frozen=True)
class ServerConfig:
    """Limits and lifecycle shared by every gRPC server and channel."""

    grace_seconds: float = field(
        default=10.0, metadata=_doc("how long SIGTERM lets in-flight streams drain", min=0)
    )
    readiness_lead_seconds: float = field(
        default=0.25,
        metadata=_doc(
            "on SIGTERM, how long health says NOT_SERVING before new calls are refused (peers "
            "watching it send new calls to other replicas first); part of the grace",
            min=0,
            max=30,
        ),
    )
    max_message_bytes: int = field(
        default=4 * 1024 * 1024, metadata=_doc("largest gRPC message sent or received", min=1024)
    )
    keepalive_seconds: float = field(
        default=10.0,
        metadata=_doc("HTTP/2 keepalive ping interval (servers allow pings every 5 s)", min=5),
    )
    keepalive_timeout_seconds: float = field(
        default=5.0,
        metadata=_doc(
            "a peer that leaves a ping unanswered this long is hung: its calls fail", min=1
        ),
    )
    max_connection_age_seconds: float = field(
        default=0.0,
        metadata=_doc(
            "recycle client connections after this long (spreads load); 0 = never", min=0
        ),
    )
    unary_deadline_seconds: float = field(
        default=10.0, metadata=_doc("deadline of an outgoing unary call that sets none", min=0.01)
    )
    stream_deadline_seconds: float = field(
        default=600.0,
        metadata=_doc("deadline of an outgoing streaming call that sets none", min=0.01),
    )
    event_loop: str = field(
        default="uvloop",
        metadata=_doc(
            "the event loop a service runs on: uvloop (libuv; about 15 % less CPU per relayed "
            "token in bench/README's chain) or asyncio (Python's own)",
            choices=("uvloop", "asyncio"),
        ),
    )


@dataclass(frozen=True)
class TelemetryConfig:
    """Logs, traces and what GenAI spans may record."""

    log_level: str = field(
        default="info",
        metadata=_doc("minimum log level", choices=("debug", "info", "warning", "error")),
    )
    otlp_endpoint: str = field(
        default="",
        metadata=_doc("OTLP/gRPC trace collector; defaults to OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    capture_message_content: bool = field(
        default=False,
        metadata=_doc(
            "record prompts and answers on the router's GenAI attempt spans "
            "(gen_ai.input.messages, gen_ai.output.messages); off: never recorded"
        ),
    )


@dataclass(frozen=True)
class SimConfig:
    """The built-in `sim` engine: deterministic text at a set pace, with failure injection."""

    tokens: int = field(default=24, metadata=_doc("tokens per answer (max_tokens caps it)", min=1))
    token_interval_ms: float = field(default=20.0, metadata=_doc("pause between two tokens", min=0))
    first_token_ms: float = field(default=0.0, metadata=_doc("pause before the first token", min=0))
    fail: str = field(
        default="",
        metadata=_doc(
            "inject this failure on every call; empty = none",
            choices=(
                "",
                "unavailable",
                "rate_limited",
                "unauthenticated",
                "invalid_argument",
                "context_length",
            ),
        ),
    )
    fail_after_tokens: int = field(
        default=0, metadata=_doc("with `fail`: tokens sent before failing (0 = at once)", min=0)
    )
    fail_calls: int = field(
        default=0,
        metadata=_doc(
            "with `fail`: only the first N calls fail, later ones succeed; 0 = all", min=0
        ),
    )


@dataclass(frozen=True)
class ProviderConfig:
    """One LLM provider deployment the router may call (a `[[providers]]` table)."""

    name: str = field(metadata=_doc("unique name, used in rankings, usage and errors"))
    kind: str = field(
        metadata=_doc("engine", choices=("sim", "openai", "anthropic", "ollama", "copilot"))
    )
    model: str = field(metadata=_doc("model name sent to the provider"))
    base_url: str = field(default="", metadata=_doc("provider endpoint (not for sim)"))
    quality: float = field(default=0.5, metadata=_doc("quality prior, 0..1", min=0, max=1))
    latency_ms: float = field(default=500.0, metadata=_doc("prior p50 latency", min=0))
    ttft_ms: float = field(default=200.0, metadata=_doc("prior p50 time to first token", min=0))
    success_rate: float = field(
        default=0.99, metadata=_doc("prior success rate, 0..1", min=0, max=1)
    )
    input_micro_usd_per_mtok: int = field(
        default=0, metadata=_doc("price of a million input tokens, micro-USD", min=0)
    )
    output_micro_usd_per_mtok: int = field(
        default=0, metadata=_doc("price of a million output tokens, micro-USD", min=0)
    )
    cached_input_micro_usd_per_mtok: int = field(
        default=0, metadata=_doc("price of a million cached input tokens, micro-USD", min=0)
    )
    cache_write_micro_usd_per_mtok: int | None = field(
        default=None,
        metadata=_doc(
            "price of a million input tokens written to the provider's prompt cache "
            "(Anthropic's cache_creation_input_tokens), micro-USD; unset = the input price",
            min=0,
        ),
    )
    context_window: int = field(default=128_000, metadata=_doc("context window, tokens", min=1))
    capabilities: tuple[str, ...] = field(
        default=("chat", "streaming", "tools", "json_output"),
        metadata=_doc(
            "what the deployment can do; a call with tools is sent only to providers with "
            "`tools`, one with a JSON response format only to those with `json_output` "
            "(drop them for a model that cannot); `Embed` only to those with `embeddings` "
            "(an embedding model's deployment: sim, openai or ollama)"
        ),
    )
    credential: str = field(
        default="none",
        metadata=_doc(
            "how the router authenticates to it: none; api_key (set by an operator with "
            "SetProviderKey, kept in the vault); oauth_user (each user links an account, "
            "refreshed by auth); oauth_app (client_credentials, auth fetches it)",
            choices=("none", "api_key", "oauth_user", "oauth_app"),
        ),
    )
    oauth_token_url: str = field(
        default="", metadata=_doc("OAuth2 token endpoint (e.g. Entra ID v2.0) for oauth_*")
    )
    oauth_client_id: str = field(default="", metadata=_doc("OAuth2 client id for oauth_*"))
    oauth_scopes: tuple[str, ...] = field(default=(), metadata=_doc("OAuth2 scopes requested"))
    max_concurrency: int = field(
        default=0, metadata=_doc("calls in flight at once; 0 = unlimited", min=0)
    )
    rpm: int = field(default=0, metadata=_doc("requests per minute; 0 = unlimited", min=0))
    tpm: int = field(default=0, metadata=_doc("tokens per minute; 0 = unlimited", min=0))
    connect_timeout_ms: int = field(default=5_000, metadata=_doc("connect timeout", min=1))
    first_token_timeout_ms: int = field(
        default=30_000, metadata=_doc("time allowed until the first token", min=1)
    )
    total_timeout_ms: int = field(
        default=300_000, metadata=_doc("time allowed for a whole call", min=1)
    )
    idle_timeout_ms: int = field(
        default=15_000,
        metadata=_doc(
            "longest silence between two chunks of a stream once text has come; the "
            "attempt then fails and the answer continues on the next provider (0 is refused: "
            "to relax it, set it as high as total_timeout_ms)",
            min=1,
        ),
    )
    max_tokens_field: str = field(
        default="max_tokens",
        metadata=_doc(
            "openai/copilot: the request field the output limit goes in (OpenAI's reasoning "
            "models take only max_completion_tokens)",
            choices=("max_tokens", "max_completion_tokens"),
        ),
    )
    max_retries: int = field(
        default=2, metadata=_doc("retries inside this provider before falling back", min=0)
    )
    sim: SimConfig = field(default_factory=SimConfig)

    @property
    def cache_write_price(self) -> int:
        """The cache-write price in force: the configured one, else the input price."""
        written = self.cache_write_micro_usd_per_mtok
        return self.input_micro_usd_per_mtok if written is None else written


DEFAULT_PROVIDERS = (
    ProviderConfig(
        name="sim-fast",
        kind="sim",
        model="sim-small",
        quality=0.6,
        latency_ms=300,
        ttft_ms=40,
        input_micro_usd_per_mtok=150_000,
        output_micro_usd_per_mtok=600_000,
    ),
    ProviderConfig(
        name="sim-smart",
        kind="sim",
        model="sim-large",
        quality=0.9,
        latency_ms=900,
        ttft_ms=120,
        input_micro_usd_per_mtok=2_500_000,
        output_micro_usd_per_mtok=10_000_000,
    ),
)
"""The embedded default: two simulated providers, so the stack runs with no keys and no
network."""

STRATEGIES = tuple(s.value for s in Strategy if s is not Strategy.CUSTOM)
"""What `optimizer.default_strategy` may name (CUSTOM's weights come with SetDefaultStrategy)."""


MODEL_ALIAS_PREFIX = "saga/"
"""Model names under it are the gateway's routing aliases (`saga/cheapest`, ...)."""
MAX_MODEL_NAME = 128


@dataclass(frozen=True)
class ModelGroupConfig:
    """A model name of the operator's (a `[[gateway.model_groups]]` table): an
    OpenAI-compatible call naming it may use only these providers, tried in this order."""

    name: str = field(
        metadata=_doc(
            "the `model` clients send (not under saga/, not a provider's model, at most 128 "
            "characters)"
        )
    )
    providers: tuple[str, ...] = field(
        metadata=_doc("configured provider names, in fallback order (at least one)")
    )
    description: str = field(default="", metadata=_doc("what it is for, listed by /v1/models"))


LIMIT_PROFILES = ("standard", "benchmark")
"""What `gateway.limits.profile` may name (services/gateway/limits.py applies them)."""


@dataclass(frozen=True)
class LimitsConfig:
    """Rate limits on Execute (SPEC 3.1): GCRA per user and global, and leases on concurrent
    executions per user; per API key overrides are set by an admin (`saga keys limits`)."""

    profile: str = field(
        default="standard",
        metadata=_doc(
            "standard: the limits below; benchmark: the per-user, global and concurrency "
            "defaults are lifted (unlimited) for load tests, while a key's own overrides "
            "still hold",
            choices=LIMIT_PROFILES,
        ),
    )
    requests_per_hour: int = field(
        default=100,
        metadata=_doc(
            "Executes per hour per user (GCRA; the whole hour may be spent in a burst)", min=1
        ),
    )
    global_requests_per_hour: int = field(
        default=10_000, metadata=_doc("Executes per hour across all users (GCRA)", min=1)
    )
    concurrent_executions: int = field(
        default=1, metadata=_doc("executions one user may run at once", min=1, max=10_000)
    )
    lease_ttl_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "life of a concurrency slot, renewed every third of it while the run streams; "
            "a crashed gateway's slots are free after this long",
            min=1,
            max=3600,
        ),
    )
    redis_url: str = field(
        default="",
        metadata=_doc(
            "empty: limits in this gateway's memory; redis://host:6379/0 (or rediss://): "
            "shared by every gateway replica"
        ),
    )
    redis_key_prefix: str = field(
        default="saga:limits:", metadata=_doc("prefix of every Redis key the limits write")
    )
    redis_failure_mode: str = field(
        default="closed",
        metadata=_doc(
            "when Redis is unreachable: closed refuses Executes (UNAVAILABLE "
            "RATE_LIMITER_UNAVAILABLE); open falls back to this gateway's in-memory limits. "
            "Either way saga_gateway_rate_limiter_degraded is 1 and a log line says so",
            choices=("closed", "open"),
        ),
    )
    redis_timeout_seconds: float = field(
        default=0.5,
        metadata=_doc("connect and reply timeout of one Redis decision", min=0.01, max=10),
    )
    redis_retry_seconds: float = field(
        default=1.0,
        metadata=_doc(
            "after Redis failed, how long decisions stay local (or refused) before Redis is "
            "tried again",
            min=0.05,
            max=60,
        ),
    )


@dataclass(frozen=True)
class GatewayConfig:
    """The public edge."""

    credential_cache_seconds: float = field(
        default=10.0,
        metadata=_doc("how long a verified credential is reused (revocation delay)", min=0, max=10),
    )
    execute_deadline_seconds: float = field(
        default=300.0, metadata=_doc("deadline of an Execute whose caller sets none", min=1)
    )
    account_calls_per_minute: int = field(
        default=10,
        metadata=_doc("Register and Login calls per minute per client address", min=1),
    )
    pack_health_cache_seconds: float = field(
        default=1.0,
        metadata=_doc(
            "how long the freshness gate and GetPackHealth reuse a pack's health", min=0, max=1
        ),
    )
    pattern_cache_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "how long the freshness gate reuses a pattern's requires_pack (patterns change "
            "only when the runtime restarts)",
            min=0,
        ),
    )
    public_cert_file: str = field(
        default="",
        metadata=_doc(
            "PEM certificate chain the public gRPC port and the HTTP port present; with "
            "public_key_file they serve TLS, without both they are plaintext"
        ),
    )
    public_key_file: str = field(default="", metadata=_doc("PEM private key of public_cert_file"))
    model_groups: tuple[ModelGroupConfig, ...] = field(
        default=(),
        metadata=_doc(
            "[[gateway.model_groups]] tables (saga.toml only): model names for the "
            "OpenAI-compatible API that stand for providers in a fallback order"
        ),
    )
    limits: LimitsConfig = field(default_factory=LimitsConfig)


@dataclass(frozen=True)
class HttpConfig:
    """The gateway's HTTP door (`services.gateway.http_port`): the JSON/SSE facade's limits."""

    request_timeout_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "deadline of an HTTP request that is not a run or a watch (their deadline is "
            "gateway.execute_deadline_seconds); past it the answer is 504",
            min=0.1,
        ),
    )
    heartbeat_seconds: float = field(
        default=15.0,
        metadata=_doc(
            "an SSE stream idle this long gets a comment line, so proxies do not cut it",
            min=0.05,
            max=300,
        ),
    )
    max_body_bytes: int = field(
        default=2 * 1024 * 1024,
        metadata=_doc(
            "largest HTTP request body (Execute's inputs are bounded at 1 MiB; JSON spends "
            "more bytes); larger is 413",
            min=1024,
        ),
    )


@dataclass(frozen=True)
class ContextConfig:
    """The signed request context the gateway mints for every request (SPEC section 2)."""

    signing_key_file: str = field(
        default="",
        metadata=_doc("gateway's Ed25519 private key (PEM); empty = <data_dir>/keys/context.key"),
    )
    public_key_file: str = field(
        default="",
        metadata=_doc("its public key, published by auth; empty = <data_dir>/keys/context.pub"),
    )
    max_ttl_seconds: float = field(
        default=900.0, metadata=_doc("longest life of a context token", min=1)
    )


@dataclass(frozen=True)
class OptimizerConfig:
    """Ranking."""

    default_strategy: str = field(
        default=Strategy.BALANCED.value,
        metadata=_doc("strategy when a request names none", choices=STRATEGIES),
    )
    metrics_window: int = field(
        default=100,
        metadata=_doc(
            "live metrics keep each provider's last this many outcomes", min=1, max=10_000
        ),
    )
    metrics_window_seconds: float = field(
        default=300.0,
        metadata=_doc("live metrics forget outcomes older than this", min=1),
    )
    prior_weight: float = field(
        default=10.0,
        metadata=_doc(
            "how many outcomes a provider's priors count as (more = live data moves it slower)",
            min=1,
            max=10_000,
        ),
    )
    success_rate_floor: float = field(
        default=0.5,
        metadata=_doc("providers with a success rate under this are not ranked", min=0, max=1),
    )
    publish_interval_ms: float = field(
        default=200.0,
        metadata=_doc(
            "shortest gap between two ranking snapshots pushed to routers", min=10, max=60_000
        ),
    )
    metrics_sync_ms: float = field(
        default=1000.0,
        metadata=_doc(
            "how often each replica re-reads the live metrics' window and the priors from the "
            "shared usage ledger, so replicas on one PostgreSQL rank alike; 0 = never (one "
            "replica)",
            min=0,
            max=60_000,
        ),
    )


@dataclass(frozen=True)
class BudgetsConfig:
    """Spending limits per user and period (the optimizer keeps the books): the default for
    every user, new ones included, unless an admin set their own (`saga budgets set`)."""

    per_user_micro_usd: int = field(
        default=0,
        metadata=_doc(
            "the default budget per period of every user without one of their own (new users"
            " included), micro-USD; 0 = none",
            min=0,
        ),
    )
    enabled: bool = field(
        default=False,
        metadata=_doc(
            "check calls against the budgets an admin sets per user and per API key even"
            " without a default; always on when per_user_micro_usd > 0"
        ),
    )
    period: str = field(default="month", metadata=_doc("budget period", choices=("day", "month")))
    degrade_ratio: float = field(
        default=0.0,
        metadata=_doc(
            "past this share of the budget, runs prefer the cheapest provider; 0 = never",
            min=0,
            max=1,
        ),
    )
    reservation_ttl_seconds: float = field(
        default=900.0,
        metadata=_doc(
            "an unsettled reservation stops counting against the budget after this long",
            min=1,
        ),
    )

    @property
    def active(self) -> bool:
        """Whether calls are checked against budgets at all (a default, or `enabled`)."""
        return self.enabled or self.per_user_micro_usd > 0


CHARGE_POLICIES = ("all_attempts", "delivered_only", "waive_upstream_failures")
"""What `accounting.charge_policy` may name (services/router/charges.py applies them)."""


@dataclass(frozen=True)
class AccountingConfig:
    """What callers are charged for the provider attempts of their calls (the ledger keeps
    every attempt's provider cost apart, whatever the policy)."""

    charge_policy: str = field(
        default="all_attempts",
        metadata=_doc(
            "what a caller is charged for: all_attempts (every attempt's provider cost, "
            "failed and cut ones included); delivered_only (only attempts whose output "
            "reached the caller: the one that answered, and any whose streamed text was "
            "relayed before it broke); waive_upstream_failures (attempts that failed for a "
            "reason the caller did not cause — 5xx, timeouts, cut streams, rate limits, "
            "provider misconfiguration, a router stop — are charged 0). Budgets count the "
            "charge",
            choices=CHARGE_POLICIES,
        ),
    )


@dataclass(frozen=True)
class RouterConfig:
    """Retries, fallback and circuit breaking (per provider)."""

    circuit_consecutive_failures: int = field(
        default=5, metadata=_doc("failed calls in a row that open a provider's circuit", min=1)
    )
    circuit_failure_ratio: float = field(
        default=0.5,
        metadata=_doc(
            "share of failed calls in the window that opens the circuit", min=0.01, max=1
        ),
    )
    circuit_min_calls: int = field(
        default=10, metadata=_doc("calls in the window before the ratio applies", min=1)
    )
    circuit_window_seconds: float = field(
        default=30.0, metadata=_doc("sliding window of the failure ratio", min=1)
    )
    circuit_cooldown_seconds: float = field(
        default=30.0,
        metadata=_doc("how long an open circuit refuses calls before one probe", min=0.01),
    )
    retry_initial_backoff_ms: float = field(
        default=100.0, metadata=_doc("cap of the first retry's jittered wait", min=0)
    )
    retry_max_backoff_ms: float = field(
        default=2000.0,
        metadata=_doc(
            "longest wait before a retry; a provider asking for longer (Retry-After) is left "
            "for the next candidate",
            min=0,
        ),
    )
    rate_limit_backoff_ms: float = field(
        default=1000.0,
        metadata=_doc(
            "cap of the first jittered wait (at least half of it) before retrying a 429 that "
            "came without Retry-After; doubles per retry, at most retry_max_backoff_ms",
            min=0,
        ),
    )
    retry_budget_ratio: float = field(
        default=0.2,
        metadata=_doc("retries allowed per provider as a share of its calls in the window", min=0),
    )
    retry_budget_min: int = field(
        default=10,
        metadata=_doc("retries per window always allowed, so a quiet provider is retried", min=0),
    )
    retry_budget_window_seconds: float = field(
        default=10.0, metadata=_doc("sliding window of the retry budget", min=1)
    )
    concurrency_wait_ms: float = field(
        default=100.0,
        metadata=_doc(
            "how long a call waits for a provider at max_concurrency before moving on", min=0
        ),
    )
    coalesce_deltas: bool = field(
        default=True,
        metadata=_doc("merge text deltas that wait while the caller reads slower than we produce"),
    )
    outbox_batch_size: int = field(
        default=200, metadata=_doc("outcomes per RecordOutcomes call", min=1, max=1000)
    )
    outbox_max_backoff_seconds: float = field(
        default=10.0,
        metadata=_doc("longest pause between resends while the optimizer is down", min=0.1),
    )
    health_check_interval_seconds: float = field(
        default=0.0,
        metadata=_doc(
            "seconds between active probes of every provider (a one-token call each); "
            "0 = only on CheckProviders",
            min=0,
        ),
    )
    health_check_concurrency: int = field(
        default=4, metadata=_doc("providers probed at once", min=1, max=64)
    )
    health_check_timeout_seconds: float = field(
        default=10.0,
        metadata=_doc(
            "longest a probe may take (the provider's own timeouts apply within it)", min=0.1
        ),
    )


@dataclass(frozen=True)
class VaultConfig:
    """The token-vault's keys."""

    keyring: str = field(
        default="file",
        metadata=_doc(
            "where the vault's keys come from: file (keyring_file, created 0600, RotateKey "
            "works); directory (a mounted Kubernetes secret, read-only); env (vault.keys from "
            "the environment, read-only, weaker: visible to anything that can read the "
            "process environment)",
            choices=("file", "directory", "env"),
        ),
    )
    keyring_file: str = field(
        default="",
        metadata=_doc(
            "keyring file (mode 0600 or the vault refuses to start); empty = "
            "<data_dir>/vault/keyring.json"
        ),
    )
    keyring_dir: str = field(
        default="",
        metadata=_doc(
            "keyring = directory: one file per key named by its id (k_<8 hex>) holding 32 "
            "bytes (raw or base64), and a file `active` naming the active key id"
        ),
    )
    keys: str = field(
        default="",
        metadata=_doc(
            "keyring = env: `k_<8 hex>:<base64 32 bytes>,…`, the first is active; set it "
            "only as SAGA_VAULT__KEYS (the vault refuses it from saga.toml)"
        ),
    )
    rewrap_batch_size: int = field(
        default=100,
        metadata=_doc(
            "rows Rewrap re-encrypts per transaction when the caller sets none", min=1, max=10_000
        ),
    )


@dataclass(frozen=True)
class AuthConfig:
    """Users, passwords and tokens."""

    argon2_memory_kib: int = field(
        default=19_456,
        metadata=_doc("argon2id memory per password hash, KiB (OWASP: 19 MiB)", min=8),
    )
    argon2_time_cost: int = field(
        default=2, metadata=_doc("argon2id iterations (OWASP: 2)", min=1, max=100)
    )
    argon2_parallelism: int = field(
        default=1, metadata=_doc("argon2id lanes (OWASP: 1)", min=1, max=64)
    )
    access_token_ttl_seconds: float = field(
        default=900.0,
        metadata=_doc("life of a JWT access token from Login", min=1, max=86_400),
    )
    signing_key_rotation_seconds: float = field(
        default=2_592_000.0,
        metadata=_doc(
            "age at which Login starts signing with a new key (old keys stay in the JWKS "
            "until their last token expires)",
            min=1,
        ),
    )
    default_scopes: tuple[str, ...] = field(
        default=("execute", "sessions", "usage:read"),
        metadata=_doc("scopes of a newly registered user's tokens"),
    )
    self_registration: str = field(
        default="closed",
        metadata=_doc(
            "who may Register: closed = only a caller with scope admin (an operator creates "
            "each account); open = anyone who reaches the gateway",
            choices=("closed", "open"),
        ),
    )
    login_max_failures: int = field(
        default=5,
        metadata=_doc("failed logins in a row before an account is locked for a while", min=1),
    )
    login_lockout_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "first lock after login_max_failures; doubles with each further failure", min=0
        ),
    )
    login_lockout_max_seconds: float = field(
        default=900.0, metadata=_doc("longest lock after failed logins", min=0)
    )
    login_failure_window_seconds: float = field(
        default=3600.0,
        metadata=_doc("failed logins are forgotten this long after the last attempt", min=1),
    )
    oauth_refresh_buffer_seconds: float = field(
        default=300.0,
        metadata=_doc("an OAuth access token is refreshed when it has less life left", min=0),
    )
    oauth_max_attempts: int = field(
        default=5,
        metadata=_doc("token endpoint calls per refresh while it answers 429", min=1, max=20),
    )
    oauth_backoff_base_seconds: float = field(
        default=1.0,
        metadata=_doc("first wait after a 429 (doubles, jittered; Retry-After when longer)", min=0),
    )
    oauth_max_wait_seconds: float = field(
        default=31.0,
        metadata=_doc("most time one refresh spends waiting out 429s before giving up", min=0),
    )
    oauth_request_timeout_seconds: float = field(
        default=10.0, metadata=_doc("timeout of one token endpoint call", min=0.1)
    )
    oauth_lease_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "life of the refresh lease a replica holds while it calls the token endpoint",
            min=1,
        ),
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """Patterns and agents."""

    patterns_dir: str = field(
        default="",
        metadata=_doc("a directory of user patterns, loaded beside the shipped samples"),
    )
    pack_max_age_days: int = field(
        default=3,
        metadata=_doc(
            "a FRESH pack is STALE for runs more than this many days after its asof "
            "(3: Friday's close serves Monday)",
            min=0,
        ),
    )
    pack_warmup_seconds: float = field(
        default=0.0,
        metadata=_doc(
            "how long a published pack stays WARMING before it is reconciled (time for the "
            "data behind it to settle); estimated_ready counts it",
            min=0,
            max=3600,
        ),
    )
    max_parallel_steps: int = field(
        default=4,
        metadata=_doc(
            "steps of one run that may run at once (independent DAG branches)", min=1, max=64
        ),
    )
    event_log_max_age_days: float = field(
        default=30.0,
        metadata=_doc(
            "finished runs' event logs older than this are deleted (their records stay); "
            "WatchExecution of one is EVENT_LOG_PRUNED",
            min=0.01,
            max=3650,
        ),
    )
    event_log_max_runs: int = field(
        default=100_000,
        metadata=_doc(
            "at most this many runs keep their event log; the oldest finished ones beyond it "
            "are pruned",
            min=1,
        ),
    )
    session_history_max_tokens: int = field(
        default=8_000,
        metadata=_doc(
            "bound on `{{session.history}}`, the earlier turns of a session that a chat run "
            "sends as conversation (estimated at 4 characters a token); the oldest turns "
            "beyond it are left out, 0 = none (at most 25000: with a 100000-character prompt "
            "the router's 200000-character bound on a call holds)",
            min=0,
            max=25_000,
        ),
    )
    idempotency_window_seconds: float = field(
        default=86_400.0,
        metadata=_doc(
            "how long an Execute's idempotency_key names its run: a retry within it attaches "
            "to that run, after it the key starts a new one",
            min=1,
            max=30 * 86_400,
        ),
    )
    replica_lease_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "how long a runtime replica counts as alive after it last renewed its lease "
            "(renewed every third of it); a replica gone longer has its runs interrupted, "
            "or continued elsewhere when they are detached (durable runs)",
            min=1,
            max=600,
        ),
    )
    agent_circuit_failures: int = field(
        default=5,
        metadata=_doc(
            "failed steps of one agent in a row (unavailable, timed out or internal) that "
            "open its circuit: its steps then fail fast with AGENT_CIRCUIT_OPEN",
            min=1,
        ),
    )
    agent_circuit_cooldown_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "how long an open agent circuit refuses steps before one probe step",
            min=0.01,
            max=3600,
        ),
    )


@dataclass(frozen=True)
class RightsSourceConfig:
    """One data source of the rights registry (a `[[rights.sources]]` table)."""

    name: str = field(
        metadata=_doc("the source's id: ledger, a pack's source, or a dataset's name")
    )
    export: str = field(
        metadata=_doc(
            "whether outputs that carry its data may be exported", choices=("allow", "deny")
        )
    )
    attribution: str = field(
        default="", metadata=_doc("credit shown with every run's outputs that used it")
    )
    watermark: str = field(default="", metadata=_doc("text stamped on exports that carry it"))


@dataclass(frozen=True)
class RightsConfig:
    """The rights registry: what each data source allows (see docs/operations.md, Rights)."""

    sources: tuple[RightsSourceConfig, ...] = field(
        default=(),
        metadata=_doc(
            "[[rights.sources]] tables (saga.toml only); each replaces the shipped entry of the "
            "same name (ledger, demo, securities); a source in none is denied export"
        ),
    )


@dataclass(frozen=True)
class StorageConfig:
    """Where persistent state lives."""

    url: str = field(
        default="",
        metadata=_doc(
            "empty: SQLite files under data_dir; postgresql://…: every service's tables in "
            "that database, one schema per service"
        ),
    )
    namespace: str = field(
        default="saga",
        metadata=_doc("prefix of the PostgreSQL schemas (<namespace>_<service>)"),
    )
    probe_interval_seconds: float = field(
        default=1.0,
        metadata=_doc(
            "PostgreSQL only: how often each service checks its database with SELECT 1 "
            "(readiness is held while it is out of reach)",
            min=0.1,
            max=60,
        ),
    )
    probe_timeout_seconds: float = field(
        default=1.0,
        metadata=_doc("how long one probe may take before it counts as failed", min=0.05, max=30),
    )
    probe_failures: int = field(
        default=3,
        metadata=_doc("consecutive failed probes that turn readiness NOT_SERVING", min=1, max=100),
    )
    probe_successes: int = field(
        default=2,
        metadata=_doc(
            "consecutive good probes that turn it SERVING again (the hold is released)",
            min=1,
            max=100,
        ),
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration of a Saga deployment (every service reads the same file)."""

    data_dir: str = field(default=".saga", metadata=_doc("where local state and keys live"))
    tls: TlsConfig = field(default_factory=TlsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    vault: VaultConfig = field(default_factory=VaultConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    rights: RightsConfig = field(default_factory=RightsConfig)
    providers: tuple[ProviderConfig, ...] = field(
        default=DEFAULT_PROVIDERS,
        metadata=_doc("[[providers]] tables (saga.toml only); absent = the two sim providers"),
    )

    @property
    def data_path(self) -> Path:
        """`data_dir` as a path."""
        return Path(self.data_dir)

    @property
    def pki_dir(self) -> Path:
        """Where mode `dev` keeps the local CA and service certificates."""
        return self.data_path / "pki"

    @property
    def context_key_paths(self) -> tuple[Path, Path]:
        """(private, public) key files of the request-context signing key."""
        keys = self.data_path / "keys"
        return (
            Path(self.context.signing_key_file or keys / "context.key"),
            Path(self.context.public_key_file or keys / "context.pub"),
        )

    def provider(self, name: str) -> ProviderConfig | None:
        """The provider called `name`, if configured."""
        return next((p for p in self.providers if p.name == name), None)


def env_name(path: str) -> str:
    """The environment variable that overrides key `path` (`tls.mode` -> SAGA_TLS__MODE)."""
    return ENV_PREFIX + path.replace(".", "__").upper()


def _coerce(path: str, hint: Any, raw: Any, source: str) -> Any:
    """Check and convert one scalar value; env values arrive as strings."""
    from_env = source.startswith("SAGA_")

    def bad(kind: str) -> ConfigError:
        return ConfigError(
            f"{path}: expected {kind}, got {raw!r} (from {source}). "
            f"Fix: set {path} to {kind} in saga.toml or {env_name(path)}."
        )

    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and str(raw).lower() in ("1", "true", "yes", "0", "false", "no"):
            return str(raw).lower() in ("1", "true", "yes")
        raise bad("true or false")
    if hint == int | None:
        return _coerce(path, int, raw, source)  # unset (None) never gets here
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_env:
            try:
                return int(str(raw))
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if from_env:
            try:
                return float(str(raw))
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if hint == tuple[str, ...]:
        if from_env:
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise bad("a list of strings")
    if hint is str:
        if isinstance(raw, str):
            return raw
        raise bad("a string")
    raise AssertionError(f"unsupported config type {hint!r} at {path}")


def _check_rules(path: str, value: Any, meta: Mapping[str, Any], source: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{path}: {value!r} (from {source}) is not one of {', '.join(map(str, choices))}. "
            f"Fix: pick one of them."
        )
    low = meta.get("min")
    if low is not None and value < low:
        raise ConfigError(
            f"{path}: {value!r} (from {source}) is below the minimum {low}. Fix: raise it."
        )
    high = meta.get("max")
    if high is not None and value > high:
        raise ConfigError(
            f"{path}: {value!r} (from {source}) is above the maximum {high}. Fix: lower it."
        )
    if path.endswith("port") and isinstance(value, int) and value > 65535:
        raise ConfigError(f"{path}: {value} (from {source}) is not a TCP port. Fix: use 1-65535.")


def _unknown(path: str, key: str, known: list[str], source: str) -> ConfigError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, known, n=1)
    hint = (
        f"did you mean '{(path + '.' if path else '') + close[0]}'?"
        if close
        else (f"known keys here: {', '.join(sorted(known))}.")
    )
    return ConfigError(f"{full}: unknown key (in {source}). Fix: remove it; {hint}")


def _build(
    cls: type,
    path: str,
    data: Mapping[str, Any],
    source: str,
    env: Mapping[str, str],
    default: Any = None,
) -> Any:
    """Build dataclass `cls` from `data` and `env`; `default` supplies unset values."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown(path, key, list(fields), source)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            sub = data.get(name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{key_path}: expected a table (in {source}). Fix: [{key_path}].")
            if default is not None:
                sub_default = getattr(default, name)
            elif f.default_factory is not dataclasses.MISSING:
                sub_default = f.default_factory()
            else:
                sub_default = None
            kwargs[name] = _build(typing.cast(type, hint), key_path, sub, source, env, sub_default)
            continue
        item = _table_item(hint)
        if item is not None:
            if name not in data:
                kwargs[name] = getattr(default, name) if default is not None else f.default
                continue
            entries = data[name]
            if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
                raise ConfigError(
                    f"{key_path}: expected an array of tables (in {source}). Fix: [[{key_path}]]."
                )
            # Array items are configured in the file only: no environment overrides.
            kwargs[name] = tuple(
                _build(item, f"{key_path}[{i}]", entry, source, {})
                for i, entry in enumerate(entries)
            )
            continue
        env_key = env_name(key_path)
        if env_key in env:
            value, where = env[env_key], env_key
        elif name in data:
            value, where = data[name], source
        elif default is not None:
            kwargs[name] = getattr(default, name)
            continue
        elif f.default is not dataclasses.MISSING:
            kwargs[name] = f.default
            continue
        else:
            raise ConfigError(
                f"{key_path}: missing key. Fix: set it in saga.toml or {env_key} "
                f"({f.metadata.get('doc', '')})."
            )
        value = _coerce(key_path, hint, value, where)
        _check_rules(key_path, value, f.metadata, where)
        kwargs[name] = value
    return cls(**kwargs)


def _table_item(hint: Any) -> type | None:
    """The dataclass of a `tuple[SomeDataclass, ...]` field (a TOML array of tables)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and dataclasses.is_dataclass(args[0]):
        return typing.cast(type, args[0])
    return None


def _known_env_keys(cls: type, path: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= _known_env_keys(hints[f.name], key_path)
        elif _table_item(hints[f.name]) is None:
            keys.add(env_name(key_path))
    return keys


def _validate(config: Config) -> Config:
    """Rules that span several keys."""
    url = config.storage.url
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"storage.url: {url.split('@')[-1]!r} is not a postgresql:// URL. Fix: use "
            "postgresql://user@host:5432/db, or leave it empty for SQLite files."
        )
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", config.storage.namespace):
        raise ConfigError(
            "storage.namespace: use lower-case letters, digits and _ (at most 41), "
            "starting with a letter. Fix: e.g. saga."
        )
    redis_url = config.gateway.limits.redis_url
    if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"gateway.limits.redis_url: {redis_url.split('@')[-1]!r} is not a redis:// URL. "
            "Fix: use redis://host:6379/0 (rediss:// for TLS), or leave it empty for "
            "in-memory limits."
        )
    if not config.providers:
        raise ConfigError("providers: none configured. Fix: add a [[providers]] table.")
    names = [p.name for p in config.providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"providers: the name {name!r} is used twice. Fix: give each provider its own name."
            )
    for i, p in enumerate(config.providers):
        endpoint = urlsplit(p.base_url.strip())
        if p.kind != "sim" and (endpoint.scheme not in ("http", "https") or not endpoint.netloc):
            raise ConfigError(
                f"providers[{i}].base_url: provider {p.name!r} ({p.kind}) needs an http(s) URL. "
                "Fix: set it, e.g. https://api.openai.com/v1 (see docs/configuration.md, "
                "Provider endpoints)."
            )
        if p.max_tokens_field != "max_tokens" and p.kind not in ("openai", "copilot"):
            raise ConfigError(
                f"providers[{i}].max_tokens_field: only the openai and copilot engines send it "
                f"(provider {p.name!r} is {p.kind!r}). Fix: remove it."
            )
    _validate_model_groups(config)
    rights = [r.name for r in config.rights.sources]
    for name in rights:
        if rights.count(name) > 1 or not name:
            raise ConfigError(
                f"rights.sources: the name {name!r} is used twice or empty. Fix: one table "
                "per source."
            )
    if config.tls.mode == "files":
        for key in ("cert_file", "key_file", "ca_file"):
            value = getattr(config.tls, key)
            if not value:
                raise ConfigError(
                    f"tls.{key}: missing key (tls.mode is 'files'). Fix: set tls.{key} in "
                    f"saga.toml or {env_name('tls.' + key)} to the mounted PEM file, or use "
                    f"tls.mode = 'dev'."
                )
            if not Path(value).is_file():
                raise ConfigError(
                    f"tls.{key}: file {value!r} does not exist. Fix: mount it or correct the path."
                )
    public = {k: getattr(config.gateway, k) for k in ("public_cert_file", "public_key_file")}
    for key, value in public.items():
        pair = "public_key_file" if key == "public_cert_file" else "public_cert_file"
        if not value and public[pair]:
            raise ConfigError(
                f"gateway.{key}: missing key (gateway.{pair} is set). Fix: set both to serve "
                "the public ports over TLS, or neither for plaintext."
            )
    for key, value in public.items():
        if value and not Path(value).is_file():
            raise ConfigError(
                f"gateway.{key}: file {value!r} does not exist. Fix: mount it or correct the path."
            )
    ports: dict[int, str] = {}
    for svc in dataclasses.fields(ServicesConfig):
        sc = config.services.get(svc.name)
        for kind in ("port", "probe_port", "metrics_port", "http_port"):
            port = getattr(sc, kind)
            if port == 0:
                continue
            other = ports.get(port)
            if other is not None and sc.host in ("127.0.0.1", "0.0.0.0", "localhost", "::"):
                raise ConfigError(
                    f"services.{svc.name}.{kind}: port {port} is also {other}. "
                    f"Fix: give each listener its own port."
                )
            ports[port] = f"services.{svc.name}.{kind}"
    return config


def _validate_model_groups(config: Config) -> None:
    """Each group's name is its own (no alias, provider model or other group has it) and
    names configured providers."""
    configured = {p.name for p in config.providers}
    models = {p.model for p in config.providers}
    seen: set[str] = set()
    for i, group in enumerate(config.gateway.model_groups):
        key = f"gateway.model_groups[{i}]"
        name = group.name
        if not name.strip() or len(name) > MAX_MODEL_NAME or name.startswith(MODEL_ALIAS_PREFIX):
            raise ConfigError(
                f"{key}.name: {name[:MAX_MODEL_NAME]!r} is empty, longer than {MAX_MODEL_NAME} "
                f"characters or under {MODEL_ALIAS_PREFIX} (the built-in aliases). Fix: "
                "rename it, e.g. team/default."
            )
        if name in models or name in seen:
            raise ConfigError(
                f"{key}.name: {name!r} is already a provider's model or another group. Fix: "
                "give the group a name of its own."
            )
        seen.add(name)
        unknown = [p for p in group.providers if p not in configured]
        if not group.providers or unknown or len(set(group.providers)) < len(group.providers):
            raise ConfigError(
                f"{key}.providers: {list(group.providers)!r} must name configured providers, "
                f"each once (unknown: {', '.join(unknown) or 'none'}). Fix: list names from "
                "the [[providers]] tables."
            )


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, merge and validate the configuration; raise ConfigError naming key and fix."""
    env = dict(os.environ if env is None else env)
    explicit = path is not None or ENV_CONFIG_FILE in env
    file = Path(path) if path is not None else Path(env.get(ENV_CONFIG_FILE, "saga.toml"))
    data: dict[str, Any] = {}
    source = "defaults"
    if file.exists():
        source = str(file)
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file}: not valid TOML ({e}). Fix: correct the syntax.") from None
    elif explicit:
        raise ConfigError(
            f"{file}: configuration file not found. Fix: create it, or unset {ENV_CONFIG_FILE} "
            f"/ drop --config to run on the defaults."
        )
    known = _known_env_keys(Config) | {ENV_CONFIG_FILE, *CLIENT_ENV}
    saga_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    for key in saga_env:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md."
            raise ConfigError(f"{key}: unknown environment override. Fix: unset it; {hint}")
    if not env.get("SAGA_TELEMETRY__OTLP_ENDPOINT") and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        saga_env["SAGA_TELEMETRY__OTLP_ENDPOINT"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    config = _build(Config, "", data, source, saga_env)
    assert isinstance(config, Config)
    return _validate(config)
