"""Durable runs over real processes: a detached run whose runtime replica is killed (-9) in
the middle of its second LLM step continues on another replica (two replicas on one
PostgreSQL) or on the same one restarted (SQLite) — its first step is not run again (the fake
provider sees it once), its second starts again, the log stays gapless with a RunMoved marker,
a watcher through the gateway ends with Completed, and the usage ledger counts each provider
attempt once; a graceful stop leaves the run to the next life the same way. A run that was
not detached is INTERRUPTED, as before."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common.status import describe
from tests.conftest import PG_URL, drop_schemas
from tests.e2e.test_execute import bearer
from tests.e2e.test_executions import drain, get, get_after_restart, node
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, stack_for

PATTERN = """\
id: two_steps
description: An outline, then the text written from it (two LLM steps, one after the other).
requires_pack: false
inputs:
  topic:
    type: string
    required: true
    max_length: 200
steps:
  - id: outline
    capability: llm.complete
    args:
      prompt: "OUTLINE {{inputs.topic}}"
  - id: essay
    capability: llm.complete
    args:
      prompt: "ESSAY from {{state.outline.text}}"
outputs:
  outline: "{{state.outline.text}}"
  essay: "{{state.essay.text}}"
"""

OUTLINE_TOKENS, CUT_TOKENS, ESSAY_TOKENS = 3, 400, 6


def two_steps(topic: str, *, detach: bool) -> execution_pb2.ExecuteRequest:
    inputs = struct_pb2.Struct()
    inputs.update({"topic": topic})
    request = execution_pb2.ExecuteRequest(pattern_id="two_steps", inputs=inputs)
    request.options.detach_on_disconnect = detach
    return request


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    """One provider: the outline is quick, the first essay attempt slow (the replica is
    killed during it), the second quick."""
    async with FakeProviders() as fake:
        fake.script(
            "ollama",
            Script(tokens=OUTLINE_TOKENS),
            Script(tokens=CUT_TOKENS, interval=0.05),
            Script(tokens=ESSAY_TOKENS),
        )
        yield fake


def settings(tmp_path: Path, fake: FakeProviders) -> tuple[str, dict[str, str]]:
    patterns = tmp_path / "patterns"
    patterns.mkdir()
    (patterns / "two_steps.yaml").write_text(PATTERN)
    config = provider_toml("only", fake, "ollama", max_retries=0)
    # A short lease, so a replica that died is noticed within a few seconds.
    return config, {
        "SAGA_RUNTIME__PATTERNS_DIR": str(patterns),
        "SAGA_RUNTIME__REPLICA_LEASE_SECONDS": "3",
    }


@dataclass
class Watcher:
    """A client following a run through the gateway; when its watch ends UNAVAILABLE (the
    replica it read from died) it watches again after the last sequence it received."""

    stack: Stack
    key: str
    execution_id: str
    events: list[execution_pb2.WatchExecutionResponse] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)
    """The ErrorInfo reason of each watch that ended UNAVAILABLE ("" without one)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        after = 0
        while True:
            async with self.stack.gateway_channel() as ch:
                try:
                    async for event in execution_pb2_grpc.ExecutionServiceStub(ch).WatchExecution(
                        execution_pb2.WatchExecutionRequest(
                            execution_id=self.execution_id, after_sequence=after
                        ),
                        metadata=bearer(self.key),
                        timeout=60,
                    ):
                        self.events.append(event)
                        after = event.sequence
                        self.changed.set()
                    return
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or len(self.cuts) > 50:
                        raise
                    self.cuts.append(describe(error).reason)
            await asyncio.sleep(0.2)

    async def essay_streaming(self) -> None:
        """Wait until the watcher has received text of the second step."""
        while not any(e.token.step_id == "essay" for e in self.events):
            self.changed.clear()
            await self.changed.wait()


async def watched_detached_run(stack: Stack, key: str) -> tuple[Watcher, asyncio.Future[None]]:
    """Start a detached run and go away at once, then follow it with a Watcher until its
    second step streams (the moment to kill its replica): the watcher, and its task."""
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            two_steps("durable runs", detach=True), metadata=bearer(key), timeout=60
        )
        accepted = await call.read()
        call.cancel()
    watcher = Watcher(stack, key, accepted.accepted.execution_id)
    watching = asyncio.ensure_future(watcher.run())
    await asyncio.wait_for(watcher.essay_streaming(), 60)
    return watcher, watching


def check_moved_run(
    events: list[execution_pb2.WatchExecutionResponse], replica: str, from_replica: str
) -> None:
    """One coherent run: gapless, one marker, the outline reused, the essay started again."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "completed"
    (moved,) = (e.run_moved for e in events if e.WhichOneof("event") == "run_moved")
    assert (moved.replica, moved.from_replica, moved.moves) == (replica, from_replica, 1)
    assert (list(moved.reused_step_ids), list(moved.restarted_step_ids)) == (
        ["outline"],
        ["essay"],
    )
    marker = kinds.index("run_moved")
    assert moved.resumed_after_sequence == events[marker].sequence - 1
    started = [e.step_started.step_id for e in events if e.WhichOneof("event") == "step_started"]
    assert started == ["outline", "essay", "essay"]  # the outline ran once
    after = events[marker + 1 :]
    assert "".join(e.token.text for e in after if e.token.step_id == "essay") == answer_text(
        ESSAY_TOKENS
    )
    completed = events[-1].completed
    assert json_format.MessageToDict(completed.outputs) == {
        "outline": answer_text(OUTLINE_TOKENS),
        "essay": answer_text(ESSAY_TOKENS),
    }


def check_provider_calls(fake: FakeProviders) -> None:
    """The outline was asked for once; the essay twice (cut, then whole)."""
    prompts = [str(seen.body) for seen in fake.requests("ollama")]
    assert sum("OUTLINE" in p for p in prompts) == 1
    assert sum("ESSAY" in p for p in prompts) == 2
    cut = [s for s in fake.requests("ollama") if "ESSAY" in str(s.body) and not s.completed]
    assert len(cut) == 1


async def ledger_calls(stack: Stack, key: str, expected: int) -> int:
    """The calls the usage ledger counts for the key's user, once it has `expected` (the
    router's outbox ships outcomes in the background: bounded poll)."""
    async with stack.gateway_channel() as ch:
        usage = usage_pb2_grpc.UsageServiceStub(ch)
        for _ in range(150):
            reply = await usage.GetUsage(
                usage_pb2.GetUsageRequest(), metadata=bearer(key), timeout=10
            )
            if reply.totals.calls >= expected:
                break
            await asyncio.sleep(0.1)
    return int(reply.totals.calls)


async def test_a_killed_replicas_detached_run_completes_on_the_other_one(
    tmp_path: Path, fake: FakeProviders
) -> None:
    namespace = f"t{secrets.token_hex(6)}"
    config, env = settings(tmp_path, fake)
    try:
        async with stack_for(
            tmp_path,
            config=config,
            replicas={"runtime": 2},
            SAGA_STORAGE__URL=PG_URL,
            SAGA_STORAGE__NAMESPACE=namespace,
            **env,
        ) as s:
            key = s.admin_key()
            watcher, watching = await watched_detached_run(s, key)
            execution_id = watcher.execution_id
            # A second watcher: the gateway balances watches over both replicas, so one of
            # them may read from the victim's memory and the other from the database.
            other = Watcher(s, key, execution_id)
            other_watching = asyncio.ensure_future(other.run())
            await asyncio.wait_for(other.essay_streaming(), 60)
            running = await replica_running(namespace, execution_id)
            names = {s.replica_id(n): n for n in ("runtime", "runtime-2")}
            victim = names[running]
            (survivor,) = (r for r, n in names.items() if n != victim)
            s.processes[victim].kill()
            s.processes[victim].wait()
            await asyncio.wait_for(asyncio.gather(watching, other_watching), 60)
            check_moved_run(watcher.events, survivor, running)
            assert [e.SerializeToString(deterministic=True) for e in other.events] == [
                e.SerializeToString(deterministic=True) for e in watcher.events
            ]
            check_provider_calls(fake)
            record = await get(s, execution_id, key)
            assert record.status == records_pb2.EXECUTION_STATUS_SUCCEEDED
            # Every provider attempt is in the ledger once: the cut one, and no other twice.
            attempts = len(fake.requests("ollama"))
            assert await ledger_calls(s, key, attempts) == attempts
    finally:
        await drop_schemas(namespace)


async def replica_running(namespace: str, execution_id: str) -> str:
    """Which replica the database says runs the execution."""
    connection = await asyncpg.connect(PG_URL)
    try:
        value = await connection.fetchval(
            f'SELECT replica_id FROM "{namespace}_runtime".executions WHERE execution_id = $1',  # noqa: S608 (the test's own schema name)
            execution_id,
        )
    finally:
        await connection.close()
    return str(value)


@pytest.mark.parametrize("stop", ["kill", "sigterm"])
async def test_on_sqlite_a_restarted_runtime_resumes_its_detached_run(
    tmp_path: Path, fake: FakeProviders, stop: str
) -> None:
    config, env = settings(tmp_path, fake)
    async with stack_for(tmp_path, config=config, **env) as s:
        key = s.admin_key()
        watcher, watching = await watched_detached_run(s, key)
        if stop == "kill":
            s.processes["runtime"].kill()
            s.processes["runtime"].wait()
        else:  # a graceful stop: the grace passes, the run is not over; it is left RUNNING
            assert s.stop("runtime") == 0
        s.start("runtime")  # the same replica: it claims its previous life's detached run
        await s.wait_serving("runtime")
        await asyncio.wait_for(watching, 60)
        replica = s.replica_id("runtime")
        check_moved_run(watcher.events, replica, replica)
        assert watcher.cuts  # its watch was on the stopped process: UNAVAILABLE, then again
        check_provider_calls(fake)
        record = await get(s, watcher.execution_id, key)
        assert record.status == records_pb2.EXECUTION_STATUS_SUCCEEDED
        # The Node client replays the moved run whole, its marker included.
        lines = await node(s, "watch.js", watcher.execution_id)
        assert [line["sequence"] for line in lines] == [str(e.sequence) for e in watcher.events]
        (moved,) = (line for line in lines if line["event"] == "run_moved")
        assert moved["run_moved"]["restarted_step_ids"] == ["essay"]  # type: ignore[index]
        assert lines[-1]["event"] == "completed"


async def test_a_run_that_was_not_detached_is_interrupted_when_its_replica_is_killed(
    tmp_path: Path, fake: FakeProviders
) -> None:
    config, env = settings(tmp_path, fake)
    async with stack_for(tmp_path, config=config, **env) as s:
        key = s.admin_key()
        async with s.gateway_channel() as ch:
            call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                two_steps("not durable", detach=False), metadata=bearer(key), timeout=60
            )
            accepted = await call.read()
            while (await call.read()).token.step_id != "essay":
                pass
            s.processes["runtime"].kill()
            s.processes["runtime"].wait()
            with pytest.raises(grpc.aio.AioRpcError):
                await drain(call)
        s.start("runtime")
        await s.wait_serving("runtime")
        record = await get_after_restart(s, accepted.accepted.execution_id, key)
        assert record.status == records_pb2.EXECUTION_STATUS_INTERRUPTED
        # Nothing ran it again: the essay was asked for once.
        assert sum("ESSAY" in str(seen.body) for seen in fake.requests("ollama")) == 1
