"""GCRA at the edge: a burst, then the sustained rate, per key."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis

from services.gateway.limits import (
    CONCURRENCY_RETRY_SECONDS,
    Ask,
    Gcra,
    Limit,
    MemoryLimits,
    client_address,
)
from services.gateway.redis_limits import RedisLimits
from tests.clock import Clock


def test_burst_then_sustained_rate_per_key() -> None:
    gcra = Gcra(Limit(count=10, period=60, burst=3))  # one every 6 s, 3 at once
    assert [gcra.take("a", now=0) for _ in range(3)] == [0, 0, 0]
    wait = gcra.take("a", now=0)
    assert wait == 6.0
    assert gcra.take("b", now=0) == 0  # another caller is not affected
    assert gcra.take("a", now=5.9) > 0
    assert gcra.take("a", now=6.0) == 0
    assert gcra.take("a", now=6.0) > 0


def test_client_address() -> None:
    assert client_address("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert client_address("ipv6:[::1]:5555") == "::1"
    assert client_address("unix:/tmp/s") == "unix:/tmp/s"


# --- the Execute limits: one decision over rate, global rate and concurrency leases -------


THREE_PER_HOUR = Limit(3, 3600, 3)


def _ask(
    user: str = "u",
    *,
    rate: Limit | None = THREE_PER_HOUR,
    global_rate: Limit | None = None,
    concurrent: int = 0,
    lease: str = "l1",
) -> Ask:
    return Ask(f"user:{user}", rate, global_rate, f"user:{user}", concurrent, lease, 10.0)


async def test_rate_counts_only_admitted_asks_and_reports_what_is_left() -> None:
    clock = Clock()
    store = MemoryLimits(clock)
    verdicts = [(await store.decide(_ask()))[0] for _ in range(4)]
    assert [v.refused for v in verdicts] == ["", "", "", "requests"]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[3].retry_after == 1200.0  # one of three per hour comes back
    clock.advance(1200)
    assert (await store.decide(_ask()))[0].refused == ""


async def test_global_rate_spans_users_and_a_refusal_counts_for_no_one() -> None:
    store = MemoryLimits(Clock())
    shared = Limit(2, 3600, 2)
    assert (await store.decide(_ask("a", global_rate=shared)))[0].refused == ""
    assert (await store.decide(_ask("b", global_rate=shared)))[0].refused == ""
    refused = (await store.decide(_ask("c", global_rate=shared)))[0]
    assert (refused.refused, refused.remaining) == ("global", 3)  # c's own rate untouched


async def test_a_lease_holds_its_slot_until_released_or_expired() -> None:
    clock = Clock()
    store = MemoryLimits(clock)
    (first, leases) = await store.decide(_ask(concurrent=1, lease="l1", rate=None))
    assert first.refused == ""
    second = (await store.decide(_ask(concurrent=1, lease="l2", rate=None)))[0]
    assert (second.refused, second.retry_after) == ("concurrent", CONCURRENCY_RETRY_SECONDS)
    await leases.release("user:u", "l1")
    assert (await store.decide(_ask(concurrent=1, lease="l3", rate=None)))[0].refused == ""
    clock.advance(9)
    await store.renew("user:u", "l3", 10.0)
    clock.advance(9)  # renewed: still held
    assert (await store.decide(_ask(concurrent=1, lease="l4", rate=None)))[0].refused
    clock.advance(2)  # its holder stopped renewing (a crash): the slot frees itself
    assert (await store.decide(_ask(concurrent=1, lease="l5", rate=None)))[0].refused == ""


async def test_redis_decides_as_memory_does() -> None:
    """The Lua script and the Python arithmetic agree, ask for ask, on every path: admitted,
    refused by the slots, by the caller's rate and by the global rate (a real Redis)."""
    client = Redis(host="127.0.0.1", port=6379)
    store = RedisLimits(client, f"saga:unit:{secrets.token_hex(6)}:", None, 1.0)
    memory = MemoryLimits()
    shared = Limit(5, 3600, 5)
    asks = [_ask(concurrent=2, lease=f"l{i}", global_rate=shared) for i in range(3)]
    asks += [_ask(global_rate=shared) for _ in range(2)]  # the rate: 3 an hour
    asks += [_ask(user, global_rate=shared) for user in ("v", "w", "x")]  # global: 5 an hour
    try:
        verdicts = []
        for ask in asks:
            (remote, _), (local, _) = await store.decide(ask), await memory.decide(ask)
            assert (remote.refused, remote.remaining) == (local.refused, local.remaining)
            assert remote.reset == pytest.approx(local.reset, abs=1)
            assert remote.retry_after == pytest.approx(local.retry_after, abs=1)
            verdicts.append(remote.refused)
        assert verdicts == ["", "", "concurrent", "", "requests", "", "", "global"]
        await store.release("user:u", "l0")
        assert (await store.decide(_ask(concurrent=2, lease="l9", rate=None)))[0].refused == ""
    finally:
        await store.close()
