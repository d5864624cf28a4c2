"""The sustained-streams sweep still runs end to end (a smoke run: tiny sizes; the gap limit
is lifted so that a slow machine cannot end it early, and no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from tests.bench.runs import run_bench


def test_sweep_smoke_run_steps_saga_and_the_relay_chain_through_every_level(
    tmp_path: Path,
) -> None:
    args = "--targets saga,relay --steps 3,6 --tokens 10 --interval-ms 5 --clients 1"
    args += " --ramp-s 0 --pause-s 0 --gap-ms 1e9"
    result = run_bench("bench.sweep", args, tmp_path)
    levels = result["levels"]
    assert sorted((lv["target"], lv["streams"]) for lv in levels) == [
        ("relay", 3),
        ("relay", 6),
        ("saga", 3),
        ("saga", 6),
    ]
    # Every stream's text was checked against the upstream's: none failed, lost or reordered.
    assert [(lv["target"], lv["error_sample"]) for lv in levels if lv["errors"]] == []
    assert [lv for lv in levels if lv["lost"] or lv["reordered"]] == []
    assert result["largest_held"] == {"saga": 6, "relay": 6}
    # The CPU of every process of each target, of the fake and of the client was read.
    assert {tuple(lv["cpu_pct"]) for lv in levels if lv["target"] == "relay"} == {
        ("router", "runtime", "gateway")
    }
    assert all(len(lv["client_cpu_pct"]) == 1 for lv in levels)
