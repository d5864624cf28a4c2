"""The hop benchmark still runs end to end (a smoke run: tiny sizes, no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.hop_overhead import VARIANTS
from tests.harness import ROOT


def test_hop_overhead_smoke_run_relays_every_message(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = "--messages 3 --streams 8 --concurrency 2 --rounds 1 --call-streams 4"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.hop_overhead",
            *args.split(),
            "--call-concurrency",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert {row["variant"] for row in result["streaming"]} == set(VARIANTS)
    # A stream that failed or lost a message is counted as an error of its row.
    rows = result["streaming"] + result["per_call"]
    assert [(r["variant"], r["error_sample"]) for r in rows if r["errors"]] == []
