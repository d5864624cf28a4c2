"""A small cache of answers from an inner service, each kept for a fixed time: a hit is a
dict lookup and a clock read; concurrent misses for one key share one call (`SingleFlight`);
a failure is not kept. The gateway's freshness gate reads pack health and patterns' flags
through it (no RPC per Execute while the entry lives), and the runtime the pack that runs of
patterns without `requires_pack` name (no query per run)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

from services.common.singleflight import SingleFlight

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_ENTRIES = 10_000


def make_room(entries: dict[K, V], limit: int, alive: Callable[[V], bool]) -> dict[K, V]:
    """`entries` with room for one more under `limit`: as is while there is room, else
    without the entries no longer `alive`, else empty (a cache keyed by something callers
    choose — users, keys — must not grow with them)."""
    if len(entries) < limit:
        return entries
    kept = {k: v for k, v in entries.items() if alive(v)}
    return kept if len(kept) < limit else {}


class TtlCache(Generic[K, V]):
    """`fetch(key)` answers, each reused for `ttl` seconds of `clock` (monotonic)."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[K], Awaitable[V]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._flights: SingleFlight[K, V] = SingleFlight(name)

    async def get(self, key: K) -> V:
        """The cached answer for `key`, or a fresh one."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        return await self._flights.run(key, partial(self._fetched, key))

    async def _fetched(self, key: K) -> V:
        until = self._clock() + self._ttl  # the entry's life counts from before the question
        value = await self._fetch(key)
        if self._ttl > 0:
            now = self._clock()
            self._entries = make_room(self._entries, MAX_ENTRIES, lambda e: e[0] > now)
            self._entries[key] = (until, value)
        return value
