"""agent-runtime over real processes (auth, optimizer, router, runtime on loopback, mTLS),
called as the gateway calls it: RunPattern streams the `chat` pattern loaded from its file,
pinned to the ledger head and the seeded pack; the request context and the request are
checked before anything runs; router errors reach the caller unchanged. The runtime keeps its
state in SQLite by default, and in PostgreSQL when configured."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.context import METADATA_KEY, ContextSigner, load_private_key
from services.common.database import open_database
from services.common.errors import FieldViolation
from services.common.status import describe
from services.runtime import demo
from services.runtime.ledger import Ledger, Transaction, chain_head
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend
from tests.harness import Stack, stack_for

TOKENS = 6
TOKEN_INTERVAL_MS = 40
CONFIG = f"""
[[providers]]
name = "sim-fast"
kind = "sim"
model = "sim-small"
input_micro_usd_per_mtok = 150000
output_micro_usd_per_mtok = 600000

[providers.sim]
tokens = {TOKENS}
token_interval_ms = {TOKEN_INTERVAL_MS}
"""


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The services a RunPattern crosses, without the gateway (the tests play it)."""
    async with stack_for(
        tmp_path_factory.mktemp("runtime"),
        ["auth", "optimizer", "router", "runtime"],
        config=CONFIG,
    ) as s:
        yield s


def new_execution_id() -> str:
    return f"exe_{uuid.uuid4().hex}"


def context_for(stack: Stack, execution_id: str) -> tuple[tuple[str, str], ...]:
    """The `saga-context` metadata the gateway would send for `execution_id`."""
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    token = signer.mint(
        execution_id=execution_id,
        user_id="usr_test",
        tenant="default",
        scopes=["execute"],
        credential_id="key_test",
        ttl_seconds=60,
    )
    return ((METADATA_KEY, token),)


def chat_request(execution_id: str, **inputs: Any) -> runtime_pb2.RunPatternRequest:
    values = struct_pb2.Struct()
    values.update(inputs)
    return runtime_pb2.RunPatternRequest(
        pattern_id="chat", inputs=values, execution_id=execution_id
    )


async def run(
    stack: Stack, request: runtime_pb2.RunPatternRequest, metadata: Any = None
) -> list[runtime_pb2.RunPatternResponse]:
    """Every event of one RunPattern (raises the call's error)."""
    if metadata is None:
        metadata = context_for(stack, request.execution_id)
    async with stack.channel_as("gateway", "runtime") as ch:
        call = runtime_pb2_grpc.RuntimeServiceStub(ch).RunPattern(
            request, metadata=metadata, timeout=30
        )
        return [event async for event in call]


async def first_event(stack: Stack, request: runtime_pb2.RunPatternRequest) -> Any:
    """The first event of a RunPattern; the call is then cancelled."""
    async with stack.channel_as("gateway", "runtime") as ch:
        call = runtime_pb2_grpc.RuntimeServiceStub(ch).RunPattern(
            request, metadata=context_for(stack, request.execution_id), timeout=30
        )
        event = await call.read()
        call.cancel()
        return event


async def failure(
    stack: Stack, request: runtime_pb2.RunPatternRequest, metadata: Any = None
) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await run(stack, request, metadata)
    return error.value


async def collect(call: Any, into: list[runtime_pb2.RunPatternResponse]) -> None:
    """Append every event of `call` to `into` (keeping them when the call fails)."""
    async for event in call:
        into.append(event)


def execution_row(stack: Stack, execution_id: str) -> sqlite3.Row:
    # Read-only: the runtime owns the file (and is running).
    with sqlite3.connect(f"file:{stack.data_dir / 'runtime.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT * FROM executions WHERE execution_id = ?", (execution_id,)
        ).fetchone()
    assert isinstance(row, sqlite3.Row), f"no record of {execution_id}"
    return row


def seeded_pack_id(stack: Stack) -> str:
    with sqlite3.connect(f"file:{stack.data_dir / 'runtime.db'}?mode=ro", uri=True) as db:
        [(pack_id,)] = db.execute("SELECT pack_id FROM packs WHERE status = 'FRESH'").fetchall()
    return str(pack_id)


async def test_run_pattern_needs_a_context_bound_to_its_execution(stack: Stack) -> None:
    execution_id = new_execution_id()
    missing = await failure(stack, chat_request(execution_id, prompt="Hi"), metadata=())
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (describe(missing).reason, describe(missing).domain) == (
        "CONTEXT_MISSING",
        "runtime.saga",
    )

    other = context_for(stack, new_execution_id())
    mismatch = await failure(stack, chat_request(execution_id, prompt="Hi"), metadata=other)
    assert mismatch.code() == grpc.StatusCode.PERMISSION_DENIED
    assert describe(mismatch).reason == "CONTEXT_MISMATCH"

    # Positive control: the right context gets past the check (to the pattern lookup).
    request = chat_request(execution_id, prompt="Hi")
    request.pattern_id = "no_such_pattern"
    unknown = await failure(stack, request)
    assert describe(unknown).reason == "PATTERN_NOT_FOUND"


async def test_an_unknown_pattern_is_not_found(stack: Stack) -> None:
    request = chat_request(new_execution_id(), prompt="Hi")
    request.pattern_id = "no_such_pattern"
    error = await failure(stack, request)
    details = describe(error)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert (details.reason, details.domain) == ("PATTERN_NOT_FOUND", "runtime.saga")
    assert details.metadata == {"patternId": "no_such_pattern"}
    async with stack.channel_as("gateway", "runtime") as ch:
        stub = runtime_pb2_grpc.RuntimeServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as lookup:
            await stub.GetPattern(runtime_pb2.GetPatternRequest(pattern_id="nope"), timeout=5)
        assert describe(lookup.value).reason == "PATTERN_NOT_FOUND"
        # Positive control: the shipped pattern is there.
        found = await stub.GetPattern(runtime_pb2.GetPatternRequest(pattern_id="chat"), timeout=5)
        assert [s.capability for s in found.pattern.steps] == ["llm.complete"]


async def test_bad_requests_are_invalid_with_field_violations(stack: Stack) -> None:
    no_prompt = await failure(stack, chat_request(new_execution_id(), system="Be brief."))
    details = describe(no_prompt)
    assert no_prompt.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == ("INPUT_INVALID", "runtime.saga")
    assert details.field_violations == [FieldViolation("inputs.prompt", "required")]

    bad_asof = chat_request(new_execution_id(), prompt="Hi")
    bad_asof.asof = "31/12/2024"
    asof = describe(await failure(stack, bad_asof))
    assert (asof.reason, [v.field for v in asof.field_violations]) == ("ASOF_INVALID", ["asof"])

    # The context is bound to the malformed id, so only the id's shape is wrong.
    bad_id = describe(await failure(stack, chat_request("exe_123", prompt="Hi")))
    assert (bad_id.reason, [v.field for v in bad_id.field_violations]) == (
        "EXECUTION_ID_INVALID",
        ["execution_id"],
    )

    # Positive control: a well-formed request is accepted.
    accepted = await first_event(stack, chat_request(new_execution_id(), prompt="Hi"))
    assert accepted.WhichOneof("event") == "accepted"


async def test_patterns_and_capabilities_are_listed(stack: Stack) -> None:
    async with stack.channel_as("gateway", "runtime") as ch:
        stub = runtime_pb2_grpc.RuntimeServiceStub(ch)
        patterns = await stub.ListPatterns(runtime_pb2.ListPatternsRequest(), timeout=5)
        capabilities = await stub.ListCapabilities(runtime_pb2.ListCapabilitiesRequest(), timeout=5)
    chat = next(p for p in patterns.patterns if p.pattern_id == "chat")
    assert (chat.source, chat.requires_pack) == ("samples/chat.yaml", False)
    schema = json_format.MessageToDict(chat.input_schema)
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["prompt"] == {
        "type": "string",
        "maxLength": 100_000,
        "description": "What to ask.",
    }
    llm = next(c for c in capabilities.capabilities if c.name == "llm.complete")
    assert llm.agent == "llm"
    assert json_format.MessageToDict(llm.output_schema)["required"] == ["text"]


async def test_chat_streams_tokens_between_accepted_and_completed(stack: Stack) -> None:
    execution_id = new_execution_id()
    events: list[runtime_pb2.RunPatternResponse] = []
    arrivals: list[float] = []
    async with stack.channel_as("gateway", "runtime") as ch:
        call = runtime_pb2_grpc.RuntimeServiceStub(ch).RunPattern(
            chat_request(execution_id, prompt="Say hello."),
            metadata=context_for(stack, execution_id),
            timeout=30,
        )
        async for event in call:
            events.append(event)
            arrivals.append(time.monotonic())
    kinds = [e.WhichOneof("event") for e in events]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert kinds[:2] == ["accepted", "step_started"]
    assert kinds[-2:] == ["step_completed", "completed"]
    assert set(kinds[2:-2]) == {"token"}

    accepted = events[0].accepted
    assert accepted.execution_id == execution_id
    assert re.fullmatch(r"[0-9a-f]{64}", accepted.ledger_commit_hash)
    assert accepted.ledger_commit_hash == chain_head(demo.TRANSACTIONS)
    assert accepted.pricing_pack_id == seeded_pack_id(stack)
    assert re.fullmatch(r"[0-9a-f]{32}", accepted.trace_id)
    assert accepted.trace_id != "0" * 32
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", accepted.asof)

    started = events[1].step_started
    assert (started.step_id, started.agent, started.capability) == ("answer", "llm", "llm.complete")
    tokens = [e.token for e in events if e.HasField("token")]
    assert tokens
    assert {t.step_id for t in tokens} == {"answer"}
    text = "".join(t.text for t in tokens)
    assert text
    # Tokens are relayed as the engine paces them, not gathered and sent at the end.
    # (A slow reader may get a few deltas merged by the router's coalescing: count words.)
    token_times = [t for t, e in zip(arrivals, events, strict=True) if e.HasField("token")]
    assert len(text.split()) == TOKENS
    assert len(token_times) >= TOKENS // 2
    assert token_times[-1] - token_times[0] >= 0.8 * (TOKENS - 1) * TOKEN_INTERVAL_MS / 1000

    step = events[-2].step_completed
    assert (step.step_id, step.agent, step.capability) == ("answer", "llm", "llm.complete")
    assert step.output["text"] == text
    assert (step.provider, step.model) == ("sim-fast", "sim-small")
    assert step.usage.output_tokens > 0
    assert step.cost_micro_usd > 0

    completed = events[-1].completed
    assert completed.outputs["text"] == text
    assert completed.usage == step.usage
    assert completed.cost_micro_usd == step.cost_micro_usd
    assert completed.pricing_pack_id == accepted.pricing_pack_id
    assert completed.ledger_commit_hash == accepted.ledger_commit_hash

    record = execution_row(stack, execution_id)
    assert (record["status"], record["user_id"], record["pattern_id"]) == (
        "SUCCEEDED",
        "usr_test",
        "chat",
    )
    assert (record["ledger_commit_hash"], record["trace_id"]) == (
        accepted.ledger_commit_hash,
        accepted.trace_id,
    )
    assert record["cost_micro_usd"] == completed.cost_micro_usd


async def test_a_router_error_reaches_the_caller_unchanged_and_fails_the_record(
    stack: Stack,
) -> None:
    execution_id = new_execution_id()
    events: list[runtime_pb2.RunPatternResponse] = []
    async with stack.channel_as("gateway", "runtime") as ch:
        call = runtime_pb2_grpc.RuntimeServiceStub(ch).RunPattern(
            chat_request(execution_id, prompt=""),
            metadata=context_for(stack, execution_id),
            timeout=30,
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await collect(call, events)
    details = describe(error.value)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == ("PROMPT_EMPTY", "router.saga")
    assert details.field_violations
    # The run was admitted (the runtime leaves the empty prompt to the router)…
    assert [e.WhichOneof("event") for e in events] == ["accepted", "step_started"]
    # …and its record says why it failed.
    record = execution_row(stack, execution_id)
    assert (record["status"], record["error_reason"]) == ("FAILED", "PROMPT_EMPTY")


async def test_appending_to_the_ledger_changes_the_commit_of_later_runs(tmp_path: Path) -> None:
    async with stack_for(tmp_path, ["auth", "runtime"], config=CONFIG) as stack:
        before = await first_event(stack, chat_request(new_execution_id(), prompt="Hi"))
        assert before.accepted.ledger_commit_hash == chain_head(demo.TRANSACTIONS)

        stack.stop("runtime")
        db = await open_database("", "saga", stack.data_dir, "runtime", MIGRATIONS)
        ledger = await Ledger.open(db)
        assert ledger.head() == before.accepted.ledger_commit_hash
        sale = Transaction("demo", "2024-03-01", "NVDA", "sell", 5_000_000, 790_000_000, "USD")
        head = await ledger.append(sale)
        await db.close()

        await stack.start_all(["runtime"])
        after = await first_event(stack, chat_request(new_execution_id(), prompt="Hi"))
        assert after.accepted.ledger_commit_hash == head
        assert head == chain_head([*demo.TRANSACTIONS, sale]) != before.accepted.ledger_commit_hash
        # The pack did not change: only the ledger moved.
        assert after.accepted.pricing_pack_id == before.accepted.pricing_pack_id


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_the_runtime_runs_on_postgresql(backend: Backend, tmp_path: Path) -> None:
    async with stack_for(
        tmp_path, ["auth", "optimizer", "router", "runtime"], config=CONFIG, **backend.env()
    ) as stack:
        execution_id = new_execution_id()
        events = await run(stack, chat_request(execution_id, prompt="Say hello."))
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[:2] == ["accepted", "step_started"]
        assert kinds[-2:] == ["step_completed", "completed"]
        text = "".join(e.token.text for e in events if e.HasField("token"))
        assert len(text.split()) == TOKENS
        accepted, completed = events[0].accepted, events[-1].completed
        assert accepted.ledger_commit_hash == chain_head(demo.TRANSACTIONS)
        assert not (stack.data_dir / "runtime.db").exists()

        db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
        try:
            [pack_id] = await db.fetch("SELECT pack_id FROM packs WHERE status = 'FRESH'")
            assert accepted.pricing_pack_id == pack_id["pack_id"]
            record = await db.fetchrow(
                "SELECT * FROM executions WHERE execution_id = $1", execution_id
            )
            assert record is not None
            assert (record["status"], record["user_id"], record["cost_micro_usd"]) == (
                "SUCCEEDED",
                "usr_test",
                completed.cost_micro_usd,
            )
            assert await db.fetchval("SELECT COUNT(*) FROM replicas") == 1

            # A restart finds the same ledger and pack (nothing seeded twice), and a clean
            # stop gave up the replica's lease.
            stack.stop("runtime")
            assert await db.fetchval("SELECT COUNT(*) FROM replicas") == 0
            await stack.start_all(["runtime"])
            again = await first_event(stack, chat_request(new_execution_id(), prompt="Hi"))
            assert (again.accepted.ledger_commit_hash, again.accepted.pricing_pack_id) == (
                accepted.ledger_commit_hash,
                accepted.pricing_pack_id,
            )
            assert await db.fetchval("SELECT COUNT(*) FROM ledger_transactions") == len(
                demo.TRANSACTIONS
            )
        finally:
            await db.close()
