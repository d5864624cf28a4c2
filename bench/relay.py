"""The floor of Saga's architecture: a bare three-hop grpc.aio relay chain doing the same work.

Three processes (so each one's CPU is measured as a Saga service's is), plain
`grpc.aio.server()` and `grpc.aio.insecure_channel`, no interceptors, no auth, no records,
Saga's real protos so the messages on the wire are the same size:

    client ──Execute──▶ gateway ──RunPattern──▶ runtime ──Reason──▶ router ──HTTP──▶ upstream

* router   `RouterService/Reason`: POSTs the request's messages to the upstream's
           `/chat/completions` with aiohttp (`stream: true`, usage asked for, as Saga's
           `openai` engine does), parses the server-sent events and yields each text as a
           `ReasonResponse(delta=…)`. Whatever arrived on the socket while the previous
           message was being written leaves as one merged delta (Saga's router coalesces a
           slow reader's backlog the same way, with a queue).
* runtime  `RuntimeService/RunPattern`: calls Reason, relays each delta as a
           `RunPatternResponse(token=…)`, then sends `completed` with `outputs.text`.
* gateway  `ExecutionService/Execute`: calls RunPattern and relays each event as an
           `ExecuteResponse` with its sequence number.

So a client that reads Saga's `Execute` reads this chain unchanged (`bench.chain`'s
`saga_caller`, the text and the `completed` output checked).

    python -m bench.relay --role router --port P --upstream http://127.0.0.1:U/v1
    python -m bench.relay --role runtime --port P --next 127.0.0.1:ROUTER
    python -m bench.relay --role gateway --port P --next 127.0.0.1:RUNTIME

Each prints `READY <port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
from google.protobuf import struct_pb2

from bench.procs import ready_child
from saga.execution.v1 import common_pb2, events_pb2, reason_events_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from tests.harness import free_ports

ROLES = ("router", "runtime", "gateway")
TIMEOUT = 600.0
ROLE_NAMES = {router_pb2.ROLE_USER: "user", router_pb2.ROLE_ASSISTANT: "assistant"}


def sse_texts(buffer: bytearray) -> tuple[str, bool]:
    """The delta text of every complete event at the head of `buffer` (consumed), and
    whether `[DONE]` was among them."""
    texts: list[str] = []
    while (end := buffer.find(b"\n\n")) >= 0:
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        if not event.startswith(b"data:"):
            continue
        data = event[5:].strip()
        if data == b"[DONE]":
            return "".join(texts), True
        choices = json.loads(data).get("choices") or [{}]
        text = (choices[0].get("delta") or {}).get("content")
        if text:
            texts.append(text)
    return "".join(texts), False


class Router(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    """Reason: one streamed upstream call, its deltas relayed."""

    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def Reason(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if self.session is None:  # made inside the server's event loop
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = {
            "model": "bench-model",
            "messages": [
                {"role": ROLE_NAMES.get(m.role, "user"), "content": m.content}
                for m in request.messages
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        buffer = bytearray()
        async with self.session.post(self.url, json=body) as response:
            if response.status != 200:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"upstream {response.status}")
            while chunk := await response.content.readany():
                buffer += chunk
                text, done = sse_texts(buffer)
                if text:
                    yield router_pb2.ReasonResponse(delta=reason_events_pb2.Delta(text=text))
                if done:
                    return


class Runtime(runtime_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    """RunPattern: one Reason call, its deltas relayed as tokens, then `completed`."""

    def __init__(self, router: grpc.aio.Channel) -> None:
        self.router = router_pb2_grpc.RouterServiceStub(router)

    async def RunPattern(self, request: Any, context: Any) -> AsyncIterator[Any]:
        prompt = request.inputs.fields["prompt"].string_value
        call = self.router.Reason(
            router_pb2.ReasonRequest(
                messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=prompt)],
                response_mode=common_pb2.RESPONSE_MODE_STREAMING,
            ),
            timeout=TIMEOUT,
        )
        parts: list[str] = []
        sequence = 0
        async for event in call:
            if event.WhichOneof("event") != "delta":
                continue
            parts.append(event.delta.text)
            sequence += 1
            yield runtime_pb2.RunPatternResponse(
                token=events_pb2.Token(step_id="answer", text=event.delta.text),
                sequence=sequence,
            )
        outputs = struct_pb2.Struct()
        outputs.update({"text": "".join(parts)})
        yield runtime_pb2.RunPatternResponse(
            completed=events_pb2.Completed(outputs=outputs), sequence=sequence + 1
        )


class Gateway(execution_pb2_grpc.ExecutionServiceServicer):
    """Execute: one RunPattern call, every event relayed."""

    def __init__(self, runtime: grpc.aio.Channel) -> None:
        self.runtime = runtime_pb2_grpc.RuntimeServiceStub(runtime)

    async def Execute(self, request: Any, context: Any) -> AsyncIterator[Any]:
        call = self.runtime.RunPattern(
            runtime_pb2.RunPatternRequest(pattern_id=request.pattern_id, inputs=request.inputs),
            timeout=TIMEOUT,
        )
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "token":
                yield execution_pb2.ExecuteResponse(token=event.token, sequence=event.sequence)
            elif kind == "completed":
                yield execution_pb2.ExecuteResponse(
                    completed=event.completed, sequence=event.sequence
                )


async def serve(role: str, port: int, upstream: str, next_hop: str) -> None:
    """Serve `role` on loopback `port` until cancelled."""
    server = grpc.aio.server()
    channel = None
    if role == "router":
        router_pb2_grpc.add_RouterServiceServicer_to_server(Router(upstream), server)
    else:
        channel = grpc.aio.insecure_channel(next_hop)
        if role == "runtime":
            runtime_pb2_grpc.add_RuntimeServiceServicer_to_server(Runtime(channel), server)
        else:
            execution_pb2_grpc.add_ExecutionServiceServicer_to_server(Gateway(channel), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY {port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)
        if channel is not None:
            await channel.close(None)


@contextlib.asynccontextmanager
async def relay_chain(upstream: str) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """The three relay processes at `upstream`: (the gateway's address, pid by role)."""
    ports = dict(zip(ROLES, free_ports(len(ROLES)), strict=True))
    pids: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as children:
        previous = ""
        for role in ROLES:  # the router first: each hop dials the one before it
            hop = ("--upstream", upstream) if role == "router" else ("--next", previous)
            args = ("--role", role, "--port", str(ports[role]), *hop)
            pids[role] = await children.enter_async_context(ready_child("bench.relay", *args))
            previous = f"127.0.0.1:{ports[role]}"
        yield previous, pids


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="", help="the upstream's base URL (router)")
    parser.add_argument("--next", default="", help="host:port of the next hop")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.role, args.port, args.upstream, args.next))


if __name__ == "__main__":
    main()
