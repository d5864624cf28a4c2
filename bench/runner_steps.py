"""What the pattern runner costs per step, with no LLM and no I/O: the `data` agent's
`data.lookup` (an in-memory reference lookup) as the step, run by the real `Runner` and
registry (the agent's circuit and argument checks included) in process.

* `1 step` — a pattern of one step: the runner's fixed cost per run plus one step;
* `10-step DAG` — ten steps: a root, eight that read it (they run concurrently, bounded by
  `max_parallel`), and a join that reads all eight;
* `10 in a chain` — the same ten steps each reading the previous one (no concurrency).

Per-step figures divide a run's time by its steps. The seeds' budget for a routing decision
is under 2 ms; a non-LLM step should cost a small fraction of that. The machine is shared and
noisy: compare the rows of one run, never runs with each other.

    .venv/bin/python -m bench.runner_steps [--runs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from services.runtime.agents.data import data_agent, load_datasets
from services.runtime.agents.step import RunScope
from services.runtime.capabilities import CapabilityRegistry
from services.runtime.patterns import Pattern, parse_pattern
from services.runtime.runner import RunFinished, Runner

STEP = """
  - id: {id}
    capability: data.lookup
    args:
      dataset: securities
      keys: {keys}
"""


def document(name: str, steps: list[tuple[str, str]]) -> bytes:
    body = "".join(STEP.format(id=i, keys=k) for i, k in steps)
    return f"id: {name}\ndescription: bench\nsteps:{body}\noutputs:\n  done: ok\n".encode()


def patterns(registry: CapabilityRegistry) -> dict[str, Pattern]:
    capabilities = registry.capabilities()
    one = [("root", '["AAPL", "MSFT"]')]
    fan = [
        ("root", '["AAPL", "MSFT"]'),
        *((f"b{i}", '"{{state.root.records}}"') for i in range(8)),
        (
            "join",
            '["{{state.b0.dataset}}", "'
            + '", "'.join(f"{{{{state.b{i}.dataset}}}}" for i in range(1, 8))
            + '"]',
        ),
    ]
    chain = [
        ("s0", '["AAPL"]'),
        *((f"s{i}", f'"{{{{state.s{i - 1}.records}}}}"') for i in range(1, 10)),
    ]
    shapes = {"1 step": one, "10-step DAG": fan, "10 in a chain": chain}
    return {
        name: parse_pattern(document(f"bench_{n}", steps), f"{name}.yaml", "bench", capabilities)
        for n, (name, steps) in enumerate(shapes.items())
    }


SCOPE = RunScope(
    execution_id="exe_" + "0" * 32,
    pattern_id="bench",
    user_id="usr_bench",
    session_id="",
    asof="2026-01-02",
    context_token="",
)


async def one_run(runner: Runner, pattern: Pattern) -> int:
    steps = 0
    async for event in runner.run(pattern, {}, SCOPE):
        if isinstance(event, RunFinished):
            return steps
        steps += 1
    raise RuntimeError("the run did not finish")


async def main(runs: int) -> None:
    registry = CapabilityRegistry()
    registry.register(data_agent(load_datasets()))
    runner = Runner(registry, max_parallel=4)
    head = ("pattern", "steps", "runs", "µs/run p50", "µs/run p99", "µs/step")
    print(f"{head[0]:<14} {head[1]:>5} {head[2]:>6} {head[3]:>11} {head[4]:>11} {head[5]:>8}")
    for name, pattern in patterns(registry).items():
        await one_run(runner, pattern)  # warm
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await one_run(runner, pattern)
            times.append((time.perf_counter() - started) * 1e6)
        times.sort()
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
        steps = len(pattern.steps)
        print(f"{name:<14} {steps:>5} {runs:>6} {p50:>11.0f} {p99:>11.0f} {p50 / steps:>8.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    asyncio.run(main(parser.parse_args().runs))
