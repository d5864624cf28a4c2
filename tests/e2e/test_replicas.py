"""The scale-out topology on loopback: two replicas each of gateway, auth, router, optimizer
and agent-runtime (one token-vault: its file keyring is written by the first start, which two
processes on one data directory would race) on one PostgreSQL, started from the config the
Kubernetes manifests mount (deploy/k8s/base/saga.toml, with the loopback substitutions the
harness makes: ports, targets, data directory, dev certificates), clients spread over both
gateways. The replicas agree on what each one writes: sessions, executions and their
WatchExecution; the optimizer's rankings (a provider made slow through one router drops in
both routers' snapshots); budgets with reservations (concurrent runs over both routers never
overshoot); one ledger chain from both runtimes; and a graceful stop of one replica of each
inner service during streams fails no call (readiness drops first, its streams finish, new
calls go to the other)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saga.execution.v1 import common_pb2, records_pb2
from saga.gateway.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from services.common.database import open_database
from services.common.status import describe
from services.runtime.ledger import GENESIS, Ledger
from services.runtime.schema import MIGRATIONS as RUNTIME_MIGRATIONS
from tests.conftest import PG_URL, drop_schemas
from tests.e2e.test_budgets import new_user
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_ledger_rights import CSV_HEADER
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.harness import ROOT, SERVICE_NAMES, Stack, stack_for
from tests.integration.test_router_reason import first_attempt, mint, request, stream_reason

REPLICATED = ("gateway", "auth", "router", "optimizer", "runtime")
GATEWAYS = ("gateway", "gateway-2")
BALANCED = [
    (
        "grpc.service_config",
        json.dumps(
            {
                "loadBalancingConfig": [{"round_robin": {}}],
                "healthCheckConfig": {"serviceName": ""},
            }
        ),
    )
]
"""A client's channel options for both gateways: round robin over those that are healthy."""

SIMS = """
[[providers]]
name = "quick"
kind = "sim"
model = "sim-quick"
latency_ms = 300
ttft_ms = 40
[providers.sim]
first_token_ms = 600
tokens = 3
token_interval_ms = 10

[[providers]]
name = "steady"
kind = "sim"
model = "sim-steady"
latency_ms = 800
ttft_ms = 150
[providers.sim]
tokens = 3
token_interval_ms = 10
"""
"""Two simulated providers for the ranking check: "quick" by its priors, slow in fact."""

PAID_OUTPUT_PER_MTOK = 100_000_000
"""100 micro-USD per output token: a run's reservation (its most) is ~100,000 micro-USD."""


def manifest_config(fake: FakeProviders) -> str:
    """deploy/k8s/base/saga.toml as a pod reads it, less what is the pod's own (mounted
    certificates and keys, the data directory, DNS names and ports: the harness gives each
    process its own on loopback), plus this test's providers."""
    data = tomllib.loads((ROOT / "deploy" / "k8s" / "base" / "saga.toml").read_text())
    for pod_only in ("data_dir", "tls", "context", "vault", "services"):
        del data[pod_only]
    assert set(data) == {"server", "telemetry"}, "a new shared section: decide its loopback form"
    paid = provider_toml(
        "paid",
        fake,
        "ollama",
        max_retries=0,
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=PAID_OUTPUT_PER_MTOK,
    )
    return tomli_w.dumps(data) + "\n" + paid + SIMS


@dataclass
class Topology:
    stack: Stack
    fake: FakeProviders
    namespace: str

    @property
    def key(self) -> str:
        return self.stack.admin_key()

    def gateway(self, n: int) -> str:
        """The gateway the n-th client call goes to (alternating)."""
        return GATEWAYS[n % 2]


@asynccontextmanager
async def pinned_routers(stack: Stack) -> AsyncIterator[None]:
    """Both routers restarted to report to and watch one optimizer each (not both,
    balanced), so that what one router's calls teach reaches the other router only if the
    optimizer replicas share it; balanced again afterwards."""
    variable = "SAGA_SERVICES__OPTIMIZER__TARGET"
    routers = {"router": "optimizer", "router-2": "optimizer-2"}

    async def restart() -> None:
        for router in routers:
            assert await asyncio.to_thread(stack.stop, router) == 0
            stack.start(router)
        await asyncio.gather(*(stack.wait_serving(r) for r in routers))

    for router, optimizer in routers.items():
        stack.process_env[router] = {variable: stack.target(optimizer)}
    await restart()
    try:
        yield
    finally:
        for router in routers:
            del stack.process_env[router]
        await restart()


@pytest.fixture(scope="module")
async def topology(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    namespace = f"t{secrets.token_hex(6)}"
    fake = FakeProviders()
    await fake.start()
    fake.defaults["ollama"] = Script(tokens=8, interval=0.02)
    try:
        async with stack_for(
            tmp_path_factory.mktemp("replicas"),
            config=manifest_config(fake),
            replicas=dict.fromkeys(REPLICATED, 2),
            SAGA_STORAGE__URL=PG_URL,
            SAGA_STORAGE__NAMESPACE=namespace,
            SAGA_BUDGETS__ENABLED="true",
        ) as stack:
            yield Topology(stack, fake, namespace)
    finally:
        await fake.stop()
        await drop_schemas(namespace)


def paid_chat(prompt: str) -> execution_pb2.ExecuteRequest:
    """`chat` answered by the fake provider only."""
    message = chat(prompt)
    message.options.allowed_providers.append("paid")
    return message


async def execute(
    stack: Stack, gateway: str, message: execution_pb2.ExecuteRequest, credential: str
) -> list[execution_pb2.ExecuteResponse]:
    async with stack.gateway_channel(gateway) as ch:
        return [
            e
            async for e in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                message, metadata=bearer(credential), timeout=60
            )
        ]


async def test_every_process_of_the_topology_serves(topology: Topology) -> None:
    stack = topology.stack
    assert sorted(stack.processes) == sorted(
        [*REPLICATED, *(f"{s}-2" for s in REPLICATED), "vault"]
    )
    for name in stack.processes:
        service = stack.replicas.get(name, name)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports[name].probe_port}") as ch:
            for qualified in SERVICE_NAMES[service]:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=qualified), timeout=5
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, qualified)


async def test_sessions_executions_and_watches_are_the_same_through_either_gateway(
    topology: Topology,
) -> None:
    stack, key = topology.stack, topology.key
    async with stack.gateway_channel("gateway") as ch:
        made = await sessions_pb2_grpc.SessionServiceStub(ch).CreateSession(
            sessions_pb2.CreateSessionRequest(title="replicas"), metadata=bearer(key), timeout=10
        )
    async with stack.gateway_channel("gateway-2") as ch:
        got = await sessions_pb2_grpc.SessionServiceStub(ch).GetSession(
            sessions_pb2.GetSessionRequest(session_id=made.session.session_id),
            metadata=bearer(key),
            timeout=10,
        )
    assert got.session.title == "replicas"
    for n in range(4):  # both gateways, and (balanced) both runtimes
        events = await execute(stack, topology.gateway(n), paid_chat(f"hello {n}"), key)
        assert events[-1].WhichOneof("event") == "completed"
        execution_id = events[0].accepted.execution_id
        other = topology.gateway(n + 1)
        async with stack.gateway_channel(other) as ch:
            executions = execution_pb2_grpc.ExecutionServiceStub(ch)
            record = await executions.GetExecution(
                execution_pb2.GetExecutionRequest(execution_id=execution_id),
                metadata=bearer(key),
                timeout=10,
            )
            assert record.execution.execution_id == execution_id
            watched = [
                e.WhichOneof("event")
                async for e in executions.WatchExecution(
                    execution_pb2.WatchExecutionRequest(execution_id=execution_id),
                    metadata=bearer(key),
                    timeout=30,
                )
            ]
        assert watched[-1] == "completed"
        assert len(watched) == len(events)


async def test_a_provider_made_slow_through_one_router_drops_in_both_routers(
    topology: Topology,
) -> None:
    stack = topology.stack
    fastest = common_pb2.STRATEGY_FASTEST
    async with (
        pinned_routers(stack),
        stack.channel_as("runtime", "router") as first,
        stack.channel_as("runtime", "router-2") as second,
    ):
        for ch in (first, second):  # by the priors, "quick" is the fastest
            assert await first_attempt(ch, stack, strategy=fastest) == "quick"

        async def slow_call(n: int) -> None:
            exe = f"exe_slow{n:04d}{secrets.token_hex(4)}"
            got = await stream_reason(
                first, request(exe, allowed_providers=["quick"]), mint(stack, exe)
            )
            assert got.error is None, got.error

        # Twenty calls through the first router only: "quick" is slow (its priors count as
        # ten samples).
        await asyncio.gather(*(slow_call(n) for n in range(20)))
        for ch in (first, second):
            deadline = time.monotonic() + 20
            while (seen := await first_attempt(ch, stack, strategy=fastest)) != "steady":
                assert time.monotonic() < deadline, f"a router still ranks {seen!r} fastest"
                await asyncio.sleep(0.2)


async def test_concurrent_runs_over_both_routers_never_overshoot_a_nearly_spent_budget(
    topology: Topology,
) -> None:
    stack = topology.stack
    user_id, token = await new_user(stack)
    limit = 250_000  # two runs' reservations at a time, of forty at once
    async with stack.gateway_channel() as ch:
        await admin_pb2_grpc.AdminServiceStub(ch).SetBudget(
            admin_pb2.SetBudgetRequest(user_id=user_id, amount_micro_usd=limit),
            metadata=bearer(topology.key),
            timeout=10,
        )

    async def one(n: int) -> str:
        try:
            events = await execute(stack, topology.gateway(n), paid_chat(f"spend {n}"), token)
        except grpc.aio.AioRpcError as error:
            return describe(error).reason
        return str(events[-1].WhichOneof("event"))

    outcomes = await asyncio.gather(*(one(n) for n in range(40)))
    assert set(outcomes) <= {"completed", "BUDGET_EXHAUSTED"}, outcomes
    assert "completed" in outcomes
    assert "BUDGET_EXHAUSTED" in outcomes
    # The ledger (what was spent, from both routers' outboxes) stays inside the budget.
    completed = outcomes.count("completed")
    usage = (
        await usage_once(
            stack, token, usage_pb2.GetUsageRequest(), lambda r: r.totals.calls, completed
        )
    ).totals
    assert usage.calls == completed
    assert 0 < usage.cost_micro_usd <= limit


async def usage_once(
    stack: Stack,
    credential: str,
    ask: usage_pb2.GetUsageRequest,
    calls: Callable[[usage_pb2.GetUsageResponse], int],
    expected: int,
) -> usage_pb2.GetUsageResponse:
    """GetUsage's answer once `calls` of it reaches `expected`, or after a bounded wait (the
    routers' outboxes ship in the background)."""
    async with stack.gateway_channel("gateway-2") as ch:
        usage = usage_pb2_grpc.UsageServiceStub(ch)
        for _ in range(100):
            reply = await usage.GetUsage(ask, metadata=bearer(credential), timeout=10)
            if calls(reply) >= expected:
                break
            await asyncio.sleep(0.2)
    return reply


async def test_imports_through_both_runtimes_form_one_chain(
    topology: Topology, tmp_path: Path
) -> None:
    stack = topology.stack

    async def load(n: int) -> admin_pb2.ImportTransactionsResponse:
        csv = CSV_HEADER + "".join(
            f"replicas,2024-04-{1 + i:02d},SYM{n},buy,1,{10 + i},USD\n" for i in range(3)
        )
        async with stack.gateway_channel(topology.gateway(n)) as ch:
            return await admin_pb2_grpc.AdminServiceStub(ch).ImportTransactions(
                admin_pb2.ImportTransactionsRequest(csv=csv),
                metadata=bearer(topology.key),
                timeout=30,
            )

    replies = await asyncio.gather(*(load(n) for n in range(12)))
    # Each import started from the head the one before it left: one line, no fork.
    previous = {r.previous_commit_hash for r in replies}
    heads = {r.ledger_commit_hash for r in replies}
    assert len(previous) == len(heads) == 12
    (start,) = previous - heads
    (end,) = heads - previous
    db = await open_database(PG_URL, topology.namespace, tmp_path, "runtime", RUNTIME_MIGRATIONS)
    try:
        ledger = await Ledger.open(db)
        verification = await ledger.verify()
        rows = await ledger.rows()
    finally:
        await db.close()
    assert verification.ok, verification
    assert verification.head == end
    assert rows[0].prev_hash == GENESIS
    assert len({r.prev_hash for r in rows}) == len(rows)
    assert sum(1 for r in rows if r.transaction.portfolio == "replicas") == 36
    assert start in {GENESIS, *(r.hash for r in rows)}


@dataclass
class Load:
    """Clients streaming runs until stopped, each over one channel to both gateways as a
    client-side balancing client has it (round robin, skipping a gateway whose health says
    NOT_SERVING); a call that fails is noted with its code, reason and the replica being
    disrupted at the time, and the client goes on with its next call."""

    topology: Topology
    clients: int = 6
    results: list[str] = field(default_factory=list)
    disrupted: str = ""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def client(self, n: int) -> None:
        stack, key = self.topology.stack, self.topology.key
        target = "ipv4:" + ",".join(stack.target(g) for g in GATEWAYS)
        async with grpc.aio.insecure_channel(target, options=BALANCED) as ch:
            executions = execution_pb2_grpc.ExecutionServiceStub(ch)
            while not self._stop.is_set():
                try:
                    events = [
                        e
                        async for e in executions.Execute(
                            paid_chat(f"load {n}"), metadata=bearer(key), timeout=60
                        )
                    ]
                    self.results.append(str(events[-1].WhichOneof("event")))
                except grpc.aio.AioRpcError as error:
                    reason = describe(error).reason
                    self.results.append(f"{error.code().name} {reason} ({self.disrupted})")
                async with self._progress:
                    self._progress.notify_all()

    async def more(self, calls: int) -> None:
        """Wait until `calls` more calls ended (streams are in flight all the while)."""
        before = len(self.results)
        async with self._progress:
            await self._progress.wait_for(lambda: len(self.results) >= before + calls)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        fake = self.topology.fake
        fake.defaults["ollama"] = Script(tokens=10, interval=0.1)  # ~1 s streams
        tasks = [asyncio.ensure_future(self.client(n)) for n in range(self.clients)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)
            fake.defaults["ollama"] = Script(tokens=8, interval=0.02)

    def failed(self) -> list[str]:
        return [r for r in self.results if r != "completed"]


async def test_a_graceful_stop_of_one_replica_per_service_fails_no_call(
    topology: Topology,
) -> None:
    """Streams through both gateways while, one service after the other, a replica is sent
    SIGTERM (then started again): every call completes — its peers' channels (and the
    clients', for a gateway) stop picking it as soon as its health says NOT_SERVING, and its
    own streams finish."""
    stack = topology.stack
    async with Load(topology).running() as load:
        for service in REPLICATED:
            load.disrupted = f"{service}-2"
            await load.more(3)
            assert await asyncio.to_thread(stack.stop, load.disrupted) == 0
            stack.start(load.disrupted)
            await stack.wait_serving(load.disrupted)
        await load.more(3)
    assert len(load.results) >= 15
    assert load.failed() == []


async def test_killing_one_replica_of_each_service_loses_and_doubles_no_usage(
    topology: Topology,
) -> None:
    """The same load while one replica of each service in turn is killed (-9) and started
    again: calls that fail get a typed error (and the next goes to the other replica), and
    the usage ledger counts exactly the calls the fake provider received."""
    stack = topology.stack
    async with Load(topology).running() as load:
        for service in REPLICATED:
            load.disrupted = f"{service}-2"
            await load.more(3)
            process = stack.processes[load.disrupted]
            process.kill()
            await asyncio.to_thread(process.wait)
            await load.more(2)  # calls go on meanwhile, through the other replica
            stack.start(load.disrupted)
            await stack.wait_serving(load.disrupted)
        await load.more(3)
    # Every failure is UNAVAILABLE (worth retrying elsewhere), with the reason of the service
    # that saw its peer go — only a killed gateway, which no one answers for, has none.
    failed = load.failed()
    assert {r.split(" ")[0] for r in failed} <= {"UNAVAILABLE"}, failed
    assert [r for r in failed if "  " in r and "(gateway-2)" not in r] == [], failed
    assert load.results.count("completed") >= 15
    # Nothing lost, nothing twice: an attempt is held durably before its request leaves
    # (services/router/attempts.py), so even the one a killed router had just sent counts.
    received = len(topology.fake.requests("ollama"))
    counted = await ledger_calls(stack, topology.key, "paid", received)
    assert counted == received


async def ledger_calls(stack: Stack, key: str, provider: str, expected: int) -> int:
    """The calls the usage ledger counts for `provider`, every user's."""

    def counted(reply: usage_pb2.GetUsageResponse) -> int:
        return sum(r.calls for r in reply.rows if r.provider == provider)

    ask = usage_pb2.GetUsageRequest(all_users=True, group_by=[records_pb2.USAGE_DIMENSION_PROVIDER])
    return counted(await usage_once(stack, key, ask, counted, expected))
