"""`saga.runtime.v1.SessionService`: the caller's sessions, translated between protobuf and
`sessions.py`. The caller is the user of the verified request context the gateway minted
(which checked scope `sessions`; the context must carry it here too)."""

from __future__ import annotations

from google.protobuf import json_format

from saga.execution.v1 import records_pb2
from saga.runtime.v1 import sessions_pb2, sessions_pb2_grpc
from services.common.context import ContextVerifier, RequestContext, metadata_token
from services.common.errors import PermissionDenied
from services.common.guard import Context
from services.common.timestamps import from_micros
from services.runtime.messages import struct
from services.runtime.sessions import Session, SessionStore


def session_message(session: Session) -> records_pb2.Session:
    """The Session message of a stored session (with its stages when it was read whole)."""
    return records_pb2.Session(
        session_id=session.session_id,
        user_id=session.user_id,
        title=session.title,
        metadata=struct(session.metadata),
        created_at=from_micros(session.created_at_us),
        updated_at=from_micros(session.updated_at_us),
        stages=[
            records_pb2.Stage(
                execution_id=s.execution_id,
                pattern_id=s.pattern_id,
                created_at=from_micros(s.completed_at_us),
                outputs=struct(s.outputs),
                inputs=struct(s.inputs),
            )
            for s in session.stages
        ],
    )


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    """Create, Get, List and Delete the caller's sessions."""

    def __init__(self, store: SessionStore, verifier: ContextVerifier) -> None:
        self._store = store
        self._verifier = verifier

    async def _caller(self, context: Context) -> RequestContext:
        verified = await self._verifier.verify(metadata_token(context.invocation_metadata()))
        if not verified.has_scope("sessions"):
            raise PermissionDenied(
                "this call needs the scope 'sessions'",
                reason="SCOPE_MISSING",
                metadata={"scope": "sessions"},
            )
        return verified

    async def CreateSession(
        self, request: sessions_pb2.CreateSessionRequest, context: Context
    ) -> sessions_pb2.CreateSessionResponse:
        """A new empty session of the caller; SESSION_INVALID past the bounds."""
        caller = await self._caller(context)
        session = await self._store.create(
            caller.user_id, request.title, json_format.MessageToDict(request.metadata)
        )
        return sessions_pb2.CreateSessionResponse(session=session_message(session))

    async def GetSession(
        self, request: sessions_pb2.GetSessionRequest, context: Context
    ) -> sessions_pb2.GetSessionResponse:
        """The caller's session with its stages, oldest first; SESSION_NOT_FOUND otherwise."""
        caller = await self._caller(context)
        session = await self._store.get(caller.user_id, request.session_id)
        return sessions_pb2.GetSessionResponse(session=session_message(session))

    async def ListSessions(
        self, request: sessions_pb2.ListSessionsRequest, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        """A page of the caller's sessions, most recently updated first."""
        caller = await self._caller(context)
        sessions, token = await self._store.list(
            caller.user_id, request.page_size, request.page_token
        )
        return sessions_pb2.ListSessionsResponse(
            sessions=[session_message(s) for s in sessions], next_page_token=token
        )

    async def DeleteSession(
        self, request: sessions_pb2.DeleteSessionRequest, context: Context
    ) -> sessions_pb2.DeleteSessionResponse:
        """Delete the caller's session and its stages; SESSION_NOT_FOUND otherwise."""
        caller = await self._caller(context)
        await self._store.delete(caller.user_id, request.session_id)
        return sessions_pb2.DeleteSessionResponse()
