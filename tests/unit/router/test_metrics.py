"""The router's per-attempt counters: tokens by kind (cache writes apart) and cost."""

from __future__ import annotations

import secrets

from prometheus_client import REGISTRY

from services.common.usage import Usage
from services.router.attempts import AttemptRecord, AttemptStatus
from services.router.metrics import observe_attempt


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_cache_reads_and_writes_are_counted_as_their_own_kinds() -> None:
    provider = "p_" + secrets.token_hex(4)  # counters are process-wide: a fresh label
    observe_attempt(
        AttemptRecord(
            provider=provider,
            model="m",
            n=1,
            status=AttemptStatus.SUCCEEDED,
            error_reason="",
            usage=Usage(10, 2, cached_tokens=3, cache_write_tokens=5),
            cost_micro_usd=40,
            charge_micro_usd=40,
            latency_ms=5,
            ttft_ms=1,
            price_table_version="prices-x",
            occurred_at=0.0,
        )
    )
    kinds = {
        kind: sample("saga_router_tokens_total", provider=provider, kind=kind)
        for kind in ("input", "output", "cached", "cache_write")
    }
    assert kinds == {"input": 10, "output": 2, "cached": 3, "cache_write": 5}
    assert sample("saga_router_cost_micro_usd_total", provider=provider) == 40
