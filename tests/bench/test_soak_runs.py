"""A hundred concurrent streams through a real stack, every token checked (correctness only:
the soak's small version; no timing or memory figure is asserted)."""

from __future__ import annotations

from pathlib import Path

from services.common.identity import SERVICES
from tests.bench.runs import run_bench


def test_a_hundred_concurrent_streams_through_the_chain_lose_and_reorder_nothing(
    tmp_path: Path,
) -> None:
    args = "--streams 100 --tokens 20 --interval-ms 5 --clients 2 --ramp-s 0"
    args += " --plateau-s 0.5 --settle-s 0 --sample-s 0.25"
    result = run_bench("bench.soak", args, tmp_path)
    # Every stream's text was compared with the upstream's, token by token.
    assert (result["streams"], result["errors"], result["error_sample"]) == (100, 0, "")
    assert (result["lost"], result["reordered"]) == (0, 0)
    assert result["verdicts"]["zero errors"]
    assert result["verdicts"]["zero lost or reordered tokens"]
    # RSS of each of the six was sampled before, during and after (the figures are not checked).
    assert all(set(result["rss_mib"][k]) == set(SERVICES) for k in ("before", "peak", "after"))
