"""Relaying an admin or usage call to the service that owns it, bytes unchanged.

Each gateway request/response of a relayed RPC has the same field numbers and types as its
inner twin (a unit test checks every pair), so the gateway serialises the caller's request
as is and parses the owner's reply straight into the gateway's response type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message

from services.common.channels import Peers
from services.common.guard import Context
from services.gateway.authn import Principal
from services.gateway.edge import Edge, new_request_id

RELAY_TTL_SECONDS = 60.0

OWNERS = {
    "saga.auth.v1": "auth",
    "saga.vault.v1": "vault",
    "saga.router.v1": "router",
    "saga.optimizer.v1": "optimizer",
    "saga.runtime.v1": "runtime",
}
"""Proto package -> the service id that serves it."""


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class Relay:
    """Calls owners on behalf of an authenticated principal, with a request context."""

    def __init__(self, edge: Edge, peers: Peers) -> None:
        self._edge = edge
        self._peers = peers
        self._calls: dict[str, Any] = {}

    def _callable(self, path: str, response: type[Message], streaming: bool) -> Any:
        call = self._calls.get(path)
        if call is None:
            package = path[1:].rsplit(".", 1)[0]
            channel = self._peers.channel(OWNERS[package])
            factory = channel.unary_stream if streaming else channel.unary_unary
            call = factory(
                path, request_serializer=_serialize, response_deserializer=response.FromString
            )
            self._calls[path] = call
        return call

    def _metadata(self, principal: Principal) -> tuple[tuple[str, str]]:
        return self._edge.context_metadata(principal, new_request_id(), RELAY_TTL_SECONDS)

    async def unary(
        self, path: str, response: type[Message], request: Message, principal: Principal
    ) -> Any:
        """One unary call to the owner of `path`; its errors propagate unchanged."""
        call = self._callable(path, response, streaming=False)
        return await call(request, metadata=self._metadata(principal), timeout=RELAY_TTL_SECONDS)

    async def stream(
        self, path: str, response: type[Message], request: Message, principal: Principal
    ) -> AsyncIterator[Any]:
        """A server-streaming call to the owner of `path`, relayed message by message."""
        call = self._callable(path, response, streaming=True)
        async for message in call(
            request, metadata=self._metadata(principal), timeout=RELAY_TTL_SECONDS
        ):
            yield message


def scoped_relay(
    scope: str, path: str, response: type[Message], *alternatives: str
) -> Callable[..., Any]:
    """A servicer method: require `scope` (or one of `alternatives`), then relay to the owner
    of `path`."""

    async def method(self: Any, request: Message, context: Context) -> Any:
        principal = await self._edge.principal(context)
        principal.require(scope, *alternatives)
        return await self._relay.unary(path, response, request, principal)

    method.__doc__ = f"Relays to {path} (scope {' or '.join((scope, *alternatives))})."
    return method


def admin_relay(path: str, response: type[Message]) -> Callable[..., Any]:
    """A servicer method: require scope `admin`, then relay to the owner of `path`."""
    return scoped_relay("admin", path, response)


def admin_stream_relay(path: str, response: type[Message]) -> Callable[..., Any]:
    """A streaming servicer method: require scope `admin`, then relay the owner's stream."""

    async def method(self: Any, request: Message, context: Context) -> AsyncIterator[Any]:
        principal = await self._edge.principal(context)
        principal.require("admin")
        async for message in self._relay.stream(path, response, request, principal):
            yield message

    method.__doc__ = f"Relays to {path} (scope admin)."
    return method
