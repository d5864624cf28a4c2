"""Every relayed gateway message is a wire twin of its owner's message: the gateway forwards
bytes unchanged, so a field that differs in number or type would corrupt data silently."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from saga.auth.v1 import auth_pb2
from saga.gateway.v1 import (
    admin_pb2,
    execution_pb2,
    pack_health_pb2,
    patterns_pb2,
    sessions_pb2,
    usage_pb2,
)
from saga.optimizer.v1 import optimizer_pb2
from saga.router.v1 import router_pb2
from saga.runtime.v1 import ledger_pb2, packs_pb2, runtime_pb2
from saga.runtime.v1 import sessions_pb2 as runtime_sessions_pb2
from saga.vault.v1 import vault_pb2
from services.gateway.admin import ADMIN_RELAYS, ADMIN_STREAM_RELAYS
from services.gateway.patterns import PATTERN_RELAYS
from services.gateway.sessions import SESSION_RELAYS

POOL = descriptor_pool.Default()
_ = (
    auth_pb2,
    ledger_pb2,
    optimizer_pb2,
    packs_pb2,
    router_pb2,
    runtime_sessions_pb2,
    vault_pb2,
)  # owners, into the pool


def shape(message: Descriptor) -> dict[int, tuple[str, int, str]]:
    def kind(f: FieldDescriptor) -> str:
        if f.message_type is not None:
            return f.message_type.full_name
        if f.enum_type is not None:
            return f.enum_type.full_name
        return ""

    return {f.number: (f.name, f.type, kind(f)) for f in message.fields}


RELAYED = (
    (
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
        {**ADMIN_RELAYS, **ADMIN_STREAM_RELAYS},
    ),
    (patterns_pb2.DESCRIPTOR.services_by_name["PatternService"], PATTERN_RELAYS),
    (sessions_pb2.DESCRIPTOR.services_by_name["SessionService"], SESSION_RELAYS),
)
"""Each gateway service relayed method by method, with its relay table."""


def twins() -> list[tuple[str, Descriptor, Descriptor]]:
    pairs = []
    for gateway, relays in RELAYED:
        for name, (path, _) in relays.items():
            service, method = path[1:].split("/")
            inner = POOL.FindServiceByName(service).methods_by_name[method]
            outer = gateway.methods_by_name[name]
            pairs.append((f"{name} request", outer.input_type, inner.input_type))
            pairs.append((f"{name} response", outer.output_type, inner.output_type))
    usage = POOL.FindMethodByName("saga.optimizer.v1.OptimizerService.GetUsage")
    pairs.append(("GetUsage request", usage_pb2.GetUsageRequest.DESCRIPTOR, usage.input_type))
    pairs.append(("GetUsage response", usage_pb2.GetUsageResponse.DESCRIPTOR, usage.output_type))
    budget = POOL.FindMethodByName("saga.optimizer.v1.OptimizerService.GetBudget")
    pairs.append(("GetBudget request", usage_pb2.GetBudgetRequest.DESCRIPTOR, budget.input_type))
    pairs.append(("GetBudget response", usage_pb2.GetBudgetResponse.DESCRIPTOR, budget.output_type))
    packs = POOL.FindMethodByName("saga.runtime.v1.PackService.ListPacks")
    pairs.append(
        ("ListPacks request", pack_health_pb2.ListPacksRequest.DESCRIPTOR, packs.input_type)
    )
    pairs.append(
        ("ListPacks response", pack_health_pb2.ListPacksResponse.DESCRIPTOR, packs.output_type)
    )
    health = POOL.FindMethodByName("saga.runtime.v1.PackService.GetPackHealth")
    pairs.append(
        (
            "GetPackHealth request",
            pack_health_pb2.GetPackHealthRequest.DESCRIPTOR,
            health.input_type,
        )
    )
    pairs.append(
        (
            "Execute events",
            execution_pb2.ExecuteResponse.DESCRIPTOR,
            runtime_pb2.RunPatternResponse.DESCRIPTOR,
        )
    )
    return pairs


@pytest.mark.parametrize(("what", "outer", "inner"), twins(), ids=[t[0] for t in twins()])
def test_gateway_message_is_a_wire_twin(what: str, outer: Descriptor, inner: Descriptor) -> None:
    assert shape(outer) == shape(inner), what


@pytest.mark.parametrize(("gateway", "relays"), RELAYED, ids=[g.name for g, _ in RELAYED])
def test_every_rpc_of_a_relayed_service_is_relayed(gateway: Any, relays: dict[str, Any]) -> None:
    assert set(gateway.methods_by_name) == set(relays)


def test_execute_request_fields_are_run_pattern_fields() -> None:
    outer = shape(execution_pb2.ExecuteRequest.DESCRIPTOR)
    inner = shape(runtime_pb2.RunPatternRequest.DESCRIPTOR)
    assert all(inner[number] == field for number, field in outer.items())
