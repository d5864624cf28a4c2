"""The gateway's answer cache: a hit within the TTL calls nothing (the freshness gate's hot
path), concurrent misses share one call, failures are not kept."""

from __future__ import annotations

import asyncio

import pytest

from services.common.ttl_cache import TtlCache
from tests.clock import Clock


async def test_answers_are_reused_for_the_ttl_and_misses_share_one_call() -> None:
    clock = Clock()
    calls: list[str] = []
    gate = asyncio.Event()

    async def fetch(key: str) -> str:
        calls.append(key)
        await gate.wait()
        return key.upper()

    cache: TtlCache[str, str] = TtlCache("test", fetch, 1.0, clock)
    waiting = [asyncio.create_task(cache.get("a")) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["A", "A", "A"]
    assert await cache.get("a") == "A"
    assert calls == ["a"]
    clock.advance(1.0)
    assert await cache.get("a") == "A"
    assert calls == ["a", "a"]


async def test_a_failure_is_not_kept() -> None:
    answers = iter([RuntimeError("down"), "up"])

    async def fetch(key: str) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache: TtlCache[str, str] = TtlCache("test", fetch, 1.0, Clock())
    with pytest.raises(RuntimeError):
        await cache.get("k")
    assert await cache.get("k") == "up"
