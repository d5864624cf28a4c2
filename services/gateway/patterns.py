"""`saga.gateway.v1.PatternService`: which patterns a caller can run and what inputs each
takes (scope `execute`), relayed to the runtime. Its messages are wire twins of the
runtime's (a unit test checks them), so the reply is the runtime's bytes."""

from __future__ import annotations

from saga.gateway.v1 import patterns_pb2, patterns_pb2_grpc
from services.gateway.edge import Edge
from services.gateway.relay import Relay, scoped_relay

PATTERN_RELAYS = {
    "ListPatterns": (
        "/saga.runtime.v1.RuntimeService/ListPatterns",
        patterns_pb2.ListPatternsResponse,
    ),
    "GetPattern": ("/saga.runtime.v1.RuntimeService/GetPattern", patterns_pb2.GetPatternResponse),
}
"""Gateway method -> (runtime method, gateway response type)."""


class PatternServicer(patterns_pb2_grpc.PatternServiceServicer):
    """ListPatterns (every loaded pattern and the refused files) and GetPattern (one, with
    its inputs schema; NOT_FOUND PATTERN_NOT_FOUND when unknown), for scope `execute`."""

    def __init__(self, edge: Edge, relay: Relay) -> None:
        self._edge = edge
        self._relay = relay

    ListPatterns = scoped_relay("execute", *PATTERN_RELAYS["ListPatterns"])
    GetPattern = scoped_relay("execute", *PATTERN_RELAYS["GetPattern"])
