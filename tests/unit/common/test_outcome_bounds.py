"""The bounds of an outcome both the router and the optimizer check, and what the ledger
makes of an outcome's charge."""

from __future__ import annotations

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2
from services.common import outcome_bounds
from services.optimizer.messages import usage_record


def outcome(**fields: object) -> optimizer_pb2.Outcome:
    return optimizer_pb2.Outcome(
        outcome_id="exe:s:n:1",
        provider="p",
        status=optimizer_pb2.OUTCOME_STATUS_FAILED,
        usage=common_pb2.Usage(input_tokens=10, cache_write_tokens=4),
        cost_micro_usd=50,
        **fields,  # type: ignore[arg-type]
    )


def test_a_charge_above_the_cost_is_refused_naming_the_field() -> None:
    found = outcome_bounds.problem(outcome(charge_micro_usd=51))
    assert found is not None
    assert (found.field, found.problem) == ("charge_micro_usd", "at most cost_micro_usd")
    negative = outcome_bounds.problem(outcome(charge_micro_usd=-1))
    assert negative is not None
    assert negative.field == "charge_micro_usd"
    assert outcome_bounds.problem(outcome(charge_micro_usd=50)) is None


def test_the_ledger_keeps_the_charge_and_charges_the_cost_when_none_is_sent() -> None:
    waived = usage_record(outcome(charge_micro_usd=0), 0, 1.0)
    assert (waived.cost_micro_usd, waived.charge_micro_usd, waived.cache_write_tokens) == (50, 0, 4)
    # A router from before charges sends none: its caller was charged the cost.
    older = usage_record(outcome(), 0, 1.0)
    assert older.charge_micro_usd == 50
