"""The bounds of a usage outcome (`saga.optimizer.v1.Outcome`), in one place for both sides:
the router checks them before it calls a provider and before it stores an outcome, the
optimizer checks them before it records one — so an outcome the router stores is one the
optimizer accepts, and a change of a cap changes both. Protobuf only, no grpc.

* Identity fields (whose usage it is: user, session, execution, step, pattern) are refused
  when too long — the router refuses the call before any provider is called; clipping one
  would bill someone else.
* Descriptive fields (provider, model, error reason, price table version) may be clipped to
  their cap by the router (`clip`): a clipped model name still bills the right user the
  right amount.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga.optimizer.v1 import optimizer_pb2

MAX_TEXT_CHARS = 256
"""Every text field of an outcome, in characters."""
MAX_OUTCOME_ID_CHARS = 256
_LATEST_SECONDS = 253_402_300_800  # 10000-01-01: beyond it no date exists

IDENTITY_FIELDS = ("user_id", "session_id", "execution_id", "step_id", "pattern_id")
DESCRIPTIVE_FIELDS = ("provider", "model", "error_reason", "price_table_version")

_STATUSES = frozenset(
    (
        optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
        optimizer_pb2.OUTCOME_STATUS_FAILED,
        optimizer_pb2.OUTCOME_STATUS_CANCELLED,
    )
)


@dataclass(frozen=True)
class Problem:
    """The first bound an outcome breaks: the field (as named in `Outcome`) and what it must
    be."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


def too_long(value: str) -> bool:
    """Whether a text field's value is over `MAX_TEXT_CHARS`."""
    return len(value) > MAX_TEXT_CHARS


def problem(outcome: optimizer_pb2.Outcome) -> Problem | None:
    """The first bound `outcome` breaks, or None when the optimizer accepts it."""
    if not 0 < len(outcome.outcome_id) <= MAX_OUTCOME_ID_CHARS:
        return Problem("outcome_id", f"1 to {MAX_OUTCOME_ID_CHARS} characters")
    if not outcome.provider:
        return Problem("provider", "required")
    for name in (*IDENTITY_FIELDS, *DESCRIPTIVE_FIELDS):
        if too_long(getattr(outcome, name)):
            return Problem(name, f"at most {MAX_TEXT_CHARS} characters")
    usage = outcome.usage
    counts = {
        "usage.input_tokens": usage.input_tokens,
        "usage.output_tokens": usage.output_tokens,
        "usage.cached_tokens": usage.cached_tokens,
        "usage.cache_write_tokens": usage.cache_write_tokens,
        "cost_micro_usd": outcome.cost_micro_usd,
        "charge_micro_usd": outcome.charge_micro_usd,
        "latency_ms": outcome.latency_ms,
        "ttft_ms": outcome.ttft_ms,
        "retry_count": outcome.retry_count,
    }
    for name, value in counts.items():
        if value < 0:
            return Problem(name, "must not be negative")
    if outcome.charge_micro_usd > outcome.cost_micro_usd:
        return Problem("charge_micro_usd", "at most cost_micro_usd")
    if usage.total_tokens not in (0, usage.input_tokens + usage.output_tokens):
        # The contract defines the total; a sender whose total disagrees miscounted something.
        return Problem("usage.total_tokens", "0 or input_tokens + output_tokens")
    if outcome.status not in _STATUSES:
        return Problem("status", "succeeded, failed or cancelled")
    occurred = outcome.occurred_at
    unset = occurred.seconds == 0 and occurred.nanos == 0
    if not unset and not (
        0 < occurred.seconds < _LATEST_SECONDS and 0 <= occurred.nanos < 1_000_000_000
    ):
        return Problem("occurred_at", "a time between 1970 and 9999")
    return None


def clip(outcome: optimizer_pb2.Outcome) -> list[str]:
    """Clip `outcome`'s descriptive fields to their cap, in place; the names clipped."""
    clipped = []
    for name in DESCRIPTIVE_FIELDS:
        value = getattr(outcome, name)
        if too_long(value):
            setattr(outcome, name, value[:MAX_TEXT_CHARS])
            clipped.append(name)
    return clipped
