"""The runner benchmark still runs (a smoke run: tiny sizes, no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT


def test_runner_steps_smoke_run_times_each_shape() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.runner_steps", "--runs", "5"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {line[:14].strip(): line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"1 step", "10-step DAG", "10 in a chain"}, result.stdout
    assert [rows[name][-5] for name in ("1 step", "10-step DAG", "10 in a chain")] == [
        "1",
        "10",
        "10",
    ]
