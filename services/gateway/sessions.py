"""`saga.gateway.v1.SessionService`: the caller's sessions (scope `sessions`), relayed to the
agent-runtime, which owns them and answers for the user the request context names."""

from __future__ import annotations

from saga.gateway.v1 import sessions_pb2 as pb
from saga.gateway.v1 import sessions_pb2_grpc
from services.gateway.edge import Edge
from services.gateway.relay import Relay, scoped_relay

SESSION_RELAYS = {
    "CreateSession": ("/saga.runtime.v1.SessionService/CreateSession", pb.CreateSessionResponse),
    "GetSession": ("/saga.runtime.v1.SessionService/GetSession", pb.GetSessionResponse),
    "ListSessions": ("/saga.runtime.v1.SessionService/ListSessions", pb.ListSessionsResponse),
    "DeleteSession": ("/saga.runtime.v1.SessionService/DeleteSession", pb.DeleteSessionResponse),
}
"""Gateway method -> (owner's method, gateway response type); a test checks the wire twins."""


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    """Every SessionService RPC: check scope `sessions`, relay (see SESSION_RELAYS)."""

    def __init__(self, edge: Edge, relay: Relay) -> None:
        self._edge = edge
        self._relay = relay

    CreateSession = scoped_relay("sessions", *SESSION_RELAYS["CreateSession"])
    GetSession = scoped_relay("sessions", *SESSION_RELAYS["GetSession"])
    ListSessions = scoped_relay("sessions", *SESSION_RELAYS["ListSessions"])
    DeleteSession = scoped_relay("sessions", *SESSION_RELAYS["DeleteSession"])
