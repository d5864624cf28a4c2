"""Per-provider limits the router keeps itself: calls in flight, requests and tokens per minute.

A provider at its limit is not called: the call moves to the next candidate, as it would on
a 429, and when no candidate is left the caller gets RESOURCE_EXHAUSTED
`PROVIDER_LIMIT_REACHED` with the wait in RetryInfo. Keeping the limits here costs nothing
on the wire and spares the provider the 429s (and us their retries).

* `max_concurrency`: a semaphore. A call waits for a slot at most `concurrency_wait_ms`
  (a short queue smooths bursts), then gives up.
* `rpm` / `tpm`: token buckets that refill continuously (capacity a minute's worth, so a
  burst of up to the whole minute's allowance may pass at once). A call takes one request
  and its estimated tokens (prompt + max_tokens, as OpenAI counts them) up front, without
  waiting; when it ends the estimate is corrected to what was really used, so unused
  max_tokens come back to the bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.common.config import ProviderConfig


class LimitReached(Exception):
    """The provider is at one of its limits; `retry_after` says when it frees up."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class TokenBucket:
    """`per_minute` units a minute, refilled continuously; the level may go below zero when
    a call used more than it took (the debt is repaid by the refill)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self._rate)
        self._updated = now
        return self._level

    def take(self, units: float) -> float:
        """Take `units` (at most the capacity, so one large call can pass a full bucket);
        0 when taken, else the seconds until they would be there (nothing is taken)."""
        units = min(units, self.capacity)
        level = self._refill()
        if level >= units:
            self._level = level - units
            return 0.0
        return (units - level) / self._rate

    def adjust(self, units: float) -> None:
        """Give back `units` (negative: take more, possibly into debt)."""
        self._level = min(self.capacity, self._refill() + units)


class Lease:
    """What one admitted call holds; `release` it exactly once when the call ends."""

    def __init__(self, limits: ProviderLimits, tokens: int) -> None:
        self._limits = limits
        self._tokens = tokens
        self._released = False

    def release(self, used_tokens: int | None = None) -> None:
        """Free the slot; correct the token estimate to `used_tokens` when known."""
        if self._released:
            return
        self._released = True
        self._limits._release(self._tokens, used_tokens)


class ProviderLimits:
    """The limits of one provider (0 in the configuration = no such limit)."""

    def __init__(
        self,
        provider: ProviderConfig,
        wait_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = provider.name
        self._wait = wait_seconds
        self._slots = (
            asyncio.Semaphore(provider.max_concurrency) if provider.max_concurrency else None
        )
        self._rpm = TokenBucket(provider.rpm, clock) if provider.rpm else None
        self._tpm = TokenBucket(provider.tpm, clock) if provider.tpm else None
        self.in_flight = 0

    async def acquire(self, estimated_tokens: int) -> Lease:
        """Admit one call of about `estimated_tokens`; raise LimitReached when a limit
        refuses it."""
        if self._rpm is not None:
            wait = self._rpm.take(1)
            if wait:
                raise LimitReached(f"{self._name}: requests per minute reached", wait)
        if self._tpm is not None:
            wait = self._tpm.take(estimated_tokens)
            if wait:
                self._give_back_request()
                raise LimitReached(f"{self._name}: tokens per minute reached", wait)
        if self._slots is not None:
            try:
                async with asyncio.timeout(self._wait):
                    await self._slots.acquire()
            except TimeoutError:
                self._give_back_request()
                if self._tpm is not None:
                    self._tpm.adjust(min(estimated_tokens, self._tpm.capacity))
                # A slot frees when a call ends, which we cannot foresee: suggest the wait.
                raise LimitReached(
                    f"{self._name}: max_concurrency reached", max(self._wait, 0.1)
                ) from None
        self.in_flight += 1
        return Lease(self, estimated_tokens)

    def _give_back_request(self) -> None:
        if self._rpm is not None:
            self._rpm.adjust(1)

    def _release(self, taken: int, used: int | None) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()
        if self._tpm is not None and used is not None:
            self._tpm.adjust(min(taken, self._tpm.capacity) - used)
