"""Ledger transactions from CSV (`saga ledger import FILE.csv`): parsed and validated whole, so
an import appends every row or none.

The header names the columns (any order): portfolio, trade_date, symbol, side, quantity,
price, currency. Quantities and prices are decimals with at most six fractional digits (the
ledger stores millionths: nothing is rounded), trade dates real `YYYY-MM-DD` dates not after
today (UTC). Every problem is reported, not just the first, as a field violation
`csv.lines[<n>].<column>` where n is the line of the file (the header is line 1), so a user
fixes the file in one pass. Whether a sell exceeds the holding depends on the ledger, not the
file: `Ledger.import_transactions` checks that.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.common.errors import FieldViolation, InvalidArgument
from services.runtime.ledger import SIDES, Transaction

COLUMNS = ("portfolio", "trade_date", "symbol", "side", "quantity", "price", "currency")
MAX_ROWS = 10_000
MAX_BYTES = 2 * 1024 * 1024  # under the 4 MiB gRPC message limit
MAX_VIOLATIONS = 100

_PORTFOLIO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,31}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ParsedRow:
    """A valid row and the line of the file it came from."""

    line: int
    transaction: Transaction


def _micro(text: str) -> int | None:
    """A positive decimal with at most six fractional digits, in millionths."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0:
        return None
    micro = value * _MILLION
    if micro != micro.to_integral_value() or micro >= 2**63:
        return None
    return int(micro)


def _cell_problem(column: str, text: str, today: datetime.date) -> str:
    """What is wrong with one cell ("" when nothing)."""
    if column == "portfolio" and not _PORTFOLIO.fullmatch(text):
        return "expected a portfolio name (letters, digits, _ . -; at most 64)"
    if column == "symbol" and not _SYMBOL.fullmatch(text):
        return "expected an upper-case symbol (A-Z, 0-9, . -; at most 32)"
    if column == "currency" and not _CURRENCY.fullmatch(text):
        return "expected an ISO 4217 code such as USD"
    if column == "side" and text not in SIDES:
        return f"expected one of {', '.join(SIDES)}"
    if column in ("quantity", "price") and _micro(text) is None:
        return "expected a positive decimal with at most 6 fractional digits"
    if column == "trade_date":
        try:
            date = datetime.date.fromisoformat(text) if _DATE.fullmatch(text) else None
        except ValueError:
            date = None
        if date is None:
            return "expected a date as YYYY-MM-DD"
        if date > today:
            return f"{text} is in the future"
    return ""


def _invalid(violations: list[FieldViolation], message: str) -> InvalidArgument:
    return InvalidArgument(
        message,
        reason="LEDGER_IMPORT_INVALID",
        metadata={"violations": str(len(violations))},
        field_violations=violations[:MAX_VIOLATIONS],
    )


def parse_transactions(text: str, today: datetime.date | None = None) -> list[ParsedRow]:
    """Every row of `text` as a transaction; INVALID_ARGUMENT LEDGER_IMPORT_INVALID listing
    every bad cell (at most MAX_VIOLATIONS) when any is wrong."""
    today = today or datetime.datetime.now(datetime.UTC).date()
    if len(text.encode()) > MAX_BYTES:
        violation = FieldViolation("csv", f"larger than {MAX_BYTES} bytes")
        raise _invalid([violation], "the CSV is too large; split it into several imports")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as error:
        raise _invalid(
            [FieldViolation("csv.lines[1]", str(error))], "the CSV is malformed"
        ) from None
    missing = [c for c in COLUMNS if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    doubled = sorted({h for h in header if header.count(h) > 1})
    if missing or unknown or doubled:
        problems = (
            [f"missing column {c}" for c in missing]
            + [f"unknown column {h!r}" for h in unknown]
            + [f"column {h} appears twice" for h in doubled]
        )
        raise _invalid(
            [FieldViolation("csv.lines[1]", p) for p in problems],
            f"the CSV header must name {', '.join(COLUMNS)}",
        )
    index = {c: header.index(c) for c in COLUMNS}
    violations: list[FieldViolation] = []
    rows: list[ParsedRow] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(rows) >= MAX_ROWS:
                violations.append(FieldViolation(f"csv.lines[{line}]", f"over {MAX_ROWS} rows"))
                break
            if len(cells) != len(header):
                where = f"csv.lines[{line}]"
                violations.append(
                    FieldViolation(where, f"{len(cells)} fields, expected {len(header)}")
                )
                continue
            values = {c: cells[i].strip() for c, i in index.items()}
            bad = [(c, _cell_problem(c, v, today)) for c, v in values.items()]
            bad = [(c, p) for c, p in bad if p]
            violations.extend(FieldViolation(f"csv.lines[{line}].{c}", p) for c, p in bad)
            if bad:
                continue
            transaction = Transaction(
                portfolio=values["portfolio"],
                trade_date=values["trade_date"],
                symbol=values["symbol"],
                side=values["side"],
                quantity_micro=_micro(values["quantity"]) or 0,
                price_micro=_micro(values["price"]) or 0,
                currency=values["currency"],
            )
            rows.append(ParsedRow(line, transaction))
    except csv.Error as error:
        violations.append(FieldViolation(f"csv.lines[{reader.line_num}]", str(error)))
    if violations:
        raise _invalid(
            violations,
            f"{len(violations)} problem(s) in the CSV, first {violations[0].field}: "
            f"{violations[0].description}",
        )
    if not rows:
        raise _invalid([FieldViolation("csv", "no transactions")], "the CSV has no transactions")
    return rows
