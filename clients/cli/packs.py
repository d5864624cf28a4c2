"""`saga packs publish FILE | list | health`: pricing packs.

A pack file is JSON or CSV (by its extension; `.json` or `.csv`):

    {"asof": "2026-12-03", "source": "close-feed",
     "prices": [{"symbol": "AAPL", "price": "229.87", "currency": "USD", "source": "nasdaq"}]}

    symbol,price,currency,source        (header required; source optional: the pack's)
    AAPL,229.87,USD,nasdaq

A price is a decimal number of units of its currency (at most 6 decimal places; read as a
decimal, never a float) or, in JSON, `price_micro` in millionths. `--asof` and `--source`
set (or override) the pack's date and source; CSV needs both. A file that does not parse is
refused in one line before any call (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import grpc

from clients.cli import arguments
from clients.cli.arguments import EXIT_USAGE
from clients.cli.output import count, table, to_json, when
from clients.cli.settings import Metadata
from saga.execution.v1 import records_pb2
from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, pack_health_pb2, pack_health_pb2_grpc
from saga.runtime.v1 import price_pb2

_MICRO = Decimal(1_000_000)
_STATUS = {
    records_pb2.PACK_STATUS_FRESH: "FRESH",
    records_pb2.PACK_STATUS_WARMING: "WARMING",
    records_pb2.PACK_STATUS_STALE: "STALE",
    records_pb2.PACK_STATUS_ERROR: "ERROR",
}


def add_parsers(
    sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser
) -> None:
    """Register `saga packs …`; `common` holds the options every command takes."""
    packs = sub.add_parser("packs", help="pricing packs")
    psub = packs.add_subparsers(dest="packs_command", required=True)
    publish = psub.add_parser(
        "publish", parents=[common], help="publish a pack from a JSON or CSV file (admin)"
    )
    publish.add_argument("file", type=Path)
    publish.add_argument("--asof", default="", help="YYYY-MM-DD (CSV: required)")
    publish.add_argument("--source", default="", help="the pack's data source (CSV: required)")
    psub.add_parser("list", parents=[common], help="every pack, newest asof first")
    health = psub.add_parser("health", parents=[common], help="the pack serving a date")
    health.add_argument("--asof", default="", help="YYYY-MM-DD (default: today, UTC)")
    health.add_argument("--pack", default="", help="a given pack's health instead")


class PackFileError(ValueError):
    """A pack file that cannot be read as a pack."""


def _micro(value: Any, where: str) -> int:
    try:
        amount = Decimal(str(value)) * _MICRO
    except InvalidOperation:
        raise PackFileError(f"{where}: price {value!r} is not a number") from None
    if amount != amount.to_integral_value():
        raise PackFileError(f"{where}: price {value!r} has more than 6 decimal places")
    return int(amount)


def _price(entry: dict[str, Any], where: str) -> price_pb2.Price:
    if not isinstance(entry, dict) or "symbol" not in entry:
        raise PackFileError(f"{where}: expected an object with symbol, price, currency")
    if "price_micro" in entry:
        micro = entry["price_micro"]
        if not isinstance(micro, int) or isinstance(micro, bool):
            raise PackFileError(f"{where}: price_micro must be an integer")
    elif "price" in entry:
        micro = _micro(entry["price"], where)
    else:
        raise PackFileError(f"{where}: no price")
    return price_pb2.Price(
        symbol=str(entry["symbol"]),
        price_micro=micro,
        currency=str(entry.get("currency") or "USD"),
        source=str(entry.get("source") or ""),
    )


def read_pack(path: Path, asof: str = "", source: str = "") -> admin_pb2.PublishPackRequest:
    """The PublishPack request of a pack file (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PackFileError(f"{path}: {error.strerror}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"symbol", "price"} <= set(rows[0]):
            raise PackFileError(f"{path}: expected a header row symbol,price,currency[,source]")
        entries: list[Any] = rows
        document: dict[str, Any] = {}
    elif path.suffix.lower() == ".json":
        try:
            document = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as error:
            raise PackFileError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(document, dict) or not isinstance(document.get("prices"), list):
            raise PackFileError(f'{path}: expected {{"asof", "source", "prices": [...]}}')
        entries = document["prices"]
    else:
        raise PackFileError(f"{path}: name it .json or .csv")
    request = admin_pb2.PublishPackRequest(
        asof=asof or str(document.get("asof") or ""),
        source=source or str(document.get("source") or ""),
        prices=[_price(e, f"{path}: price {i + 1}") for i, e in enumerate(entries)],
    )
    if not request.asof or not request.source:
        raise PackFileError(f"{path}: give the pack's asof and source (--asof, --source)")
    return request


def _problems(h: records_pb2.PackHealth) -> str:
    r = h.reconciliation
    parts = []
    if r.missing_symbols:
        parts.append("missing " + ",".join(r.missing_symbols))
    if r.non_positive_symbols:
        parts.append("not positive " + ",".join(r.non_positive_symbols))
    if r.duplicate_symbols:
        parts.append("twice " + ",".join(r.duplicate_symbols))
    if r.checksum_mismatch:
        parts.append("checksum mismatch")
    if h.status == records_pb2.PACK_STATUS_WARMING:
        parts.append(f"ready by {when(h.estimated_ready)}")
    if h.carried_forward:
        parts.append("carried forward")
    return "; ".join(parts) or "—"


def packs_table(packs: list[records_pb2.PackHealth]) -> str:
    """One row per pack: id, date, status, source, prices, publication, what reconciliation
    found (or when a warming pack is expected ready)."""
    return table(
        ("PACK", "ASOF", "STATUS", "SOURCE", "PRICES", "PUBLISHED", "NOTES"),
        [
            (
                h.pack_id or "—",
                h.asof,
                _STATUS.get(h.status, "NONE"),
                h.source or "—",
                count(h.reconciliation.prices_total),
                when(h.published_at),
                _problems(h),
            )
            for h in packs
        ],
        right=(4,),
    )


async def packs(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga packs publish|list|health`."""
    if args.packs_command == "publish":
        try:
            request = read_pack(args.file, args.asof, args.source)
        except PackFileError as error:
            print(f"saga: {error}", file=sys.stderr)
            return EXIT_USAGE
        admin: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
        reply = await admin.PublishPack(request, metadata=md, timeout=args.timeout)
        print(to_json(reply) if args.json else packs_table([reply.health]))
        return 0
    stub: pack_health_pb2_grpc.PackHealthServiceAsyncStub = (
        pack_health_pb2_grpc.PackHealthServiceStub(channel)
    )
    if args.packs_command == "health":
        shown = await stub.GetPackHealth(
            pack_health_pb2.GetPackHealthRequest(asof=args.asof, pack_id=args.pack),
            metadata=md,
            timeout=args.timeout,
        )
        print(to_json(shown) if args.json else packs_table([shown.health]))
        return 0
    listed: list[records_pb2.PackHealth] = []
    token = ""
    while True:
        page = await stub.ListPacks(
            pack_health_pb2.ListPacksRequest(page_size=500, page_token=token),
            metadata=md,
            timeout=args.timeout,
        )
        listed.extend(page.packs)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print(to_json(pack_health_pb2.ListPacksResponse(packs=listed)))
    else:
        print(packs_table(listed))
    return 0
