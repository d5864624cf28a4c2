"""Attempt outcomes as the optimizer records them, with their idempotency ids.

A Reason call has an id, `<execution>:<step>:<attempt set>`, where the attempt set is a
random nonce drawn per call: a step that calls Reason again (a retried step) gets new ids
rather than having its outcomes taken for resends of the first call's. Attempt `n` of the
call is outcome `<call id>:<n>`; the call id is also its budget reservation's id. Ids are
minted before anything is written, so every resend of an outcome carries the same id and the
optimizer counts it once.
"""

from __future__ import annotations

import secrets

from google.protobuf import timestamp_pb2

from saga.optimizer.v1 import optimizer_pb2
from services.common.usage_messages import usage_proto
from services.router.attempts import AttemptRecord
from services.router.calls import Accounting


def call_id(accounting: Accounting) -> str:
    """A new call id: `<execution>:<step>:<attempt set>`."""
    return f"{accounting.execution_id}:{accounting.step_id}:{secrets.token_hex(4)}"


def outcome_id(call: str, n: int) -> str:
    """The idempotency id of attempt `n` of call `call`."""
    return f"{call}:{n}"


def outcome_proto(
    record: AttemptRecord, accounting: Accounting, call: str
) -> optimizer_pb2.Outcome:
    """The Outcome message for one attempt of call `call`."""
    occurred = timestamp_pb2.Timestamp()
    occurred.FromNanoseconds(int(record.occurred_at * 1e9))
    return optimizer_pb2.Outcome(
        outcome_id=outcome_id(call, record.n),
        user_id=accounting.user_id,
        session_id=accounting.session_id,
        execution_id=accounting.execution_id,
        step_id=accounting.step_id,
        pattern_id=accounting.pattern_id,
        provider=record.provider,
        model=record.model,
        usage=usage_proto(record.usage),
        cost_micro_usd=record.cost_micro_usd,
        charge_micro_usd=record.charge_micro_usd,
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms,
        status=optimizer_pb2.OutcomeStatus.ValueType(record.status.value),
        error_reason=record.error_reason,
        retry_count=record.retry_count,
        price_table_version=record.price_table_version,
        estimated=record.usage.estimated,
        occurred_at=occurred,
    )
