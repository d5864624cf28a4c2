"""The gateway's public gRPC services, registered with the shared bootstrap."""

from __future__ import annotations

import asyncio

from services.common.context import ContextSigner, ensure_context_keys, load_private_key
from services.common.server import Registration, ServiceHost
from services.gateway.account import AccountServicer
from services.gateway.admin import AdminServicer
from services.gateway.admission import Admission
from services.gateway.edge import Edge
from services.gateway.execution import ExecutionServicer
from services.gateway.limits import LimitStore, MemoryLimits
from services.gateway.models import ModelCatalog, ModelServicer
from services.gateway.pack_health import PackGate, PackHealthServicer
from services.gateway.patterns import PatternServicer
from services.gateway.relay import Relay
from services.gateway.sessions import SessionServicer
from services.gateway.usage import UsageServicer
from services.gateway.web.console import Console
from services.gateway.web.facade import Facade
from services.gateway.web.openai_api import OpenAIApi
from services.gateway.web.probes import Probes
from services.gateway.web.server import serve_http


def limit_store(host: ServiceHost) -> LimitStore:
    """In memory, or in Redis (closed on shutdown) when `gateway.limits.redis_url` is set."""
    limits = host.config.gateway.limits
    if not limits.redis_url:
        return MemoryLimits()
    # Imported only when configured: the in-memory default needs no Redis client at all.
    from services.gateway.redis_limits import RedisLimits, connect

    store = RedisLimits(
        connect(limits),
        limits.redis_key_prefix,
        fallback=MemoryLimits() if limits.redis_failure_mode == "open" else None,
        retry_seconds=limits.redis_retry_seconds,
    )
    host.on_stop(store.close)
    return store


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    private_path, public_path = config.context_key_paths
    if not config.context.signing_key_file:
        await asyncio.to_thread(ensure_context_keys, private_path, public_path)
    signer = ContextSigner(
        await asyncio.to_thread(load_private_key, private_path), config.context.max_ttl_seconds
    )
    auth = host.peers.channel("auth")
    edge = Edge(config, auth, signer)
    relay = Relay(edge, host.peers)
    runtime = host.peers.channel("runtime")
    gate = PackGate(config.gateway, runtime)
    patterns = PatternServicer(edge, relay)
    admission = Admission(config.gateway.limits, limit_store(host))
    execution = ExecutionServicer(edge, runtime, relay, gate, admission)
    catalog = ModelCatalog(config)
    models = ModelServicer(edge, catalog)
    registrations = [
        Registration.of(execution, raw_responses={"Execute"}),
        Registration.of(models),
        Registration.of(AccountServicer(edge, auth, config.gateway.account_calls_per_minute)),
        Registration.of(AdminServicer(edge, relay)),
        Registration.of(UsageServicer(edge, relay)),
        Registration.of(SessionServicer(edge, relay)),
        Registration.of(patterns),
        Registration.of(PackHealthServicer(edge, gate, runtime)),
    ]
    # The HTTP door: the same servicers behind JSON routes.
    probes = Probes(host.health, [r.name for r in registrations if r.built])
    openai = OpenAIApi(edge, execution, models, catalog)
    facade = Facade.over(registrations, host)
    routes = [*probes.routes(), *facade.routes(), *openai.routes(), *Console().routes()]
    await serve_http(host, routes)
    return registrations
