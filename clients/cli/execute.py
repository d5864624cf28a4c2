"""`saga execute`: run a pattern and stream its events.

For people: tokens on stdout as they arrive, switches, skipped providers and steps, and a one-line
summary on stderr. With `--json`: every event as one JSON document per line, nothing else.

Every ExecuteOptions field has its flag. `--session ID` appends the run to one of the
caller's sessions as a stage once it completes. `--provider NAME` (repeatable) is the run's
allow-list, `--prefer NAME` (repeatable) the providers tried first, `--no-fallback` its
opt-out of fallback, `--strategy` how providers are ranked, `--weights` the CUSTOM strategy's
weights (and implies it); `--max-cost DOLLARS` its cost limit (converted to micro-USD
exactly); `--pin-pack` and `--pin-commit` (or `--pack`, `--commit`) pin the pricing pack and
ledger commit (from an earlier run's summary line) to reproduce it, `--allow-stale` lets it
run on a STALE pack. `--export json|csv` makes the run an export: its watermarked document is
printed on stdout after the tokens. `--idempotency-key K`: a retry with the same key (and the
same request) attaches to the first run and replays it, instead of running and billing again.
`--detach` starts the run with `detach_on_disconnect`, prints its execution id (with `--json`:
the Accepted event) as soon as it is accepted, and returns: the run goes on without the CLI,
and `saga executions watch ID` follows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from clients.cli import arguments
from clients.cli.arguments import EXIT_USAGE
from clients.cli.output import dollars, to_json
from clients.cli.settings import Metadata
from saga.execution.v1 import options_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from services.common.config import STRATEGIES
from services.common.strategy import Strategy
from services.common.strategy_proto import TO_PROTO


def inputs(pairs: list[str], flag: str = "--input") -> struct_pb2.Struct:
    """`--input NAME=VALUE` pairs (or another `flag`'s) as a Struct: the pattern's inputs,
    a session's metadata (a value starting with [ or { is JSON)."""
    struct = struct_pb2.Struct()
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"saga: {flag} takes NAME=VALUE, got {pair!r}")
        try:
            parsed: Any = json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            parsed = value
        struct.update({name: parsed})
    return struct


_EXPORT_FORMATS = {"json": options_pb2.EXPORT_FORMAT_JSON, "csv": options_pb2.EXPORT_FORMAT_CSV}


_PROVIDER_LISTS = (
    ("--provider", "providers", "only this provider may answer (repeatable: an allow-list)"),
    ("--prefer", "preferred", "try this provider first when it is eligible (repeatable, in order)"),
)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `execute` command: a flag for every ExecuteOptions field."""
    run = sub.add_parser("execute", parents=[common], help="run a pattern and stream its events")
    run.add_argument("pattern")
    run.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--asof", help="YYYY-MM-DD (default: today)")
    run.add_argument("--session", default="", metavar="ID", help="append to this session")
    run.add_argument("--strategy", choices=STRATEGIES)
    for flag, dest, text in _PROVIDER_LISTS:
        run.add_argument(flag, action="append", default=[], dest=dest, metavar="NAME", help=text)
    run.add_argument(
        "--no-fallback", action="store_true", help="never move to another provider on a failure"
    )
    run.add_argument(
        "--weights",
        type=arguments.weights,
        metavar="cost=0.7,latency=0.3",
        help="CUSTOM weights of cost, latency, quality, reliability (implies --strategy custom)",
    )
    run.add_argument(
        "--max-cost",
        type=arguments.max_cost,
        metavar="DOLLARS",
        help="the most this run may cost, e.g. 0.05 (refused COST_LIMIT_EXCEEDED beyond it)",
    )
    run.add_argument(
        "--detach",
        action="store_true",
        help="start the run, print its execution id and return; it keeps running "
        "(follow it with `saga executions watch ID`)",
    )
    run.add_argument(
        "--idempotency-key",
        default="",
        metavar="KEY",
        help="a retry with the same key attaches to the first run instead of starting another",
    )
    run.add_argument(
        "--export",
        choices=tuple(_EXPORT_FORMATS),
        help="the outputs are an export (refused when a data source denies it): print the "
        "watermarked document at the end",
    )
    run.add_argument(
        "--pin-pack", "--pack", default="", dest="pack", metavar="PACK_ID",
        help="run against this pricing pack (a rerun)",
    )  # fmt: skip
    run.add_argument(
        "--pin-commit", "--commit", default="", dest="commit", metavar="HASH",
        help="read the ledger at this commit (a rerun)",
    )  # fmt: skip
    run.add_argument(
        "--allow-stale", action="store_true", help="run on a STALE pack (scope pack:stale)"
    )


def execute_options(args: argparse.Namespace) -> options_pb2.ExecuteOptions:
    """The run's options from the command line (`--weights` means `--strategy custom`)."""
    options = options_pb2.ExecuteOptions(
        allowed_providers=args.providers,
        preferred_providers=args.preferred,
        disable_fallback=args.no_fallback,
        max_cost_micro_usd=args.max_cost or 0,
        detach_on_disconnect=args.detach,
        idempotency_key=args.idempotency_key,
        pricing_pack_id=args.pack,
        ledger_commit_hash=args.commit,
        allow_stale_pack=args.allow_stale,
    )
    strategy = args.strategy
    if args.weights is not None:
        if strategy not in (None, Strategy.CUSTOM.value):
            print(f"saga: --weights goes with --strategy custom, not {strategy}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
        strategy = Strategy.CUSTOM.value
        options.weights.CopyFrom(args.weights)
    if strategy:
        options.strategy = TO_PROTO[Strategy(strategy)]
    if args.export:
        options.export = True
        options.export_format = _EXPORT_FORMATS[args.export]
    return options


async def execute(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga execute PATTERN`."""
    stub: execution_pb2_grpc.ExecutionServiceAsyncStub = execution_pb2_grpc.ExecutionServiceStub(
        channel
    )
    options = execute_options(args)
    request = execution_pb2.ExecuteRequest(
        pattern_id=args.pattern,
        inputs=inputs(args.input),
        asof=args.asof or "",
        session_id=args.session,
        options=options,
    )
    if args.detach:
        return await detached(stub.Execute(request, metadata=md, timeout=args.timeout), args.json)
    if args.json:
        async for event in stub.Execute(request, metadata=md, timeout=args.timeout):
            print(to_json(event, compact=True), flush=True)
        return 0
    try:
        summary = await stream_events(stub.Execute(request, metadata=md, timeout=args.timeout))
    finally:
        print()  # end the line of tokens, before a summary or an error
    print(" · ".join(summary), file=sys.stderr)
    return 0


async def detached(
    call: grpc.aio.UnaryStreamCall[execution_pb2.ExecuteRequest, execution_pb2.ExecuteResponse],
    as_json: bool,
) -> int:
    """`--detach`: print the run's execution id once it is accepted, then go away (the run was
    asked to detach_on_disconnect, so leaving does not cancel it)."""
    accepted = None
    async for event in call:
        if event.WhichOneof("event") == "accepted":
            accepted = event
            break
    call.cancel()
    if accepted is None:  # the runtime sends Accepted first; a stream without it is not a run
        print("saga: the run ended before it was accepted", file=sys.stderr)
        return 1
    execution_id = accepted.accepted.execution_id
    print(to_json(accepted, compact=True) if as_json else execution_id, flush=True)
    if not as_json:
        print(f"detached: `saga executions watch {execution_id}` follows it", file=sys.stderr)
    return 0


async def stream_events(
    events: AsyncIterable[execution_pb2.ExecuteResponse | execution_pb2.WatchExecutionResponse],
) -> list[str]:
    """Print tokens and switches as they come; the parts of the summary line."""
    summary: list[str] = []
    provider = ""
    skipped: dict[str, str] = {}  # provider -> why, for the summary
    streamed: list[tuple[str, str]] = []  # (step, text) printed, not printed again as outputs
    async for event in events:
        kind = event.WhichOneof("event")
        if kind == "step_started":
            began = event.step_started
            print(f"[step {began.step_id}: {began.capability}]", file=sys.stderr, flush=True)
        if kind == "accepted":
            summary.append(f"execution {event.accepted.execution_id}")
            summary.append(f"ledger {event.accepted.ledger_commit_hash}")
            summary.append(f"pack {event.accepted.pricing_pack_id}")
        elif kind == "token":
            print(event.token.text, end="", flush=True)
            streamed.append((event.token.step_id, event.token.text))
        elif kind == "tool_call_token":
            # A call's first piece names it; its arguments follow as they stream.
            t = event.tool_call_token
            if t.name:
                print(f"\n[tool call {t.index}: {t.name} {t.id}] ", end="", flush=True)
            print(t.arguments, end="", flush=True)
        elif kind == "provider_switched":
            s = event.provider_switched
            void = " (tool calls so far void)" if s.tool_calls_discarded else ""
            print(
                f"\n[switched {s.from_provider} → {s.to_provider}: {s.reason}{void}]",
                file=sys.stderr,
            )
        elif kind == "providers_skipped":
            for p in event.providers_skipped.providers:
                skipped[p.provider] = p.reason
                when = f", retry in {p.retry_after_ms / 1000:g} s" if p.retry_after_ms else ""
                print(f"\n[skipped {p.provider}: {p.reason}{when}]", file=sys.stderr)
        elif kind == "step_skipped":
            step = event.step_skipped
            print(f"\n[step {step.step_id} skipped: {step.reason}]", file=sys.stderr)
        elif kind == "run_moved":
            moved = event.run_moved
            reused = ", ".join(moved.reused_step_ids) or "none"
            again = ", ".join(moved.restarted_step_ids) or "none"
            print(
                f"\n[run moved {moved.from_replica} → {moved.replica}: steps reused {reused}; "
                f"started again {again} (their text above is replaced)]",
                file=sys.stderr,
            )
            # The text of a step that starts again is said anew: it is not the answer's.
            streamed = [(s, t) for s, t in streamed if s not in moved.restarted_step_ids]
        elif kind == "step_completed":
            done = event.step_completed
            by = f", {done.provider}" if done.provider else ""
            end = "\n" if streamed and not streamed[-1][1].endswith("\n") else ""
            print(f"{end}[step {done.step_id} done in {done.duration_ms} ms{by}]", file=sys.stderr)
            if done.provider:
                provider = f"{done.provider} ({done.model})"
        elif kind == "completed":
            usage = event.completed.usage
            summary.append(f"provider {provider}")
            summary.append(f"tokens {usage.input_tokens} in / {usage.output_tokens} out")
            summary.append(f"cost {dollars(event.completed.cost_micro_usd, places=6)}")
            outputs = json_format.MessageToDict(event.completed.outputs)
            text = "".join(t for _, t in streamed).strip()
            shown = {
                k: v for k, v in outputs.items() if not (isinstance(v, str) and v.strip() == text)
            }
            if shown:
                print()
                for name, value in shown.items():
                    rendered = value if isinstance(value, str) else json.dumps(value)
                    print(f"{name}: {rendered}")
            if event.completed.export_document:
                print(f"\n{event.completed.export_document}", end="", flush=True)
            if skipped:
                summary.append(
                    "skipped " + ", ".join(f"{name} ({why})" for name, why in skipped.items())
                )
    return summary
