"""A loopback TCP proxy a test stops and starts, to make a real dependency (Redis, or the
suite's shared PostgreSQL — restarting the real server would break every other test using
it) go away for one stack and come back on the same address: real sockets, nothing patched.

`stop()` closes the listener and every relayed connection (the client sees a reset or EOF,
then connection refused); `start()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.harness import free_ports


class TcpProxy:
    """Relays 127.0.0.1:`port` to `upstream_host`:`upstream_port` while started."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Below the ephemeral range, so no outgoing connection takes it while stopped.
        (self.port,) = free_ports(1)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> TcpProxy:
        """Listen on the proxy's port (again, after a stop)."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
