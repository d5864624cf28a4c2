"""Which scopes a new credential may carry: known ones only, never more than the caller holds
(least privilege)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.common.context import SCOPES
from services.common.errors import FieldViolation, InvalidArgument, PermissionDenied

_SHOWN = 40  # characters of an unknown scope echoed back (it is caller input)
MAX_REQUESTED = 32  # a handful of scopes exist; more entries than this is not a request


def canonical(scopes: Iterable[str]) -> tuple[str, ...]:
    """`scopes` without duplicates, in the order of `SCOPES` (stable for storage and tests)."""
    wanted = set(scopes)
    return tuple(s for s in SCOPES if s in wanted)


def grantable(requested: Sequence[str], held: Iterable[str]) -> tuple[str, ...]:
    """The scopes of a new credential: `requested`, checked against the known scopes and
    the scopes the caller `held`. InvalidArgument when empty or unknown, PermissionDenied
    SCOPE_ESCALATION when asking for more than held."""
    if not requested:
        raise InvalidArgument(
            "a credential needs at least one scope",
            reason="SCOPES_EMPTY",
            field_violations=[FieldViolation("scopes", f"give one or more of {', '.join(SCOPES)}")],
        )
    if len(requested) > MAX_REQUESTED:
        raise InvalidArgument(
            "too many scopes",
            reason="SCOPES_TOO_MANY",
            field_violations=[FieldViolation("scopes", f"at most {MAX_REQUESTED} entries")],
        )
    unknown = [
        FieldViolation(f"scopes[{i}]", f"unknown scope {s[:_SHOWN]!r}; known: {', '.join(SCOPES)}")
        for i, s in enumerate(requested)
        if s not in SCOPES
    ]
    if unknown:
        raise InvalidArgument("unknown scope", reason="SCOPE_UNKNOWN", field_violations=unknown)
    wanted = canonical(requested)
    held_set = frozenset(held)
    missing = [s for s in wanted if s not in held_set]
    if missing:
        raise PermissionDenied(
            "a credential cannot carry scopes its creator does not hold",
            reason="SCOPE_ESCALATION",
            metadata={"scopes": " ".join(missing)},
        )
    return wanted
