"""The rights registry: what each data source allows, checked before a run and applied to its
outputs.

A data source is the ledger (`ledger`), a pricing pack's source (`demo` for the seeded pack),
or a shipped dataset (`securities`). Each declares whether outputs that carry its data may be
exported, the attribution owed wherever they are shown, and the watermark stamped on exports.
The shipped entries (`SHIPPED`) are replaced by name by `[[rights.sources]]` tables; a source
in neither (a pack published with a new source) is denied export — fail closed — until an
operator declares it.

A run's lineage is the union of the sources its pattern's capabilities declare
(`Capability.sources`, the pinned pack's source for `PACK_SOURCE`), known before any step
runs: `admit` refuses an export whose lineage holds a denying source (PERMISSION_DENIED
RIGHTS_EXPORT_BLOCKED, logged and counted in `saga_runtime_exports_blocked_total`). Once the
run has finished, `Release` lists the attributions of the sources its completed steps used
(a step skipped by `when` owes nothing) and, for an export, the watermark and the document
(`render_export`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from services.common.config import RightsConfig
from services.common.errors import PermissionDenied
from services.runtime.capabilities import PACK_SOURCE, Capability
from services.runtime.patterns import Pattern

log = logging.getLogger("saga.runtime.rights")

EXPORT_FORMATS = ("json", "csv")

EXPORTS_BLOCKED = Counter(
    "saga_runtime_exports_blocked",
    "Exports refused before any step ran because a source of the pattern's lineage denies "
    "export (RIGHTS_EXPORT_BLOCKED), by pattern and denying source.",
    ["pattern", "source"],
)


@dataclass(frozen=True)
class SourceRights:
    """What one data source allows."""

    name: str
    export: bool
    attribution: str
    watermark: str


SHIPPED = (
    SourceRights("ledger", True, "Positions: the Saga portfolio ledger.", "Saga ledger"),
    SourceRights(
        "demo", True, "Prices: Saga demo pack (illustrative, not market data).", "DEMO DATA"
    ),
    SourceRights(
        "securities", True, "Reference data: Saga securities dataset.", "Saga reference data"
    ),
)
"""The sources the runtime ships with, all exportable."""


@dataclass(frozen=True)
class Attribution:
    """Credit owed to a source whose data reached the outputs."""

    source: str
    text: str


@dataclass(frozen=True)
class Release:
    """What goes out with a finished run: attributions, and for an export its watermark and
    document."""

    attributions: tuple[Attribution, ...]
    watermark: str = ""
    document: str = ""


class RightsRegistry:
    """Data source → its rights."""

    def __init__(self, sources: Iterable[SourceRights]) -> None:
        self._sources = {s.name: s for s in sources}

    @classmethod
    def from_config(cls, config: RightsConfig) -> RightsRegistry:
        """The shipped sources, each replaced by a configured one of the same name."""
        configured = [
            SourceRights(s.name, s.export == "allow", s.attribution, s.watermark)
            for s in config.sources
        ]
        return cls([*SHIPPED, *configured])

    def rights(self, source: str) -> SourceRights:
        """The rights of `source`; an undeclared source may not be exported."""
        return self._sources.get(source) or SourceRights(
            source, False, f"Source {source} (not in the rights registry).", ""
        )

    def admit(
        self,
        pattern: Pattern,
        capabilities: Mapping[str, Capability],
        pack_source: str,
        export: str,
        execution_id: str,
    ) -> RunRights:
        """The rights of one run of `pattern` (`export` is "" or one of EXPORT_FORMATS);
        PERMISSION_DENIED RIGHTS_EXPORT_BLOCKED when it is an export and its lineage holds a
        source that denies it."""
        sources = lineage(pattern, capabilities, pack_source)
        if export:
            denied = [s for s in sources if not self.rights(s).export]
            if denied:
                for source in denied:
                    EXPORTS_BLOCKED.labels(pattern.id, source).inc()
                log.warning(
                    "export blocked by the rights registry",
                    extra={
                        "execution_id": execution_id,
                        "pattern_id": pattern.id,
                        "denied_sources": denied,
                    },
                )
                raise PermissionDenied(
                    f"pattern {pattern.id} reads {', '.join(denied)}, whose rights deny export",
                    reason="RIGHTS_EXPORT_BLOCKED",
                    metadata={"patternId": pattern.id, "sources": ",".join(denied)},
                )
        return RunRights(self, capabilities, pack_source, export, execution_id, pattern.id)


def lineage(
    pattern: Pattern, capabilities: Mapping[str, Capability], pack_source: str
) -> tuple[str, ...]:
    """Every data source `pattern`'s steps may read, sorted (PACK_SOURCE as `pack_source`;
    left out when the run pinned no pack, whose steps then fail before reading anything)."""
    return _sources((s.capability for s in pattern.steps), capabilities, pack_source)


def _sources(
    names: Iterable[str], capabilities: Mapping[str, Capability], pack_source: str
) -> tuple[str, ...]:
    found: set[str] = set()
    for name in names:
        for source in capabilities[name].sources:
            resolved = pack_source if source == PACK_SOURCE else source
            if resolved:
                found.add(resolved)
    return tuple(sorted(found))


@dataclass
class RunRights:
    """The admitted rights of one run; `used` notes each completed step's capability."""

    registry: RightsRegistry
    capabilities: Mapping[str, Capability]
    pack_source: str
    export: str
    execution_id: str
    pattern_id: str
    _used: set[str] = field(default_factory=set)

    def used(self, capability: str) -> None:
        """A step of `capability` completed: its sources reached the run's state."""
        self._used.add(capability)

    def release(
        self, outputs: Mapping[str, Any], pricing_pack_id: str, ledger_commit_hash: str
    ) -> Release:
        """The attributions of the sources used and, for an export, its watermark and
        document."""
        rights = [
            self.registry.rights(s)
            for s in _sources(self._used, self.capabilities, self.pack_source)
        ]
        attributions = tuple(Attribution(r.name, r.attribution) for r in rights if r.attribution)
        if not self.export:
            return Release(attributions)
        marks = [r.watermark for r in rights if r.watermark]
        watermark = " | ".join([*marks, f"Saga export {self.execution_id}"])
        header = {
            "watermark": watermark,
            "execution_id": self.execution_id,
            "pattern_id": self.pattern_id,
            "pricing_pack_id": pricing_pack_id,
            "ledger_commit_hash": ledger_commit_hash,
        }
        document = render_export(self.export, header, attributions, outputs)
        return Release(attributions, watermark, document)


def render_export(
    export_format: str,
    header: Mapping[str, str],
    attributions: Iterable[Attribution],
    outputs: Mapping[str, Any],
) -> str:
    """An export document. JSON: one object with the `header` fields, `attributions` (a list
    of {source, text}) and `outputs`, keys sorted. CSV: two columns `field,value`; first the
    header fields as `saga.<name>` and each attribution as `saga.attribution.<source>`, then
    one row per output value, nested ones by dotted path (`metrics.positions.0.symbol`);
    text as it is, other values as JSON (numbers, true/false, null)."""
    credits = [{"source": a.source, "text": a.text} for a in attributions]
    if export_format == "json":
        document = {**header, "attributions": credits, "outputs": dict(outputs)}
        return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("field", "value"))
    writer.writerows((f"saga.{k}", v) for k, v in header.items())
    writer.writerows((f"saga.attribution.{c['source']}", c["text"]) for c in credits)
    for name in sorted(outputs):
        writer.writerows(_flatten(name, outputs[name]))
    return buffer.getvalue()


def _flatten(path: str, value: Any) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _flatten(f"{path}.{key}", value[key])
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _flatten(f"{path}.{i}", item)
    else:
        yield path, value if isinstance(value, str) else json.dumps(value)
