"""The freshness-gate benchmark still runs (a smoke run: tiny sizes, no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT


def test_freshness_gate_smoke_run_times_the_warm_and_the_cold_gate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.freshness_gate", "--calls", "20"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    for what in ("gate, caches warm", "gate, caches off"):
        assert any(line.startswith(what) for line in lines), result.stdout
