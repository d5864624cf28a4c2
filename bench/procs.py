"""Benchmark child processes that print `READY <port>` once they listen."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from tests.harness import ROOT


@contextlib.asynccontextmanager
async def ready_child(module: str, *args: str) -> AsyncIterator[int]:
    """`python -m module args…` in its own process, once it said READY: its pid. Stopped
    (SIGTERM) on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"{module} {' '.join(args)} did not start: {line!r}")
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)
