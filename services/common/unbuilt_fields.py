"""Request fields the contract declares and Saga does not act on yet.

A caller that sets one gets UNIMPLEMENTED `FIELD_NOT_IMPLEMENTED` naming the field (in
ErrorInfo metadata and a BadRequest field violation), never a run that silently ignores it:
an idempotency key that did not deduplicate, or a detached run that died with its client, is
worse than a refusal. Leaving a field at its default is always accepted.

The gateway checks before it calls the runtime and the runtime checks again, since each
serves the fields on its own contract (`ExecuteRequest` and `RunPatternRequest` share these
names and numbers). When a field is built, its entry leaves `UNBUILT` and its row in
`tests/request_fields.py` says where it is acted on.
"""

from __future__ import annotations

from saga.execution.v1 import options_pb2
from services.common.errors import FieldViolation, Unimplemented

UNBUILT: dict[str, str] = {
    "session_id": "sessions are not built yet",
}
"""Field path → why it is refused."""


def _set_fields(session_id: str, options: options_pb2.ExecuteOptions) -> list[str]:
    candidates = {
        "session_id": bool(session_id),
    }
    return [path for path, is_set in candidates.items() if is_set and path in UNBUILT]


def refuse_unbuilt(session_id: str, options: options_pb2.ExecuteOptions) -> None:
    """Raise Unimplemented FIELD_NOT_IMPLEMENTED if a run request (its session and options)
    sets an unbuilt field."""
    fields = _set_fields(session_id, options)
    if not fields:
        return
    raise Unimplemented(
        f"{fields[0]} is not implemented yet: {UNBUILT[fields[0]]}; leave it unset",
        reason="FIELD_NOT_IMPLEMENTED",
        metadata={"field": fields[0]},
        field_violations=[FieldViolation(path, UNBUILT[path]) for path in fields],
    )
