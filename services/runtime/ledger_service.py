"""`saga.runtime.v1.LedgerService`: the ledger's writes, relayed from the gateway's
AdminService (scope `admin` is checked there; here only the gateway may call, see
`services.common.identity`).

ImportTransactions parses the CSV whole (`ledger_csv`), then appends every row or none
(`Ledger.import_transactions`); an oversold row is FAILED_PRECONDITION LEDGER_OVERSOLD naming
its line.
"""

from __future__ import annotations

import asyncio
import logging

from saga.runtime.v1 import ledger_pb2, ledger_pb2_grpc
from services.common.errors import FailedPrecondition, FieldViolation
from services.common.guard import Context
from services.runtime.ledger import Ledger, Oversold
from services.runtime.ledger_csv import parse_transactions

log = logging.getLogger("saga.runtime.ledger")


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """Imports transactions into the runtime's ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def ImportTransactions(
        self, request: ledger_pb2.ImportTransactionsRequest, context: Context
    ) -> ledger_pb2.ImportTransactionsResponse:
        """Validate the CSV, append it atomically, answer the new head."""
        rows = await asyncio.to_thread(parse_transactions, request.csv)
        try:
            before, after = await self._ledger.import_transactions(
                [r.transaction for r in rows], request.expected_head
            )
        except Oversold as error:
            line = rows[error.index].line
            raise FailedPrecondition(
                f"line {line}: {error}",
                reason="LEDGER_OVERSOLD",
                metadata={"line": str(line)},
                field_violations=[FieldViolation(f"csv.lines[{line}].quantity", str(error))],
            ) from None
        log.info(
            "ledger import",
            extra={"transactions": len(rows), "previous_head": before, "ledger_head": after},
        )
        return ledger_pb2.ImportTransactionsResponse(
            ledger_commit_hash=after, previous_commit_hash=before, transactions=len(rows)
        )
