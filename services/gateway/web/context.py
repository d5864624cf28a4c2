"""An HTTP request seen as a gRPC servicer context, so that the gateway's servicer methods
serve both doors unchanged.

Only what the gateway's servicers read is provided: the `authorization` header as invocation
metadata, the time left, the client's address, and the metadata a servicer sends (turned into
response headers by the handler)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiohttp import web

MetadataPairs = Sequence[tuple[str, str | bytes]]

_FORWARDED_HEADERS = ("authorization", "traceparent", "tracestate")
"""Request headers a servicer may read as metadata (the rest are HTTP's business)."""


class HttpCallContext:
    """The servicer context of one HTTP request (duck-typed `grpc.aio.ServicerContext`)."""

    def __init__(self, request: web.Request, timeout: float | None) -> None:
        self._metadata = tuple(
            (name, value)
            for name in _FORWARDED_HEADERS
            if (value := request.headers.get(name)) is not None
        )
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._peer = _peer(request)
        self.initial_metadata: list[tuple[str, str | bytes]] = []
        self.trailing_metadata: list[tuple[str, str | bytes]] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The forwarded request headers, lower-cased as gRPC metadata keys are."""
        return self._metadata

    def time_remaining(self) -> float | None:
        """Seconds until this request's deadline, or None when it has none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        """The client's address in gRPC's peer notation (`ipv4:1.2.3.4:0`)."""
        return self._peer

    async def send_initial_metadata(self, metadata: MetadataPairs) -> None:
        """Kept for the response headers."""
        self.initial_metadata.extend(metadata)

    def set_trailing_metadata(self, metadata: MetadataPairs) -> None:
        """Kept for the response headers (or the stream's last event)."""
        self.trailing_metadata.extend(metadata)


def _peer(request: web.Request) -> str:
    # The socket's address, never X-Forwarded-For: a client-chosen header must not choose
    # the address that per-address limits count against.
    address = request.remote or ""
    if ":" in address:
        return f"ipv6:[{address}]:0"
    return f"ipv4:{address}:0" if address else "unknown"
