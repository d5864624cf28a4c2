"""The rights registry: a run's lineage is the union of its steps' sources; an export whose
lineage holds a denying (or undeclared) source is refused and counted; a finished run owes the
attributions of the sources its completed steps used; exports are watermarked documents."""

from __future__ import annotations

import csv
import io
import json

import pytest
from prometheus_client import REGISTRY

from services.common.config import RightsConfig, RightsSourceConfig
from services.common.errors import PermissionDenied
from services.runtime.agents.data import data_agent, load_datasets
from services.runtime.agents.financial_analyst import (
    LEDGER_POSITIONS,
    METRICS_COMPUTE,
    PRICING_APPLY_PACK,
)
from services.runtime.agents.llm import LLM_COMPLETE
from services.runtime.capabilities import Capability
from services.runtime.patterns import Pattern, Step
from services.runtime.rights import Attribution, RightsRegistry, lineage, render_export

(DATA_LOOKUP,) = data_agent(load_datasets()).capabilities
CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (LEDGER_POSITIONS, PRICING_APPLY_PACK, METRICS_COMPUTE, LLM_COMPLETE, DATA_LOOKUP)
}
EXE = "exe_" + "a" * 32


def pattern(*capabilities: str) -> Pattern:
    return Pattern(
        id="p",
        description="test",
        requires_pack=False,
        inputs=(),
        steps=tuple(Step(f"s{i}", c, {}) for i, c in enumerate(capabilities)),
        outputs={},
        source="test",
    )


OVERVIEW = pattern("ledger.positions", "pricing.apply_pack", "metrics.compute", "llm.complete")


def blocked(pattern_id: str, source: str) -> float:
    labels = {"pattern": pattern_id, "source": source}
    return REGISTRY.get_sample_value("saga_runtime_exports_blocked_total", labels) or 0.0


def test_lineage_is_the_union_of_the_steps_sources_with_the_pinned_packs() -> None:
    assert lineage(OVERVIEW, CAPABILITIES, "demo") == ("demo", "ledger")
    assert lineage(OVERVIEW, CAPABILITIES, "") == ("ledger",)
    assert lineage(pattern("data.lookup", "llm.complete"), CAPABILITIES, "demo") == ("securities",)
    assert lineage(pattern("llm.complete"), CAPABILITIES, "demo") == ()


def test_an_export_through_a_denying_source_is_refused_and_counted() -> None:
    registry = RightsRegistry.from_config(
        RightsConfig((RightsSourceConfig("ledger", "deny", "Ledger of record", "INTERNAL"),))
    )
    before = blocked("p", "ledger")
    with pytest.raises(PermissionDenied) as caught:
        registry.admit(OVERVIEW, CAPABILITIES, "demo", "json", EXE)
    assert caught.value.reason == "RIGHTS_EXPORT_BLOCKED"
    assert caught.value.metadata == {"patternId": "p", "sources": "ledger"}
    assert blocked("p", "ledger") == before + 1
    # Control: the same run without export, and an export that reads no denying source.
    registry.admit(OVERVIEW, CAPABILITIES, "demo", "", EXE)
    registry.admit(pattern("pricing.apply_pack"), CAPABILITIES, "demo", "json", EXE)


def test_a_source_the_registry_does_not_declare_is_denied_export() -> None:
    registry = RightsRegistry.from_config(RightsConfig())
    with pytest.raises(PermissionDenied) as caught:
        registry.admit(OVERVIEW, CAPABILITIES, "vendor-x", "csv", EXE)
    assert caught.value.metadata["sources"] == "vendor-x"
    registry.admit(OVERVIEW, CAPABILITIES, "demo", "csv", EXE)


def test_attributions_are_those_of_the_completed_steps_sources() -> None:
    registry = RightsRegistry.from_config(RightsConfig())
    rights = registry.admit(OVERVIEW, CAPABILITIES, "demo", "", EXE)
    rights.used("ledger.positions")
    rights.used("llm.complete")
    release = rights.release({"text": "hi"}, "PP_x", "c" * 64)
    assert [a.source for a in release.attributions] == ["ledger"]
    assert (release.watermark, release.document) == ("", "")
    rights.used("pricing.apply_pack")
    assert [a.source for a in rights.release({}, "PP_x", "").attributions] == ["demo", "ledger"]


def test_an_export_is_a_watermarked_json_document() -> None:
    registry = RightsRegistry.from_config(RightsConfig())
    rights = registry.admit(OVERVIEW, CAPABILITIES, "demo", "json", EXE)
    for step in OVERVIEW.steps:
        rights.used(step.capability)
    release = rights.release({"value": "12.500000", "n": 3}, "PP_x", "c" * 64)
    assert release.watermark == f"DEMO DATA | Saga ledger | Saga export {EXE}"
    document = json.loads(release.document)
    assert document["watermark"] == release.watermark
    assert document["outputs"] == {"value": "12.500000", "n": 3}
    assert document["pricing_pack_id"] == "PP_x"
    assert [a["source"] for a in document["attributions"]] == ["demo", "ledger"]


def test_a_csv_export_has_the_watermark_first_and_flattened_outputs() -> None:
    text = render_export(
        "csv",
        {"watermark": "W", "execution_id": EXE},
        [Attribution("ledger", "Ledger, with a comma")],
        {"summary": "two\nlines", "metrics": {"positions": [{"symbol": "A", "bp": 10}]}},
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["field", "value"],
        ["saga.watermark", "W"],
        ["saga.execution_id", EXE],
        ["saga.attribution.ledger", "Ledger, with a comma"],
        ["metrics.positions.0.bp", "10"],
        ["metrics.positions.0.symbol", "A"],
        ["summary", "two\nlines"],
    ]
