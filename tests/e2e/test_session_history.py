"""A session's conversation through the gateway, over real processes, with the LLM played by
a fake Ollama server (tests/fakes/providers.py) whose request bodies show what the provider
was sent: a `chat` in a session carries the session's earlier turns (each prompt, then its
answer) before its prompt; a `chat` in no session carries none; and the history keeps only
the newest turns within `runtime.session_history_max_tokens`; and a run in a session of
many stages reads only its newest ones, never the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from saga.gateway.v1 import execution_pb2_grpc
from services.common.database import open_database
from services.runtime.schema import MIGRATIONS
from services.runtime.session_root import HISTORY_STAGES
from services.runtime.sessions import SessionStore
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_resilience_gateway import fakes, provider_toml
from tests.e2e.test_sessions import create, execute_in, get, new_user
from tests.fakes.providers import FakeProviders, answer_text
from tests.harness import Stack, stack_for

ANSWER = answer_text(5)
"""What the fake answers every prompt (5 tokens: 15 characters, 4 estimated tokens)."""
BUDGET = 20
"""Estimated tokens of history: two turns of a 17-character prompt and ANSWER (9 each)."""


@dataclass
class Chats:
    stack: Stack
    fake: FakeProviders
    user: str

    def sent(self) -> list[list[dict[str, str]]]:
        """The messages of every provider request so far, in order."""
        return [r.body["messages"] for r in self.fake.requests("ollama")]


@pytest.fixture(scope="module")
async def chats(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chats]:
    async with fakes(1) as (fake,):
        config = provider_toml("local", fake, "ollama", credential="none", max_retries=0)
        env = {"SAGA_RUNTIME__SESSION_HISTORY_MAX_TOKENS": str(BUDGET)}
        async with stack_for(tmp_path_factory.mktemp("history"), config=config, **env) as stack:
            yield Chats(stack, fake, await new_user(stack))


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


async def completed(chats: Chats, session_id: str, prompt: str) -> None:
    events = await execute_in(chats.stack, session_id, chats.user, prompt)
    assert events[-1].WhichOneof("event") == "completed", events[-1]


async def test_a_second_chat_in_a_session_carries_the_first_turn(chats: Chats) -> None:
    chats.fake.reset()
    session_id = await create(chats.stack, chats.user, "history")
    await completed(chats, session_id, "what is a saga?")
    await completed(chats, session_id, "and a pattern?")
    first, second = chats.sent()
    assert first == [user("what is a saga?")]
    assert second == [user("what is a saga?"), assistant(ANSWER), user("and a pattern?")]


async def test_a_chat_in_no_session_carries_no_history(chats: Chats) -> None:
    chats.fake.reset()
    session_id = await create(chats.stack, chats.user, "elsewhere")
    await completed(chats, session_id, "remember this")
    async with chats.stack.gateway_channel() as ch:
        stub = execution_pb2_grpc.ExecutionServiceStub(ch)
        events = [
            e
            async for e in stub.Execute(
                chat("a fresh start"), metadata=bearer(chats.user), timeout=60
            )
        ]
    assert events[-1].WhichOneof("event") == "completed"
    assert chats.sent()[-1] == [user("a fresh start")]


async def test_the_budget_drops_the_oldest_turns(chats: Chats) -> None:
    chats.fake.reset()
    session_id = await create(chats.stack, chats.user, "long")
    prompts = [f"question number {n}" for n in range(1, 5)]  # 17 characters: 5 tokens
    for prompt in prompts:
        await completed(chats, session_id, prompt)
    # Each turn is 5 + 4 = 9 estimated tokens, so 20 hold the newest two.
    assert chats.sent()[-1] == [
        user(prompts[1]),
        assistant(ANSWER),
        user(prompts[2]),
        assistant(ANSWER),
        user(prompts[3]),
    ]


async def test_a_long_session_is_read_from_its_newest_stages_only(chats: Chats) -> None:
    chats.fake.reset()
    session_id = await create(chats.stack, chats.user, "very long")
    owner = (await get(chats.stack, session_id, chats.user)).session.user_id
    db = await open_database("", "", chats.stack.data_dir, "runtime", MIGRATIONS)
    try:
        # The oldest stage cannot be decoded: a run that read the whole session would fail on
        # it, so the run completing shows the read stopped short of it.
        await db.execute(
            "INSERT INTO session_stages (session_id, execution_id, pattern_id, outputs, "
            "started_at_us, completed_at_us, inputs) VALUES ($1, 'exe_0', 'chat', 'not json', "
            "1, 1, '{}')",
            session_id,
        )
        store = SessionStore(db)
        for n in range(1, HISTORY_STAGES + 51):
            stage = await store.append(
                owner, session_id, f"exe_{n}", "chat", {"text": f"answer {n:03}"}, n,
                {"prompt": f"question {n:03}"},
            )  # fmt: skip
            assert stage is not None
    finally:
        await db.close()
    await completed(chats, session_id, "and the newest?")
    # Each stored turn is 3 + 3 estimated tokens: 20 hold the newest three, in order.
    last = HISTORY_STAGES + 50
    assert chats.sent()[-1] == [
        user(f"question {last - 2:03}"),
        assistant(f"answer {last - 2:03}"),
        user(f"question {last - 1:03}"),
        assistant(f"answer {last - 1:03}"),
        user(f"question {last:03}"),
        assistant(f"answer {last:03}"),
        user("and the newest?"),
    ]
