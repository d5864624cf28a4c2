"""The Rank benchmark still runs (a smoke run: tiny sizes, no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT


def test_optimizer_rank_smoke_run_times_every_strategy_and_the_handler() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.optimizer_rank", "--providers", "3", "--calls", "20"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    for what in ("rank cheapest", "rank balanced", "rank custom", "Rank handler"):
        assert any(line.startswith(what) for line in lines), result.stdout
