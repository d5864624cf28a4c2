"""Attempt outcomes shipped to the optimizer in the background.

`OutcomeReporter.report` is called from inside the Reason handler and returns at once: it
starts a task that sends the outcome over `RecordOutcomes`. Being created in the handler,
the task inherits the request's context, so the optimizer's span of that call joins the
execution's trace. In-flight reports are bounded (beyond, an outcome is dropped with a
warning); a failed send is logged, never raised. The durable outbox with resends (issue 5)
replaces the drop: outcome ids are idempotent, so resending is safe.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import timestamp_pb2

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.router.calls import Accounting
from services.router.reasoning import AttemptRecord

log = logging.getLogger("saga.router.outcomes")

DEFAULT_MAX_IN_FLIGHT = 512
SEND_TIMEOUT_SECONDS = 5.0


def outcome_id(accounting: Accounting, n: int) -> str:
    """The idempotency id of attempt `n` of a step: `<execution>:<step>:<n>`."""
    return f"{accounting.execution_id}:{accounting.step_id}:{n}"


def outcome_proto(record: AttemptRecord, accounting: Accounting) -> optimizer_pb2.Outcome:
    """The Outcome message for one attempt."""
    occurred = timestamp_pb2.Timestamp()
    occurred.FromNanoseconds(int(record.occurred_at * 1e9))
    return optimizer_pb2.Outcome(
        outcome_id=outcome_id(accounting, record.n),
        user_id=accounting.user_id,
        session_id=accounting.session_id,
        execution_id=accounting.execution_id,
        step_id=accounting.step_id,
        pattern_id=accounting.pattern_id,
        provider=record.provider,
        model=record.model,
        usage=common_pb2.Usage(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            total_tokens=record.input_tokens + record.output_tokens,
            cached_tokens=record.cached_tokens,
            estimated=record.estimated,
        ),
        cost_micro_usd=record.cost_micro_usd,
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms,
        status=optimizer_pb2.OutcomeStatus.ValueType(record.status.value),
        error_reason=record.error_reason,
        price_table_version=record.price_table_version,
        estimated=record.estimated,
        occurred_at=occurred,
    )


class OutcomeReporter:
    """Sends outcomes to the optimizer without holding up the caller."""

    def __init__(
        self, channel: grpc.aio.Channel, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> None:
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        self._max_in_flight = max_in_flight
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Reports started and not finished."""
        return len(self._pending)

    def report(self, outcome: optimizer_pb2.Outcome) -> None:
        """Start sending `outcome` (call from the request's handler; never blocks)."""
        if len(self._pending) >= self._max_in_flight:
            log.warning(
                "outcome dropped: too many reports in flight",
                extra={"outcome_id": outcome.outcome_id, "in_flight": len(self._pending)},
            )
            return
        task = asyncio.create_task(self._send(outcome))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, outcome: optimizer_pb2.Outcome) -> None:
        try:
            await self._stub.RecordOutcomes(
                iter([optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome])]),
                timeout=SEND_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "outcome not recorded",
                extra={
                    "outcome_id": outcome.outcome_id,
                    "execution_id": outcome.execution_id,
                    "code": error.code().name,
                },
            )
        except Exception:
            log.exception("outcome not recorded", extra={"outcome_id": outcome.outcome_id})

    async def close(self, grace: float = 2.0) -> None:
        """Give reports in flight `grace` seconds to finish, then cancel the rest."""
        if not self._pending:
            return
        pending = set(self._pending)
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("outcomes not recorded at shutdown", extra={"count": len(late)})
            await asyncio.gather(*late, return_exceptions=True)
