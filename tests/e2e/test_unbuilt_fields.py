"""A request field the contract declares and Saga does not act on yet is refused at the
gateway with UNIMPLEMENTED FIELD_NOT_IMPLEMENTED naming it (never a run that ignores it: the
same idempotency key twice must not run and bill twice), over all six real processes; the
same request without the field runs (the positive control)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from saga.gateway.v1 import execution_pb2
from services.common.status import describe
from services.common.unbuilt_fields import UNBUILT
from tests.e2e.test_execute import chat
from tests.e2e.test_request_values import execute
from tests.harness import Stack


def setting(field: str) -> execution_pb2.ExecuteRequest:
    """A chat request with `field` (a path such as "options.idempotency_key") set to a non-default
    value of its type."""
    request = chat("hello")
    set_field(request, field)
    return request


def set_field(message: Message, path: str) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        message = getattr(message, name)
    kind = message.DESCRIPTOR.fields_by_name[leaf].type
    value: object = {FieldDescriptor.TYPE_BOOL: True, FieldDescriptor.TYPE_STRING: "x1"}[kind]
    setattr(message, leaf, value)


@pytest.mark.parametrize("field", sorted(UNBUILT))
async def test_an_unbuilt_field_is_refused_naming_it(stack: Stack, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await execute(stack, setting(field))
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (details.reason, details.domain, details.metadata) == (
        "FIELD_NOT_IMPLEMENTED",
        "gateway.saga",
        {"field": field},
    )
    assert [v.field for v in details.field_violations] == [field]


async def test_the_same_request_without_it_runs(stack: Stack) -> None:
    kinds = await execute(stack, chat("hello"))
    assert (kinds[0], kinds[-1]) == ("accepted", "completed")
