"""`saga execute`: run a pattern and stream its events.

For people: tokens on stdout as they arrive, switches, skipped providers and steps, and a one-line
summary on stderr. With `--json`: every event as one JSON document per line, nothing else.

`--session ID` appends the run to one of the caller's sessions as a stage once it completes.
`--provider NAME` (repeatable) is the run's allow-list, `--no-fallback` its opt-out of
fallback, `--weights` the CUSTOM strategy's weights (and implies it); `--pack` and `--commit`
pin the pricing pack and ledger commit (from an earlier run's summary line) to reproduce it,
`--allow-stale` lets it run on a STALE pack. `--export json|csv` makes the run an export: its
watermarked document is printed on stdout after the tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from clients.cli.arguments import EXIT_USAGE
from clients.cli.output import dollars, to_json
from clients.cli.settings import Metadata
from saga.execution.v1 import options_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
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


def execute_options(args: argparse.Namespace) -> options_pb2.ExecuteOptions:
    """The run's options from the command line (`--weights` means `--strategy custom`)."""
    options = options_pb2.ExecuteOptions(
        allowed_providers=args.providers,
        disable_fallback=args.no_fallback,
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


async def stream_events(
    events: AsyncIterable[execution_pb2.ExecuteResponse | execution_pb2.WatchExecutionResponse],
) -> list[str]:
    """Print tokens and switches as they come; the parts of the summary line."""
    summary: list[str] = []
    provider = ""
    skipped: dict[str, str] = {}  # provider -> why, for the summary
    streamed: list[str] = []  # the text already printed, not printed again with the outputs
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
            streamed.append(event.token.text)
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
        elif kind == "step_completed":
            done = event.step_completed
            by = f", {done.provider}" if done.provider else ""
            end = "\n" if streamed and not streamed[-1].endswith("\n") else ""
            print(f"{end}[step {done.step_id} done in {done.duration_ms} ms{by}]", file=sys.stderr)
            if done.provider:
                provider = f"{done.provider} ({done.model})"
        elif kind == "completed":
            usage = event.completed.usage
            summary.append(f"provider {provider}")
            summary.append(f"tokens {usage.input_tokens} in / {usage.output_tokens} out")
            summary.append(f"cost {dollars(event.completed.cost_micro_usd, places=6)}")
            outputs = json_format.MessageToDict(event.completed.outputs)
            text = "".join(streamed).strip()
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
