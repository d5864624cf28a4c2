"""docs/errors.md lists every ErrorInfo reason the services can raise."""

from __future__ import annotations

import re

from tests.harness import ROOT

_REASON = re.compile(r"""(?:reason=|default_reason = )["']([A-Z][A-Z0-9_]+)["']""")


def test_every_raised_reason_is_documented() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    raised = {
        reason
        for path in (ROOT / "services").rglob("*.py")
        for reason in _REASON.findall(path.read_text())
    }
    assert {"NOT_IMPLEMENTED", "CALLER_NOT_ALLOWED", "INTERNAL"} <= raised
    assert sorted(r for r in raised if f"`{r}`" not in doc) == []
