"""Per-provider limits: a bounded wait for a concurrency slot, RPM/TPM buckets that refuse
without waiting and correct the token estimate afterwards."""

from __future__ import annotations

import asyncio

import pytest

from services.common.config import ProviderConfig
from services.router.limits import LimitReached, ProviderLimits, TokenBucket
from tests.clock import Clock


def provider(**limits: int) -> ProviderConfig:
    return ProviderConfig(name="p", kind="sim", model="m", **limits)  # type: ignore[arg-type]


def test_a_bucket_refuses_beyond_its_minute_and_says_when() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)  # one a second
    for _ in range(60):
        assert bucket.take(1) == 0
    assert bucket.take(1) == pytest.approx(1.0)
    clock.now += 1
    assert bucket.take(1) == 0


def test_one_call_larger_than_the_bucket_passes_a_full_bucket() -> None:
    bucket = TokenBucket(100, Clock())
    assert bucket.take(5000) == 0
    assert bucket.take(1) > 0


async def test_max_concurrency_waits_briefly_then_refuses() -> None:
    limits = ProviderLimits(provider(max_concurrency=1), wait_seconds=0.05)
    first = await limits.acquire(10)
    with pytest.raises(LimitReached) as refused:
        await limits.acquire(10)
    assert "max_concurrency" in refused.value.message
    assert refused.value.retry_after > 0
    # A slot freed while waiting is taken.
    waiting = asyncio.create_task(limits.acquire(10))
    await asyncio.sleep(0)
    first.release()
    second = await waiting
    assert limits.in_flight == 1
    second.release()
    assert limits.in_flight == 0


async def test_rpm_refuses_the_request_over_the_minute() -> None:
    clock = Clock()
    limits = ProviderLimits(provider(rpm=2), wait_seconds=0, clock=clock)
    (await limits.acquire(1)).release()
    (await limits.acquire(1)).release()
    with pytest.raises(LimitReached) as refused:
        await limits.acquire(1)
    assert refused.value.retry_after == pytest.approx(30.0)
    clock.now += 30
    (await limits.acquire(1)).release()


async def test_unused_tokens_come_back_to_the_tpm_bucket() -> None:
    clock = Clock()
    limits = ProviderLimits(provider(tpm=1000), wait_seconds=0, clock=clock)
    lease = await limits.acquire(900)  # prompt + max_tokens
    with pytest.raises(LimitReached):
        await limits.acquire(900)
    lease.release(used_tokens=100)  # the answer was short
    (await limits.acquire(900)).release(900)


async def test_a_refused_call_takes_nothing() -> None:
    clock = Clock()
    limits = ProviderLimits(provider(rpm=5, tpm=100, max_concurrency=1), 0, clock=clock)
    held = await limits.acquire(50)
    with pytest.raises(LimitReached):
        await limits.acquire(50)  # no slot: the request and its tokens are given back
    held.release(50)
    (await limits.acquire(50)).release(50)  # would fail had the refused call kept tokens
