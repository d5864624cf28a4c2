"""The router's gRPC service, registered with the shared bootstrap.

CheckProviders is not built yet: it is inherited from the generated base servicer, which the
guard answers with UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from __future__ import annotations

from services.common.context import ContextVerifier
from services.common.jwks import JwksKeys
from services.common.prices import price_table
from services.common.server import Registration, ServiceHost
from services.router.engines import engine_for
from services.router.outcomes import OutcomeReporter
from services.router.rankings import RankingWatcher
from services.router.servicer import RouterServicer


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    providers = host.config.providers
    engines = {p.name: engine_for(p) for p in providers}
    rankings = RankingWatcher(host.peers.channel("optimizer"))
    reporter = OutcomeReporter(host.peers.channel("optimizer"))
    verifier = ContextVerifier(JwksKeys(host.peers.channel("auth")))
    rankings.start()

    async def stop() -> None:
        await rankings.stop()
        await reporter.close()
        for engine in engines.values():
            await engine.close()

    host.on_stop(stop)
    servicer = RouterServicer(
        providers, engines, verifier, rankings, reporter, price_table(providers)
    )
    return [Registration.of(servicer)]
