"""The router's gRPC service, registered with the shared bootstrap.

Built once per process: the engines (with auth's provider credentials), the ranking watch,
the providers' circuits, retry budgets and limits, the durable outbox in the router's own
database, and the budget client. The background tasks (the ranking watch, the outbox's
writer and shipper, the periodic health checks) are the host's. At shutdown, after the
servers drained: settlements in flight get their grace and the outbox commits what is queued
(`Phase.FINISH`); then the tasks are cancelled; then the database, the credential client and
the engines close, so no task outlives what it uses (unshipped rows stay for the next start).

The health checks (`probes`) probe providers on CheckProviders, and every
`router.health_check_interval_seconds` when that is above 0.
"""

from __future__ import annotations

from services.common.context import ContextVerifier
from services.common.jwks import JwksKeys
from services.common.lifecycle import Phase
from services.common.prices import price_table
from services.common.server import Registration, ServiceHost
from services.router import genai
from services.router.budget_reservations import Budgets
from services.router.charges import ChargePolicy
from services.router.credentials import ProviderCredentials
from services.router.custom_ranking import CustomRanker
from services.router.engines import engine_for
from services.router.metrics import REFUSALS, register_circuits, register_outbox
from services.router.outbox import Outbox
from services.router.probes import HealthChecks
from services.router.rankings import RankingWatcher
from services.router.resilience import Resilience
from services.router.schema import MIGRATIONS
from services.router.servicer import RouterParts, RouterServicer


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    providers = config.providers
    genai.configure(capture_message_content=config.telemetry.capture_message_content)
    credentials = ProviderCredentials(host.peers.channel("auth"))
    engines = {
        p.name: engine_for(p, None if p.credential == "none" else credentials.lookup(p))
        for p in providers
    }
    optimizer = host.peers.channel("optimizer")
    rankings = RankingWatcher(optimizer)
    resilience = Resilience.build(
        providers,
        config.router,
        on_refusal=lambda provider, reason: REFUSALS.labels(provider, reason).inc(),
    )
    register_circuits(resilience)
    db = await host.open_database(MIGRATIONS)
    outbox = Outbox(
        db,
        optimizer,
        batch_size=config.router.outbox_batch_size,
        max_backoff=config.router.outbox_max_backoff_seconds,
    )
    budgets = Budgets(optimizer, config.budgets)
    verifier = ContextVerifier(JwksKeys(host.peers.channel("auth")))
    health = HealthChecks(providers, engines, resilience, config.router)
    host.spawn("ranking-watcher", rankings.run)
    outbox.run_in(host.lifecycle)
    register_outbox(outbox.gauges)
    if health.periodic:
        host.spawn("router-health-checks", health.run_periodic)
    host.on_stop(budgets.close, Phase.FINISH)
    host.on_stop(db.close)
    host.on_stop(credentials.close)
    for engine in engines.values():
        host.on_stop(engine.close)
    servicer = RouterServicer(
        RouterParts(
            providers=providers,
            engines=engines,
            verifier=verifier,
            rankings=rankings,
            resilience=resilience,
            outbox=outbox,
            budgets=budgets,
            config_prices=price_table(providers),
            health=health,
            coalesce=config.router.coalesce_deltas,
            custom_ranker=CustomRanker(optimizer),
            charge_policy=ChargePolicy(config.accounting.charge_policy),
        )
    )
    return [Registration.of(servicer)]
