"""The coalescing benchmark still runs (a tiny in-process run; no timing asserted): the same
text arrives in both modes, in fewer messages with coalescing when the provider is fast."""

from __future__ import annotations

from bench.coalescing import main, parse


async def test_the_coalescing_benchmark_delivers_the_same_text_in_fewer_messages() -> None:
    args = parse(["--tokens", "20", "--streams", "4", "--concurrency", "2", "--rounds", "1"])
    rows = {(r["scenario"], r["coalesce"]): r for r in (await main(args))["rows"]}
    assert all(r["errors"] == 0 and r["same_text_both_modes"] for r in rows.values())
    assert rows["fast-provider", False]["messages_per_stream"] == 20
    assert rows["fast-provider", True]["messages_per_stream"] < 20
