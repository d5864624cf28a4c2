"""Reading a caller's identity from certificates and mesh headers."""

from __future__ import annotations

import pytest

from services.common.identity import caller_may_call, mesh_peer_service, service_of_spiffe_id


@pytest.mark.parametrize(
    ("uri", "service"),
    [
        ("spiffe://saga/router", "router"),
        ("spiffe://cluster.local/ns/saga/sa/runtime", "runtime"),
        ("spiffe://saga/mallory", None),
        ("spiffe://cluster.local/ns/saga/sa/mallory", None),
        ("https://saga/router", None),
    ],
)
def test_spiffe_ids_name_saga_services_only(uri: str, service: str | None) -> None:
    assert service_of_spiffe_id(uri) == service


def test_mesh_header_names_the_last_hop() -> None:
    header = (
        "By=spiffe://c/ns/saga/sa/gateway;URI=spiffe://c/ns/saga/sa/auth,"
        'By=spiffe://c/ns/saga/sa/router;Hash=ab;Subject="";URI=spiffe://c/ns/saga/sa/runtime'
    )
    assert mesh_peer_service(header) == "runtime"
    assert mesh_peer_service("By=spiffe://c/ns/saga/sa/router;Hash=ab") is None


def test_unidentified_callers_may_call_nothing_but_identified_ones_their_rpcs() -> None:
    assert not caller_may_call(None, "/grpc.health.v1.Health/Check")
    assert caller_may_call("optimizer", "/grpc.health.v1.Health/Check")
    assert caller_may_call("runtime", "/saga.router.v1.RouterService/Reason")
    assert not caller_may_call("gateway", "/saga.router.v1.RouterService/Reason")
