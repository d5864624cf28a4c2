"""The HTTP door's error mapping, over every reason docs/errors.md lists: each answers the HTTP
status that google/rpc/code.proto (the file googleapis-common-protos ships) gives its code,
with its reason and domain in the JSON body; RetryInfo becomes Retry-After."""

from __future__ import annotations

import json
import re
from pathlib import Path

import google.rpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common.status import RemoteError
from services.gateway.web.errors import error_response
from tests.harness import ROOT

_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| ([A-Z_]+) \|", re.MULTILINE)
_MAPPING = re.compile(r"HTTP Mapping: (\d{3})[^\n]*\n\s*([A-Z_]+) = \d+;")


def code_proto_mapping() -> dict[str, int]:
    text = (Path(google.rpc.__path__[0]) / "code.proto").read_text()
    return {name: int(status) for status, name in _MAPPING.findall(text)}


def documented_reasons() -> list[tuple[str, str]]:
    return _ROW.findall((ROOT / "docs" / "errors.md").read_text())


def status_of(reason: str, code: str, *details: object) -> status_pb2.Status:
    status = status_pb2.Status(code=code_pb2.Code.Value(code), message=f"{reason} happened")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="runtime.saga"))
    for detail in details:
        status.details.add().Pack(detail)
    return status


def test_code_proto_maps_every_code() -> None:
    assert len(code_proto_mapping()) == 17


@pytest.mark.parametrize(("reason", "code"), documented_reasons())
def test_every_documented_reason_maps_as_code_proto_says(reason: str, code: str) -> None:
    response = error_response(RemoteError(status_of(reason, code)))
    body = json.loads(response.text or "")["error"]
    assert response.status == code_proto_mapping()[code]
    assert (body["code"], body["status"]) == (response.status, code)
    assert (body["reason"], body["domain"]) == (reason, "runtime.saga")
    assert body["message"] == f"{reason} happened"


def test_retry_info_becomes_retry_after_rounded_up() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=1))
    response = error_response(RemoteError(status_of("PACK_WARMING", "UNAVAILABLE", retry)))
    assert (response.status, response.headers["Retry-After"]) == (503, "3")
    details = json.loads(response.text or "")["error"]["details"]
    assert details[1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retry_delay": "2.000000001s",
    }


def test_an_unexpected_error_is_internal_without_its_text() -> None:
    response = error_response(RuntimeError("secret detail"))
    assert response.status == 500
    assert "secret" not in (response.text or "")
