"""SSE over the HTTP door against a slow fake provider (a real HTTP server): a client that
disconnects cancels the run down to the provider's connection, unless it asked for
`detach_on_disconnect`, in which case the watch resumes it to the end; an idle stream gets
heartbeat comments; and SIGTERM lets an in-flight stream finish within the grace, with
readiness down meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.test_http_facade import Event, auth, call, chat, parse_sse, sse, url
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.harness import Stack, stack_for

HEARTBEAT = 0.2
READ_TIMEOUT = 2.0
GRACE = 8.0
"""Longer than the stream the SIGTERM test cuts into (the harness's default is 3 s)."""


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    config = provider_toml("slow", fake, "ollama", max_retries=0)
    async with stack_for(
        tmp_path_factory.mktemp("http-streams"),
        config=config,
        SAGA_HTTP__HEARTBEAT_SECONDS=str(HEARTBEAT),
        SAGA_SERVER__GRACE_SECONDS=str(GRACE),
        SAGA_HTTP__REQUEST_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    ) as s:
        yield s


async def events_of(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of an SSE response as they arrive."""
    block = ""
    async for line in response.content:
        text = line.decode()
        if text.strip():
            block += text
            continue
        events, _ = parse_sse(block + "\n")
        block = ""
        for event in events:
            yield event


async def open_run(
    http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    """A POST /v1/execute asking for SSE, its body still to be read."""
    return await http.post(
        url(stack, "/v1/execute"),
        json=body,
        headers=auth(stack.admin_key(), Accept="text/event-stream"),
    )


async def provider_saw_the_close(fake: FakeProviders, before: int) -> Any:
    """The provider's request of the run started after `before` requests, once its
    connection closed (bounded)."""
    for _ in range(100):  # the cancellation crosses three hops to the provider
        seen = fake.requests("ollama")[before:]
        if seen and seen[0].disconnected:
            return seen[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the provider still streams: {fake.requests('ollama')[before:]}")


async def test_an_sse_client_that_disconnects_cancels_the_provider_call(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.defaults["ollama"] = Script(tokens=200, interval=0.05)
    before = len(fake.requests("ollama"))
    async with aiohttp.ClientSession() as http:
        response = await open_run(http, stack, chat("a long one"))
        kinds = []
        async for event in events_of(response):
            kinds.append(event.event)
            if kinds.count("token") == 2:
                break
        response.close()  # the client goes away mid-run
    seen = await provider_saw_the_close(fake, before)
    assert not seen.completed
    assert seen.tokens < 200


async def test_a_json_client_that_disconnects_cancels_the_provider_call(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.defaults["ollama"] = Script(tokens=200, interval=0.05)
    before = len(fake.requests("ollama"))
    async with aiohttp.ClientSession() as http:
        request = asyncio.ensure_future(
            http.post(url(stack, "/v1/execute"), json=chat("long"), headers=auth(stack.admin_key()))
        )
        for _ in range(200):  # until the provider streams: the run is under way
            seen = fake.requests("ollama")[before:]
            if seen and seen[0].tokens > 0:
                break
            await asyncio.sleep(0.05)
        request.cancel()  # the client gives up waiting for the one answer
        with pytest.raises(asyncio.CancelledError):
            await request
    seen = await provider_saw_the_close(fake, before)
    assert not seen.completed


async def test_a_detached_run_goes_on_and_the_watch_gets_the_rest(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.defaults["ollama"] = Script(tokens=20, interval=0.02)
    key = stack.admin_key()
    async with aiohttp.ClientSession() as http:
        response = await open_run(http, stack, chat("detach me", detach_on_disconnect=True))
        seen = []
        async for event in events_of(response):
            seen.append(event)
            if [e.event for e in seen].count("token") == 2:
                break
        response.close()
    execution_id = seen[0].data["accepted"]["execution_id"]
    rest = await sse(
        stack, "GET", f"/v1/executions/{execution_id}/events", key, **{"Last-Event-ID": seen[-1].id}
    )
    events = seen + rest.events
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert events[-1].event == "completed"
    text = "".join(e.data["token"]["text"] for e in events if e.event == "token")
    assert text == events[-1].data["completed"]["outputs"]["text"]


async def test_an_idle_stream_gets_heartbeats(stack: Stack, fake: FakeProviders) -> None:
    # Idle for many heartbeat intervals before the first token.
    fake.defaults["ollama"] = Script(tokens=2, first_token_delay=10 * HEARTBEAT)
    stream = await sse(stack, "POST", "/v1/execute", stack.admin_key(), chat("think first"))
    assert stream.events[-1].event == "completed"
    assert stream.heartbeats >= 1


async def test_a_read_that_outlives_its_deadline_is_504(stack: Stack) -> None:
    key = stack.admin_key()
    assert (await call(stack, "GET", "/v1/patterns", key))[0] == 200  # the credential is cached
    runtime = stack.processes["runtime"].pid
    os.kill(runtime, signal.SIGSTOP)  # hung: its sockets open, nothing answers
    try:
        status, error, _ = await call(stack, "GET", "/v1/patterns", key)
    finally:
        os.kill(runtime, signal.SIGCONT)
    assert (status, error["error"]["reason"]) == (504, "HTTP_REQUEST_TIMEOUT")
    assert error["error"]["details"][0]["metadata"]["timeoutSeconds"] == f"{READ_TIMEOUT:g}"


async def test_sigterm_lets_an_sse_stream_finish_with_readiness_down(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.defaults["ollama"] = Script(tokens=60, interval=0.06)  # ~3.6 s: over a second
    async with (
        aiohttp.ClientSession() as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['gateway'].probe_port}") as probe,
    ):
        response = await open_run(http, stack, chat("finish me"))
        events = []
        readiness = None
        async for event in events_of(response):
            events.append(event)
            if len(events) == 1:
                stack.processes["gateway"].send_signal(signal.SIGTERM)
            elif readiness is None and event.event == "token":
                check = await health_pb2_grpc.HealthStub(probe).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                readiness = check.status
    assert readiness == health_pb2.HealthCheckResponse.NOT_SERVING
    assert [e.event for e in events][-1] == "completed"
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert await asyncio.to_thread(stack.processes["gateway"].wait, 15) == 0
    assert "Traceback" not in stack.read_log("gateway"), stack.read_log("gateway")
    json.dumps([e.data for e in events])  # every data line was JSON


async def test_a_stream_the_grace_cuts_ends_with_an_error_event(
    stack: Stack, fake: FakeProviders
) -> None:
    # The previous test stopped the gateway: start it again with a grace shorter than a run.
    stack.extra_env["SAGA_SERVER__GRACE_SECONDS"] = "1"
    await stack.start_all(["gateway"])
    fake.defaults["ollama"] = Script(tokens=400, interval=0.05)  # ~20 s
    async with aiohttp.ClientSession() as http:
        response = await open_run(http, stack, chat("never finished"))
        events = []
        async for event in events_of(response):  # the stream must end cleanly: no payload error
            events.append(event)
            if len(events) == 3:
                stack.processes["gateway"].send_signal(signal.SIGTERM)
    last = events[-1]
    assert (last.event, last.id) == ("error", None)
    assert (last.data["error"]["status"], last.data["error"]["reason"]) == (
        "UNAVAILABLE",
        "GATEWAY_STOPPING",
    )
    assert "completed" not in [e.event for e in events]
    assert await asyncio.to_thread(stack.processes["gateway"].wait, 15) == 0
