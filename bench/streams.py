"""Many concurrent paced streams from load clients in their own processes (sweep and soak).

A client process opens its share of the streams (one gRPC channel or one aiohttp session),
starting them spread over a ramp so that they do not all ask for their first token in the
same millisecond, and records for each stream: time to first token, every gap between
consecutive text messages, the text checked token by token against the fake upstream's
answer (`t0 t1 …`: how many tokens were lost and how many came out of order), and its start
and end on the machine-wide monotonic clock (so the streams of all clients can be overlaid
to count how many were open at once). It also measures its own CPU, so a benchmark can say
when the client, not the chain, was the bottleneck.

Targets:

* `grpc`  `ExecutionService/Execute` of the `chat` pattern (Saga's gateway, or the relay
          chain's, which answers the same messages);
* `http`  `POST /chat/completions` with `"stream": true` (the fake upstream directly).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import resource
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import struct_pb2

from bench.fake_upstream import answer_text
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc

PROMPT = "tell me about the saga of the river"
LEAD_S = 1.0  # clients connect, then every client starts its first stream together


@dataclass
class Spec:
    """One client process's share of a level."""

    kind: str  # "grpc" or "http"
    address: str  # host:port (grpc) or the chat completions URL (http)
    api_key: str
    tokens: int
    indices: list[int]  # the streams this client opens, of `total`
    total: int
    ramp_s: float
    start_at: float  # time.monotonic() at which stream 0 starts (machine-wide clock)
    timeout_s: float


@dataclass
class Stream:
    """One stream as its client saw it."""

    start: float
    end: float
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    messages: int = 0
    lost: int = 0
    reordered: int = 0
    error: str = ""


@dataclass
class ClientResult:
    """A client process's streams and its own CPU over them."""

    streams: list[Stream]
    cpu_s: float
    wall_s: float


def check_tokens(text: str, tokens: int) -> tuple[int, int]:
    """(lost, reordered) tokens of `text` against the fake's `tokens`-token answer: a token
    missing is lost; one that does not come after every token before it (out of order,
    repeated, or not a token of the answer) is reordered."""
    seen: set[int] = set()
    reordered, last = 0, -1
    for word in text.split():
        index = int(word[1:]) if word[:1] == "t" and word[1:].isdigit() else -1
        if index <= last:
            reordered += 1
        else:
            last = index
        if 0 <= index < tokens:
            seen.add(index)
    return tokens - len(seen), reordered


class Receiver:
    """The text messages of one stream as they arrive: timed, then checked."""

    def __init__(self) -> None:
        self.stream = Stream(time.monotonic(), 0.0)
        self.started = self.last = time.perf_counter()
        self.parts: list[str] = []

    def text(self, text: str) -> None:
        """One text message arrived now."""
        now = time.perf_counter()
        if self.parts:
            self.stream.gaps.append(now - self.last)
        else:
            self.stream.ttft = now - self.started
        self.last = now
        self.parts.append(text)

    def finish(self, tokens: int) -> Stream:
        """The stream, its text checked against the fake's `tokens`-token answer."""
        stream = self.stream
        stream.end = time.monotonic()
        text = "".join(self.parts)
        stream.lost, stream.reordered = check_tokens(text, tokens)
        stream.messages = len(self.parts)
        if not stream.error and (stream.lost or stream.reordered):
            stream.error = f"{stream.lost} lost, {stream.reordered} reordered"
        elif not stream.error and text != answer_text(tokens):
            stream.error = f"text {text[:60]!r}"
        return stream


async def grpc_stream(stub: Any, spec: Spec, metadata: tuple[tuple[str, str], ...]) -> Stream:
    """One Execute, its token events timed."""
    inputs = struct_pb2.Struct()
    inputs.update({"prompt": PROMPT})
    request = execution_pb2.ExecuteRequest(pattern_id="chat", inputs=inputs)
    receiver = Receiver()
    try:
        async for event in stub.Execute(request, metadata=metadata, timeout=spec.timeout_s):
            if event.WhichOneof("event") == "token":
                receiver.text(event.token.text)
    except grpc.aio.AioRpcError as e:
        receiver.stream.error = f"{e.code().name}: {e.details()}"
    return receiver.finish(spec.tokens)


async def http_stream(session: aiohttp.ClientSession, spec: Spec) -> Stream:
    """One streamed chat completion, its SSE deltas timed."""
    body = {"model": "bench-model", "messages": [{"role": "user", "content": PROMPT}]}
    receiver = Receiver()
    try:
        async with session.post(spec.address, json={**body, "stream": True}) as response:
            if response.status != 200:
                receiver.stream.error = f"HTTP {response.status}"
            async for line in response.content:
                data = line[5:].strip() if line.startswith(b"data:") else b""
                if not data or data == b"[DONE]":
                    continue
                choices = json.loads(data).get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    receiver.text(text)
    except (aiohttp.ClientError, TimeoutError) as e:
        receiver.stream.error = f"{type(e).__name__}: {e}"
    return receiver.finish(spec.tokens)


async def run_client(spec: Spec) -> list[Stream]:
    """Every stream of `spec`, each started at its place on the ramp."""

    async def later(index: int, open_one: object) -> Stream:
        delay = spec.start_at + spec.ramp_s * index / max(1, spec.total) - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
        try:
            return await open_one()  # type: ignore[operator, no-any-return]
        except Exception as e:  # a broken stream is a result, not a crash
            return Stream(time.monotonic(), time.monotonic(), error=f"{type(e).__name__}: {e}")

    if spec.kind == "grpc":
        async with grpc.aio.insecure_channel(spec.address) as channel:
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            metadata = (("authorization", f"Bearer {spec.api_key}"),)
            await channel.channel_ready()
            return list(
                await asyncio.gather(
                    *(later(i, lambda: grpc_stream(stub, spec, metadata)) for i in spec.indices)
                )
            )
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(
            await asyncio.gather(
                *(later(i, lambda: http_stream(session, spec)) for i in spec.indices)
            )
        )


def client_main(spec: Spec) -> ClientResult:
    """A client process's work (the pool runs it)."""
    raise_open_files()
    cpu = time.process_time()
    streams = asyncio.run(run_client(spec))
    busy = time.monotonic() - max(spec.start_at, min((s.start for s in streams), default=0))
    return ClientResult(streams, time.process_time() - cpu, max(busy, 1e-3))


class Clients:
    """A pool of load-client processes (spawned: grpc must not be forked)."""

    def __init__(self, count: int) -> None:
        self.count = count
        context = multiprocessing.get_context("spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(count, mp_context=context)

    async def run(
        self,
        kind: str,
        address: str,
        api_key: str,
        streams: int,
        tokens: int,
        ramp_s: float,
        timeout_s: float,
    ) -> list[ClientResult]:
        """`streams` streams spread over the clients (round robin), all clients starting
        together `LEAD_S` from now."""
        start_at = time.monotonic() + LEAD_S
        loop = asyncio.get_running_loop()
        shares = [list(range(c, streams, self.count)) for c in range(self.count)]
        specs = [
            Spec(kind, address, api_key, tokens, share, streams, ramp_s, start_at, timeout_s)
            for share in shares
            if share
        ]
        return list(
            await asyncio.gather(*(loop.run_in_executor(self.pool, client_main, s) for s in specs))
        )

    def close(self) -> None:
        """Stop the client processes."""
        self.pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def clients(count: int) -> Iterator[Clients]:
    """A `Clients` pool, closed on exit."""
    pool = Clients(count)
    try:
        yield pool
    finally:
        pool.close()


def raise_open_files() -> tuple[int, int]:
    """Lift this process's soft open-file limit to its hard limit (children inherit it): a
    thousand streams hold a thousand upstream sockets in the router and the fake."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def peak_open(streams: list[Stream]) -> int:
    """The most streams open at the same moment."""
    edges = sorted([(s.start, 1) for s in streams] + [(s.end, -1) for s in streams])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def load_parser(doc: str, tokens: int) -> argparse.ArgumentParser:
    """A command line with the options every paced-stream benchmark shares."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=tokens, help="tokens per stream")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="the fake's pace")
    parser.add_argument("--clients", type=int, default=2, help="load-client processes")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="streams start over this")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    report: Callable[[dict[str, Any]], str],
) -> None:
    """Run a benchmark, print its report, write its JSON when asked."""
    result = asyncio.run(run(args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
