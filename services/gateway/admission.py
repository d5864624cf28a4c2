"""Whether one Execute may start, by the rate limits (SPEC 3.1), and the slot it holds.

Only Execute is counted: it is what costs (provider calls, a concurrency slot). Reads —
GetExecution, ListExecutions, WatchExecution, sessions, usage, patterns, pack health — are
not; Register and Login keep their own per-address limit (`AccountServicer`). Admins are
limited like everyone else: an operator lifts limits with the benchmark profile or a
per-key override, never by holding a scope.

Each Execute asks three limits at once (one atomic decision in the store): the caller's
requests (GCRA, `requests_per_hour` per user, or the key's own `requests_per_minute`), the
global requests (GCRA), and the caller's concurrent executions (leases, per user or the
key's own). A refused Execute counts against none of them.

The servicer methods call this object — not a gRPC interceptor — so the HTTP door, which
calls the same methods with its own context, is limited the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.config import LimitsConfig
from services.common.errors import QuotaViolation, ResourceExhausted
from services.gateway.authn import Principal
from services.gateway.limits import Ask, Leases, Limit, LimitStore, MemoryLimits, Verdict

REFUSALS = Counter(
    "saga_gateway_rate_limit_refusals",
    "Executes refused by a rate limit, by limit (requests, global, concurrent).",
    ["limit"],
)

HOUR = 3600.0
MINUTE = 60.0

Headers = tuple[tuple[str, str], ...]

_REASONS = {
    "requests": "RATE_LIMITED",
    "global": "GLOBAL_RATE_LIMITED",
    "concurrent": "CONCURRENCY_LIMITED",
}


def _period(seconds: float) -> str:
    return "minute" if seconds == MINUTE else "hour"


class RateLimited(ResourceExhausted):
    """A refused Execute; `headers` are the x-ratelimit-* values to send with the error."""

    def __init__(
        self,
        message: str,
        headers: Headers,
        *,
        reason: str,
        retry_after: float,
        metadata: dict[str, str],
        quota_violations: list[QuotaViolation],
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            retry_after=retry_after,
            metadata=metadata,
            quota_violations=quota_violations,
        )
        self.headers = headers


@dataclass(frozen=True)
class Admitted:
    """An admitted Execute: the headers to send first, and its concurrency lease (if any)."""

    headers: Headers
    leases: Leases | None
    ask: Ask


class Admission:
    """The limits of the gateway, as `config` and each key's overrides set them."""

    def __init__(self, config: LimitsConfig, store: LimitStore | None = None) -> None:
        self._config = config
        self._store: LimitStore = store if store is not None else MemoryLimits()
        lifted = config.profile == "benchmark"
        self._rate = (
            None
            if lifted
            else Limit(config.requests_per_hour, HOUR, burst=config.requests_per_hour)
        )
        self._global = (
            None
            if lifted
            else Limit(config.global_requests_per_hour, HOUR, burst=config.global_requests_per_hour)
        )
        self._concurrent = 0 if lifted else config.concurrent_executions

    def ask(self, principal: Principal) -> Ask:
        """What an Execute by `principal` asks: a key's own override wins over the default
        (and then counts for that key alone)."""
        rpm, concurrent = principal.requests_per_minute, principal.concurrent_executions
        key, user = f"key:{principal.credential_id}", f"user:{principal.user_id}"
        return Ask(
            rate_key=key if rpm else user,
            rate=Limit(rpm, MINUTE, burst=rpm) if rpm else self._rate,
            global_rate=self._global,
            lease_key=key if concurrent else user,
            concurrent=concurrent or self._concurrent,
            lease_id=secrets.token_hex(8),
            lease_ttl=self._config.lease_ttl_seconds,
        )

    async def admit(self, principal: Principal) -> Admitted:
        """Count one Execute, or raise `RateLimited` (UNAVAILABLE when a shared store is
        unreachable in fail-closed mode)."""
        ask = self.ask(principal)
        if ask.rate is None and ask.global_rate is None and not ask.concurrent:
            return Admitted((), None, ask)
        verdict, leases = await self._store.decide(ask)
        headers = _headers(ask, verdict)
        if verdict.refused:
            REFUSALS.labels(verdict.refused).inc()
            raise _refusal(ask, verdict, headers)
        return Admitted(headers, leases if ask.concurrent else None, ask)

    @contextlib.asynccontextmanager
    async def held(self, admitted: Admitted) -> AsyncIterator[None]:
        """Keep the Execute's lease alive while the body runs (renewed every third of its
        TTL), and give it back at the end however the body ends."""
        leases, ask = admitted.leases, admitted.ask
        if leases is None:
            yield
            return
        renewing = asyncio.create_task(_renew(leases, ask))
        try:
            yield
        finally:
            renewing.cancel()
            # Shielded: a caller that cancelled the stream must still free its slot.
            await asyncio.shield(leases.release(ask.lease_key, ask.lease_id))


async def _renew(leases: Leases, ask: Ask) -> None:
    while True:
        await asyncio.sleep(ask.lease_ttl / 3)
        await leases.renew(ask.lease_key, ask.lease_id, ask.lease_ttl)


def _headers(ask: Ask, verdict: Verdict) -> Headers:
    """x-ratelimit-limit / -remaining / -reset (seconds until the whole limit is back) of the
    caller's request limit; none when that limit is lifted."""
    if ask.rate is None:
        return ()
    return (
        ("x-ratelimit-limit", str(ask.rate.count)),
        ("x-ratelimit-remaining", str(max(0, verdict.remaining))),
        ("x-ratelimit-reset", str(math.ceil(max(0.0, verdict.reset)))),
    )


def _refusal(ask: Ask, verdict: Verdict, headers: Headers) -> RateLimited:
    if verdict.refused == "concurrent":
        subject, limit = ask.lease_key, f"{ask.concurrent} executions at once"
        message = f"at most {ask.concurrent} execution(s) at once; wait for one to finish"
        metadata = {"limit": str(ask.concurrent)}
    else:
        rate = ask.rate if verdict.refused == "requests" else ask.global_rate
        assert rate is not None
        subject = ask.rate_key if verdict.refused == "requests" else "global"
        limit = f"{rate.count} Executes per {_period(rate.period)}"
        message = f"rate limit reached: {limit}" + (
            " (all callers together)" if verdict.refused == "global" else ""
        )
        metadata = {"limit": str(rate.count), "period": f"{int(rate.period)}s"}
    return RateLimited(
        message,
        headers,
        reason=_REASONS[verdict.refused],
        retry_after=verdict.retry_after,
        metadata=metadata,
        quota_violations=[QuotaViolation(subject, limit)],
    )
