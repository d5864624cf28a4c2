"""`saga ledger import FILE.csv`: append transactions to the ledger (admin).

The file goes to the runtime as it is: the runtime validates every row (a bad cell is
reported as `csv.lines[<line>].<column>`, the header being line 1) and appends all of them or
none. `--expect-head` makes a retry safe: the import is refused (ABORTED LEDGER_HEAD_MOVED)
when the ledger's head is no longer the one given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from clients.cli import arguments
from clients.cli.output import to_json
from clients.cli.settings import Metadata
from saga.gateway.v1 import admin_pb2, admin_pb2_grpc


def add_parsers(
    sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser
) -> None:
    """Register `saga ledger …`."""
    ledger = sub.add_parser("ledger", help="portfolio transactions (admin)")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)
    load = lsub.add_parser(
        "import",
        parents=[common],
        help="append a CSV of transactions (portfolio, trade_date, symbol, side, quantity, "
        "price, currency), atomically",
    )
    load.add_argument("file", help="the CSV file, or - for standard input")
    load.add_argument(
        "--expect-head", default="", metavar="HASH", help="refuse unless this is the ledger head"
    )


def _read(name: str) -> str | None:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"saga: cannot read {name}: {error}", file=sys.stderr)
        return None


async def ledger(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga ledger import`."""
    text = _read(args.file)
    if text is None:
        return 2
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.ImportTransactions(
        admin_pb2.ImportTransactionsRequest(csv=text, expected_head=args.expect_head),
        metadata=md,
        timeout=args.timeout,
    )
    if args.json:
        print(to_json(reply))
    else:
        print(f"imported {reply.transactions} transactions")
        print(f"ledger head {reply.ledger_commit_hash} (was {reply.previous_commit_hash})")
    return 0
