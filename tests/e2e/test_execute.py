"""The first path: a streamed Execute through gateway → agent-runtime → router → sim, over
real processes, from Python, the CLI and Node.js."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.internal import encoder

from saga.gateway.v1 import account_pb2, account_pb2_grpc, execution_pb2, execution_pb2_grpc
from services.auth.api_keys import generate_key
from services.common.config import DEFAULT_PROVIDERS
from services.common.status import describe
from tests.harness import ROOT, Stack, stack_for

SIM = DEFAULT_PROVIDERS[0].sim  # both default providers pace alike


def chat(prompt: str) -> execution_pb2.ExecuteRequest:
    inputs = struct_pb2.Struct()
    inputs.update({"prompt": prompt})
    return execution_pb2.ExecuteRequest(pattern_id="chat", inputs=inputs)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def timed_events(
    stack: Stack, request: execution_pb2.ExecuteRequest, key: str
) -> AsyncIterator[tuple[float, execution_pb2.ExecuteResponse]]:
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(key), timeout=60
        )
        async for event in call:
            yield time.monotonic(), event


async def test_execute_streams_tokens_while_the_engine_produces_them(stack: Stack) -> None:
    events = [e async for e in timed_events(stack, chat("What is a ledger?"), stack.admin_key())]
    kinds = [e.WhichOneof("event") for _, e in events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"
    assert kinds[1] == "step_started"
    assert kinds[-2] == "step_completed"
    assert [e.sequence for _, e in events] == list(range(1, len(events) + 1))
    tokens = [(t, e.token) for t, e in events if e.WhichOneof("event") == "token"]
    # Every word the engine produced arrives; a slow reader may get a few merged (coalescing),
    # but the stream is paced by the engine: spread over (n-1) intervals, not one burst.
    assert len("".join(t.text for _, t in tokens).split()) == SIM.tokens
    assert len(tokens) >= SIM.tokens // 2
    spread = tokens[-1][0] - tokens[0][0]
    assert spread >= (SIM.tokens - 1) * SIM.token_interval_ms / 1000 * 0.6
    accepted, completed = events[0][1].accepted, events[-1][1].completed
    assert re.fullmatch(r"exe_[0-9a-f]{32}", accepted.execution_id)
    assert re.fullmatch(r"[0-9a-f]{64}", accepted.ledger_commit_hash)
    assert accepted.ledger_commit_hash != "0" * 64
    assert accepted.pricing_pack_id.startswith("PP_")
    assert re.fullmatch(r"[0-9a-f]{32}", accepted.trace_id)
    text = "".join(t.text for _, t in tokens)
    assert completed.outputs["text"] == text
    assert completed.usage.output_tokens == SIM.tokens
    assert completed.cost_micro_usd > 0
    assert (completed.ledger_commit_hash, completed.pricing_pack_id) == (
        accepted.ledger_commit_hash,
        accepted.pricing_pack_id,
    )


async def test_the_same_prompt_gives_the_same_text(stack: Stack) -> None:
    async def text(prompt: str) -> str:
        return "".join(
            [
                e.token.text
                async for _, e in timed_events(stack, chat(prompt), stack.admin_key())
                if e.WhichOneof("event") == "token"
            ]
        )

    first, again, other = await asyncio.gather(text("alpha"), text("alpha"), text("beta"))
    assert first == again
    assert first != other


async def test_node_client_streams_an_execute(stack: Stack) -> None:
    env = {**os.environ, "SAGA_GATEWAY": stack.target("gateway"), "SAGA_API_KEY": stack.admin_key()}
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", str(ROOT / "clients" / "node" / "execute.js"), "chat", "prompt=Hello from Node"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["event"] == "accepted"
    assert lines[-1]["event"] == "completed"
    tokens = [line for line in lines if line["event"] == "token"]
    assert len("".join(t["token"]["text"] for t in tokens).split()) == SIM.tokens
    assert len(tokens) >= SIM.tokens // 2
    assert tokens[-1]["ms"] - tokens[0]["ms"] >= (SIM.tokens - 1) * SIM.token_interval_ms * 0.6
    text = "".join(t["token"]["text"] for t in tokens)
    assert lines[-1]["completed"]["outputs"]["fields"]["text"]["stringValue"] == text


async def test_node_client_reports_reason_and_domain(stack: Stack) -> None:
    env = {**os.environ, "SAGA_GATEWAY": stack.target("gateway"), "SAGA_API_KEY": stack.admin_key()}
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", str(ROOT / "clients" / "node" / "execute.js"), "no_such_pattern", "prompt=x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    error = json.loads(result.stdout.splitlines()[-1])
    assert (error["error"], error["reason"], error["domain"]) == (
        "NOT_FOUND",
        "PATTERN_NOT_FOUND",
        "runtime.saga",
    )


def test_cli_prints_tokens_then_a_summary(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "--gateway",
            stack.target("gateway"),
            "--key",
            stack.admin_key(),
            "execute",
            "chat",
            "--input",
            "prompt=Hello from the CLI",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == SIM.tokens
    assert re.search(r"execution exe_[0-9a-f]{32}", result.stderr)
    assert re.search(rf"tokens \d+ in / {SIM.tokens} out", result.stderr)
    assert "ledger " in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_prints_the_reason_of_an_error(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "--gateway",
            stack.target("gateway"),
            "--key",
            "saga_ak_wrong",
            "execute",
            "chat",
            "--input",
            "prompt=x",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr
    assert "Traceback" not in result.stderr


# --- authentication at the edge -----------------------------------------------------------


async def execute_error(
    stack: Stack, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                chat("hi"), metadata=metadata, timeout=30
            ):
                pass
    return err.value


async def completes(stack: Stack, key: str) -> bool:
    events = [e async for _, e in timed_events(stack, chat("hi"), key)]
    return events[-1].WhichOneof("event") == "completed"


async def create_key(stack: Stack, scopes: list[str]) -> tuple[str, str]:
    async with stack.gateway_channel() as ch:
        reply = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="test", scopes=scopes),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )
    return reply.api_key, reply.info.key_id


async def test_missing_and_unknown_keys_are_unauthenticated(stack: Stack) -> None:
    missing = await execute_error(stack, ())
    assert (missing.code(), describe(missing).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_MISSING",
    )
    unknown = await execute_error(stack, bearer(generate_key()))  # well formed, never issued
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (describe(unknown).reason, describe(unknown).domain) == (
        "CREDENTIAL_UNKNOWN",
        "auth.saga",
    )
    assert await completes(stack, stack.admin_key())  # positive control


async def test_a_revoked_key_stops_working_within_the_cache_bound(stack: Stack) -> None:
    key, key_id = await create_key(stack, ["execute"])
    assert await completes(stack, key)
    async with stack.gateway_channel() as ch:
        await account_pb2_grpc.AccountServiceStub(ch).RevokeApiKey(
            account_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=bearer(key), timeout=10
        )
    await asyncio.sleep(1.2)  # the test stack caches verified credentials for 1 s
    error = await execute_error(stack, bearer(key))
    assert (error.code(), describe(error).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_REVOKED",
    )


async def test_a_key_without_the_execute_scope_is_permission_denied(stack: Stack) -> None:
    key, _ = await create_key(stack, ["sessions"])
    error = await execute_error(stack, bearer(key))
    details = describe(error)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (details.reason, details.domain, details.metadata) == (
        "SCOPE_MISSING",
        "gateway.saga",
        {"scope": "execute"},
    )
    allowed, _ = await create_key(stack, ["execute"])
    assert await completes(stack, allowed)


# --- errors keep their reason and domain across hops -----------------------------------------


async def test_unknown_pattern_is_the_runtimes_not_found(stack: Stack) -> None:
    request = chat("hi")
    request.pattern_id = "no_such_pattern"
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                request, metadata=bearer(stack.admin_key()), timeout=30
            ):
                pass
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (details.reason, details.domain) == ("PATTERN_NOT_FOUND", "runtime.saga")


async def test_empty_prompt_is_the_routers_invalid_argument(stack: Stack) -> None:
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                chat("   "), metadata=bearer(stack.admin_key()), timeout=30
            ):
                pass
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == ("PROMPT_EMPTY", "router.saga")
    assert [v.field for v in details.field_violations] == ["messages"]


BROKEN = """
[[providers]]
name = "sim-broken"
kind = "sim"
model = "sim-small"
[providers.sim]
fail = "unavailable"
"""


async def test_engine_failure_is_the_routers_unavailable(tmp_path: Path) -> None:
    async with stack_for(tmp_path, config=BROKEN) as broken, broken.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                chat("hi"), metadata=bearer(broken.admin_key()), timeout=30
            ):
                pass
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (details.reason, details.domain) == ("PROVIDER_UNAVAILABLE", "router.saga")
    assert details.metadata.get("provider") == "sim-broken"


async def test_a_caller_deadline_beyond_any_reason_still_runs(stack: Stack) -> None:
    # ~158 years (grpc itself refuses ~1e10 s, on a bare server too): the gateway caps what
    # it passes on at the request context's life.
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            chat("far deadline"), metadata=bearer(stack.admin_key()), timeout=5e9
        )
        kinds = [event.WhichOneof("event") async for event in call]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"


async def test_many_undeclared_inputs_give_a_bounded_invalid_argument(stack: Stack) -> None:
    request = chat("hello")
    request.inputs.update({f"undeclared_input_number_{i}": "x" * 40 for i in range(300)})
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(stack.admin_key()), timeout=30
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
    details = describe(refused.value)
    assert (refused.value.code(), details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INPUT_INVALID",
    )
    named = [v.field for v in details.field_violations]
    assert named
    assert all(f.startswith("inputs.undeclared_input_number_") for f in named)
    assert len(named) + int(details.metadata["fieldViolationsOmitted"]) == 300


def _length_delimited(field: int, payload: bytes) -> bytes:
    return encoder.TagBytes(field, 2) + encoder._VarintBytes(len(payload)) + payload


def _deeply_nested_execute(levels: int) -> bytes:
    """An ExecuteRequest whose inputs nest `levels` Structs deep, built byte by byte (the
    Python protobuf runtime refuses to build one past its own depth limit)."""
    value = struct_pb2.Value(string_value="x").SerializeToString()
    for _ in range(levels):
        entry = _length_delimited(1, b"a") + _length_delimited(2, value)
        value = _length_delimited(5, _length_delimited(1, entry))
    inputs = _length_delimited(1, _length_delimited(1, b"p") + _length_delimited(2, value))
    return _length_delimited(1, b"chat") + _length_delimited(2, inputs)


async def test_an_unparsable_request_is_invalid_argument_and_logged_once(stack: Stack) -> None:
    bodies = [_deeply_nested_execute(40), b"\xff\xff\xff\xff"] * 3
    codes = []
    async with stack.gateway_channel() as ch:
        execute = ch.unary_stream(
            "/saga.gateway.v1.ExecutionService/Execute",
            request_serializer=lambda body: body,
            response_deserializer=lambda body: body,
        )
        # Positive control: a shallow body built the same way parses, reaches the runtime and
        # is judged there on its inputs.
        with pytest.raises(grpc.aio.AioRpcError) as judged:
            async for _ in execute(_deeply_nested_execute(3), metadata=bearer(stack.admin_key())):
                pass
        assert describe(judged.value).reason == "INPUT_INVALID"
        for body in bodies:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in execute(body):  # no credential: refused before authentication
                    pass
            details = describe(refused.value)
            codes.append((refused.value.code(), details.reason, details.domain))
    assert codes == [(grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED", "gateway.saga")] * 6
    log = stack.log_path("gateway").read_text()
    assert "Traceback" not in log
    assert "DecodeError" not in log
    warned = [json.loads(line) for line in log.splitlines() if '"malformed request"' in line]
    assert 1 <= len(warned) <= 2  # one per cause (depth, corrupt), not one per request
