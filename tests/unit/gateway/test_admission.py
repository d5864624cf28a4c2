"""What an Execute asks of the limits: the configured defaults, a key's own overrides, and
the benchmark profile that lifts the defaults only."""

from __future__ import annotations

import pytest

from services.common.config import LimitsConfig
from services.gateway.admission import Admission, RateLimited
from services.gateway.authn import Principal
from services.gateway.limits import Limit, MemoryLimits
from tests.clock import Clock


def principal(rpm: int = 0, concurrent: int = 0) -> Principal:
    return Principal("usr_a", "default", frozenset({"execute"}), "key_a", None, rpm, concurrent)


def test_the_defaults_count_per_user() -> None:
    ask = Admission(LimitsConfig()).ask(principal())
    assert (ask.rate_key, ask.rate) == ("user:usr_a", Limit(100, 3600, 100))
    assert ask.global_rate == Limit(10_000, 3600, 10_000)
    assert (ask.lease_key, ask.concurrent) == ("user:usr_a", 1)


def test_a_keys_overrides_count_for_that_key_alone() -> None:
    ask = Admission(LimitsConfig()).ask(principal(rpm=600, concurrent=4))
    assert (ask.rate_key, ask.rate) == ("key:key_a", Limit(600, 60, 600))
    assert (ask.lease_key, ask.concurrent) == ("key:key_a", 4)
    assert ask.global_rate is not None  # the global limit still applies


def test_the_benchmark_profile_lifts_the_defaults_but_not_a_keys_own() -> None:
    lifted = Admission(LimitsConfig(profile="benchmark"))
    ask = lifted.ask(principal())
    assert (ask.rate, ask.global_rate, ask.concurrent) == (None, None, 0)
    own = lifted.ask(principal(rpm=6, concurrent=2))
    assert (own.rate, own.concurrent) == (Limit(6, 60, 6), 2)


async def test_a_refusal_carries_the_headers_and_the_admitted_slot_is_given_back() -> None:
    admission = Admission(LimitsConfig(requests_per_hour=2), MemoryLimits(Clock()))
    first = await admission.admit(principal())
    assert dict(first.headers) == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "1",
        "x-ratelimit-reset": "1800",
    }
    async with admission.held(first):
        with pytest.raises(RateLimited) as busy:
            await admission.admit(principal())
        assert busy.value.reason == "CONCURRENCY_LIMITED"
        assert dict(busy.value.headers)["x-ratelimit-remaining"] == "1"  # not counted
    second = await admission.admit(principal())  # the slot is free again
    async with admission.held(second):
        pass
    with pytest.raises(RateLimited) as spent:
        await admission.admit(principal())
    assert (spent.value.reason, spent.value.retry_after) == ("RATE_LIMITED", 1800.0)
    assert dict(spent.value.headers)["x-ratelimit-remaining"] == "0"
