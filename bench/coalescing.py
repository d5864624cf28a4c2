"""What token coalescing saves: messages sent and CPU per token, coalescing on and off.

One process, one event loop: the router's real `RouterServicer` (verified request context,
the sim engine, retries/circuits/limits, the durable outbox on a temporary SQLite file,
coalescing on or off — `router.coalesce_deltas`) on a plain grpc.aio server on loopback, and
a load client calling `Reason`. Two scenarios, each run with coalescing on and off, rounds
interleaved so drift on a shared machine hits both alike:

* fast-provider  the sim provider produces with `token_interval_ms` 0 (a provider far faster
                 than one gRPC write per token), the client reads as fast as it can;
* slow-reader    the provider is paced (`--paced-interval-ms`), the client pauses
                 `--reader-delay-ms` after each message and its channel advertises a small
                 HTTP/2 window (no BDP probing), so the server's writes wait for the reader;
* keeping-up     the same paced provider, one stream at a time and a reader that keeps up:
                 nothing waits, so nothing merges — what coalescing costs when it cannot help
                 (its pump task and one hand-over per delta).

Printed per scenario and mode: messages the client received per stream, tokens per message,
CPU µs per token (`time.process_time()` over the run, client and server together, divided
by the tokens delivered), and streams/s. The text delivered is checked to be the same with
and without coalescing.

    .venv/bin/python -m bench.coalescing [--tokens 200] [--streams 64] [--concurrency 16]
        [--rounds 4] [--paced-interval-ms 1] [--reader-delay-ms 2] [--json out.json]

(keeping-up runs at concurrency 1 with a quarter of the streams.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.config import BudgetsConfig, ProviderConfig, RouterConfig, SimConfig
from services.common.context import ContextSigner, ContextVerifier, key_id
from services.common.database import open_database
from services.common.lifecycle import Lifecycle
from services.common.prices import price_table
from services.router.budget_reservations import Budgets
from services.router.engines import engine_for
from services.router.outbox import Outbox
from services.router.probes import HealthChecks
from services.router.rankings import RankingWatcher
from services.router.resilience import Resilience
from services.router.schema import MIGRATIONS
from services.router.servicer import RouterParts, RouterServicer

SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
"""A reader that pulls slowly makes the sender wait only if its window is small."""


@dataclass(frozen=True)
class Scenario:
    """One provider pace and one reader pace."""

    name: str
    interval_ms: float
    reader_delay_ms: float
    small_window: bool
    concurrency: int
    streams: int


@dataclass
class Result:
    """One scenario in one mode, summed over its rounds."""

    scenario: str
    coalesce: bool
    concurrency: int
    streams: int = 0
    tokens: int = 0
    messages: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors: int = 0
    texts: set[str] | None = None

    def row(self) -> dict[str, Any]:
        per_stream = self.messages / max(1, self.streams)
        return {
            "scenario": self.scenario,
            "coalesce": self.coalesce,
            "concurrency": self.concurrency,
            "streams": self.streams,
            "messages_per_stream": round(per_stream, 1),
            "tokens_per_message": round(self.tokens / max(1, self.messages), 2),
            "cpu_us_per_token": round(1e6 * self.cpu_seconds / max(1, self.tokens), 2),
            "streams_per_s": round(self.streams / max(1e-9, self.wall_seconds), 1),
            "errors": self.errors,
        }


class Router:
    """A RouterServicer on a loopback port (coalescing on or off) and a client channel."""

    def __init__(self, coalesce: bool, scenario: Scenario, tokens: int, data_dir: Path) -> None:
        self.coalesce = coalesce
        self.scenario = scenario
        self.tokens = tokens
        self.data_dir = data_dir
        self.key = Ed25519PrivateKey.generate()
        self.signer = ContextSigner(self.key, 900)

    async def start(self) -> None:
        provider = ProviderConfig(
            name="sim-bench",
            kind="sim",
            model="sim",
            input_micro_usd_per_mtok=1_000_000,
            output_micro_usd_per_mtok=2_000_000,
            sim=SimConfig(tokens=self.tokens, token_interval_ms=self.scenario.interval_ms),
        )
        public = self.key.public_key()

        async def lookup(kid: str) -> Ed25519PublicKey | None:
            return public if kid == key_id(public) else None

        # No optimizer: rankings stay on configuration order, the outbox keeps its rows.
        nowhere = grpc.aio.insecure_channel("127.0.0.1:9")
        self.db = await open_database("", "saga", self.data_dir, "router", MIGRATIONS)
        self.outbox = Outbox(self.db, nowhere, max_backoff=60.0)
        self.lifecycle = Lifecycle()
        self.outbox.run_in(self.lifecycle)
        router_config = replace(RouterConfig(), coalesce_deltas=self.coalesce)
        engines = {provider.name: engine_for(provider)}
        resilience = Resilience.build((provider,), router_config)
        self.servicer = RouterServicer(
            RouterParts(
                providers=(provider,),
                engines=engines,
                verifier=ContextVerifier(lookup),
                rankings=RankingWatcher(nowhere),
                resilience=resilience,
                outbox=self.outbox,
                budgets=Budgets(nowhere, BudgetsConfig()),
                config_prices=price_table((provider,)),
                coalesce=router_config.coalesce_deltas,
                health=HealthChecks((provider,), engines, resilience, router_config),
            )
        )
        self.server = grpc.aio.server()
        router_pb2_grpc.add_RouterServiceServicer_to_server(self.servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        options = SMALL_WINDOW if self.scenario.small_window else []
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)
        self.nowhere = nowhere

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(None)
        await self.lifecycle.shut_down()
        await self.db.close()
        await self.nowhere.close()

    async def stream(self, n: int, result: Result) -> None:
        exe = "exe_" + secrets.token_hex(16)
        token = self.signer.mint(
            execution_id=exe,
            user_id="usr_bench",
            tenant="t",
            scopes=["execute"],
            credential_id="k",
            ttl_seconds=600,
        )
        request = router_pb2.ReasonRequest(
            messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=f"question {n % 8}")],
            max_tokens=self.tokens,
            accounting=router_pb2.AccountingContext(
                user_id="usr_bench", execution_id=exe, step_id="s"
            ),
        )
        delay = self.scenario.reader_delay_ms / 1000
        text: list[str] = []
        messages = 0
        try:
            call = self.stub.Reason(request, metadata=(("saga-context", token),), timeout=120)
            async for event in call:
                if event.HasField("delta"):
                    messages += 1
                    text.append(event.delta.text)
                    if delay:
                        await asyncio.sleep(delay)
        except grpc.aio.AioRpcError:
            result.errors += 1
            return
        joined = "".join(text)
        result.streams += 1
        result.messages += messages
        result.tokens += len(joined.split())
        assert result.texts is not None
        result.texts.add(joined)


async def run_round(router: Router, streams: int, concurrency: int, result: Result) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await router.stream(n, result)

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(streams)))
    result.cpu_seconds += time.process_time() - cpu
    result.wall_seconds += time.perf_counter() - wall


async def main(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = [
        Scenario("fast-provider", 0.0, 0.0, False, args.concurrency, args.streams),
        Scenario(
            "slow-reader",
            args.paced_interval_ms,
            args.reader_delay_ms,
            True,
            args.concurrency,
            args.streams,
        ),
        # One stream at a time, so the server always keeps up with the provider.
        Scenario("keeping-up", args.paced_interval_ms, 0.0, False, 1, max(2, args.streams // 4)),
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            results = {
                on: Result(scenario.name, on, scenario.concurrency, texts=set())
                for on in (True, False)
            }
            routers = {}
            for on in (True, False):
                routers[on] = Router(on, scenario, args.tokens, Path(tmp) / f"{scenario.name}-{on}")
                await routers[on].start()
            per_round = max(1, scenario.streams // args.rounds)
            for i in range(args.rounds):
                order = (True, False) if i % 2 == 0 else (False, True)
                for on in order:
                    await run_round(routers[on], per_round, scenario.concurrency, results[on])
                    r = results[on].row()
                    print(
                        f"{scenario.name} coalesce={'on' if on else 'off'} after round {i + 1}: "
                        f"{r['messages_per_stream']} msgs/stream, {r['cpu_us_per_token']} µs/token",
                        file=sys.stderr,
                    )
            for router in routers.values():
                await router.stop()
            same = results[True].texts == results[False].texts
            for on in (True, False):
                row = results[on].row()
                row["same_text_both_modes"] = same
                rows.append(row)
    return {"args": vars(args), "rows": rows}


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'scenario':<15}{'coalesce':>9}{'conc':>6}{'streams':>9}{'msgs/stream':>13}"
        f"{'tokens/msg':>12}{'CPU µs/token':>14}{'streams/s':>11}{'errors':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<15}{'on' if r['coalesce'] else 'off':>9}{r['concurrency']:>6}"
            f"{r['streams']:>9}"
            f"{r['messages_per_stream']:>13}{r['tokens_per_message']:>12}"
            f"{r['cpu_us_per_token']:>14}{r['streams_per_s']:>11}{r['errors']:>8}"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream")
    parser.add_argument("--streams", type=int, default=64, help="streams per scenario and mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--paced-interval-ms", type=float, default=1.0)
    parser.add_argument("--reader-delay-ms", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # The outbox cannot ship (there is no optimizer here): keep its warnings out of the output.
    logging.basicConfig(level=logging.ERROR)
    arguments = parse()
    result = asyncio.run(main(arguments))
    print(table(result["rows"]))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2, default=str))
    for row in result["rows"]:
        if not row["same_text_both_modes"] or row["errors"]:
            sys.exit(f"{row['scenario']}: texts differ between modes or streams failed")
