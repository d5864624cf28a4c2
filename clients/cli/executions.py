"""`saga executions`: the caller's runs and their events.

    saga executions list [--status S] [--pattern P] [--user U | --all] [--limit N]
    saga executions show ID
    saga executions watch ID [--after N]    replay the run's events after N, then follow it

`watch` prints like `saga execute` (tokens on stdout, the summary on stderr) and ends the way
the run ended: exit 0 after Completed, 1 with the run's own error otherwise. A watch cut by
UNAVAILABLE (the runtime replica it read from stopped; a durable run continues on another)
watches again after the last sequence it printed, a few times, so the output stays gapless.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from clients.cli import arguments
from clients.cli.execute import stream_events
from clients.cli.output import count, dollars, table, to_json, when
from clients.cli.settings import Metadata
from saga.execution.v1 import records_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from services.common.backoff import Backoff

STATUSES = ("running", "succeeded", "failed", "cancelled", "interrupted")


def add_parser(sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser) -> None:
    """The `executions` command and its subcommands."""
    executions = sub.add_parser("executions", help="your runs: list, show, watch")
    commands = executions.add_subparsers(dest="executions_command", required=True)
    listing = commands.add_parser("list", parents=[common], help="your runs, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--pattern", default="")
    who = listing.add_mutually_exclusive_group()
    who.add_argument("--user", default="", help="another user's (usage:read:all or admin)")
    who.add_argument("--all", action="store_true", help="every user's (usage:read:all or admin)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = commands.add_parser("show", parents=[common], help="one run's record")
    show.add_argument("execution_id")
    follow = commands.add_parser("watch", parents=[common], help="replay a run, then follow it")
    follow.add_argument("execution_id")
    follow.add_argument("--after", type=int, default=0, help="the last sequence already seen")


RESUME_ATTEMPTS = 10
"""How often `watch` watches again after UNAVAILABLE before it gives up."""

RESUME_PAUSE = Backoff(initial=0.2, maximum=2.0)


async def resuming_watch(
    stub: execution_pb2_grpc.ExecutionServiceAsyncStub, execution_id: str, after: int, md: Metadata
) -> AsyncIterator[execution_pb2.WatchExecutionResponse]:
    """The run's events after `after`, watched again after the last one received when a
    watch ends UNAVAILABLE (at most RESUME_ATTEMPTS times in a row)."""
    failures = 0
    while True:
        try:
            request = execution_pb2.WatchExecutionRequest(
                execution_id=execution_id, after_sequence=after
            )
            async for event in stub.WatchExecution(request, metadata=md):
                failures = 0
                after = event.sequence
                yield event
            return
        except grpc.aio.AioRpcError as error:
            failures += 1
            if error.code() != grpc.StatusCode.UNAVAILABLE or failures > RESUME_ATTEMPTS:
                raise
        await asyncio.sleep(RESUME_PAUSE.delay(failures))


def _status(status: records_pb2.ExecutionStatus.ValueType) -> str:
    return records_pb2.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_").lower()


def _row(e: records_pb2.Execution) -> tuple[str, ...]:
    return (
        e.execution_id,
        e.pattern_id,
        _status(e.status),
        when(e.created_at),
        count(e.usage.total_tokens),
        dollars(e.cost_micro_usd, places=6),
        e.error_reason or "—",
    )


async def executions(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga executions list|show|watch`."""
    stub: execution_pb2_grpc.ExecutionServiceAsyncStub = execution_pb2_grpc.ExecutionServiceStub(
        channel
    )
    if args.executions_command == "watch":
        call = resuming_watch(stub, args.execution_id, args.after, md)
        if args.json:
            async for event in call:
                print(to_json(event, compact=True), flush=True)
            return 0
        try:
            summary = await stream_events(call)
        finally:
            print()
        print(" · ".join(summary), file=sys.stderr)
        return 0
    if args.executions_command == "show":
        reply = await stub.GetExecution(
            execution_pb2.GetExecutionRequest(execution_id=args.execution_id), metadata=md
        )
        e = reply.execution
        if args.json:
            print(to_json(e))
            return 0
        fields = {
            "execution": e.execution_id,
            "pattern": e.pattern_id,
            "user": e.user_id,
            "status": _status(e.status) + (f" ({e.error_reason})" if e.error_reason else ""),
            "created": when(e.created_at),
            "completed": when(e.completed_at),
            "asof": e.asof,
            "tokens": f"{e.usage.input_tokens} in / {e.usage.output_tokens} out",
            "cost": dollars(e.cost_micro_usd, places=6),
            "pack": e.pricing_pack_id or "—",
            "ledger": e.ledger_commit_hash or "—",
            "trace": e.trace_id or "—",
        }
        print(table(("FIELD", "VALUE"), fields.items()))
        return 0
    request = execution_pb2.ListExecutionsRequest(
        pattern_id=args.pattern,
        user_id=args.user,
        all_users=args.all,
        page_size=min(max(args.limit, 1), 500),
    )
    if args.status:
        request.status = records_pb2.ExecutionStatus.Value(
            f"EXECUTION_STATUS_{args.status.upper()}"
        )
    listed = await stub.ListExecutions(request, metadata=md)
    if args.json:
        print(to_json(listed))
        return 0
    print(
        table(
            ("EXECUTION", "PATTERN", "STATUS", "CREATED", "TOKENS", "COST", "REASON"),
            [_row(e) for e in listed.executions],
            right=(4, 5),
        )
    )
    return 0
