"""The heap trimmer returns the pages a burst of allocations left free (glibc, as in the
services' image and on CI's machines)."""

from __future__ import annotations

from pathlib import Path

from services.common.heap import HeapTrimmer


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


async def test_a_trim_returns_what_a_burst_left_free() -> None:
    trimmer = HeapTrimmer()
    assert trimmer.available
    await trimmer.trim()  # whatever earlier tests left
    # Blocks under glibc's mmap threshold live in the heap, as grpc's and protobuf's do.
    burst = [bytearray(1024 * (i % 64 + 1)) for i in range(4000)]
    grown = rss_mib()
    kept = burst[::50]  # a few survivors keep the heap from shrinking by itself
    del burst
    assert rss_mib() > grown - 20  # freed, but still held by the process
    assert await trimmer.trim()
    assert rss_mib() < grown - 60
    del kept  # alive until here
