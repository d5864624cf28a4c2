"""The project's benchmark: the whole Saga chain against calling the upstream directly.

Real processes on loopback:

* a fake OpenAI-compatible upstream (`bench.fake_upstream`, aiohttp, SSE) in its own process;
* the six Saga services started as `tests.harness.Stack` starts them, configured with one
  `openai` provider (credential none, base_url at the fake) and a benchmark profile that lifts
  every limit (no per-provider concurrency, rpm or tpm limits, no budget, the gateway's rate
  limits lifted by `gateway.limits.profile = "benchmark"`, log level warning);
* the floor of the architecture (`bench.relay`): a bare three-hop grpc.aio relay chain in
  three processes (gateway-, runtime- and router-like; insecure channels, no interceptors),
  whose router calls the fake with aiohttp and relays the SSE deltas, on Saga's protos;
* optionally (`--litellm`) the LiteLLM proxy with one worker, from a throwaway venv
  (`--litellm-bin`, default /tmp/litellm-venv/bin/litellm), pointed at the same fake.

The load client (this process, one event loop) sends the same load each way:

* direct   `POST /v1/chat/completions` to the fake with aiohttp;
* saga     `ExecutionService/Execute` of the `chat` pattern at the gateway (client → gateway →
           runtime → router → `openai` engine → upstream), authenticated with the admin key;
* relay    the same Execute at the relay chain's gateway (the same client code and checks);
* litellm  `POST /v1/chat/completions` to the proxy with aiohttp.

At each concurrency level every target runs `--streams` streams of `--tokens` tokens, split
into `--rounds` batches interleaved across the targets (order rotated each round), so drift on
a shared machine hits every target alike. Measured per target and level: streams/s, time to
first token and total latency as the client sees them (p50/p99) and, for saga and litellm, what
they add to direct (the difference of the percentiles); saga's streams/s and CPU per stream as
ratios to the relay chain's, and its TTFT over the relay's. CPU seconds per stream of each Saga
(and relay) process (utime + stime from /proc/<pid>/stat, read around that target's batches
only) and of the LiteLLM process tree; memory as the sum of VmRSS of the six processes. Then
idle latency of a non-streamed call: `--calls` calls one at a time (direct and litellm:
`"stream": false`; saga: an Execute waited on until its `completed` event — the chat pattern
always asks the router for a streamed answer, so the chain's upstream call is streamed). Last,
an idle breakdown: the same stream at concurrency 1 entering the chain at the router (Reason,
as the runtime calls it: its certificate and a request context minted with the dev key), at the
runtime (RunPattern, as the gateway calls it) and at the gateway, so the differences say what
each hop adds. Every stream's text is checked against the fake's answer; a failed or short
stream counts as an error of its row.

    .venv/bin/python -m bench.chain [--concurrency 1,16,64] [--streams 200] [--tokens 50]
        [--interval-ms 0] [--rounds 2] [--calls 50] [--json out.json] [--litellm]

Nothing is asserted about timing: it prints tables and writes JSON. Compare ratios measured
in one run, never absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import grpc
from google.protobuf import struct_pb2

from bench.fake_upstream import answer_text
from bench.procs import ready_child
from bench.relay import ROLES as RELAY_ROLES
from bench.relay import relay_chain
from saga.execution.v1 import common_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.context import METADATA_KEY, ContextSigner, load_private_key
from services.common.identity import SERVICES
from tests.harness import Stack, free_ports

PROMPT = "tell me about the saga of the river"
TICKS = os.sysconf("SC_CLK_TCK")
LITELLM_BIN = str(Path(tempfile.gettempdir()) / "litellm-venv" / "bin" / "litellm")


def saga_config(base_url: str) -> str:
    """The benchmark profile: one `openai` provider at the fake, every limit lifted."""
    return f"""
[telemetry]
log_level = "warning"

[budgets]
per_user_micro_usd = 0

[gateway]
execute_deadline_seconds = 120

[gateway.limits]
profile = "benchmark"

[[providers]]
name = "upstream"
kind = "openai"
model = "bench-model"
base_url = "{base_url}"
credential = "none"
input_micro_usd_per_mtok = 150_000
output_micro_usd_per_mtok = 600_000
max_concurrency = 0
rpm = 0
tpm = 0
first_token_timeout_ms = 60000
total_timeout_ms = 120000
"""


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    """VmRSS of process `pid`, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a proxy may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (ones that vanished are left out)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def tree_rss(pid: int) -> float:
    """VmRSS of `pid` and its descendants, MiB."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += rss_mib(p)
    return total


# --------------------------------------------------------------------------- targets


@dataclass
class Outcome:
    """One stream or call as the client saw it."""

    ttft: float
    total: float
    error: str = ""
    messages: int = 0  # text messages the client received (coalescing merges some)


Call = Callable[[bool], Awaitable[Outcome]]
"""One stream (True) or one non-streamed call (False) against a target."""


@dataclass
class Target:
    """Something the load is sent to, and the processes whose CPU it burns."""

    name: str
    call: Call
    pids: dict[str, int] = field(default_factory=dict)
    tree: bool = False  # count each pid's descendants too

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process."""
        read = tree_cpu if self.tree else cpu_seconds
        return {name: read(pid) for name, pid in self.pids.items()}

    def rss(self) -> dict[str, float]:
        """VmRSS of each process, MiB."""
        read = tree_rss if self.tree else rss_mib
        return {name: read(pid) for name, pid in self.pids.items()}


def http_caller(session: aiohttp.ClientSession, url: str, expected: str, key: str = "") -> Call:
    """Chat completions at `url` (with bearer `key` if any), the text checked against
    `expected`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def call(stream: bool) -> Outcome:
        body = {
            "model": "bench-model",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": stream,
        }
        start = time.perf_counter()
        ttft = 0.0
        parts: list[str] = []
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                return Outcome(0, 0, f"HTTP {response.status}: {(await response.text())[:200]}")
            if not stream:
                answer = await response.json()
                total = time.perf_counter() - start
                text = answer["choices"][0]["message"]["content"]
                return Outcome(total, total, "" if text == expected else f"text {text[:60]!r}")
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                choices = chunk.get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    if not parts:
                        ttft = time.perf_counter() - start
                    parts.append(text)
        total = time.perf_counter() - start
        text = "".join(parts)
        error = "" if text == expected else f"text {text[:60]!r}…"
        return Outcome(ttft, total, error, len(parts))

    return call


def saga_caller(channel: grpc.aio.Channel, api_key: str, expected: str) -> Call:
    """Execute of the `chat` pattern at the gateway; tokens and outputs checked."""
    stub = execution_pb2_grpc.ExecutionServiceStub(channel)
    inputs = struct_pb2.Struct()
    inputs.update({"prompt": PROMPT})
    request = execution_pb2.ExecuteRequest(pattern_id="chat", inputs=inputs)
    metadata = (("authorization", f"Bearer {api_key}"),)

    async def call(stream: bool) -> Outcome:
        start = time.perf_counter()
        ttft = 0.0
        parts: list[str] = []
        output = None
        try:
            async for event in stub.Execute(request, metadata=metadata, timeout=120):
                kind = event.WhichOneof("event")
                if kind == "token":
                    if not parts:
                        ttft = time.perf_counter() - start
                    parts.append(event.token.text)
                elif kind == "completed":
                    output = event.completed.outputs["text"]
        except grpc.aio.AioRpcError as e:
            return Outcome(0, 0, f"{e.code().name}: {e.details()}")
        total = time.perf_counter() - start
        text = "".join(parts)
        if text != expected or output != expected:
            return Outcome(ttft, total, f"tokens {text[:60]!r}, output {str(output)[:60]!r}")
        # Non-streamed: the answer is there when the run completes.
        return Outcome(ttft if stream else total, total, "", len(parts))

    return call


def mint_context(stack: Stack) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """`saga-context` metadata as the gateway mints it, for an execution id."""
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)

    def metadata(execution_id: str) -> tuple[tuple[str, str], ...]:
        token = signer.mint(
            execution_id=execution_id,
            user_id="usr_bench",
            tenant="default",
            scopes=["execute"],
            credential_id="key_bench",
            ttl_seconds=120,
        )
        return ((METADATA_KEY, token),)

    return metadata


def runtime_caller(stack: Stack, channel: grpc.aio.Channel, expected: str) -> Call:
    """RunPattern of `chat` at the runtime, as the gateway calls it (its certificate, a minted
    request context): the chain without the gateway hop."""
    stub = runtime_pb2_grpc.RuntimeServiceStub(channel)
    context = mint_context(stack)
    inputs = struct_pb2.Struct()
    inputs.update({"prompt": PROMPT})

    async def call(stream: bool) -> Outcome:
        execution_id = "exe_" + secrets.token_hex(16)
        request = runtime_pb2.RunPatternRequest(
            pattern_id="chat", inputs=inputs, execution_id=execution_id
        )
        metadata = context(execution_id)
        start = time.perf_counter()
        ttft = 0.0
        parts: list[str] = []
        async for event in stub.RunPattern(request, metadata=metadata, timeout=120):
            if event.WhichOneof("event") == "token":
                if not parts:
                    ttft = time.perf_counter() - start
                parts.append(event.token.text)
        total = time.perf_counter() - start
        text = "".join(parts)
        return Outcome(ttft, total, "" if text == expected else f"tokens {text[:60]!r}", len(parts))

    return call


def router_caller(stack: Stack, channel: grpc.aio.Channel, expected: str) -> Call:
    """Reason at the router, as the runtime calls it (its certificate, a minted request
    context, the same request the `llm` agent builds): the router hop alone."""
    stub = router_pb2_grpc.RouterServiceStub(channel)
    context = mint_context(stack)

    async def call(stream: bool) -> Outcome:
        execution_id = "exe_" + secrets.token_hex(16)
        request = router_pb2.ReasonRequest(
            messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=PROMPT)],
            response_mode=common_pb2.RESPONSE_MODE_STREAMING,
            allow_fallback=True,
            accounting=router_pb2.AccountingContext(
                user_id="usr_bench",
                execution_id=execution_id,
                step_id="answer",
                pattern_id="chat",
            ),
        )
        metadata = context(execution_id)
        start = time.perf_counter()
        ttft = 0.0
        parts: list[str] = []
        async for event in stub.Reason(request, metadata=metadata, timeout=120):
            if event.WhichOneof("event") == "delta":
                if not parts:
                    ttft = time.perf_counter() - start
                parts.append(event.delta.text)
        total = time.perf_counter() - start
        text = "".join(parts)
        return Outcome(ttft, total, "" if text == expected else f"deltas {text[:60]!r}", len(parts))

    return call


# --------------------------------------------------------------------------- load


@dataclass
class Batch:
    """The outcomes of one batch of one target, with its wall time and CPU."""

    outcomes: list[Outcome]
    seconds: float
    cpu: dict[str, float]


async def run_batch(target: Target, count: int, concurrency: int, stream: bool) -> Batch:
    """`count` calls, `concurrency` at a time; wall time and each process's CPU around it."""
    todo = iter(range(count))
    outcomes: list[Outcome] = []

    async def worker() -> None:
        for _ in todo:
            try:
                outcomes.append(await target.call(stream))
            except Exception as e:  # a broken stream is a result, not a crash
                outcomes.append(Outcome(0, 0, f"{type(e).__name__}: {e}"))

    before = target.cpu()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    seconds = time.perf_counter() - start
    after = target.cpu()
    return Batch(outcomes, seconds, {k: after[k] - before[k] for k in before})


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `values`; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Row:
    """One target at one concurrency level, over its batches."""

    target: str
    mode: str
    concurrency: int
    calls: int
    errors: int
    error_sample: str
    per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    cpu_ms_per_call: dict[str, float]
    messages_per_call: float = 0.0
    added_ttft_p50_ms: float | None = None
    added_ttft_p99_ms: float | None = None
    added_total_p50_ms: float | None = None
    added_total_p99_ms: float | None = None
    per_s_ratio_to_direct: float | None = None
    # Saga's rows against the bare relay chain at the same level (the architecture's floor).
    per_s_ratio_to_relay: float | None = None
    cpu_ratio_to_relay: float | None = None
    ttft_over_relay_p50_ms: float | None = None
    ttft_over_relay_p99_ms: float | None = None


def combine(target: str, mode: str, concurrency: int, batches: list[Batch]) -> Row:
    """Sum `batches` into one row."""
    outcomes = [o for b in batches for o in b.outcomes]
    good = [o for o in outcomes if not o.error]
    errors = [o.error for o in outcomes if o.error]
    seconds = sum(b.seconds for b in batches)
    cpu: dict[str, float] = {}
    for b in batches:
        for name, value in b.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + value
    n = len(outcomes) or 1
    return Row(
        target=target,
        mode=mode,
        concurrency=concurrency,
        calls=len(outcomes),
        errors=len(errors),
        error_sample=errors[0] if errors else "",
        per_s=len(good) / seconds if seconds else 0.0,
        ttft_p50_ms=percentile([o.ttft for o in good], 0.5) * 1000,
        ttft_p99_ms=percentile([o.ttft for o in good], 0.99) * 1000,
        total_p50_ms=percentile([o.total for o in good], 0.5) * 1000,
        total_p99_ms=percentile([o.total for o in good], 0.99) * 1000,
        cpu_ms_per_call={k: v * 1000 / n for k, v in cpu.items()},
        messages_per_call=sum(o.messages for o in good) / (len(good) or 1),
    )


def compare(rows: list[Row]) -> None:
    """Fill each non-direct row's additions and throughput ratio against direct, and each
    saga row's ratios to the relay chain."""
    direct = {(r.mode, r.concurrency): r for r in rows if r.target == "direct"}
    relay = {(r.mode, r.concurrency): r for r in rows if r.target == "relay"}
    for r in rows:
        floor = relay.get((r.mode, r.concurrency))
        if r.target == "saga" and floor is not None:
            r.per_s_ratio_to_relay = r.per_s / floor.per_s if floor.per_s else None
            floor_cpu = sum(floor.cpu_ms_per_call.values())
            r.cpu_ratio_to_relay = (
                sum(r.cpu_ms_per_call.values()) / floor_cpu if floor_cpu else None
            )
            r.ttft_over_relay_p50_ms = r.ttft_p50_ms - floor.ttft_p50_ms
            r.ttft_over_relay_p99_ms = r.ttft_p99_ms - floor.ttft_p99_ms
        d = direct.get((r.mode, r.concurrency))
        if r.target == "direct" or d is None:
            continue
        r.added_ttft_p50_ms = r.ttft_p50_ms - d.ttft_p50_ms
        r.added_ttft_p99_ms = r.ttft_p99_ms - d.ttft_p99_ms
        r.added_total_p50_ms = r.total_p50_ms - d.total_p50_ms
        r.added_total_p99_ms = r.total_p99_ms - d.total_p99_ms
        r.per_s_ratio_to_direct = r.per_s / d.per_s if d.per_s else None


async def interleaved(
    targets: list[Target], mode: str, count: int, concurrency: int, rounds: int
) -> list[Row]:
    """`count` calls per target at `concurrency` after a warm-up, in `rounds` batches
    interleaved across the targets (order rotated each round); one row per target."""
    stream = mode != "complete"
    for t in targets:  # connections, caches, the first call's imports
        await run_batch(t, min(2 * concurrency, 32), concurrency, stream)
    batches: dict[str, list[Batch]] = {t.name: [] for t in targets}
    per_round = max(1, count // rounds)
    for r in range(rounds):
        for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
            batch = await run_batch(t, per_round, concurrency, stream)
            batches[t.name].append(batch)
            print(
                f"  {mode:<8} c={concurrency:<3} round {r + 1}/{rounds} {t.name:<8} "
                f"{len(batch.outcomes) / batch.seconds:8.1f} /s",
                file=sys.stderr,
            )
    return [combine(t.name, mode, concurrency, batches[t.name]) for t in targets]


async def measure(
    targets: list[Target],
    hops: list[Target],
    levels: list[int],
    streams: int,
    rounds: int,
    calls: int,
) -> list[Row]:
    """Streaming at every level, idle non-streamed calls, then the idle hop breakdown."""
    rows: list[Row] = []
    for concurrency in levels:
        rows += await interleaved(targets, "stream", streams, concurrency, rounds)
    rows += await interleaved(targets, "complete", calls, 1, rounds)
    rows += await interleaved(hops, "hops", calls, 1, rounds)
    compare(rows)
    return rows


# --------------------------------------------------------------------------- processes


@contextlib.asynccontextmanager
async def fake_upstream(tokens: int, interval_ms: float) -> AsyncIterator[tuple[str, int]]:
    """The fake upstream in its own process: (base URL, pid)."""
    (port,) = free_ports(1)
    args = ("--port", str(port), "--tokens", str(tokens), "--interval-ms", str(interval_ms))
    async with ready_child("bench.fake_upstream", *args) as pid:
        yield f"http://127.0.0.1:{port}/v1", pid


@contextlib.asynccontextmanager
async def saga_stack(
    base_url: str, data_dir: Path, **env: str
) -> AsyncIterator[tuple[Stack, float]]:
    """The six services on fresh ports (`env`: extra environment for all six): (stack,
    seconds until all were SERVING)."""
    stack = Stack.create(data_dir, config=saga_config(base_url), **env)
    start = time.perf_counter()
    try:
        await stack.start_all()
        yield stack, time.perf_counter() - start
    finally:
        stack.stop_all()


def open_log(path: Path) -> BinaryIO:
    """A log file for a child process (the caller closes it)."""
    return path.open("wb")


LITELLM_CONFIG = """model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: {base_url}
      api_key: none
general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
  drop_params: true
"""


@contextlib.asynccontextmanager
async def litellm_proxy(
    binary: str, base_url: str, data_dir: Path
) -> AsyncIterator[tuple[str, int, str]]:
    """The LiteLLM proxy, one worker, at the fake: (its base URL, pid, master key). Clients
    authenticate with the master key (checked in memory: no database), as Saga's clients
    authenticate with an API key."""
    (port,) = free_ports(1)
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = data_dir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(base_url=base_url, master_key=master_key))
    log = open_log(data_dir / "litellm.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LITELLM"))}
    env.update(LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", NO_DOCS="True")
    # Its own session, so the whole tree (uvicorn may fork) is stopped with one signal.
    process = await asyncio.create_subprocess_exec(
        binary,
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        cwd=data_dir,
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None or time.monotonic() > deadline:
                    tail = (data_dir / "litellm.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"LiteLLM proxy did not start:\n{tail}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/health/liveliness") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.5)
        yield url + "/v1", process.pid, master_key
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.close()


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A number, or '-' when absent."""
    return "-" if value is None else format(value, spec)


def stream_table(rows: list[Row]) -> str:
    """The streaming rows, one line per target and level."""
    head = (
        f"{'target':<8} {'conc':>4} {'streams/s':>10} {'x direct':>8} {'x relay':>7} "
        f"{'TTFT p50':>9} {'p99':>8} {'+p50':>7} {'+p99':>7} {'total p50':>9} {'p99':>8} "
        f"{'+p50':>7} {'+p99':>7} {'CPU ms/stream':>13} {'msgs':>5} {'err':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.target:<8} {r.concurrency:>4} {r.per_s:>10.1f} "
            f"{fmt(r.per_s_ratio_to_direct, '.2f'):>8} {fmt(r.per_s_ratio_to_relay, '.2f'):>7} "
            f"{r.ttft_p50_ms:>9.2f} "
            f"{r.ttft_p99_ms:>8.2f} {fmt(r.added_ttft_p50_ms, '.2f'):>7} "
            f"{fmt(r.added_ttft_p99_ms, '.2f'):>7} {r.total_p50_ms:>9.2f} "
            f"{r.total_p99_ms:>8.2f} {fmt(r.added_total_p50_ms, '.2f'):>7} "
            f"{fmt(r.added_total_p99_ms, '.2f'):>7} "
            f"{sum(r.cpu_ms_per_call.values()) if r.cpu_ms_per_call else 0:>13.2f} "
            f"{r.messages_per_call:>5.1f} {r.errors:>4}"
        )
    return "\n".join(lines)


def complete_table(rows: list[Row]) -> str:
    """Idle non-streamed calls."""
    head = f"{'target':<8} {'calls':>5} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>7}"
    head += f" {'over relay p50':>14} {'err':>4}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.target:<8} {r.calls:>5} {r.total_p50_ms:>8.2f} {r.total_p99_ms:>8.2f} "
            f"{fmt(r.added_total_p50_ms, '.2f'):>7} {fmt(r.added_total_p99_ms, '.2f'):>7} "
            f"{fmt(r.ttft_over_relay_p50_ms, '.2f'):>14} {r.errors:>4}"
        )
    return "\n".join(lines)


def cpu_table(rows: list[Row], target: str = "saga", names: tuple[str, ...] = SERVICES) -> str:
    """CPU ms per stream of each process of `target` (`names`), per level."""
    head = f"{'conc':>4} " + " ".join(f"{s:>9}" for s in names) + f" {'stack':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.target != target:
            continue
        cells = " ".join(f"{r.cpu_ms_per_call.get(s, 0):>9.2f}" for s in names)
        lines.append(f"{r.concurrency:>4} {cells} {sum(r.cpu_ms_per_call.values()):>9.2f}")
    return "\n".join(lines)


def hop_table(rows: list[Row]) -> str:
    """The idle breakdown: entering the chain at the router, the runtime, the gateway."""
    head = (
        f"{'enters at':<9} {'TTFT p50':>9} {'p99':>7} {'+p50':>7} {'total p50':>9} {'p99':>7} "
        f"{'+p50':>7} " + " ".join(f"{s[:8]:>8}" for s in SERVICES) + f" {'stack':>7} {'err':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = {"saga": "gateway", "direct": "upstream"}.get(r.target, r.target)
        cpu = " ".join(f"{r.cpu_ms_per_call.get(s, 0):>8.2f}" for s in SERVICES)
        lines.append(
            f"{name:<9} {r.ttft_p50_ms:>9.2f} {r.ttft_p99_ms:>7.2f} "
            f"{fmt(r.added_ttft_p50_ms, '.2f'):>7} {r.total_p50_ms:>9.2f} {r.total_p99_ms:>7.2f} "
            f"{fmt(r.added_total_p50_ms, '.2f'):>7} {cpu} "
            f"{sum(r.cpu_ms_per_call.values()):>7.2f} {r.errors:>4}"
        )
    return "\n".join(lines)


def ratios(rows: list[Row], memory: dict[str, Any]) -> dict[str, Any]:
    """Saga's streaming rows against direct, the relay chain and (when it ran) LiteLLM at
    each level, and memory against LiteLLM."""
    by = {(r.target, r.mode, r.concurrency): r for r in rows}
    out: dict[str, Any] = {}
    for r in rows:
        if r.target != "saga" or r.mode != "stream":
            continue
        level: dict[str, Any] = {
            "streams_per_s_saga_over_direct": r.per_s_ratio_to_direct,
            "streams_per_s_saga_over_relay": r.per_s_ratio_to_relay,
            "cpu_per_stream_saga_over_relay": r.cpu_ratio_to_relay,
            "ttft_over_relay_ms": {
                "p50": r.ttft_over_relay_p50_ms,
                "p99": r.ttft_over_relay_p99_ms,
            },
            "added_ttft_p50_ms": {"saga": r.added_ttft_p50_ms},
        }
        for name in ("relay", "litellm"):
            other = by.get((name, "stream", r.concurrency))
            if other is not None:
                level["added_ttft_p50_ms"][name] = other.added_ttft_p50_ms
        other = by.get(("litellm", "stream", r.concurrency))
        if other is not None and other.per_s:
            saga_cpu = sum(r.cpu_ms_per_call.values())
            other_cpu = sum(other.cpu_ms_per_call.values())
            level["streams_per_s_saga_over_litellm"] = r.per_s / other.per_s
            level["cpu_per_stream_saga_over_litellm"] = saga_cpu / other_cpu if other_cpu else None
        out[f"c{r.concurrency}"] = level
    if "litellm_mib" in memory:
        out["memory_saga_stack_over_litellm"] = memory["saga_stack_mib"] / memory["litellm_mib"]
    return out


# --------------------------------------------------------------------------- main


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the load, stop everything; the results."""
    expected = answer_text(args.tokens)
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        root = Path(tmp)
        (root / "stack").mkdir()
        async with contextlib.AsyncExitStack() as stack_of:
            base_url, upstream_pid = await stack_of.enter_async_context(
                fake_upstream(args.tokens, args.interval_ms)
            )
            stack, ready_s = await stack_of.enter_async_context(
                saga_stack(base_url, root / "stack")
            )
            pids = {s: stack.processes[s].pid for s in SERVICES}
            idle_rss = {s: rss_mib(p) for s, p in pids.items()}
            print(f"saga stack SERVING after {ready_s:.2f} s", file=sys.stderr)
            connector = aiohttp.TCPConnector(limit=0)
            session = await stack_of.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(120))
            )
            channel = await stack_of.enter_async_context(stack.gateway_channel())
            relay_target, relay_pids = await stack_of.enter_async_context(relay_chain(base_url))
            to_relay = await stack_of.enter_async_context(grpc.aio.insecure_channel(relay_target))
            targets = [
                Target("direct", http_caller(session, base_url + "/chat/completions", expected)),
                Target("saga", saga_caller(channel, stack.admin_key(), expected), pids),
                Target("relay", saga_caller(to_relay, "relay", expected), relay_pids),
            ]
            litellm_note = "not requested (--litellm)"
            if args.litellm:
                if not args.litellm_found:
                    litellm_note = f"skipped: {args.litellm_bin} does not exist"
                else:
                    url, pid, key = await stack_of.enter_async_context(
                        litellm_proxy(args.litellm_bin, base_url, root)
                    )
                    caller = http_caller(session, url + "/chat/completions", expected, key)
                    targets.append(Target("litellm", caller, {"litellm": pid}, tree=True))
                    litellm_note = "measured (one worker)"
            print(f"LiteLLM: {litellm_note}", file=sys.stderr)
            # The idle breakdown: the same stream entering the chain at each hop.
            to_router = await stack_of.enter_async_context(stack.channel_as("runtime", "router"))
            to_runtime = await stack_of.enter_async_context(stack.channel_as("gateway", "runtime"))
            hops = [
                targets[0],
                Target("router", router_caller(stack, to_router, expected), pids),
                Target("runtime", runtime_caller(stack, to_runtime, expected), pids),
                targets[1],
            ]
            rows = await measure(targets, hops, levels, args.streams, args.rounds, args.calls)
            by_name = {t.name: t for t in targets}
            memory: dict[str, Any] = {
                "saga_idle_mib": idle_rss,
                "saga_after_mib": by_name["saga"].rss(),
                "relay_after_mib": by_name["relay"].rss(),
            }
            memory["saga_stack_mib"] = sum(memory["saga_after_mib"].values())
            memory["upstream_mib"] = rss_mib(upstream_pid)
            if "litellm" in by_name:
                memory["litellm_mib"] = by_name["litellm"].rss()["litellm"]
    return {
        "config": {
            "concurrency": levels,
            "streams": args.streams,
            "tokens": args.tokens,
            "interval_ms": args.interval_ms,
            "rounds": args.rounds,
            "calls": args.calls,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "ready_seconds": ready_s,
        "litellm": litellm_note,
        "rows": [asdict(r) for r in rows],
        "memory": memory,
        "ratios": ratios(rows, memory),
    }


def ratio_lines(found: dict[str, Any]) -> str:
    """Saga against the relay chain, direct and LiteLLM, one line per level, then memory."""
    lines = [
        "Saga, same run: streams/s and CPU per stream as ratios (x relay = the bare three-hop "
        "relay chain); TTFT added over the relay chain; added TTFT p50 over direct"
    ]
    for key, value in found.items():
        if not key.startswith("c"):
            continue
        ttft = value["added_ttft_p50_ms"]
        over = value["ttft_over_relay_ms"]
        per_s = fmt(value["streams_per_s_saga_over_relay"], ".2f")
        line = (
            f"  concurrency {key[1:]:>3}: streams/s {per_s}x relay, "
            f"{fmt(value['streams_per_s_saga_over_direct'], '.2f')}x direct"
        )
        if "streams_per_s_saga_over_litellm" in value:
            line += f", {value['streams_per_s_saga_over_litellm']:.2f}x litellm"
        line += f"; CPU per stream {fmt(value['cpu_per_stream_saga_over_relay'], '.2f')}x relay"
        if "cpu_per_stream_saga_over_litellm" in value:
            line += f", {fmt(value['cpu_per_stream_saga_over_litellm'], '.2f')}x litellm"
        line += (
            f"; TTFT over relay +{fmt(over['p50'], '.1f')} ms p50, +{fmt(over['p99'], '.1f')} ms"
            " p99; added TTFT p50 "
            + ", ".join(f"{name} {fmt(v, '.1f')} ms" for name, v in ttft.items())
        )
        lines.append(line)
    if "memory_saga_stack_over_litellm" in found:
        lines.append(
            f"  memory: six services / one LiteLLM worker "
            f"{found['memory_saga_stack_over_litellm']:.2f}x"
        )
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    """The printed tables."""
    rows = [Row(**r) for r in result["rows"]]
    cfg = result["config"]
    memory = result["memory"]
    parts = [
        f"Streaming: {cfg['streams']} streams x {cfg['tokens']} tokens per target and level "
        f"(token interval {cfg['interval_ms']} ms); + = added to direct (difference of the "
        "percentiles); x relay = saga's streams/s over the bare relay chain's; CPU = the measured "
        "processes (saga: the six services; relay: its three; litellm: the proxy)",
        stream_table([r for r in rows if r.mode == "stream"]),
        "",
        f"Non-streamed, idle (concurrency 1, {cfg['calls']} calls; saga waits for `completed`)",
        complete_table([r for r in rows if r.mode == "complete"]),
        "",
        f"Idle breakdown (concurrency 1, {cfg['calls']} streams): the same stream entering the "
        "chain at each hop (router: Reason as the runtime sends it; runtime: RunPattern as the "
        "gateway sends it); + = added to the upstream alone; CPU ms per stream of each process",
        hop_table([r for r in rows if r.mode == "hops"]),
        "",
        "Saga CPU ms per stream, by process",
        cpu_table([r for r in rows if r.mode == "stream"]),
        "",
        "Relay chain CPU ms per stream, by process",
        cpu_table([r for r in rows if r.mode == "stream"], "relay", RELAY_ROLES),
        "",
        "Memory (VmRSS, MiB): saga idle "
        + ", ".join(f"{k} {v:.0f}" for k, v in memory["saga_idle_mib"].items())
        + f"; after the load {memory['saga_stack_mib']:.0f} ("
        + ", ".join(f"{k} {v:.0f}" for k, v in memory["saga_after_mib"].items())
        + ")"
        + "; relay chain "
        + ", ".join(f"{k} {v:.0f}" for k, v in memory["relay_after_mib"].items())
        + (f"; litellm {memory['litellm_mib']:.0f}" if "litellm_mib" in memory else ""),
        f"Saga stack SERVING {result['ready_seconds']:.2f} s after start; LiteLLM: "
        + result["litellm"],
    ]
    if result["ratios"]:
        parts.append(ratio_lines(result["ratios"]))
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--streams", type=int, default=200, help="streams per target and level")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="pause between tokens")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved batches per level")
    parser.add_argument("--calls", type=int, default=50, help="idle non-streamed calls")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--litellm", action="store_true", help="also through the LiteLLM proxy")
    parser.add_argument("--litellm-bin", default=LITELLM_BIN, help="the proxy's `litellm` CLI")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables, write the JSON."""
    args = parse_args(argv)
    args.litellm_found = Path(args.litellm_bin).exists()
    result = asyncio.run(bench(args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
