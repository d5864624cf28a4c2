"""docs/configuration.md lists exactly the keys the schema has."""

from __future__ import annotations

from tests.harness import ROOT
from tools.config_doc import table


def test_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert table() in doc, "docs/configuration.md is stale: run python -m tools.config_doc"
