"""Rate limits shared by every gateway replica, in Redis: one Lua script per decision.

The script checks the caller's GCRA, the global GCRA and the caller's concurrency leases,
and counts them only when all three allow — atomically (Redis runs a script alone) and in
one round trip (EVALSHA). Time is Redis's own `TIME`, so replicas with drifting clocks
agree. A lease is a member of a sorted set scored by its expiry: expired members are swept
before counting, so a gateway that died (kill -9) frees its slots when their TTL passes.

All keys of one decision are used by one script, so they must live on one Redis node: a
single instance, or a primary with replicas (Sentinel); not Redis Cluster.

When Redis does not answer, `failure_mode` decides: "closed" refuses (UNAVAILABLE
`RATE_LIMITER_UNAVAILABLE`), "open" decides with this gateway's in-memory limits. Either
way the gauge `saga_gateway_rate_limiter_degraded` is 1 and one log line says so; Redis is
tried again every `retry_seconds`, and the first answer ends the degradation (another line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.common.config import LimitsConfig
from services.common.errors import Unavailable
from services.gateway.limits import (
    CONCURRENCY_RETRY_SECONDS,
    Ask,
    Leases,
    Limit,
    MemoryLimits,
    Verdict,
)

log = logging.getLogger("saga.gateway.limits")

DEGRADED = Gauge(
    "saga_gateway_rate_limiter_degraded",
    "1 while the shared (Redis) rate limiter is unreachable and decisions are local or refused.",
)

# KEYS: rate, global, leases. ARGV: rate count, period, burst (count 0 = lifted); the same
# for global; concurrent (0 = lifted), lease id, lease ttl. Returns {refused, retry_after,
# remaining, reset}: numbers as strings, since Redis truncates Lua floats to integers.
DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function current(key)
  local tat = tonumber(redis.call('GET', key))
  if tat == nil or tat < now then return now end
  return tat
end
local rc, rp, rb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gc, gp, gb = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local concurrent, lease, ttl = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local function view()
  if rc == 0 then return 0, '0' end
  local interval = rp / rc
  local backlog = current(KEYS[1]) - now
  local remaining = math.floor((interval * rb - backlog) / interval + 1e-9)
  if remaining < 0 then remaining = 0 end
  return remaining, tostring(backlog)
end
local rate_tat, remaining, reset = nil, 0, '0'
if rc > 0 then
  local interval = rp / rc
  local tat = current(KEYS[1])
  local new_tat = tat + interval
  local over = new_tat - now - interval * rb
  if over > 0 then return {'requests', tostring(over), 0, tostring(tat - now)} end
  rate_tat = new_tat
  remaining = math.floor((interval * rb - (new_tat - now)) / interval + 1e-9)
  reset = tostring(new_tat - now)
end
local global_tat = nil
if gc > 0 then
  local interval = gp / gc
  local new_tat = current(KEYS[2]) + interval
  local over = new_tat - now - interval * gb
  if over > 0 then
    local r, s = view()
    return {'global', tostring(over), r, s}
  end
  global_tat = new_tat
end
if concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= concurrent then
    local r, s = view()
    return {'concurrent', '0', r, s}
  end
  redis.call('ZADD', KEYS[3], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl * 1000))
end
if rate_tat then
  redis.call('SET', KEYS[1], tostring(rate_tat), 'PX', math.ceil((rate_tat - now) * 1000) + 1)
end
if global_tat then
  redis.call('SET', KEYS[2], tostring(global_tat), 'PX', math.ceil((global_tat - now) * 1000) + 1)
end
return {'', '0', remaining, reset}
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
end
return 0
"""

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def connect(config: LimitsConfig) -> Redis:
    """A client for `config.redis_url` that fails fast: no retries inside redis-py (the
    limiter's own `retry_seconds` decides when to try again)."""
    return Redis.from_url(
        config.redis_url,
        socket_timeout=config.redis_timeout_seconds,
        socket_connect_timeout=config.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )


def _limit_args(limit: Limit | None) -> list[float]:
    return [0, 0, 0] if limit is None else [limit.count, limit.period, limit.burst]


class RedisLimits:
    """A `LimitStore` in Redis, degrading to `fallback` (or refusing, when it is None)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        fallback: MemoryLimits | None,
        retry_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._fallback = fallback
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._decide = client.register_script(DECIDE)
        self._renew = client.register_script(RENEW)
        self._down_until: float | None = None
        DEGRADED.set(0)

    def _keys(self, ask: Ask) -> Sequence[str]:
        p = self._prefix
        return (f"{p}rate:{ask.rate_key}", f"{p}rate:global", f"{p}leases:{ask.lease_key}")

    async def decide(self, ask: Ask) -> tuple[Verdict, Leases]:
        """Decide in Redis; while it is unreachable, locally or not at all (see module)."""
        if self._down_until is not None and self._clock() < self._down_until:
            return await self._degraded(ask)
        args: list[str | float] = [
            *_limit_args(ask.rate),
            *_limit_args(ask.global_rate),
            ask.concurrent,
            ask.lease_id,
            ask.lease_ttl,
        ]
        try:
            reply = await self._decide(keys=self._keys(ask), args=args)
        except _FAILURES as error:
            self._went_down(error)
            return await self._degraded(ask)
        self._came_back()
        refused, retry, remaining, reset = (
            v.decode() if isinstance(v, bytes) else v for v in reply
        )
        retry_after = CONCURRENCY_RETRY_SECONDS if refused == "concurrent" else float(retry)
        return Verdict(str(refused), retry_after, int(remaining), float(reset)), self

    async def _degraded(self, ask: Ask) -> tuple[Verdict, Leases]:
        if self._fallback is None:
            raise Unavailable(
                "the shared rate limiter is unreachable; Executes are refused until it is back",
                reason="RATE_LIMITER_UNAVAILABLE",
                retry_after=self._retry_seconds,
            )
        return await self._fallback.decide(ask)

    def _went_down(self, error: BaseException) -> None:
        if self._down_until is None:
            log.warning(
                "rate limiter degraded: Redis unreachable",
                extra={
                    "error": type(error).__name__,
                    "mode": "open (local limits)" if self._fallback else "closed (refusing)",
                },
            )
            DEGRADED.set(1)
        self._down_until = self._clock() + self._retry_seconds

    def _came_back(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            DEGRADED.set(0)
            log.warning("rate limiter recovered: Redis answers again")

    async def renew(self, lease_key: str, lease_id: str, ttl: float) -> None:
        """Extend a lease taken in Redis; if Redis does not answer, its TTL runs on."""
        try:
            await self._renew(keys=[f"{self._prefix}leases:{lease_key}"], args=[lease_id, ttl])
        except _FAILURES as error:
            self._went_down(error)  # one log line for the outage, not one per lease

    async def release(self, lease_key: str, lease_id: str) -> None:
        """Give a slot back; if Redis does not answer, it frees itself at its TTL."""
        try:
            await self._client.zrem(f"{self._prefix}leases:{lease_key}", lease_id)
        except _FAILURES as error:
            self._went_down(error)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
