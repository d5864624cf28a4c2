"""Verification keys from auth's JWKS, for the services that verify request contexts."""

from __future__ import annotations

import logging
import time

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.common.context import public_key_from_jwk
from services.common.singleflight import SingleFlight

log = logging.getLogger("saga.jwks")


class JwksKeys:
    """A `KeyLookup` backed by auth's `GetJwks`: keys are cached; an unknown `kid` triggers a
    refetch (at most one per `min_refresh_seconds`, so forged tokens cannot flood auth).
    Concurrent lookups share the fetch in flight (`SingleFlight`), and its failure."""

    def __init__(self, channel: grpc.aio.Channel, min_refresh_seconds: float = 5.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")
        self._min_refresh = min_refresh_seconds
        self._fetching: SingleFlight[None, None] = SingleFlight("jwks-fetch")

    async def __call__(self, kid: str) -> Ed25519PublicKey | None:
        """The key for `kid`, fetching the JWKS when it is not known yet."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        if time.monotonic() - self._fetched_at >= self._min_refresh:
            await self._fetching.run(None, self._fetch)
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        try:
            reply = await self._stub.GetJwks(auth_pb2.GetJwksRequest())
        finally:
            # The pause counts from the fetch's end, failed or not: a lookup arriving while it
            # runs joins it rather than being turned away by the pause.
            self._fetched_at = time.monotonic()
        keys: dict[str, Ed25519PublicKey] = {}
        for jwk in reply.keys:
            try:
                keys[jwk.kid] = public_key_from_jwk(
                    {"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "kid": jwk.kid}
                )
            except ValueError:
                continue  # a key of another kind (auth's own JWT keys, say)
        self._keys = keys
        log.info("context keys fetched", extra={"kids": sorted(keys)})
