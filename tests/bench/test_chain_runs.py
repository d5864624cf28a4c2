"""The chain benchmark still runs end to end (a smoke run: tiny sizes, no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.common.identity import SERVICES
from tests.harness import ROOT


def test_chain_smoke_run_delivers_every_token_direct_through_saga_and_the_relay_chain(
    tmp_path: Path,
) -> None:
    out = tmp_path / "chain.json"
    args = "--concurrency 1,3 --streams 6 --tokens 7 --rounds 2 --calls 2"
    subprocess.run(
        [sys.executable, "-m", "bench.chain", *args.split(), "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["target"], r["mode"], r["concurrency"]) for r in rows} == {
        ("direct", "stream", 1),
        ("saga", "stream", 1),
        ("relay", "stream", 1),
        ("direct", "stream", 3),
        ("saga", "stream", 3),
        ("relay", "stream", 3),
        ("direct", "complete", 1),
        ("saga", "complete", 1),
        ("relay", "complete", 1),
        ("direct", "hops", 1),
        ("router", "hops", 1),
        ("runtime", "hops", 1),
        ("saga", "hops", 1),
    }
    # Every stream's text was checked against the fake's 7 tokens (and a saga run's
    # `completed` output too), entering at the gateway, the runtime or the router: a lost,
    # reordered or failed stream is an error of its row.
    assert [(r["target"], r["error_sample"]) for r in rows if r["errors"]] == []
    assert [r["calls"] for r in rows if r["mode"] == "stream"] == [6] * 6
    # The CPU of each of the six processes was read (the figures themselves are not checked).
    saga = [r for r in rows if r["target"] in ("saga", "runtime", "router")]
    assert all(set(r["cpu_ms_per_call"]) == set(SERVICES) for r in saga)
    assert set(result["memory"]["saga_after_mib"]) == set(SERVICES)
    # The relay chain is three processes of its own, each one's CPU read, and saga's rows
    # carry their ratios to it (the architecture's floor).
    relay = [r for r in rows if r["target"] == "relay"]
    assert all(set(r["cpu_ms_per_call"]) == {"gateway", "runtime", "router"} for r in relay)
    assert set(result["ratios"]) >= {"c1", "c3"}
    assert all(result["ratios"][c]["streams_per_s_saga_over_relay"] for c in ("c1", "c3"))
    assert result["litellm"] == "not requested (--litellm)"
