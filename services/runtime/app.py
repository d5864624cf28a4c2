"""The runtime's gRPC services, registered with the shared bootstrap.

At start: open the runtime's database (`<data_dir>/runtime.db`, or the PostgreSQL schema
`<storage.namespace>_runtime`; migrations run as it opens); register the built-in agents
(`llm`, `financial_analyst` over the ledger and packs, `data` over the shipped datasets);
load the patterns (shipped samples plus `runtime.patterns_dir`) — a bad pattern file is
refused and logged with the file and field, and listed in ListPatterns, while the good ones
are served; seed the demo ledger and pack on first start, and take this replica's execution
lease (interrupting runs that a stopped replica left RUNNING, or claiming the detached ones
to continue them here), renewed by a background task of the host; reconcile the pricing
packs left WARMING in the background (PackService).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from services.common.circuit import CircuitCollector
from services.common.context import ContextVerifier
from services.common.jwks import JwksKeys
from services.common.lifecycle import Phase
from services.common.metrics import register_collector
from services.common.server import Registration, ServiceHost
from services.runtime import demo
from services.runtime.agent_circuits import AgentCircuits, agent_settings
from services.runtime.agents.data import data_agent, load_datasets
from services.runtime.agents.financial_analyst import FinancialAnalyst
from services.runtime.agents.llm import LlmAgent
from services.runtime.capabilities import CapabilityRegistry
from services.runtime.event_log import EventWriter
from services.runtime.executions import ExecutionStore
from services.runtime.ledger import Ledger
from services.runtime.ledger_service import LedgerServicer
from services.runtime.pack_rules import held_symbols
from services.runtime.pack_servicer import PackServicer
from services.runtime.packs import PackStore
from services.runtime.patterns import SAMPLES_DIR, load_patterns
from services.runtime.pins import Pinning
from services.runtime.rights import RightsRegistry
from services.runtime.schema import MIGRATIONS
from services.runtime.servicer import RuntimeServicer, registration
from services.runtime.session_servicer import SessionServicer
from services.runtime.sessions import SessionStore

log = logging.getLogger("saga.runtime")


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    db = await host.open_database(MIGRATIONS)
    ledger = await Ledger.open(db)

    async def held(asof: str) -> set[str]:
        return held_symbols((row.transaction for row in await ledger.rows()), asof)

    packs = await PackStore.open(
        db,
        held=held,
        max_age_days=config.runtime.pack_max_age_days,
        warmup_seconds=config.runtime.pack_warmup_seconds,
    )
    circuits = AgentCircuits(
        agent_settings(
            config.runtime.agent_circuit_failures, config.runtime.agent_circuit_cooldown_seconds
        )
    )
    register_collector(
        "runtime-agent-circuits",
        CircuitCollector("saga_runtime_agent_circuit_state", "agent", "agent", circuits.states),
    )
    registry = CapabilityRegistry(circuits)
    registry.register(LlmAgent(host.peers.channel("router")))
    registry.register(FinancialAnalyst(ledger, packs).agent())
    registry.register(data_agent(await asyncio.to_thread(load_datasets)))
    directories = [(SAMPLES_DIR, "samples")]
    if host.config.runtime.patterns_dir:
        directories.append((Path(host.config.runtime.patterns_dir), "user"))
    catalog = await asyncio.to_thread(load_patterns, directories, registry.capabilities())
    for problem in catalog.problems:
        # Refused, not fatal: the service serves the good patterns and lists this one's
        # problem in ListPatterns, so a bad file never puts the runtime in a crash loop.
        log.warning(
            "pattern refused",
            extra={"source": problem.source, "field": problem.field, "problem": problem.message},
        )

    await demo.seed(ledger, packs)
    packs.start()
    # Stable across restarts of this replica, unique among live ones (the port is not shared).
    replica_id = f"{socket.gethostname()}:{config.services.runtime.port}"
    executions = await ExecutionStore.open(
        db, replica_id, lease_seconds=config.runtime.replica_lease_seconds
    )
    events = EventWriter(db)
    host.spawn("ledger-head", ledger.follow)  # other replicas' imports, within a second
    host.spawn("event-log", events.run)
    retention = config.runtime
    host.spawn(
        "event-log-retention",
        lambda: executions.keep_pruning(
            retention.event_log_max_age_days * 86_400, retention.event_log_max_runs
        ),
    )
    # After the tasks ended, before the database closes: the last events, then the records.
    host.on_stop(events.close)
    host.on_stop(executions.close)
    host.on_stop(packs.close)
    host.on_stop(db.close)
    log.info(
        "runtime ready",
        extra={
            "patterns": sorted(catalog.patterns),
            "ledger_head": ledger.head(),
            "pricing_pack_id": (latest.pack_id if (latest := packs.latest()) else ""),
        },
    )
    sessions = SessionStore(db)
    verifier = ContextVerifier(JwksKeys(host.peers.channel("auth")))
    servicer = RuntimeServicer(
        catalog=catalog,
        registry=registry,
        pinning=Pinning(packs, ledger),
        executions=executions,
        sessions=sessions,
        events=events,
        verifier=verifier,
        rights=RightsRegistry.from_config(config.rights),
        max_parallel_steps=config.runtime.max_parallel_steps,
        idempotency_window_seconds=config.runtime.idempotency_window_seconds,
        detached_grace_seconds=config.server.grace_seconds,
        session_history_max_tokens=config.runtime.session_history_max_tokens,
    )
    # Renewals hand the runs they claim from stopped replicas to the servicer, which
    # continues them (durable runs; the first hands over those claimed at open), and stop
    # here the runs others claimed while this replica was presumed dead.
    host.spawn(
        "execution-lease",
        lambda: executions.keep_alive(servicer.adopt, servicer.running, servicer.lose),
    )
    # Detached runs get the drain's grace while the event writer still runs (FINISH).
    host.on_stop(servicer.stop_detached, Phase.FINISH)
    return [
        registration(servicer),
        Registration.of(LedgerServicer(ledger)),
        Registration.of(PackServicer(packs)),
        Registration.of(SessionServicer(sessions, verifier)),
    ]
