"""What Saga's shared bootstrap costs per relayed streaming message and per call.

One process, one event loop, several copies of the same two-server chain on loopback:

    load client ──RunPattern──▶ "runtime" relay ──Reason──▶ "router" (N deltas per call)

The router streams N small `ReasonResponse(delta=…)` per call; the runtime relays each one
as a `RunPatternResponse(token=…)`. The servicer code is identical in every variant; only
the plumbing differs:

* bare                   plain `grpc.aio.server()` / `grpc.aio.insecure_channel`, nothing else
* bare-mtls              the same bare servers and channels, with mTLS credentials only
* saga                   `start_service` (the Guard with its server span, server options,
                         health, reflection) with mTLS; the runtime relays through
                         `host.peers.channel("router")`; the load client dials the runtime
                         with `Peers(config, "gateway").channel("runtime")` — the gateway's
                         real channel (gateway certificate, trace-context interceptor,
                         service config) — so a saga chain is two saga hops, a bare chain
                         two bare hops
* saga-plaintext         the same with `SAGA_TLS__MODE=plaintext`; started with `public=True`
                         because in plaintext mode the guard identifies callers by a mesh
                         sidecar's x-forwarded-client-cert header, and there is no mesh here
                         (the guard still wraps every handler; only the per-call matrix
                         lookup is skipped)

The machine is shared and noisy, so every figure is meant to be compared with the others of
the SAME run: read the ratios, not the absolute times. Everything (client and servers) runs
in one process, so the process CPU time (`time.process_time()`, all threads) divided by the
relayed messages is the honest cost metric; wall-clock throughput and latency are printed too
but depend on what else the machine is doing.

    .venv/bin/python -m bench.hop_overhead [--messages 50] [--streams 400]
        [--concurrency 1,16,64] [--rounds 4] [--call-streams 400] [--call-concurrency 16]
        [--variants bare,saga,…] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from saga.execution.v1 import events_pb2, reason_events_pb2
from saga.router.v1 import router_pb2, router_pb2_grpc
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common import channels as saga_channels
from services.common.config import Config, load_config
from services.common.identity import SERVICES
from services.common.pki import ensure_dev_pki, service_cert_paths
from services.common.server import Registration, RunningService, ServiceHost, start_service
from services.common.telemetry import setup_tracing

VARIANTS = ("bare", "bare-mtls", "saga", "saga-plaintext")
BASELINE = "bare"
STREAM_TIMEOUT = 60.0
# A typical LLM token is a few characters; cycle through some so messages are not identical.
WORDS = tuple(f" w{i % 97}rd" for i in range(97))


# --------------------------------------------------------------------------- servicers


class BenchRouter(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    """Streams `max_tokens` deltas per Reason call, as fast as the transport takes them."""

    async def Reason(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for i in range(request.max_tokens):
            yield router_pb2.ReasonResponse(
                delta=reason_events_pb2.Delta(text=WORDS[i % len(WORDS)])
            )


class BenchRuntime(runtime_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    """Calls the router's Reason and relays every delta as a RunPatternResponse token."""

    def __init__(self, router_channel: grpc.aio.Channel) -> None:
        self.router = router_pb2_grpc.RouterServiceStub(router_channel)

    async def RunPattern(self, request: Any, context: Any) -> AsyncIterator[Any]:
        tokens = int(request.inputs.fields["tokens"].number_value)
        call = self.router.Reason(
            router_pb2.ReasonRequest(max_tokens=tokens), timeout=STREAM_TIMEOUT
        )
        async for event in call:
            yield runtime_pb2.RunPatternResponse(
                token=events_pb2.Token(step_id="s1", text=event.delta.text)
            )


def run_request(tokens: int) -> Any:
    """The RunPattern request that asks for `tokens` relayed messages."""
    inputs = struct_pb2.Struct()
    inputs.update({"tokens": tokens})
    return runtime_pb2.RunPatternRequest(pattern_id="bench", inputs=inputs, execution_id="x")


# --------------------------------------------------------------------------- chains


@dataclass
class Chain:
    """One started client → runtime → router chain."""

    name: str
    client: grpc.aio.Channel
    stop: Callable[[], Awaitable[None]]

    @property
    def stub(self) -> Any:
        """A RuntimeService stub on the load client's channel."""
        return runtime_pb2_grpc.RuntimeServiceStub(self.client)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports the OS reports free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


async def start_bare(name: str, pki: Path, mtls: bool) -> Chain:
    """The bare chain: plain grpc.aio servers and channels, optionally with mTLS only."""
    router_port, runtime_port = free_ports(2)

    def server_creds(service: str) -> grpc.ServerCredentials:
        chain, key, ca = service_cert_paths(pki, service).read()
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=ca, require_client_auth=True
        )

    def channel(caller: str, peer: str, port: int) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        if not mtls:
            return grpc.aio.insecure_channel(target)
        chain, key, ca = service_cert_paths(pki, caller).read()
        creds = grpc.ssl_channel_credentials(ca, key, chain)
        return grpc.aio.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", peer)]
        )

    async def serve(service: str, port: int, add: Any, servicer: object) -> grpc.aio.Server:
        server = grpc.aio.server()
        add(servicer, server)
        address = f"127.0.0.1:{port}"
        if mtls:
            server.add_secure_port(address, server_creds(service))
        else:
            server.add_insecure_port(address)
        await server.start()
        return server

    router = await serve(
        "router", router_port, router_pb2_grpc.add_RouterServiceServicer_to_server, BenchRouter()
    )
    relay_channel = channel("runtime", "router", router_port)
    runtime = await serve(
        "runtime",
        runtime_port,
        runtime_pb2_grpc.add_RuntimeServiceServicer_to_server,
        BenchRuntime(relay_channel),
    )
    client = channel("gateway", "runtime", runtime_port)

    async def stop() -> None:
        await client.close(None)
        await runtime.stop(0)
        await relay_channel.close(None)
        await router.stop(0)

    return Chain(name, client, stop)


def saga_config(data_dir: Path, plaintext: bool) -> Config:
    """A Config on fresh loopback ports (all six services, so none clash with defaults)."""
    env: dict[str, str] = {
        "SAGA_DATA_DIR": str(data_dir),
        "SAGA_SERVER__GRACE_SECONDS": "0",
        "SAGA_TELEMETRY__LOG_LEVEL": "warning",
    }
    if plaintext:
        env["SAGA_TLS__MODE"] = "plaintext"
    ports = free_ports(2 * len(SERVICES))
    for i, service in enumerate(SERVICES):
        prefix = f"SAGA_SERVICES__{service.upper()}__"
        env[prefix + "PORT"] = str(ports[2 * i])
        env[prefix + "PROBE_PORT"] = str(ports[2 * i + 1])
        env[prefix + "METRICS_PORT"] = "0"
        env[prefix + "HTTP_PORT"] = "0"
    return load_config(env=env)


async def start_saga(name: str, data_dir: Path, plaintext: bool) -> Chain:
    """The saga chain: both servers from `start_service`, channels from `Peers`."""
    config = saga_config(data_dir, plaintext)

    async def build_router(host: ServiceHost) -> list[Registration]:
        return [Registration.of(BenchRouter())]

    async def build_runtime(host: ServiceHost) -> list[Registration]:
        return [Registration.of(BenchRuntime(host.peers.channel("router")))]

    # Plaintext mode identifies callers by a mesh sidecar's header, and there is no mesh
    # here: serve "public" (guard without the matrix check) in that mode.
    public = plaintext
    router = await start_service("router", config, build_router, public=public)
    runtime = await start_service("runtime", config, build_runtime, public=public)
    gateway_peers = saga_channels.Peers(config, "gateway")
    client = gateway_peers.channel("runtime")

    async def stop() -> None:
        await gateway_peers.close()
        running: RunningService
        for running in (runtime, router):
            await running.stop(0)

    return Chain(name, client, stop)


async def start_chain(name: str, root: Path) -> Chain:
    """Start the chain of variant `name`; `root` is the data dir (its `pki/` holds the CA)."""
    if name == "bare":
        return await start_bare(name, root / "pki", mtls=False)
    if name == "bare-mtls":
        return await start_bare(name, root / "pki", mtls=True)
    if name == "saga":
        return await start_saga(name, root, plaintext=False)
    if name == "saga-plaintext":
        return await start_saga(name, root, plaintext=True)
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")


# --------------------------------------------------------------------------- load


@dataclass
class Sample:
    """The raw measurements of one batch of streams."""

    wall_s: float
    cpu_s: float
    ok: int
    ttfm_s: list[float]
    errors: list[str]


@dataclass
class Result:
    """One variant at one concurrency level (all its rounds together)."""

    variant: str
    concurrency: int
    streams: int
    messages_per_stream: int
    wall_s: float
    cpu_s: float
    streams_per_s: float
    messages_per_s: float
    cpu_us_per_message: float
    cpu_us_per_stream: float
    ttfm_p50_ms: float
    ttfm_p99_ms: float
    cpu_us_per_message_by_round: list[float]
    errors: int = 0
    error_sample: str = ""


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run_load(chain: Chain, streams: int, concurrency: int, messages: int) -> Sample:
    """Run `streams` RunPattern calls, `concurrency` at a time, and measure them."""
    stub = chain.stub
    request = run_request(messages)
    ttfm: list[float] = []
    errors: list[str] = []
    remaining = streams

    async def one() -> None:
        start = time.perf_counter()
        got = 0
        try:
            async for _ in stub.RunPattern(request, timeout=STREAM_TIMEOUT):
                if got == 0:
                    ttfm.append(time.perf_counter() - start)
                got += 1
        except grpc.aio.AioRpcError as error:
            errors.append(f"{error.code().name}: {error.details()}")
            return
        if got != messages:
            errors.append(f"got {got} messages, expected {messages}")

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Sample(wall, cpu, streams - len(errors), ttfm, errors)


def combine(variant: str, concurrency: int, messages: int, samples: list[Sample]) -> Result:
    """One Result from the rounds of one variant at one level (times and counts summed)."""
    wall = sum(s.wall_s for s in samples)
    cpu = sum(s.cpu_s for s in samples)
    ok = sum(s.ok for s in samples)
    errors = [e for s in samples for e in s.errors]
    ttfm = [t for s in samples for t in s.ttfm_s]
    relayed = ok * messages
    nan = float("nan")
    return Result(
        variant=variant,
        concurrency=concurrency,
        streams=ok + len(errors),
        messages_per_stream=messages,
        wall_s=wall,
        cpu_s=cpu,
        streams_per_s=ok / wall,
        messages_per_s=relayed / wall,
        cpu_us_per_message=cpu / relayed * 1e6 if relayed else nan,
        cpu_us_per_stream=cpu / ok * 1e6 if ok else nan,
        ttfm_p50_ms=percentile(ttfm, 0.50) * 1e3,
        ttfm_p99_ms=percentile(ttfm, 0.99) * 1e3,
        cpu_us_per_message_by_round=[
            round(s.cpu_s / (s.ok * messages) * 1e6, 1) if s.ok else nan for s in samples
        ],
        errors=len(errors),
        error_sample=errors[0] if errors else "",
    )


async def measure(
    chains: list[Chain], streams: int, rounds: int, concurrency: int, messages: int, shift: int
) -> list[Result]:
    """Every chain at one level, in `rounds` interleaved batches (order rotated each round).

    Interleaving spreads the machine's drift (other tenants, CPU frequency) over all the
    variants instead of charging it to whichever happened to run at a bad moment.
    """
    per_round = [streams // rounds + (1 if i < streams % rounds else 0) for i in range(rounds)]
    samples: dict[str, list[Sample]] = {c.name: [] for c in chains}
    for i, batch in enumerate(per_round):
        k = (shift + i) % len(chains)
        for chain in chains[k:] + chains[:k]:
            samples[chain.name].append(await run_load(chain, batch, concurrency, messages))
    results = [combine(c.name, concurrency, messages, samples[c.name]) for c in chains]
    for r in results:
        print(
            f"  {r.variant:<24} c={concurrency:<3} m={messages:<3} {r.wall_s:6.2f} s wall"
            f"  {r.cpu_us_per_message:7.1f} µs CPU/msg  rounds {r.cpu_us_per_message_by_round}",
            file=sys.stderr,
            flush=True,
        )
    return results


# --------------------------------------------------------------------------- report


STREAM_METRICS = (
    ("streams/s", "streams_per_s", "{:9.1f}"),
    ("msgs/s", "messages_per_s", "{:9.0f}"),
    ("CPU µs/msg", "cpu_us_per_message", "{:9.1f}"),
    ("TTFM p50 ms", "ttfm_p50_ms", "{:9.2f}"),
    ("TTFM p99 ms", "ttfm_p99_ms", "{:9.2f}"),
)
CALL_METRICS = (
    ("calls/s", "streams_per_s", "{:9.1f}"),
    ("CPU µs/call", "cpu_us_per_stream", "{:9.0f}"),
    ("latency p50 ms", "ttfm_p50_ms", "{:9.2f}"),
    ("latency p99 ms", "ttfm_p99_ms", "{:9.2f}"),
)


def table(title: str, results: list[Result], variants: list[str], metrics: tuple[Any, ...]) -> str:
    """A fixed-width table of `results`, each cell with its ratio to the baseline's."""
    lines = [title]
    head = f"{'variant':<24}{'conc':>5}" + "".join(f"{label:>17}" for label, _, _ in metrics)
    lines += [head, "-" * len(head)]
    by_key = {(r.variant, r.concurrency): r for r in results}
    for conc in sorted({r.concurrency for r in results}):
        base = by_key.get((BASELINE, conc))
        for variant in variants:
            r = by_key.get((variant, conc))
            if r is None:
                continue
            cells = []
            for _, attr, fmt in metrics:
                value = getattr(r, attr)
                cell = fmt.format(value).strip()
                if base is not None and variant != BASELINE and getattr(base, attr):
                    cell += f" ({value / getattr(base, attr):.2f}x)"
                cells.append(f"{cell:>17}")
            err = f"  ERRORS {r.errors}: {r.error_sample}" if r.errors else ""
            lines.append(f"{variant:<24}{conc:>5}" + "".join(cells) + err)
        lines.append("")
    return "\n".join(lines)


def hop_summary(
    stream_results: list[Result], call_results: list[Result], variants: list[str]
) -> dict[str, Any]:
    """CPU added per hop relative to bare, per relayed message and per call.

    The chain has two hops, so each difference to bare is halved. "marginal" is the cost of
    one more message in a stream, with the per-call cost taken out: (CPU per stream of N
    messages - CPU per one-message call) / (N - 1), at the per-call pass's concurrency.
    """
    calls = {r.variant: r for r in call_results}
    streams = {(r.variant, r.concurrency): r for r in stream_results}
    levels = sorted({r.concurrency for r in stream_results})

    def marginal(variant: str) -> float | None:
        call = calls.get(variant)
        if call is None:
            return None
        r = streams.get((variant, call.concurrency))
        if r is None or r.messages_per_stream < 2:
            return None
        return (r.cpu_us_per_stream - call.cpu_us_per_stream) / (r.messages_per_stream - 1)

    base_marginal = marginal(BASELINE)
    summary: dict[str, Any] = {}
    for variant in variants:
        per_level = {
            c: streams[(variant, c)].cpu_us_per_message
            for c in levels
            if (variant, c) in streams and (BASELINE, c) in streams
        }
        added = [(v - streams[(BASELINE, c)].cpu_us_per_message) / 2 for c, v in per_level.items()]
        entry: dict[str, Any] = {
            "cpu_us_per_message_chain_median": statistics.median(per_level.values())
            if per_level
            else None,
            "added_cpu_us_per_message_per_hop_median": statistics.median(added) if added else None,
            "marginal_cpu_us_per_message_chain": marginal(variant),
        }
        m = marginal(variant)
        entry["added_marginal_cpu_us_per_message_per_hop"] = (
            (m - base_marginal) / 2 if m is not None and base_marginal is not None else None
        )
        call = calls.get(variant)
        if call is not None:
            entry["cpu_us_per_call_chain"] = call.cpu_us_per_stream
            if BASELINE in calls:
                entry["added_cpu_us_per_call_per_hop"] = (
                    call.cpu_us_per_stream - calls[BASELINE].cpu_us_per_stream
                ) / 2
        summary[variant] = entry
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The per-hop summary as text."""
    lines = [
        "CPU per hop, added to bare (the chain is 2 hops: client→runtime, runtime→router):",
        f"{'variant':<24}{'µs/msg chain':>13}{'+µs/msg/hop':>12}"
        f"{'marginal chain':>15}{'+marg/hop':>10}{'µs/call chain':>14}{'+µs/call/hop':>13}",
    ]

    def fmt(value: Any, spec: str) -> str:
        width = spec.split(".")[0]
        return f"{'-':>{width}}" if value is None else format(value, spec)

    for variant, e in summary.items():
        lines.append(
            f"{variant:<24}"
            f"{fmt(e.get('cpu_us_per_message_chain_median'), '13.1f')}"
            f"{fmt(e.get('added_cpu_us_per_message_per_hop_median'), '12.1f')}"
            f"{fmt(e.get('marginal_cpu_us_per_message_chain'), '15.1f')}"
            f"{fmt(e.get('added_marginal_cpu_us_per_message_per_hop'), '10.1f')}"
            f"{fmt(e.get('cpu_us_per_call_chain'), '14.0f')}"
            f"{fmt(e.get('added_cpu_us_per_call_per_hop'), '13.0f')}"
        )
    lines.append(
        "µs/msg chain: median over levels of CPU per relayed message (per-call cost included);\n"
        "marginal: one more message in a stream, per-call cost excluded (at the per-call\n"
        "pass's concurrency); µs/call: a one-message call through the whole chain."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


@dataclass
class Run:
    """Everything one invocation measured."""

    args: dict[str, Any]
    environment: dict[str, Any]
    streaming: list[Result] = field(default_factory=list)
    per_call: list[Result] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


async def bench(args: argparse.Namespace) -> Run:
    """Start every variant, then measure them level by level, interleaved."""
    variants: list[str] = args.variants
    run = Run(
        args={k: v for k, v in vars(args).items() if k != "json"},
        environment={
            "python": sys.version.split()[0],
            "grpcio": grpc.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    )
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        root = Path(tmp)
        ensure_dev_pki(root / "pki", list(SERVICES))
        setup_tracing("bench", "")  # a tracer provider, no exporter
        chains = [await start_chain(name, root) for name in variants]
        try:
            for chain in chains:  # warm-up: connections, handshakes, caches, code paths
                await run_load(chain, streams=32, concurrency=8, messages=args.messages)
            for step, conc in enumerate(args.concurrency):
                run.streaming += await measure(
                    chains, args.streams, args.rounds, conc, args.messages, shift=step
                )
            if args.call_streams:
                run.per_call = await measure(
                    chains, args.call_streams, args.rounds, args.call_concurrency, 1, shift=0
                )
        finally:
            for chain in chains:
                await chain.stop()
    run.summary = hop_summary(run.streaming, run.per_call, variants)
    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.hop_overhead", description=__doc__)
    parser.add_argument("--messages", type=int, default=50, help="messages per stream")
    parser.add_argument(
        "--streams", type=int, default=400, help="streams per variant and concurrency level"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="split each level into this many batches, interleaved across the variants",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 16, 64],
        help="comma-separated concurrency levels",
    )
    parser.add_argument(
        "--call-streams",
        type=int,
        default=400,
        help="one-message calls measured for the per-call cost (0 = skip)",
    )
    parser.add_argument(
        "--call-concurrency", type=int, default=16, help="concurrency of the per-call pass"
    )
    parser.add_argument(
        "--variants",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (bare is the baseline)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}")
    if BASELINE not in args.variants:
        args.variants.insert(0, BASELINE)
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print (and optionally write) the results."""
    args = parse_args(argv)
    print(
        f"hop_overhead: {args.streams} streams x {args.messages} messages per level, "
        f"concurrency {args.concurrency}, {args.rounds} interleaved rounds, "
        f"variants {', '.join(args.variants)}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    run = asyncio.run(bench(args))
    print()
    print(
        "Everything runs in ONE process on ONE event loop (client + both servers of every\n"
        "chain), so CPU per relayed message (process_time, all threads) is the honest cost\n"
        "metric; wall-clock figures share the machine with everything else. Compare the\n"
        "ratios (x bare, same run), never absolute times across runs. TTFM = time from\n"
        "starting a call to its first message at the client. Each cell sums "
        f"{args.rounds} rounds\n"
        "interleaved across the variants (per-round CPU/msg in the JSON and on stderr)."
    )
    print()
    print(
        table(
            f"Streaming: {args.streams} streams x {args.messages} messages per level",
            run.streaming,
            args.variants,
            STREAM_METRICS,
        )
    )
    if run.per_call:
        print(
            table(
                f"Per call: {args.call_streams} one-message streams at concurrency "
                f"{args.call_concurrency}",
                run.per_call,
                args.variants,
                CALL_METRICS,
            )
        )
    print(summary_text(run.summary))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        payload = {
            "args": run.args,
            "environment": run.environment,
            "streaming": [asdict(r) for r in run.streaming],
            "per_call": [asdict(r) for r in run.per_call],
            "summary": run.summary,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
