"""A thousand concurrent streams through the whole chain: every token delivered, memory bounded.

The six Saga services (the benchmark profile of `bench.chain`: the gateway's per-user rate
and concurrency limits lifted, no provider concurrency/rpm/tpm limit, no budget) and the
fake upstream (`bench.fake_upstream`) pacing `--tokens` tokens at one per `--interval-ms`, so
the streams overlap. After a warm-up, the services' RSS is sampled for `--plateau-s` (the
idle plateau, the median of the samples per process); then `--waves` waves of `--streams`
concurrent streams (started over `--ramp-s` by `--clients` load-client processes,
`bench.streams`), RSS and open file descriptors sampled every `--sample-s` all along (the
peak is the sample with the largest total); then `--settle-s` of rest and another plateau
(after). Every stream's text is checked against the upstream's, token by token.

Verdicts: zero errors, zero lost or reordered tokens, the after-soak RSS within 10 % of the
pre-soak plateau, and at most 450 MB (10^6 bytes) for the six after the soak.

    .venv/bin/python -m bench.soak [--streams 1000] [--tokens 200] [--interval-ms 20]
        [--waves 1] [--clients 2] [--ramp-s 2] [--plateau-s 5] [--settle-s 20] [--json out]

Open files: each concurrent stream holds one upstream socket in the router and one in the
fake, so the benchmark lifts its soft RLIMIT_NOFILE to the hard limit before starting
anything (the services inherit it) and reports it with the peak descriptor counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.chain import rss_mib
from bench.streams import (
    Stream,
    clients,
    load_parser,
    peak_open,
    raise_open_files,
    run_and_report,
)
from bench.sweep import started

MB_PER_MIB = 1.048576
RSS_AIM_MB = 450.0
RETURN_WITHIN = 0.10


def open_fds(pid: int) -> int:
    """File descriptors `pid` holds open."""
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


@dataclass
class Samples:
    """RSS (MiB) and open descriptors of each process, sampled over time."""

    pids: dict[str, int]
    rss: list[dict[str, float]] = field(default_factory=list)
    fds: list[dict[str, int]] = field(default_factory=list)

    def take(self) -> None:
        """One sample of every process."""
        self.rss.append({k: rss_mib(p) for k, p in self.pids.items()})
        self.fds.append({k: open_fds(p) for k, p in self.pids.items()})

    async def every(self, seconds: float, stop: asyncio.Event) -> None:
        """Sample every `seconds` until `stop` is set."""
        while not stop.is_set():
            self.take()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    def plateau(self) -> dict[str, float]:
        """The median of each process's samples."""
        return {k: statistics.median(s[k] for s in self.rss) for k in self.pids}

    def peak(self) -> dict[str, float]:
        """The sample with the largest total."""
        return max(self.rss, key=lambda s: sum(s.values()))

    def peak_fds(self) -> dict[str, int]:
        """Each process's most descriptors open at once."""
        return {k: max(s[k] for s in self.fds) for k in self.pids}


async def plateau(pids: dict[str, int], seconds: float, every: float) -> dict[str, float]:
    """Sample RSS for `seconds`; the median per process."""
    samples = Samples(pids)
    stop = asyncio.Event()
    task = asyncio.create_task(samples.every(every, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return samples.plateau()


async def unhappy_rpcs(metrics_ports: dict[str, int]) -> dict[str, float]:
    """Each service's RPCs that ended with a code other than OK (`saga_rpc_server_handled`),
    as `service method code`: where along the chain a broken stream broke first."""
    found: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        for service, port in metrics_ports.items():
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    code = sample.labels.get("code", "OK")
                    if sample.name == "saga_rpc_server_handled_total" and code != "OK":
                        key = f"{service} {sample.labels['method']} {code}"
                        found[key] = found.get(key, 0.0) + sample.value
    return found


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    """Each aim of the soak, met or not."""
    before, after = result["rss_total_mib"]["before"], result["rss_total_mib"]["after"]
    return {
        "zero errors": result["errors"] == 0,
        "zero lost or reordered tokens": result["lost"] == 0 and result["reordered"] == 0,
        "after within 10% of before": after <= before * (1 + RETURN_WITHIN),
        "after <= 450 MB": after * MB_PER_MIB <= RSS_AIM_MB,
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, plateau, soak, settle, plateau; the results."""
    open_files = raise_open_files()
    streams: list[Stream] = []
    peaks: list[int] = []
    with tempfile.TemporaryDirectory(prefix="saga-soak-") as tmp:
        async with started(["saga"], args.tokens, args.interval_ms, Path(tmp)) as chain:
            saga = chain.endpoints["saga"]
            pids = saga.pids
            timeout = args.tokens * args.interval_ms / 1000 * 5 + 110
            with clients(args.clients) as pool:

                async def wave(n: int) -> list[Stream]:
                    results = await pool.run(
                        saga.kind, saga.address, saga.api_key, n, args.tokens, args.ramp_s, timeout
                    )
                    return [s for r in results for s in r.streams]

                warm = await wave(min(args.streams, 20))
                print(f"warm-up: {sum(1 for s in warm if s.error)} errors", file=sys.stderr)
                before = await plateau(pids, args.plateau_s, args.sample_s)
                print(f"before: {sum(before.values()):.0f} MiB", file=sys.stderr)
                during = Samples(pids)
                stop = asyncio.Event()
                sampler = asyncio.create_task(during.every(args.sample_s, stop))
                for w in range(args.waves):
                    done = await wave(args.streams)
                    streams += done
                    peaks.append(peak_open(done))
                    broken = sum(1 for s in done if s.error)
                    print(
                        f"wave {w + 1}: {peaks[-1]} open at once, {broken} errors", file=sys.stderr
                    )
                stop.set()
                await sampler
                unhappy = await unhappy_rpcs(saga.metrics_ports)
            await asyncio.sleep(args.settle_s)
            after = await plateau(pids, args.plateau_s, args.sample_s)
    failed = [s.error for s in streams if s.error]
    peak = during.peak()
    result: dict[str, Any] = {
        "config": {
            "streams": args.streams,
            "waves": args.waves,
            "tokens": args.tokens,
            "interval_ms": args.interval_ms,
            "clients": args.clients,
            "ramp_s": args.ramp_s,
            "plateau_s": args.plateau_s,
            "settle_s": args.settle_s,
            "open_files": list(open_files),
            "cpus": os.cpu_count(),
        },
        "ready_seconds": chain.ready_seconds,
        "streams": len(streams),
        "peak_open": peaks,
        "errors": len(failed),
        "error_sample": failed[0] if failed else "",
        "lost": sum(s.lost for s in streams),
        "reordered": sum(s.reordered for s in streams),
        "messages_per_stream": sum(s.messages for s in streams) / (len(streams) or 1),
        "rss_mib": {"before": before, "peak": peak, "after": after},
        "rss_total_mib": {
            "before": sum(before.values()),
            "peak": sum(peak.values()),
            "after": sum(after.values()),
        },
        "peak_fds": during.peak_fds(),
        "unhappy_rpcs": unhappy,
    }
    result["verdicts"] = verdicts(result)
    return result


def report(result: dict[str, Any]) -> str:
    """The printed figures and verdicts."""
    cfg = result["config"]
    rss = result["rss_mib"]
    totals = result["rss_total_mib"]

    def row(name: str) -> str:
        cells = " ".join(f"{k} {v:.0f}" for k, v in rss[name].items())
        return f"  {name:<7} {totals[name]:>6.0f} MiB ({totals[name] * MB_PER_MIB:.0f} MB): {cells}"

    return "\n".join(
        [
            f"Soak: {cfg['waves']} wave(s) of {cfg['streams']} concurrent streams x "
            f"{cfg['tokens']} tokens (one per {cfg['interval_ms']} ms at the upstream), "
            f"{cfg['clients']} client processes; RLIMIT_NOFILE {cfg['open_files']}",
            f"  streams {result['streams']}, open at once (per wave) {result['peak_open']}, "
            f"errors {result['errors']} {result['error_sample']!r}, lost tokens "
            f"{result['lost']}, reordered {result['reordered']}, messages per stream "
            f"{result['messages_per_stream']:.1f}",
            "RSS of the six services (before: the idle plateau after a warm-up; peak: during "
            f"the soak; after: {cfg['settle_s']} s later, the plateau)",
            row("before"),
            row("peak"),
            row("after"),
            "  open descriptors at peak: "
            + ", ".join(f"{k} {v}" for k, v in result["peak_fds"].items()),
            "RPCs that did not end OK (service, method, code: count): "
            + (", ".join(f"{k}: {v:.0f}" for k, v in result["unhappy_rpcs"].items()) or "none"),
            "Verdicts: "
            + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in result["verdicts"].items()),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = load_parser(__doc__, tokens=200)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams per wave")
    parser.add_argument("--waves", type=int, default=1, help="waves of --streams, one by one")
    parser.add_argument("--plateau-s", type=float, default=5.0, help="RSS sampled this long")
    parser.add_argument("--settle-s", type=float, default=20.0, help="rest before 'after'")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_and_report(parse_args(), soak, report)
