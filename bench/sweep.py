"""How many concurrent paced streams the chain sustains before the token rate suffers.

The fake upstream (`bench.fake_upstream`, its own process) paces every answer at one token
per `--interval-ms` (20 ms = 50 tokens/s, a fast model), `--tokens` tokens (500 ≈ 10 s per
stream). For each N of `--steps`, each target gets N concurrent streams started over a
`--ramp-s` ramp, sent by `--clients` load-client processes (`bench.streams`); measured at
the client: the gaps between consecutive text messages (p50, p99, max), time to first token,
errors, lost and reordered tokens (every stream's text checked against the upstream's), the
most streams open at once; and the CPU of every process of the target, of the fake and of
each client as a share of one core over the level. A target holds N when no stream failed
and the p99 gap stayed within `--gap-ms` (100); it stops at the first N it does not hold.

Targets: `saga` (client → gateway → runtime → router → upstream, the six services with the
benchmark profile of `bench.chain`), `relay` (the bare three-hop grpc.aio relay chain of
`bench.relay`: the architecture's floor) and `direct` (the fake alone: whether the client and
the fake keep up). Levels alternate the targets' order.

    .venv/bin/python -m bench.sweep [--targets saga,relay] [--steps 50,100,200,400,600,800]
        [--tokens 500] [--interval-ms 20] [--clients 2] [--ramp-s 2] [--gap-ms 100]
        [--json out.json]

A client or the fake above ~70 % of a core is flagged: then the load generator, not the
chain, may be what slowed the tokens (add `--clients`). Nothing is asserted about timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.chain import cpu_seconds, fake_upstream, percentile, saga_stack
from bench.relay import relay_chain
from bench.streams import (
    LEAD_S,
    ClientResult,
    Clients,
    clients,
    load_parser,
    peak_open,
    raise_open_files,
    run_and_report,
)
from services.common.identity import SERVICES

TARGETS = ("saga", "relay", "direct")
BUSY = 0.7  # a load generator above this share of a core may be the bottleneck


@dataclass
class Endpoint:
    """Where a target is called and which processes are its own."""

    name: str
    kind: str  # bench.streams Spec.kind
    address: str
    api_key: str
    pids: dict[str, int]
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each process's Prometheus port (Saga's services only)."""


@dataclass
class Chain:
    """The started targets and the fake upstream."""

    endpoints: dict[str, Endpoint]
    upstream_pid: int
    ready_seconds: float


@contextlib.asynccontextmanager
async def started(
    names: list[str], tokens: int, interval_ms: float, root: Path
) -> AsyncIterator[Chain]:
    """The fake upstream and each named target, stopped on exit."""
    async with contextlib.AsyncExitStack() as stack_of:
        base_url, upstream_pid = await stack_of.enter_async_context(
            fake_upstream(tokens, interval_ms)
        )
        endpoints: dict[str, Endpoint] = {}
        ready = 0.0
        if "saga" in names:
            (root / "stack").mkdir(exist_ok=True)
            stack, ready = await stack_of.enter_async_context(saga_stack(base_url, root / "stack"))
            pids = {s: stack.processes[s].pid for s in SERVICES}
            endpoints["saga"] = Endpoint(
                "saga",
                "grpc",
                stack.target("gateway"),
                stack.admin_key(),
                pids,
                {s: stack.ports[s].metrics_port for s in SERVICES},
            )
        if "relay" in names:
            address, pids = await stack_of.enter_async_context(relay_chain(base_url))
            endpoints["relay"] = Endpoint("relay", "grpc", address, "relay", pids)
        if "direct" in names:
            endpoints["direct"] = Endpoint("direct", "http", base_url + "/chat/completions", "", {})
        yield Chain(endpoints, upstream_pid, ready)


@dataclass
class Level:
    """One target at one N."""

    target: str
    streams: int
    errors: int
    error_sample: str
    lost: int
    reordered: int
    peak_open: int
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    messages_per_stream: float
    seconds: float
    cpu_pct: dict[str, float]  # each process of the target, % of one core over the level
    upstream_cpu_pct: float
    client_cpu_pct: list[float]
    held: bool = False


def summarise(
    target: str, results: list[ClientResult], seconds: float, cpu: dict[str, float], gap_ms: float
) -> Level:
    """One level's figures from its clients' streams."""
    streams = [s for r in results for s in r.streams]
    failed = [s.error for s in streams if s.error]
    gaps = [g for s in streams for g in s.gaps]
    ttfts = [s.ttft for s in streams if not s.error]
    upstream = cpu.pop("upstream")
    level = Level(
        target=target,
        streams=len(streams),
        errors=len(failed),
        error_sample=failed[0] if failed else "",
        lost=sum(s.lost for s in streams),
        reordered=sum(s.reordered for s in streams),
        peak_open=peak_open(streams),
        gap_p50_ms=percentile(gaps, 0.5) * 1000,
        gap_p99_ms=percentile(gaps, 0.99) * 1000,
        gap_max_ms=max(gaps, default=0.0) * 1000,
        ttft_p50_ms=percentile(ttfts, 0.5) * 1000,
        ttft_p99_ms=percentile(ttfts, 0.99) * 1000,
        messages_per_stream=sum(s.messages for s in streams) / (len(streams) or 1),
        seconds=seconds,
        cpu_pct={k: 100 * v / seconds for k, v in cpu.items()},
        upstream_cpu_pct=100 * upstream / seconds,
        client_cpu_pct=[100 * r.cpu_s / r.wall_s for r in results],
    )
    level.held = not failed and level.gap_p99_ms <= gap_ms
    return level


async def run_level(
    pool: Clients, chain: Chain, e: Endpoint, n: int, args: argparse.Namespace
) -> Level:
    """N concurrent streams at one target, with every relevant process's CPU around them."""
    pids = {**e.pids, "upstream": chain.upstream_pid}
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    start = time.monotonic()
    timeout = args.tokens * args.interval_ms / 1000 * 3 + 60
    results = await pool.run(e.kind, e.address, e.api_key, n, args.tokens, args.ramp_s, timeout)
    seconds = time.monotonic() - start - LEAD_S  # the processes idle before the first stream
    cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    return summarise(e.name, results, seconds, cpu, args.gap_ms)


def level_line(level: Level) -> str:
    """One row of the table."""
    cpu = " ".join(f"{k[:3]} {v:.0f}" for k, v in level.cpu_pct.items())
    client = max(level.client_cpu_pct, default=0.0)
    return (
        f"{level.target:<7} {level.streams:>5} {level.peak_open:>5} {level.gap_p50_ms:>7.1f} "
        f"{level.gap_p99_ms:>7.1f} {level.gap_max_ms:>8.1f} {level.ttft_p50_ms:>8.1f} "
        f"{level.ttft_p99_ms:>8.1f} {level.messages_per_stream:>6.1f} {level.errors:>4} "
        f"{level.lost:>5} {level.reordered:>5} {'yes' if level.held else 'NO':>4} "
        f"{level.upstream_cpu_pct:>5.0f} {client:>6.0f}  {cpu}"
    )


HEAD = (
    f"{'target':<7} {'N':>5} {'open':>5} {'gap p50':>7} {'p99':>7} {'max':>8} {'TTFT p50':>8} "
    f"{'p99':>8} {'msgs':>6} {'err':>4} {'lost':>5} {'reord':>5} {'held':>4} {'fake%':>5} "
    f"{'client%':>6}  CPU % of a core per process"
)


def warnings(level: Level) -> list[str]:
    """When the load generator may have been the bottleneck of a level."""
    out = []
    if max(level.client_cpu_pct, default=0.0) > BUSY * 100:
        out.append(
            f"{level.target} N={level.streams}: a client used "
            f"{max(level.client_cpu_pct):.0f}% of a core (add --clients)"
        )
    if level.upstream_cpu_pct > BUSY * 100:
        out.append(
            f"{level.target} N={level.streams}: the fake upstream used "
            f"{level.upstream_cpu_pct:.0f}% of a core"
        )
    return out


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Start the targets, step N up for each until it no longer holds; the results."""
    names = [t for t in args.targets.split(",") if t]
    steps = [int(n) for n in args.steps.split(",")]
    open_files = raise_open_files()
    levels: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="saga-sweep-") as tmp:
        async with started(names, args.tokens, args.interval_ms, Path(tmp)) as chain:
            with clients(args.clients) as pool:
                # Two streams each first (connections, caches, the first call's imports),
                # which also shows every target works before the sweep starts.
                warm = [
                    pool.run(e.kind, e.address, e.api_key, 2, args.tokens, 0, 120)
                    for e in chain.endpoints.values()
                ]
                for name, results in zip(chain.endpoints, await asyncio.gather(*warm), strict=True):
                    failed = [s.error for r in results for s in r.streams if s.error]
                    if failed:
                        raise RuntimeError(f"{name} failed its warm-up: {failed[0]}")
                holding = list(names)
                for step, n in enumerate(steps):
                    order = holding[step % len(holding) :] + holding[: step % len(holding)]
                    for name in order:
                        level = await run_level(pool, chain, chain.endpoints[name], n, args)
                        levels.append(level)
                        print(level_line(level), file=sys.stderr)
                        if not level.held:
                            holding.remove(name)
                        await asyncio.sleep(args.pause_s)  # the last streams' records settle
                    if not holding:
                        break
    largest = {
        name: max((lv.streams for lv in levels if lv.target == name and lv.held), default=0)
        for name in names
    }
    return {
        "config": {
            "targets": names,
            "steps": steps,
            "tokens": args.tokens,
            "interval_ms": args.interval_ms,
            "clients": args.clients,
            "ramp_s": args.ramp_s,
            "gap_ms": args.gap_ms,
            "open_files": list(open_files),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "levels": [asdict(lv) for lv in levels],
        "largest_held": largest,
        "warnings": [w for lv in levels for w in warnings(lv)],
    }


def report(result: dict[str, Any]) -> str:
    """The printed table and verdicts."""
    cfg = result["config"]
    levels = [Level(**lv) for lv in result["levels"]]
    lines = [
        f"Sustained streams: {cfg['tokens']} tokens each, one per {cfg['interval_ms']} ms, "
        f"N started over {cfg['ramp_s']} s by {cfg['clients']} client processes; gaps between "
        f"consecutive messages at the client, ms; held = no errors and gap p99 <= "
        f"{cfg['gap_ms']} ms",
        HEAD,
        "-" * len(HEAD),
        *(level_line(lv) for lv in levels),
        "",
        "Largest N held: " + ", ".join(f"{name} {n}" for name, n in result["largest_held"].items()),
    ]
    lines += [f"WARNING: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = load_parser(__doc__, tokens=500)
    parser.add_argument("--targets", default="saga,relay", help=f"comma-separated, of {TARGETS}")
    parser.add_argument("--steps", default="50,100,200,400,600,800,1000", help="the Ns to try")
    parser.add_argument("--gap-ms", type=float, default=100.0, help="the p99 gap that holds")
    parser.add_argument("--pause-s", type=float, default=2.0, help="pause between levels")
    args = parser.parse_args(argv)
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    return args


if __name__ == "__main__":
    run_and_report(parse_args(), sweep, report)
