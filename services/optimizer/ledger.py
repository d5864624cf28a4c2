"""The usage ledger: every provider attempt the routers report, persisted once, aggregated
for GetUsage (SQLite or PostgreSQL through services.common.database).

Idempotency rests on the primary key: a batch is inserted in one transaction with `ON
CONFLICT (outcome_id) DO NOTHING … RETURNING outcome_id`, so the ids that come back are
exactly the outcomes stored by this call, and a resent one — from a router's outbox after a
lost answer, or after this process restarted — is acknowledged without being counted
twice. Money is integer micro-USD; each row keeps the price table version its cost was
computed with, and beside the provider's cost the caller's charge (the router's
`accounting.charge_policy`): GetUsage sums both.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from services.common.database import Database, Row
from services.common.errors import FieldViolation, InvalidArgument
from services.optimizer.live_metrics import Sample
from services.optimizer.usage import UsageQuery

MAX_USAGE_ROWS = 10_000
_CHUNK = 100  # rows per INSERT: 24 parameters each stays far below both databases' limits


@dataclass(frozen=True)
class UsageRecord:
    """One provider attempt, as the ledger stores it."""

    outcome_id: str
    user_id: str
    session_id: str
    execution_id: str
    step_id: str
    pattern_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    estimated: bool
    cost_micro_usd: int
    """What the provider billed (estimated when `estimated`)."""
    charge_micro_usd: int
    """What the caller is charged for it (the router's charge policy), at most the cost."""
    latency_ms: int
    ttft_ms: int
    status: str
    error_reason: str
    retry_count: int
    price_table_version: str
    occurred_at: float

    @property
    def day(self) -> str:
        """The UTC date of `occurred_at`, `YYYY-MM-DD`."""
        return dt.datetime.fromtimestamp(self.occurred_at, dt.UTC).date().isoformat()

    def sample(self) -> Sample | None:
        """What this attempt tells the live metrics of its provider (None: nothing)."""
        return Sample.of_outcome(
            at=self.occurred_at,
            status=self.status,
            error_reason=self.error_reason,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
        )


_COLUMNS = [f.name for f in fields(UsageRecord)] + ["day", "recorded_at"]


@dataclass(frozen=True)
class UsageRow:
    """Aggregated usage of one group; dimensions not grouped by are empty."""

    day: str = ""
    user_id: str = ""
    session_id: str = ""
    provider: str = ""
    model: str = ""
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micro_usd: int = 0
    charge_micro_usd: int = 0


@dataclass(frozen=True)
class UsageReport:
    """GetUsage's answer: the groups in dimension order, and the totals over all of them."""

    rows: tuple[UsageRow, ...]
    totals: UsageRow


_SUMS = (
    "COUNT(*) AS calls, "
    "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
    "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
    "COALESCE(SUM(cached_tokens), 0) AS cached_tokens, "
    "COALESCE(SUM(cache_write_tokens), 0) AS cache_write_tokens, "
    "COALESCE(SUM(cost_micro_usd), 0) AS cost_micro_usd, "
    "COALESCE(SUM(charge_micro_usd), 0) AS charge_micro_usd"
)


def _usage_row(row: Row) -> UsageRow:
    # PostgreSQL sums BIGINTs as NUMERIC: int() brings every backend to one type.
    return UsageRow(
        day=str(row.get("day", "")),
        user_id=str(row.get("user_id", "")),
        session_id=str(row.get("session_id", "")),
        provider=str(row.get("provider", "")),
        model=str(row.get("model", "")),
        calls=int(row["calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached_tokens=int(row["cached_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
        cost_micro_usd=int(row["cost_micro_usd"]),
        charge_micro_usd=int(row["charge_micro_usd"]),
    )


class Ledger:
    """The usage ledger over the optimizer's database."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def record(self, records: Sequence[UsageRecord]) -> list[UsageRecord]:
        """Store `records` in one transaction; return those that were new (in order). A
        record whose outcome id is stored already, or repeats one earlier in the batch, is
        skipped."""
        unique = list({r.outcome_id: r for r in reversed(records)}.values())[::-1]
        if not unique:
            return []
        now = self._clock()
        stored: set[str] = set()
        async with self._db.transaction() as tx:
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                values, args = [], []
                for n, record in enumerate(chunk):
                    first = n * len(_COLUMNS)
                    values.append(
                        "(" + ", ".join(f"${first + k + 1}" for k in range(len(_COLUMNS))) + ")"
                    )
                    args += [getattr(record, f.name) for f in fields(UsageRecord)]
                    args += [record.day, now]
                rows = await tx.fetch(
                    f"INSERT INTO usage_records ({', '.join(_COLUMNS)}) "  # noqa: S608
                    f"VALUES {', '.join(values)} "
                    "ON CONFLICT (outcome_id) DO NOTHING RETURNING outcome_id",
                    *args,
                )
                stored.update(str(r["outcome_id"]) for r in rows)
        return [r for r in unique if r.outcome_id in stored]

    async def usage(self, query: UsageQuery, max_rows: int = MAX_USAGE_ROWS) -> UsageReport:
        """Aggregate the ledger as `query` asks. More than `max_rows` groups is an
        INVALID_ARGUMENT (USAGE_RESULT_TOO_LARGE): narrow the days or the grouping."""
        where = "day >= $1 AND day <= $2"
        args: list[object] = [query.start.isoformat(), query.end.isoformat()]
        if query.user_id is not None:
            where += " AND user_id = $3"
            args.append(query.user_id)
        # Dimension values are fixed column names, never request text: safe to interpolate.
        columns = ", ".join(d.value for d in query.group_by)
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {columns}, {_SUMS} FROM usage_records WHERE {where} "  # noqa: S608
                f"GROUP BY {columns} ORDER BY {columns} LIMIT {max_rows + 1}",
                *args,
            )
            totals = await tx.fetchrow(
                f"SELECT {_SUMS} FROM usage_records WHERE {where}",  # noqa: S608
                *args,
            )
        if len(rows) > max_rows:
            raise InvalidArgument(
                f"the query groups into more than {max_rows} rows",
                reason="USAGE_RESULT_TOO_LARGE",
                field_violations=[
                    FieldViolation("group_by", "narrow the dates or group by fewer dimensions")
                ],
            )
        assert totals is not None
        return UsageReport(tuple(_usage_row(r) for r in rows), _usage_row(totals))

    async def recent(self, provider: str, since: float, limit: int) -> list[UsageRecord]:
        """`provider`'s last `limit` attempts at or after `since`, oldest first (to warm the
        live metrics up after a restart)."""
        rows = await self._db.fetch(
            "SELECT * FROM usage_records WHERE provider = $1 AND occurred_at >= $2 "
            "ORDER BY occurred_at DESC LIMIT $3",
            provider,
            since,
            limit,
        )
        names = [f.name for f in fields(UsageRecord)]
        records = []
        for row in reversed(rows):
            values = {name: row[name] for name in names}
            values["estimated"] = bool(values["estimated"])  # SQLite keeps 0/1
            records.append(UsageRecord(**values))
        return records
