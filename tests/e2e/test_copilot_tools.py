"""A tool round trip through the OpenAI-compatible edge on the `copilot` engine: the user's
Entra ID account linked by the admin, auth refreshing it at a fake Entra ID, the copilot
engine calling a fake Copilot endpoint with that token (OpenAI's wire format behind it), the
official `openai` SDK as the client — tools, the call's arguments, the tool result sent back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.test_budgets import new_key, new_user
from tests.e2e.test_execute import bearer
from tests.e2e.test_openai_tools import ASK, OSLO, WEATHER, calls
from tests.fakes.entra import FakeEntra, copilot_toml
from tests.fakes.providers import FakeProviders, answer_text
from tests.harness import stack_for


@pytest.fixture
async def entra() -> AsyncIterator[FakeEntra]:
    started = await FakeEntra().start()
    yield started
    await started.stop()


async def test_a_tool_round_trip_on_copilot(tmp_path: Path, entra: FakeEntra) -> None:
    fake = FakeProviders()
    # Copilot accepts exactly the access tokens the fake Entra ID has issued (a live view).
    fake.copilot_tokens = entra.issued_access_tokens  # type: ignore[assignment]
    await fake.start()
    try:
        async with stack_for(
            tmp_path, config=copilot_toml(fake.base_url("copilot"), entra, "max_retries = 0")
        ) as stack:
            user_id, session = await new_user(stack)
            key, _ = await new_key(stack, session)
            async with stack.gateway_channel() as ch:
                await admin_pb2_grpc.AdminServiceStub(ch).LinkProviderAccount(
                    admin_pb2.LinkProviderAccountRequest(
                        provider="copilot",
                        user_id=user_id,
                        refresh_token=entra.issue_refresh_token(),
                    ),
                    metadata=bearer(stack.admin_key()),
                    timeout=10,
                )
            base_url = f"http://127.0.0.1:{stack.ports['gateway'].http_port}/v1"
            async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
                fake.script("copilot", calls(OSLO))
                first = await sdk.chat.completions.create(
                    model="gpt-4o", messages=ASK, tools=[WEATHER]
                )
                assert first.choices[0].finish_reason == "tool_calls"
                [call] = first.choices[0].message.tool_calls or []
                assert json.loads(call.function.arguments) == {"city": "Oslo"}
                result: dict[str, Any] = {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": "rain",
                }
                second = await sdk.chat.completions.create(
                    model="gpt-4o",
                    messages=[*ASK, first.choices[0].message, result],
                    tools=[WEATHER],
                )
            assert second.choices[0].message.content == answer_text(5)
            first_sent, second_sent = (r for r in fake.requests("copilot"))
            assert first_sent.headers["Authorization"] == f"Bearer {entra.issued_access_tokens[0]}"
            assert first_sent.body["tools"][0]["function"]["name"] == "get_weather"
            assistant, tool = second_sent.body["messages"][-2:]
            assert assistant["tool_calls"][0]["id"] == call.id
            assert (tool["role"], tool["tool_call_id"], tool["content"]) == (
                "tool",
                call.id,
                "rain",
            )
    finally:
        await fake.stop()
