"""Server-Sent Events for the HTTP door (the facade's event streams and the OpenAI stream).

One writer per response: `send` writes one event (`event:`, `id:`, `data:` lines, as the
WHATWG EventSource format has them), and a heartbeat comment goes out whenever nothing was
written for `heartbeat_seconds`, so idle proxies and load balancers do not cut a long step."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

HEARTBEAT_SECONDS = 15.0
HEARTBEAT_KEY = web.AppKey("sse_heartbeat_seconds", float)
"""The app's configured heartbeat (`http.heartbeat_seconds`), for every stream it serves."""


class OpenStreams:
    """The SSE responses being written, so that a shutdown lets them finish, then cuts the
    rest: aiohttp's own shutdown would close their connections under them, a clean-looking
    end of a truncated stream; a cancelled handler can still write its last error event."""

    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, stream: object) -> None:
        """`stream` is open, written by the current task."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks[id(stream)] = task
            self._empty.clear()

    def discard(self, stream: object) -> None:
        """`stream` ended."""
        self._tasks.pop(id(stream), None)
        if not self._tasks:
            self._empty.set()

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for every open stream to end, then cancel the handlers
        of those still open and give them a moment to write their last event."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._empty.wait()
        for task in list(self._tasks.values()):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._empty.wait()


STREAMS_KEY = web.AppKey("open_streams", OpenStreams)


class EventStream:
    """An SSE response being written."""

    def __init__(self, request: web.Request, heartbeat_seconds: float | None = None) -> None:
        self._request = request
        self._heartbeat_seconds = (
            heartbeat_seconds
            if heartbeat_seconds is not None
            else request.app.get(HEARTBEAT_KEY, HEARTBEAT_SECONDS)
        )
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                # nginx buffers responses unless told not to; buffering breaks streaming.
                "X-Accel-Buffering": "no",
            }
        )
        self._lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self._written = False
        self._open_streams = request.app.get(STREAMS_KEY)

    async def open(self, headers: dict[str, str] | None = None) -> None:
        """Send the status line and headers (with `headers` added); start the heartbeat."""
        self.response.headers.update(headers or {})
        await self.response.prepare(self._request)
        self._heartbeat = asyncio.ensure_future(self._beat())
        if self._open_streams is not None:
            self._open_streams.add(self)

    @property
    def opened(self) -> bool:
        """True once the headers went out (an error can no longer change the status)."""
        return self.response.prepared

    async def send(
        self, data: Any, *, event: str | None = None, event_id: str | int | None = None
    ) -> None:
        """Write one event; `data` is JSON-encoded unless it is already a str."""
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        lines = []
        if event is not None:
            lines.append(f"event: {event}")
        if event_id is not None:
            lines.append(f"id: {event_id}")
        lines.extend(f"data: {line}" for line in text.split("\n"))
        await self._write(("\n".join(lines) + "\n\n").encode())

    async def _write(self, payload: bytes) -> None:
        async with self._lock:
            self._written = True
            await self.response.write(payload)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            if not self._written:
                try:
                    await self._write(b": heartbeat\n\n")
                except ConnectionResetError:
                    return  # the client went away; the handler learns it on its next write
            self._written = False

    async def close(self) -> web.StreamResponse:
        """Stop the heartbeat and end the response."""
        self.stop_heartbeat()
        if self._heartbeat is not None:
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await self._heartbeat
        with contextlib.suppress(ConnectionResetError):
            await self.response.write_eof()
        return self.response

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat now, without writing (the client went away: there is no one
        to end the response for, and a cancelled handler must not await)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._open_streams is not None:
            self._open_streams.discard(self)
