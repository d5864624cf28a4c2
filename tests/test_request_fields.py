"""The guard of `tests/request_fields.py`: every field of every request message in the
contract has a verdict, and each verdict holds in the code (see that module's doc)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from tests.harness import ROOT
from tests.request_fields import FIELDS, RELAYED, Acted, UnbuiltRpc

GEN = ROOT / "gen" / "python"
SERVICE_DIRS = {
    "saga.auth.v1": "services/auth",
    "saga.gateway.v1": "services/gateway",
    "saga.optimizer.v1": "services/optimizer",
    "saga.router.v1": "services/router",
    "saga.runtime.v1": "services/runtime",
    "saga.vault.v1": "services/vault",
}
MAX_DEPTH = 4


def methods() -> Iterator[MethodDescriptor]:
    for path in sorted(GEN.rglob("*_pb2.py")):
        module = importlib.import_module(".".join(path.relative_to(GEN).with_suffix("").parts))
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


def paths(
    message: Descriptor, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, FieldDescriptor]]:
    """Every field of `message`, nested messages of ours walked into (well-known types such
    as Struct and Timestamp are values)."""
    for field in message.fields:
        yield prefix + field.name, field
        nested = field.message_type
        if nested is not None and nested.full_name.startswith("saga.") and depth < MAX_DEPTH:
            yield from paths(nested, f"{prefix}{field.name}.", depth + 1)


def requests() -> dict[str, tuple[Descriptor, list[MethodDescriptor]]]:
    found: dict[str, tuple[Descriptor, list[MethodDescriptor]]] = {}
    for method in methods():
        entry = found.setdefault(method.input_type.full_name, (method.input_type, []))
        entry[1].append(method)
    return found


REQUESTS = requests()
PUBLIC = sorted(n for n, (d, _) in REQUESTS.items() if n.startswith("saga.gateway.") and d.fields)
INNER = sorted(
    n for n, (d, _) in REQUESTS.items() if not n.startswith("saga.gateway.") and d.fields
)


@cache
def source(module: str) -> str:
    return (ROOT / module).read_text()


def defines(method: MethodDescriptor) -> bool:
    """Whether a servicer of the method's service defines it (a method or a relay)."""
    directory = ROOT / SERVICE_DIRS[method.containing_service.file.package]
    pattern = re.compile(rf"(def {method.name}\(|^\s+{method.name} = )", re.MULTILINE)
    return any(pattern.search(p.read_text()) for p in directory.rglob("*.py"))


def test_the_guard_sees_the_contract() -> None:
    # Positive control: the walk finds the requests it must (a broken walk passes nothing).
    assert "saga.runtime.v1.RunPatternRequest" in INNER
    assert "saga.gateway.v1.ExecuteRequest" in PUBLIC
    walked = dict(paths(REQUESTS["saga.runtime.v1.RunPatternRequest"][0]))
    assert "options.weights.cost" in walked


@pytest.mark.parametrize("name", INNER)
def test_every_inner_request_field_has_a_verdict(name: str) -> None:
    descriptor = REQUESTS[name][0]
    walked = [p for p, _ in paths(descriptor)]
    table = FIELDS.get(name, {})
    assert [p for p in walked if p not in table] == [], f"{name}: fields without a verdict"
    assert [p for p in table if p not in walked] == [], f"{name}: rows for no field"


@pytest.mark.parametrize("name", INNER)
def test_each_verdict_holds(name: str) -> None:
    rpcs = REQUESTS[name][1]
    for path, verdict in FIELDS[name].items():
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(verdict, Acted):
            assert re.search(rf"\b{leaf}\b", source(verdict.module)), (
                f"{name}.{path}: {verdict.module} never names {leaf}"
            )
        else:
            assert isinstance(verdict, UnbuiltRpc)
            built = [m.full_name for m in rpcs if defines(m)]
            assert built == [], f"{name}.{path} is marked unbuilt but {built} is served"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_request_is_relayed_to_a_request_with_its_fields(name: str) -> None:
    assert name in RELAYED, f"{name}: say which inner request it is relayed as"
    inner = dict(paths(REQUESTS[RELAYED[name]][0]))
    for path, field in paths(REQUESTS[name][0]):
        twin = inner.get(path)
        assert twin is not None, f"{name}.{path} has no namesake in {RELAYED[name]}"
        assert (twin.type, twin.is_repeated) == (field.type, field.is_repeated), f"{name}.{path}"


def test_no_relay_row_names_a_request_that_is_gone() -> None:
    assert [n for n in RELAYED if n not in PUBLIC] == []
    assert [n for n in FIELDS if n not in INNER] == []


def test_the_table_names_existing_modules() -> None:
    modules = {v.module for rows in FIELDS.values() for v in rows.values() if isinstance(v, Acted)}
    assert [m for m in sorted(modules) if not Path(ROOT / m).is_file()] == []
