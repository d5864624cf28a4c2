"""`POST /v1/execute` and `GET /v1/executions/{execution_id}/events`: a run's events over
HTTP, from the same ExecutionServicer methods as the gRPC door (Execute's events decoded by
`execute_events`, WatchExecution).

Without `Accept: text/event-stream` an Execute answers once, when the run ended: its
Accepted and Completed events merged into one JSON object (execution id, pins, outputs,
usage, cost). With it, each event is one Server-Sent Event — `event:` the oneof's kind,
`id:` its sequence, `data:` the event as JSON — so an EventSource that reconnects sends
`Last-Event-ID` and the watch resumes after it, with no gap and no duplicate. A failure
after the stream opened is a last `event: error` carrying the error JSON, never a clean end
over a truncated run. A client that disconnects cancels the run down the chain (the
runtime keeps it going when the request set `options.detach_on_disconnect`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from saga.gateway.v1 import execution_pb2
from services.common.errors import FieldViolation, Internal, InvalidArgument, Unavailable
from services.common.status import status_for
from services.gateway.execution import ExecutionServicer
from services.gateway.web.calls import from_json, headers_of, invoke, read_json, to_json
from services.gateway.web.context import HttpCallContext
from services.gateway.web.errors import DOMAIN, error_body, error_response
from services.gateway.web.query import query_fields, refuse_query
from services.gateway.web.server import STOPPING_KEY
from services.gateway.web.sse import EventStream

EXECUTION_ID_HEADER = "x-saga-execution-id"
MAX_SEQUENCE = 2**64 - 1


def wants_events(request: web.Request) -> bool:
    """Whether the client asked for Server-Sent Events."""
    return "text/event-stream" in request.headers.get("Accept", "")


def kind(event: Any) -> str:
    """The SSE event name of a run's event: its oneof's field name (`step_started`)."""
    return str(event.WhichOneof("event") or "unknown")


def execute_result(accepted: Message, completed: Message, last_sequence: int) -> dict[str, Any]:
    """The one JSON answer of a run that completed: Accepted (execution id, pins, trace
    id, asof) and Completed (outputs, usage, cost, attributions), and the last sequence
    (after which a watch has nothing more)."""
    return {**to_json(accepted), **to_json(completed), "last_sequence": str(last_sequence)}


class Runs:
    """The run routes' handlers, over the ExecutionServicer."""

    def __init__(self, executions: ExecutionServicer, timeout: float) -> None:
        self._executions = executions
        self._timeout = timeout

    async def execute(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/execute: JSON in; one JSON answer, or SSE."""
        refuse_query(request.query)
        message = from_json(await read_json(request), execution_pb2.ExecuteRequest)
        # No deadline of its own: Execute's is gateway.execute_deadline_seconds.
        context = HttpCallContext(request, None)
        events: Any = self._executions.execute_events(message, context)  # type: ignore[arg-type]
        async with contextlib.aclosing(events):
            if wants_events(request):
                return await _stream(request, events, context, opened_early=False)
            return await _collect(events, context)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/executions/{execution_id}/events: SSE WatchExecution, resuming after
        `?after_sequence=` or the `Last-Event-ID` header."""
        fields = query_fields(
            request.query, execution_pb2.WatchExecutionRequest.DESCRIPTOR, request.match_info
        )
        if "after_sequence" not in fields and "Last-Event-ID" in request.headers:
            fields["after_sequence"] = _last_event_id(request.headers["Last-Event-ID"])
        message = from_json(fields, execution_pb2.WatchExecutionRequest)
        # Absent (or another user's) is a 404 before any event, not an error event after a
        # 200: the same read, through the same servicer, as GET /v1/executions/{id}.
        check = HttpCallContext(request, self._timeout)
        exists = execution_pb2.GetExecutionRequest(execution_id=message.execution_id)
        try:
            await invoke(self._executions.GetExecution, exists, check, self._timeout)
        except Exception as error:
            return error_response(error, headers_of(check))
        context = HttpCallContext(request, None)
        events: Any = self._executions.WatchExecution(message, context)  # type: ignore[arg-type]
        async with contextlib.aclosing(events):
            return await _stream(request, events, context, opened_early=True)


def _last_event_id(text: str) -> str:
    if not text.strip().isdigit() or int(text) > MAX_SEQUENCE:
        raise InvalidArgument(
            "the Last-Event-ID header must be an event's sequence",
            reason="REQUEST_MALFORMED",
            field_violations=[FieldViolation("Last-Event-ID", "a non-negative integer")],
        )
    return text.strip()


async def _collect(events: AsyncIterator[Any], context: HttpCallContext) -> web.Response:
    accepted = completed = None
    sequence = 0
    headers = {}
    try:
        async for event in events:
            sequence = event.sequence
            if event.HasField("accepted"):
                accepted = event.accepted
                headers[EXECUTION_ID_HEADER] = accepted.execution_id
            elif event.HasField("completed"):
                completed = event.completed
        if accepted is None or completed is None:
            raise Internal("the run's stream ended without its Accepted and Completed events")
    except Exception as error:
        return error_response(error, {**headers_of(context), **headers})
    return web.json_response(
        execute_result(accepted, completed, sequence), headers={**headers_of(context), **headers}
    )


async def _stream(
    request: web.Request,
    events: AsyncIterator[Any],
    context: HttpCallContext,
    *,
    opened_early: bool,
) -> web.StreamResponse:
    """Relay `events` as SSE. Unless `opened_early`, the headers wait for the first event,
    so a refusal before the run started keeps its HTTP status."""
    stream = EventStream(request)
    event: Any = None
    if opened_early:
        await stream.open(headers_of(context))
    else:
        try:
            event = await anext(events, None)
        except Exception as error:
            return error_response(error, headers_of(context))
        headers = headers_of(context)
        if event is not None and event.HasField("accepted"):
            headers[EXECUTION_ID_HEADER] = event.accepted.execution_id
        await stream.open(headers)
    try:
        if event is None:
            event = await anext(events, None)
        while event is not None:
            await stream.send(to_json(event), event=kind(event), event_id=event.sequence)
            event = await anext(events, None)
    except asyncio.CancelledError:
        stream.stop_heartbeat()
        if request.app[STOPPING_KEY].is_set():
            # Cut by the shutdown's grace, not by the client: say so, the client may watch
            # the rest from another replica.
            cut = Unavailable("the gateway stopped before the run ended", reason="GATEWAY_STOPPING")
            with contextlib.suppress(ConnectionResetError):
                await stream.send(error_body(status_for(cut, DOMAIN)), event="error")
                await stream.close()
        raise
    except ConnectionResetError:
        stream.stop_heartbeat()  # the client went away; the run is cancelled on the way out
        return stream.response
    except Exception as error:
        with contextlib.suppress(ConnectionResetError):
            await stream.send(error_body(status_for(error, DOMAIN)), event="error")
    return await stream.close()
