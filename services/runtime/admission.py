"""What a RunPattern request must satisfy before anything runs: a well-formed execution id,
an as-of date (`services.common.asof`, re-exported: the gateway checks it the same way), and
inputs that match the pattern's schema. Failures are INVALID_ARGUMENT with one field
violation per bad field.

Required means present: an empty string is a value, and what an empty prompt means is the
router's rule (PROMPT_EMPTY), not the runtime's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from saga.runtime.v1 import runtime_pb2
from services.common.asof import resolve_asof
from services.common.errors import FieldViolation, InvalidArgument
from services.runtime.capabilities import check_value
from services.runtime.patterns import Pattern

_EXECUTION_ID = re.compile(r"exe_[0-9a-f]{32}")
__all__ = ["check_execution_id", "check_inputs", "resolve_asof"]


def check_execution_id(execution_id: str) -> str:
    """`execution_id` if it is an `exe_<32 hex>` id minted by the gateway."""
    if not _EXECUTION_ID.fullmatch(execution_id):
        raise InvalidArgument(
            "execution_id must be exe_ followed by 32 lowercase hex digits",
            reason="EXECUTION_ID_INVALID",
            field_violations=[
                FieldViolation("execution_id", "expected exe_<32 lowercase hex digits>")
            ],
        )
    return execution_id


MAX_IDEMPOTENCY_KEY_CHARS = 128


def check_idempotency_key(key: str) -> str:
    """`key` if it is empty or 1-128 printable ASCII characters."""
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not all(" " < c <= "~" for c in key):
        raise InvalidArgument(
            "options.idempotency_key must be at most 128 printable ASCII characters, no spaces",
            reason="OPTION_INVALID",
            field_violations=[
                FieldViolation("options.idempotency_key", "1-128 printable ASCII characters")
            ],
        )
    return key


def request_digest(request: runtime_pb2.RunPatternRequest) -> str:
    """What a run request asks for, as a digest: the same for a retry of it (which differs
    only in its execution id and in detaching), different for any other request."""
    asked = runtime_pb2.RunPatternRequest()
    asked.CopyFrom(request)
    asked.execution_id = ""
    asked.options.detach_on_disconnect = False
    return hashlib.sha256(asked.SerializeToString(deterministic=True)).hexdigest()


def check_inputs(pattern: Pattern, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs, checked against the pattern's schema (integers arrive as floats from a
    protobuf Struct and are returned as ints)."""
    violations: list[FieldViolation] = []
    checked: dict[str, Any] = {}
    for name in inputs:
        if pattern.input(name) is None:
            declared = ", ".join(i.name for i in pattern.inputs) or "none"
            violations.append(
                FieldViolation(
                    f"inputs.{name}"[:128],
                    f"not an input of pattern {pattern.id} (its inputs: {declared})",
                )
            )
    for spec in pattern.inputs:
        if spec.name not in inputs or inputs[spec.name] is None:
            if spec.required:
                violations.append(FieldViolation(f"inputs.{spec.name}", "required"))
            continue
        value, problem = check_value(spec, inputs[spec.name])
        if problem:
            violations.append(FieldViolation(f"inputs.{spec.name}", problem))
        else:
            checked[spec.name] = value
    if violations:
        raise InvalidArgument(
            f"inputs do not match pattern {pattern.id}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]),
            reason="INPUT_INVALID",
            metadata={"patternId": pattern.id},
            field_violations=violations,
        )
    return checked
