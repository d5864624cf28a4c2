"""Execution records through the gateway over all six real processes: every run is a record
with its event log; GetExecution and ListExecutions show the caller's own (another user's is
NOT_FOUND); WatchExecution replays a finished run from the database and follows a live one
from where the client asks, with no gap and no duplicate, and ends the way the run ended."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import account_pb2, account_pb2_grpc, execution_pb2, execution_pb2_grpc
from services.common.status import describe
from tests.conftest import Backend
from tests.e2e.test_budgets import new_user
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.harness import ROOT, Stack, stack_for


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(tmp_path_factory.mktemp("executions")) as s:
        yield s


async def execute(
    stack: Stack, request: execution_pb2.ExecuteRequest, key: str
) -> tuple[list[execution_pb2.ExecuteResponse], grpc.aio.AioRpcError | None]:
    """Every event of one Execute and the error it ended with (None: it completed)."""
    events: list[execution_pb2.ExecuteResponse] = []
    async with stack.gateway_channel() as ch:
        try:
            async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                request, metadata=bearer(key), timeout=60
            ):
                events.append(event)
        except grpc.aio.AioRpcError as error:
            return events, error
    return events, None


async def watch(
    stack: Stack, execution_id: str, after: int, key: str
) -> tuple[list[execution_pb2.WatchExecutionResponse], grpc.aio.AioRpcError | None]:
    events: list[execution_pb2.WatchExecutionResponse] = []
    async with stack.gateway_channel() as ch:
        try:
            async for event in execution_pb2_grpc.ExecutionServiceStub(ch).WatchExecution(
                execution_pb2.WatchExecutionRequest(
                    execution_id=execution_id, after_sequence=after
                ),
                metadata=bearer(key),
                timeout=60,
            ):
                events.append(event)
        except grpc.aio.AioRpcError as error:
            return events, error
    return events, None


async def drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    """Read `call` to its end (raises its error)."""
    while await call.read() is not grpc.aio.EOF:
        pass


def wire(events: list[execution_pb2.ExecuteResponse]) -> list[bytes]:
    # Deterministic: a Struct is a map, whose entries protobuf may write in any order; the
    # sorted form compares what the events say, byte for byte.
    return [e.SerializeToString(deterministic=True) for e in events]


async def get(stack: Stack, execution_id: str, key: str) -> records_pb2.Execution:
    async with stack.gateway_channel() as ch:
        reply = await execution_pb2_grpc.ExecutionServiceStub(ch).GetExecution(
            execution_pb2.GetExecutionRequest(execution_id=execution_id),
            metadata=bearer(key),
            timeout=10,
        )
    return reply.execution


async def get_after_restart(stack: Stack, execution_id: str, key: str) -> records_pb2.Execution:
    """`get`, once the gateway has reconnected to a restarted runtime (UNAVAILABLE until
    then, which a client retries)."""
    for _ in range(50):
        try:
            return await get(stack, execution_id, key)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.2)
    return await get(stack, execution_id, key)


async def listed(stack: Stack, key: str, **query: object) -> execution_pb2.ListExecutionsResponse:
    async with stack.gateway_channel() as ch:
        reply: execution_pb2.ListExecutionsResponse = await execution_pb2_grpc.ExecutionServiceStub(
            ch
        ).ListExecutions(
            execution_pb2.ListExecutionsRequest(**query),  # type: ignore[arg-type]
            metadata=bearer(key),
            timeout=10,
        )
    return reply


async def test_a_finished_run_is_recorded_and_replayed_whole(stack: Stack) -> None:
    key = stack.admin_key()
    events, error = await execute(stack, chat("What is a saga?"), key)
    assert error is None
    execution_id = events[0].accepted.execution_id
    record = await get(stack, execution_id, key)
    completed = events[-1].completed
    assert record.status == records_pb2.EXECUTION_STATUS_SUCCEEDED
    assert (record.pattern_id, record.usage.output_tokens, record.cost_micro_usd) == (
        "chat",
        completed.usage.output_tokens,
        completed.cost_micro_usd,
    )
    assert record.completed_at.seconds >= record.created_at.seconds > 0
    # The replay is the stream, byte for byte, from any point; past the end it is empty.
    replayed, end = await watch(stack, execution_id, 0, key)
    assert end is None
    assert wire(replayed) == wire(events)  # type: ignore[arg-type]
    tail, end = await watch(stack, execution_id, 3, key)
    assert (wire(tail), end) == (wire(events[3:]), None)  # type: ignore[arg-type]
    assert await watch(stack, execution_id, len(events), key) == ([], None)


async def test_a_watcher_that_joins_mid_run_gets_every_event_once(stack: Stack) -> None:
    key = stack.admin_key()
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            chat("a long answer, please " * 3), metadata=bearer(key), timeout=60
        )
        first = [await call.read() for _ in range(4)]  # accepted, step_started, two tokens
        execution_id = first[0].accepted.execution_id
        # Joining now, after the second event: the seam is inside the live run.
        watcher = asyncio.ensure_future(watch(stack, execution_id, 2, key))
        rest = []
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
    events = first + rest
    assert events[-1].WhichOneof("event") == "completed"
    watched, end = await watcher
    assert end is None
    assert wire(watched) == wire(events[2:])  # type: ignore[arg-type]
    assert [e.sequence for e in watched] == list(range(3, len(events) + 1))


async def test_a_failed_run_is_watched_to_the_same_error(stack: Stack) -> None:
    key = stack.admin_key()
    request = chat("too dear")
    request.options.max_cost_micro_usd = 1
    events, error = await execute(stack, request, key)
    assert error is not None
    execution_id = events[0].accepted.execution_id
    record = await get(stack, execution_id, key)
    assert record.status == records_pb2.EXECUTION_STATUS_FAILED
    assert record.error_reason == describe(error).reason
    replayed, end = await watch(stack, execution_id, 0, key)
    assert wire(replayed) == wire(events)  # type: ignore[arg-type]
    assert end is not None
    assert end.code() == error.code()
    assert describe(end) == describe(error)


async def test_a_cancelled_run_is_watched_to_cancelled(stack: Stack) -> None:
    key = stack.admin_key()
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            chat("cancel me " * 5), metadata=bearer(key), timeout=60
        )
        accepted = await call.read()
        call.cancel()
    execution_id = accepted.accepted.execution_id
    for _ in range(100):  # the record is settled in the background of the cancellation
        record = await get(stack, execution_id, key)
        if record.status != records_pb2.EXECUTION_STATUS_RUNNING:
            break
        await asyncio.sleep(0.05)
    assert record.status == records_pb2.EXECUTION_STATUS_CANCELLED
    replayed, end = await watch(stack, execution_id, 0, key)
    assert replayed[0].WhichOneof("event") == "accepted"
    assert end is not None
    assert end.code() == grpc.StatusCode.CANCELLED
    assert describe(end).reason == "EXECUTION_CANCELLED"


async def test_another_users_execution_does_not_exist_for_them(stack: Stack) -> None:
    _, alice = await new_user(stack)
    _, bob = await new_user(stack)
    events, _ = await execute(stack, chat("mine"), alice)
    execution_id = events[0].accepted.execution_id
    assert (await get(stack, execution_id, alice)).execution_id == execution_id
    for call in (get(stack, execution_id, bob), watch(stack, execution_id, 0, bob)):
        try:
            result = await call
        except grpc.aio.AioRpcError as error:
            failure = error
        else:
            assert isinstance(result, tuple)
            assert result[0] == []
            failure = result[1]  # type: ignore[assignment]
        assert failure is not None
        assert failure.code() == grpc.StatusCode.NOT_FOUND
        assert describe(failure).reason == "EXECUTION_NOT_FOUND"
    # Exactly as absent as an id that never existed.
    never = await _not_found(stack, "exe_" + "0" * 32, bob)
    theirs = await _not_found(stack, execution_id, bob)
    assert (never.code(), describe(never).reason) == (theirs.code(), describe(theirs).reason)
    # Lists: each their own; the admin may ask for anyone's.
    assert [e.execution_id for e in (await listed(stack, bob)).executions] == []
    assert execution_id in [e.execution_id for e in (await listed(stack, alice)).executions]
    everyone = await listed(stack, stack.admin_key(), all_users=True, page_size=500)
    assert execution_id in [e.execution_id for e in everyone.executions]
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await listed(stack, bob, all_users=True)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _not_found(stack: Stack, execution_id: str, key: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await get(stack, execution_id, key)
    return error.value


async def test_lists_page_newest_first_with_filters_and_refuse_altered_tokens(
    stack: Stack,
) -> None:
    _, carol = await new_user(stack)
    ids = []
    for prompt in ("one", "two", "three"):
        events, _ = await execute(stack, chat(prompt), carol)
        ids.append(events[0].accepted.execution_id)
    failing = chat("dear")
    failing.options.max_cost_micro_usd = 1
    events, _ = await execute(stack, failing, carol)
    failed_id = events[0].accepted.execution_id
    first = await listed(stack, carol, page_size=2)
    assert [e.execution_id for e in first.executions] == [failed_id, ids[2]]
    second = await listed(stack, carol, page_size=2, page_token=first.next_page_token)
    assert [e.execution_id for e in second.executions] == [ids[1], ids[0]]
    assert second.next_page_token == ""
    succeeded = await listed(stack, carol, status=records_pb2.EXECUTION_STATUS_SUCCEEDED)
    assert [e.execution_id for e in succeeded.executions] == ids[::-1]
    assert (await listed(stack, carol, pattern_id="nope")).executions == []
    token = first.next_page_token
    for bad, query in (
        (token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], {}),
        ("not a token", {}),
        (token, {"status": records_pb2.EXECUTION_STATUS_SUCCEEDED}),  # another query's
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listed(stack, carol, page_size=2, page_token=bad, **query)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert describe(refused.value).reason == "PAGE_TOKEN_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await listed(stack, carol, page_size=-1)
    assert describe(negative.value).reason == "EXECUTION_QUERY_INVALID"


async def test_records_and_logs_survive_a_runtime_restart_on_each_backend(
    backend: Backend, tmp_path: Path
) -> None:
    async with stack_for(tmp_path, **backend.env()) as s:
        key = s.admin_key()
        events, error = await execute(s, chat("remember this"), key)
        assert error is None
        execution_id = events[0].accepted.execution_id
        s.stop("runtime")
        s.start("runtime")
        await s.wait_serving("runtime")
        # The live runs went with the old process: this replay is the database's. The
        # gateway reconnects to the new process within its reconnect backoff (UNAVAILABLE
        # until then, which a client retries).
        for _ in range(50):
            replayed, end = await watch(s, execution_id, 0, key)
            if end is None or end.code() != grpc.StatusCode.UNAVAILABLE:
                break
            await asyncio.sleep(0.2)
        assert (wire(replayed), end) == (wire(events), None)  # type: ignore[arg-type]
        record = await get(s, execution_id, key)
        assert record.status == records_pb2.EXECUTION_STATUS_SUCCEEDED
        listed_ids = [e.execution_id for e in (await listed(s, key)).executions]
        assert listed_ids == [execution_id]


async def test_a_run_whose_runtime_was_killed_is_interrupted_and_watched_to_that(
    tmp_path: Path,
) -> None:
    async with stack_for(tmp_path) as s:
        key = s.admin_key()
        async with s.gateway_channel() as ch:
            call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                chat("this will not finish " * 4), metadata=bearer(key), timeout=60
            )
            seen = [await call.read() for _ in range(4)]
            await asyncio.sleep(0.2)  # past the log's batch window: what was sent is durable
            s.processes["runtime"].kill()
            s.processes["runtime"].wait()
            with pytest.raises(grpc.aio.AioRpcError):
                await drain(call)
        execution_id = seen[0].accepted.execution_id
        s.start("runtime")  # the same replica: it interrupts its previous life's runs
        await s.wait_serving("runtime")
        record = await get_after_restart(s, execution_id, key)
        assert record.status == records_pb2.EXECUTION_STATUS_INTERRUPTED
        replayed, end = await watch(s, execution_id, 0, key)
        assert wire(replayed)[:4] == wire(seen)  # type: ignore[arg-type]
        assert end is not None
        assert (end.code(), describe(end).reason) == (
            grpc.StatusCode.ABORTED,
            "EXECUTION_INTERRUPTED",
        )


def text_of(events: list[execution_pb2.ExecuteResponse]) -> str:
    return "".join(e.token.text for e in events if e.WhichOneof("event") == "token")


async def test_a_detached_run_cut_after_two_tokens_resumes_to_the_whole_answer(
    stack: Stack,
) -> None:
    key = stack.admin_key()
    prompt = "tell the whole story, detached"
    whole, error = await execute(stack, chat(prompt), key)
    assert error is None
    request = chat(prompt)
    request.options.detach_on_disconnect = True
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(key), timeout=60
        )
        seen = [await call.read() for _ in range(4)]  # accepted, step_started, two tokens
        call.cancel()  # the client goes away
    assert [e.WhichOneof("event") for e in seen][2:] == ["token", "token"]
    execution_id = seen[0].accepted.execution_id
    rest, end = await watch(stack, execution_id, seen[-1].sequence, key)
    assert end is None
    events = seen + rest  # type: ignore[operator]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].WhichOneof("event") == "completed"
    # The simulator is deterministic: the resumed run said exactly what a full run says.
    assert text_of(events) == text_of(whole)
    assert (await get(stack, execution_id, key)).status == records_pb2.EXECUTION_STATUS_SUCCEEDED


async def test_an_idempotent_retry_attaches_to_the_first_run(stack: Stack) -> None:
    _, dana = await new_user(stack)
    request = chat("only once, please")
    request.options.idempotency_key = "order-42"
    async with stack.gateway_channel() as ch:
        first_call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(dana), timeout=60
        )
        head = [await first_call.read() for _ in range(3)]
        # A retry while the first still runs follows it live; one after it ended replays it.
        live_retry = asyncio.ensure_future(execute(stack, request, dana))
        tail = []
        while (event := await first_call.read()) is not grpc.aio.EOF:
            tail.append(event)
    first = head + tail
    during, error = await live_retry
    assert error is None
    after, error = await execute(stack, request, dana)
    assert error is None
    assert wire(during) == wire(first)
    assert wire(after) == wire(first)
    runs = (await listed(stack, dana)).executions
    assert [r.execution_id for r in runs] == [first[0].accepted.execution_id]
    # The same key for another request is refused, naming the first run.
    other = chat("something else")
    other.options.idempotency_key = "order-42"
    _, refused = await execute(stack, other, dana)
    assert refused is not None
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = describe(refused)
    assert (details.reason, details.metadata) == (
        "IDEMPOTENCY_KEY_REUSED",
        {"executionId": first[0].accepted.execution_id},
    )
    # Keys are per user: another user's same key is a run of their own.
    mine, error = await execute(stack, request, stack.admin_key())
    assert error is None
    assert mine[0].accepted.execution_id != first[0].accepted.execution_id


async def test_a_retry_of_a_cancelled_run_starts_a_new_one(stack: Stack) -> None:
    _, erin = await new_user(stack)
    request = chat("cancelled first")
    request.options.idempotency_key = "try-again"
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(erin), timeout=60
        )
        first = await call.read()
        call.cancel()
    first_id = first.accepted.execution_id
    for _ in range(100):
        if (await get(stack, first_id, erin)).status != records_pb2.EXECUTION_STATUS_RUNNING:
            break
        await asyncio.sleep(0.05)
    again, error = await execute(stack, request, erin)
    assert error is None
    assert again[0].accepted.execution_id != first_id
    assert again[-1].WhichOneof("event") == "completed"


async def node(
    stack: Stack, script: str, *args: str, key: str = "", status: int = 0
) -> list[dict[str, Any]]:
    """The JSON lines one of the Node clients printed, as `key` (default: the admin's); it
    must exit with `status`."""
    env = {
        **os.environ,
        "SAGA_GATEWAY": stack.target("gateway"),
        "SAGA_API_KEY": key or stack.admin_key(),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", str(ROOT / "clients" / "node" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == status, result.stderr + result.stdout
    return [json.loads(line) for line in result.stdout.splitlines()]


def node_text(lines: list[dict[str, Any]]) -> str:
    return "".join(line["token"]["text"] for line in lines if line["event"] == "token")


async def test_node_detaches_then_resumes_to_the_whole_answer(stack: Stack) -> None:
    prompt = "prompt=a story told twice from Node"
    whole = await node(stack, "execute.js", "chat", prompt)
    cut = await node(stack, "execute.js", "--detach", "--stop-after", "4", "chat", prompt)
    assert [line["event"] for line in cut] == ["accepted", "step_started", "token", "token"]
    execution_id = str(cut[0]["accepted"]["execution_id"])  # type: ignore[index]
    rest = await node(stack, "watch.js", execution_id, str(cut[-1]["sequence"]))
    assert rest[-1]["event"] == "completed"
    sequences = [int(str(line["sequence"])) for line in cut + rest]
    assert sequences == list(range(1, len(sequences) + 1))
    assert node_text(cut + rest) == node_text(whole)


async def test_a_client_that_goes_away_cancels_the_provider_call(tmp_path: Path) -> None:
    async with FakeProviders() as fake:
        fake.defaults["ollama"] = Script(tokens=200, interval=0.05)
        config = provider_toml("slow", fake, "ollama", max_retries=0)
        async with stack_for(tmp_path, config=config) as s:
            async with s.gateway_channel() as ch:
                call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                    chat("a long one"), metadata=bearer(s.admin_key()), timeout=60
                )
                kinds = [(await call.read()).WhichOneof("event") for _ in range(4)]
                call.cancel()
            assert kinds[2:] == ["token", "token"]
            for _ in range(100):  # the cancellation crosses three hops to the provider
                (seen,) = fake.requests("ollama")
                if seen.disconnected:
                    break
                await asyncio.sleep(0.05)
            assert seen.disconnected
            assert not seen.completed
            sent = seen.tokens
            await asyncio.sleep(0.3)
            assert fake.tokens_produced("ollama") == sent < 200  # nothing more was asked for


async def scoped_key(stack: Stack, *scopes: str) -> str:
    async with stack.gateway_channel() as ch:
        made = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="scoped", scopes=list(scopes)),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )
    return str(made.api_key)


async def test_an_auditors_key_reads_every_run_and_a_usage_key_reads_none(stack: Stack) -> None:
    _, frank = await new_user(stack)
    events, _ = await execute(stack, chat("audit me"), frank)
    execution_id = events[0].accepted.execution_id
    auditor = await scoped_key(stack, "usage:read:all")
    assert (await get(stack, execution_id, auditor)).execution_id == execution_id
    assert wire(events) == wire((await watch(stack, execution_id, 0, auditor))[0])  # type: ignore[arg-type]
    narrow = await scoped_key(stack, "usage:read")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await get(stack, execution_id, narrow)
    assert (denied.value.code(), describe(denied.value).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_MISSING",
    )
