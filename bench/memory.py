"""What each of the six services holds in memory: idle, after a load, and what its imports cost.

Real processes on loopback, started as `bench.chain` starts them (the fake upstream and the
six services of `tests.harness.Stack` with the benchmark profile). Once all are SERVING and
`--settle` seconds have passed, each service's memory is read from /proc:

* RSS  — VmRSS (/proc/<pid>/status): what `top` shows, shared library pages included;
* PSS  — proportional set size (/proc/<pid>/smaps_rollup): shared pages split between the
  processes that map them, so the six PSS add up to what the stack really costs the machine;
* USS  — Private_Clean + Private_Dirty: what the process alone holds (freed if it exits);
* threads (/proc/<pid>/status).

With `--streams N` (default 0: idle only), N streams of the `chat` pattern through the gateway
at `--concurrency`, `--rounds` times, memory read after each round and again `--settle`
seconds later: growth that does not stop from round to round is a per-stream leak.

With `--imports`, for each service a fresh interpreter imports its bootstrap
(`services.common.server`) and its `app` module with every module load timed by RSS (the
import machinery's `_find_and_load` wrapped), and the top-level packages that cost the most
RSS of their own (their nested imports counted where they are first loaded) are listed.

    .venv/bin/python -m bench.memory [--streams 0] [--concurrency 16] [--rounds 1]
        [--settle 2] [--imports] [--top 8] [--env KEY=VALUE ...] [--json out.json]

Figures are MiB. RSS does not depend on CPU noise the way latency does, but what is resident
does depend on what has run: compare figures of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.chain import Target, fake_upstream, run_batch, saga_caller, saga_stack
from bench.fake_upstream import answer_text
from services.common.identity import SERVICES
from tests.harness import ROOT

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def process_memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (MiB) and the thread count of process `pid`."""
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        rollup[key] = int(rest.split()[0])
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {
        "rss": rollup["Rss"] / 1024,
        "pss": rollup["Pss"] / 1024,
        "uss": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024,
        "threads": threads,
    }


def snapshot(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """`process_memory` of each service, and their sum under "sum"."""
    out = {name: process_memory(pid) for name, pid in pids.items()}
    keys = ("rss", "pss", "uss", "threads")
    out["sum"] = {k: sum(v[k] for v in list(out.values())) for k in keys}
    return out


# The child that measures imports: `_find_and_load` is looked up on importlib._bootstrap at
# every import statement, so wrapping it sees every module load with the RSS around it.
IMPORT_PROBE = r"""
import importlib._bootstrap as b, json, os, sys
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
own, stack, original = {}, [], b._find_and_load
def traced(name, import_):
    if name in sys.modules:
        return original(name, import_)
    stack.append(0)
    before = rss()
    try:
        return original(name, import_)
    finally:
        total = rss() - before
        nested = stack.pop()
        top = name.split(".")[0]
        own[top] = own.get(top, 0) + total - nested
        if stack:
            stack[-1] += total
b._find_and_load = traced
start = rss()
for module in sys.argv[1:]:
    __import__(module)
print(json.dumps({"start": start, "end": rss(), "own": own}))
"""


def import_costs(service: str) -> dict[str, Any]:
    """RSS (MiB) of a bare interpreter, after importing `service`'s modules, and by package."""
    modules = ["services.common.server", f"services.{service}.app"]
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SAGA_")},
    )
    found = json.loads(out.stdout)
    mib = 1024 * 1024
    return {
        "interpreter": found["start"] / mib,
        "imported": found["end"] / mib,
        "packages": {k: v / mib for k, v in sorted(found["own"].items(), key=lambda kv: -kv[1])},
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack, read its memory idle and after each round of load."""
    result: dict[str, Any] = {"config": vars(args) | {"json": str(args.json)}}
    with tempfile.TemporaryDirectory(prefix="saga-memory-") as tmp:
        root = Path(tmp)
        (root / "stack").mkdir()
        async with contextlib.AsyncExitStack() as stack_of:
            base_url, _ = await stack_of.enter_async_context(fake_upstream(args.tokens, 0))
            stack, ready_s = await stack_of.enter_async_context(
                saga_stack(base_url, root / "stack", **dict(e.split("=", 1) for e in args.env))
            )
            pids = {s: stack.processes[s].pid for s in SERVICES}
            result["ready_seconds"] = ready_s
            await asyncio.sleep(args.settle)
            result["idle"] = snapshot(pids)
            if args.streams:
                channel = await stack_of.enter_async_context(stack.gateway_channel())
                target = Target(
                    "saga", saga_caller(channel, stack.admin_key(), answer_text(args.tokens)), pids
                )
                result["rounds"] = []
                for _ in range(args.rounds):
                    batch = await run_batch(target, args.streams, args.concurrency, True)
                    errors = [o.error for o in batch.outcomes if o.error]
                    result["rounds"].append({"errors": len(errors), "memory": snapshot(pids)})
                    if errors:
                        print(f"errors: {len(errors)}, first {errors[0]}", file=sys.stderr)
                await asyncio.sleep(args.settle)
                result["settled"] = snapshot(pids)
    if args.imports:
        result["imports"] = {s: import_costs(s) for s in SERVICES}
    return result


def table(title: str, memory: dict[str, dict[str, float]]) -> str:
    """One snapshot as a table: a row per service and the sum."""
    lines = [title, f"{'service':<10} {'RSS':>7} {'PSS':>7} {'USS':>7} {'threads':>8}"]
    for name, m in memory.items():
        lines.append(
            f"{name:<10} {m['rss']:7.1f} {m['pss']:7.1f} {m['uss']:7.1f} {m['threads']:8.0f}"
        )
    return "\n".join(lines)


def report(result: dict[str, Any], top: int) -> str:
    """The tables."""
    parts = [
        f"six services SERVING after {result['ready_seconds']:.2f} s",
        table("Idle (MiB)", result["idle"]),
    ]
    for i, r in enumerate(result.get("rounds", []), 1):
        config = result["config"]
        title = (
            f"After round {i}: {config['streams']} streams at concurrency "
            f"{config['concurrency']}, {r['errors']} errors (MiB)"
        )
        parts.append(table(title, r["memory"]))
    if "settled" in result:
        title = f"{result['config']['settle']} s after the load (MiB)"
        parts.append(table(title, result["settled"]))
    for service, cost in result.get("imports", {}).items():
        packages = ", ".join(f"{k} {v:.1f}" for k, v in list(cost["packages"].items())[:top])
        parts.append(
            f"imports {service}: interpreter {cost['interpreter']:.1f} -> "
            f"{cost['imported']:.1f} MiB; own RSS by package: {packages}"
        )
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=0, help="streams per round (0: idle)")
    parser.add_argument("--concurrency", type=int, default=16, help="streams at a time")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --streams")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before reading")
    parser.add_argument("--imports", action="store_true", help="also what imports cost")
    parser.add_argument("--top", type=int, default=8, help="packages listed per service")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every service (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Measure, print the tables, write the JSON."""
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    print(report(result, args.top))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
