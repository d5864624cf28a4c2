"""Tokens streamed before a router crash are accounted: a router killed (SIGKILL) mid-stream
leaves its attempt's provisional record on disk, and the restarted router ships it to the
ledger as estimated — at least the text the caller was given, within the claim rule of
`services.router.attempts` of what the provider (a fake Ollama server that counts the
tokens it wrote) sent. A stream that ends normally is recorded once, from the provider's own
usage, its provisional record replaced."""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from saga.router.v1 import router_pb2_grpc
from services.common.tokens import estimate_tokens
from services.router.attempts import CLAIM_AHEAD_CHARS, STOPPED_REASON
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import new_execution_id, request
from tests.integration.test_router_resilience import mint_for

PROMPT = "tell me a long story about sagas"


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


def config(fakes: FakeProviders) -> str:
    return f"""
[[providers]]
name = "slow"
kind = "ollama"
model = "ollama-slow"
base_url = "{fakes.base_url("ollama")}"
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
"""


def ledger(data_dir: Path, user: str) -> list[dict[str, Any]]:
    """The optimizer's usage records of `user` (read from its SQLite file)."""
    with sqlite3.connect(data_dir / "optimizer.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT outcome_id, input_tokens, output_tokens, estimated, status, error_reason, "
            "cost_micro_usd FROM usage_records WHERE user_id = ?",
            (user,),
        ).fetchall()
    return [dict(r) for r in rows]


def provisional_rows(data_dir: Path) -> int:
    """Attempts held in flight in the router's database (none where no table holds them)."""
    with sqlite3.connect(data_dir / "router.db") as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox_attempts").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def wait_for(check: Any, within: float = 20.0) -> None:
    for _ in range(int(within / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met")


def reason(stack: Stack, channel: grpc.aio.Channel, user: str, timeout: float) -> Any:
    """A Reason call of `user`'s, pinned to the slow provider, as the runtime makes it."""
    exe = new_execution_id()
    req = request(exe, PROMPT, pinned_provider="slow")
    req.accounting.user_id = user
    return router_pb2_grpc.RouterServiceStub(channel).Reason(
        req, metadata=(("saga-context", mint_for(stack, exe, user)),), timeout=timeout
    )


async def read_until_killed(stack: Stack, stream: Any, seen: list[str]) -> None:
    """Read the stream's text into `seen`; once past the first claims, kill the router."""
    async for event in stream:
        if event.HasField("delta"):
            seen.append(event.delta.text)
        if len("".join(seen)) >= 150:
            stack.processes["router"].kill()
            stack.processes["router"].wait()


async def test_tokens_streamed_before_a_router_crash_reach_the_ledger(
    tmp_path: Path, fakes: FakeProviders
) -> None:
    user = "usr_crash_" + secrets.token_hex(4)
    async with stack_for(tmp_path, ["auth", "optimizer", "router"], config=config(fakes)) as stack:
        # A stream that ends normally: one record, the provider's usage, nothing left held.
        fakes.script("ollama", Script(tokens=12))
        async with stack.channel_as("runtime", "router") as ch:
            async for _ in reason(stack, ch, user, timeout=15):
                pass
        await wait_for(lambda: len(ledger(stack.data_dir, user)) == 1)
        (normal,) = ledger(stack.data_dir, user)
        assert (normal["output_tokens"], normal["estimated"]) == (12, 0)
        assert provisional_rows(stack.data_dir) == 0

        # A slow stream; the router is killed once the caller has read some of it.
        fakes.reset()
        fakes.script("ollama", Script(tokens=200, interval=0.05))
        seen: list[str] = []
        async with stack.channel_as("runtime", "router") as ch:
            stream = reason(stack, ch, user, timeout=30)
            with pytest.raises(grpc.aio.AioRpcError):
                await read_until_killed(stack, stream, seen)
        sent = fakes.tokens_produced("ollama")  # what the provider wrote before the crash
        assert seen
        assert sent < 200
        assert provisional_rows(stack.data_dir) == 1

        stack.start("router")
        await stack.wait_serving("router")
        await wait_for(lambda: len(ledger(stack.data_dir, user)) == 2)
        crashed = next(r for r in ledger(stack.data_dir, user) if r != normal)
        assert crashed["estimated"] == 1
        assert (crashed["status"], crashed["error_reason"]) == ("failed", STOPPED_REASON)
        # At least what the caller was given; at most the claim rule's margin over what the
        # provider wrote (the claim runs ahead of the text by 64 characters or a quarter).
        assert crashed["output_tokens"] >= estimate_tokens("".join(seen))
        written = len(answer_text(sent))
        most = math.ceil((written + max(CLAIM_AHEAD_CHARS, written // 4)) / 4)
        assert crashed["output_tokens"] <= most
        assert crashed["input_tokens"] == estimate_tokens(PROMPT)
        assert crashed["cost_micro_usd"] > 0
        assert provisional_rows(stack.data_dir) == 0
        # Restarted, it stays one record (never doubled).
        await asyncio.sleep(1.5)
        assert len(ledger(stack.data_dir, user)) == 2


async def test_an_attempt_is_held_before_its_request_leaves(
    tmp_path: Path, fakes: FakeProviders
) -> None:
    """The provider is called only once the attempt's provisional record is committed: a
    crash at any moment after the request left bills it. Here the router's database is
    locked by another connection — the provider hears nothing until the lock goes."""
    user = "usr_held_" + secrets.token_hex(4)
    async with stack_for(tmp_path, ["auth", "optimizer", "router"], config=config(fakes)) as stack:
        fakes.script("ollama", Script(tokens=8))
        blocker = sqlite3.connect(stack.data_dir / "router.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            async with stack.channel_as("runtime", "router") as ch:
                reading = asyncio.ensure_future(_events(reason(stack, ch, user, timeout=15)))
                await asyncio.sleep(1.0)
                assert fakes.requests("ollama") == []
                assert not reading.done()
                blocker.execute("COMMIT")
                events = await reading
        finally:
            blocker.close()
        assert len(fakes.requests("ollama")) == 1
        assert events[-1] == "final"
        await wait_for(lambda: len(ledger(stack.data_dir, user)) == 1)


async def _events(stream: Any) -> list[str]:
    return [event.WhichOneof("event") async for event in stream]
