"""A new credential carries known scopes only, and never more than its creator holds."""

from __future__ import annotations

import pytest

from services.auth.scopes import canonical, grantable
from services.common.context import SCOPES
from services.common.errors import InvalidArgument, PermissionDenied


def test_a_subset_of_the_held_scopes_is_granted_in_canonical_order() -> None:
    assert grantable(["usage:read", "execute", "execute"], ["execute", "usage:read"]) == (
        "execute",
        "usage:read",
    )
    assert grantable(list(SCOPES), SCOPES) == SCOPES


def test_asking_for_more_than_held_is_scope_escalation() -> None:
    with pytest.raises(PermissionDenied) as err:
        grantable(["execute", "admin"], ["execute"])
    assert err.value.reason == "SCOPE_ESCALATION"
    assert err.value.metadata == {"scopes": "admin"}
    assert grantable(["execute"], ["execute"]) == ("execute",)  # positive control


def test_an_unknown_scope_is_invalid_with_a_field_violation() -> None:
    with pytest.raises(InvalidArgument) as err:
        grantable(["execute", "root"], SCOPES)
    assert err.value.reason == "SCOPE_UNKNOWN"
    assert [v.field for v in err.value.field_violations] == ["scopes[1]"]


def test_no_scope_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as err:
        grantable([], SCOPES)
    assert err.value.reason == "SCOPES_EMPTY"
    assert [v.field for v in err.value.field_violations] == ["scopes"]


def test_canonical_drops_duplicates_and_unknowns() -> None:
    assert canonical(["admin", "execute", "admin", "nope"]) == ("execute", "admin")


def test_a_request_for_endless_scopes_is_refused_before_each_is_checked() -> None:
    assert grantable(["execute"] * 32, SCOPES) == ("execute",)  # control: duplicates are fine
    with pytest.raises(InvalidArgument) as refused:
        grantable([f"bogus{i}" for i in range(100_000)], SCOPES)
    assert refused.value.reason == "SCOPES_TOO_MANY"
    assert [v.field for v in refused.value.field_violations] == ["scopes"]
