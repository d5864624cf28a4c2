"""Provider credentials from auth's `GetProviderCredential`, cached so the hot path rarely
calls auth (SPEC section 2, "The hot path").

One entry per (provider, user): the user is the caller's for `oauth_user` providers (each
user links an account) and empty for the others (one shared key or app token). An entry is
used until `EXPIRY_MARGIN_SECONDS` before the secret's `expires_at` (OAuth tokens; auth
already hands out tokens with at least its 300 s buffer left), or for `STATIC_TTL_SECONDS`
when the secret has no expiry (static keys), so a key the operator changed with
SetProviderKey is picked up within that time. A secret the provider refused is dropped
(`stale`) and fetched again. Fetches are single-flight per entry (`SingleFlight`): a crowd of
calls on a cold or expired entry makes one call to auth, which all of them wait for (a caller
that gives up does not cancel it for the others).

The caller's request context (`saga-context`) is forwarded: auth gives a user's OAuth token
only to a call carrying that user's context (no confused deputy). Auth's errors reach the
caller whole: a failed `GetProviderCredential` raises `RemoteError` with auth's code, reason
(REAUTH_REQUIRED, PROVIDER_KEY_NOT_SET, …), domain and details unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import grpc

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.common.config import ProviderConfig
from services.common.context import METADATA_KEY
from services.common.singleflight import SingleFlight
from services.common.status import RemoteError
from services.common.ttl_cache import make_room
from services.router.engines.base import Caller, CredentialLookup

log = logging.getLogger("saga.router.credentials")

EXPIRY_MARGIN_SECONDS = 60.0
STATIC_TTL_SECONDS = 60.0
MAX_ENTRIES = 10_000
"""Most cached entries: one per user of each `oauth_user` provider, so past it the expired
ones are dropped (all, if none has expired: they are fetched again)."""
DOMAIN = "router.saga"
"""Named in the error of a call to auth that failed without auth's own ErrorInfo (auth
unreachable, say): the router is what decided."""


@dataclass(frozen=True)
class _Entry:
    secret: str = field(repr=False)
    version: int
    valid_until: float


class ProviderCredentials:
    """The router's cache of provider credentials (see the module docstring)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        static_ttl: float = STATIC_TTL_SECONDS,
        expiry_margin: float = EXPIRY_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._max_entries = max_entries
        self._static_ttl = static_ttl
        self._margin = expiry_margin
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._fetches: SingleFlight[tuple[str, str], _Entry] = SingleFlight("provider-credential")

    def lookup(self, provider: ProviderConfig) -> CredentialLookup:
        """The credential lookup an engine of `provider` is built with."""

        async def secret(caller: Caller, *, stale: str = "") -> str:
            return await self.get(provider, caller, stale=stale)

        return secret

    def __len__(self) -> int:
        """How many credentials are cached."""
        return len(self._entries)

    async def get(self, provider: ProviderConfig, caller: Caller, *, stale: str = "") -> str:
        """The secret to call `provider` with for `caller`; `stale` (a secret the provider
        refused) is dropped first. Raises `RemoteError` with auth's status."""
        user = caller.user_id if provider.credential == "oauth_user" else ""
        key = (provider.name, user)
        entry = self._entries.get(key)
        if entry is not None and stale and entry.secret == stale:
            del self._entries[key]
            entry = None
        if entry is not None and self._clock() < entry.valid_until:
            return entry.secret
        return (await self._fetches.run(key, partial(self._fetch, key, caller))).secret

    async def close(self) -> None:
        """Cancel fetches still running (at shutdown)."""
        await self._fetches.close()

    async def _fetch(self, key: tuple[str, str], caller: Caller) -> _Entry:
        provider, user = key
        metadata = ((METADATA_KEY, caller.context),) if caller.context else ()
        try:
            reply = await self._stub.GetProviderCredential(
                auth_pb2.GetProviderCredentialRequest(provider=provider, user_id=user),
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            remote = RemoteError.from_rpc_error(error, DOMAIN)
            log.warning(
                "provider credential refused",
                extra={"provider": provider, "user": user, "reason": remote.reason},
            )
            raise remote from None
        now = self._clock()
        if reply.HasField("expires_at"):
            valid_until = reply.expires_at.ToNanoseconds() / 1e9 - self._margin
        else:
            valid_until = now + self._static_ttl
        entry = _Entry(reply.secret, reply.version, valid_until)
        if valid_until > now:
            self._entries = make_room(
                self._entries, self._max_entries, lambda e: e.valid_until > now
            )
            self._entries[key] = entry
        log.info(
            "provider credential fetched",
            extra={"provider": provider, "user": user, "version": reply.version},
        )
        return entry
