"""auth's JWT signing keys: Ed25519, numbered by generation, rotated by age.

The public half of each key lives in the database (table `signing_keys`), the private half
in the token-vault (owner `auth`, name `jwt-signing:<kid>`), so a copy of the database
cannot mint tokens. The newest generation signs. When it is older than the rotation age,
the next Login creates generation n+1; replicas racing to do so insert the same generation
number and exactly one wins (the losers delete their vault copy and use the winner's key).

A key stays published (and verifiable) while it signs, and afterwards until the last token
it signed has expired: every issued token raises the key's `last_exp` before the token is
handed out. Keys retired longer than that are deleted at the next rotation.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.auth.secret_store import AUTH_OWNER, SecretStore
from services.common.context import key_id
from services.common.database import Database, Row

log = logging.getLogger("saga.auth.signing_keys")

LEEWAY_SECONDS = 60.0
"""Margin on every key-lifetime decision (clock skew between replicas, in-flight logins)."""
MISS_REFRESH_SECONDS = 1.0
"""An unknown kid reloads the key table at most this often (forged kids cost no flood)."""


@dataclass(frozen=True)
class SigningKey:
    """The key that signs now."""

    generation: int
    kid: str
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class _Stored:
    generation: int
    kid: str
    public_key: Ed25519PublicKey
    created_at: float
    last_exp: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stored(row: Row) -> _Stored:
    return _Stored(
        generation=int(row["generation"]),
        kid=row["kid"],
        public_key=Ed25519PublicKey.from_public_bytes(_unb64(row["public_key"])),
        created_at=float(row["created_at"]),
        last_exp=float(row["last_exp"]),
    )


def vault_name(kid: str) -> str:
    """Where the private half of key `kid` is kept in the vault (owner `auth`)."""
    return f"jwt-signing:{kid}"


class SigningKeys:
    """Creation, rotation, publication and lookup of the signing keys."""

    def __init__(
        self,
        db: Database,
        secrets: SecretStore,
        *,
        rotation_seconds: float,
        token_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._secrets = secrets
        self._rotation = rotation_seconds
        self._ttl = token_ttl_seconds
        self._clock = clock
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        self._missed_at = float("-inf")
        self._miss_reload: asyncio.Future[list[_Stored]] | None = None
        self._rotating = asyncio.Lock()

    async def _all(self) -> list[_Stored]:
        rows = await self._db.fetch(
            "SELECT generation, kid, public_key, created_at, last_exp FROM signing_keys"
            " ORDER BY generation"
        )
        keys = [_stored(r) for r in rows]
        for key in keys:
            self._public[key.kid] = key.public_key
        return keys

    async def current(self) -> SigningKey:
        """The key to sign with now, creating the first or the next one when due."""
        keys = await self._all()
        newest = keys[-1] if keys else None
        if newest is not None and self._clock() - newest.created_at < self._rotation:
            private = await self._load_private(newest.kid)
            if private is not None:
                return SigningKey(newest.generation, newest.kid, private)
        async with self._rotating:
            return await self._rotate()

    async def _rotate(self) -> SigningKey:
        while True:
            keys = await self._all()  # again: another task or replica may have rotated
            newest = keys[-1] if keys else None
            now = self._clock()
            if newest is not None and now - newest.created_at < self._rotation:
                private = await self._load_private(newest.kid)
                if private is not None:
                    return SigningKey(newest.generation, newest.kid, private)
                log.error("signing key missing from the vault", extra={"kid": newest.kid})
            generation = newest.generation + 1 if newest else 1
            created = await self._create(generation, now)
            if created is not None:
                await self._prune(keys, now)
                return created
            # Another replica created this generation first: use its key.

    async def _create(self, generation: int, now: float) -> SigningKey | None:
        private = Ed25519PrivateKey.generate()
        public = private.public_key()
        kid = key_id(public)
        raw_private = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # The vault first: a key the database names must always have its private half.
        await self._secrets.put(
            AUTH_OWNER, vault_name(kid), raw_private, {"kind": "jwt-signing"}, expected_version=0
        )
        raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        inserted = await self._db.execute(
            "INSERT INTO signing_keys (generation, kid, public_key, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (generation) DO NOTHING",
            generation,
            kid,
            _b64(raw_public),
            now,
        )
        if not inserted:
            await self._forget(kid)
            return None
        self._private[kid] = private
        self._public[kid] = public
        log.info("signing key created", extra={"kid": kid, "generation": generation})
        return SigningKey(generation, kid, private)

    async def _load_private(self, kid: str) -> Ed25519PrivateKey | None:
        private = self._private.get(kid)
        if private is None:
            secret = await self._secrets.get(AUTH_OWNER, vault_name(kid))
            if secret is None:
                return None
            private = Ed25519PrivateKey.from_private_bytes(secret.payload)
            self._private[kid] = private
        return private

    async def _forget(self, kid: str) -> None:
        try:
            await self._secrets.delete(AUTH_OWNER, vault_name(kid))
        except Exception:  # an orphan private key is harmless; the next prune retries
            log.warning("could not delete a signing key from the vault", extra={"kid": kid})

    async def _prune(self, keys: list[_Stored], now: float) -> None:
        """Delete keys whose every token has expired: retired (a newer key exists) for
        longer than a token lives, and past their last token's expiry."""
        for older, newer in itertools.pairwise(keys):
            retired_long_ago = newer.created_at + self._ttl + LEEWAY_SECONDS < now
            if retired_long_ago and older.last_exp + LEEWAY_SECONDS < now:
                await self._db.execute(
                    "DELETE FROM signing_keys WHERE generation = $1", older.generation
                )
                await self._forget(older.kid)
                self._private.pop(older.kid, None)
                self._public.pop(older.kid, None)
                log.info("signing key retired", extra={"kid": older.kid})

    async def issued(self, key: SigningKey, expires_at: float) -> None:
        """Record that `key` signed a token valid until `expires_at` (before handing it
        out, so the key stays published until then)."""
        await self._db.execute(
            "UPDATE signing_keys SET last_exp = $1 WHERE generation = $2 AND last_exp < $1",
            expires_at,
            key.generation,
        )

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key `kid`, if it is one of auth's keys."""
        key = self._public.get(kid)
        if key is not None:
            return key
        # A miss reloads (a key another replica created since); misses while that reload
        # runs wait for it rather than being refused (a burst of calls with a token signed
        # by a replica's new key), and afterwards at most one reload per interval.
        if self._miss_reload is None or self._miss_reload.done():
            if self._clock() - self._missed_at < MISS_REFRESH_SECONDS:
                return None
            self._missed_at = self._clock()
            self._miss_reload = asyncio.ensure_future(self._all())
        await asyncio.shield(self._miss_reload)
        return self._public.get(kid)

    async def published(self) -> list[Ed25519PublicKey]:
        """The keys for the JWKS: the signing one, and older ones while tokens they signed
        may still be valid."""
        keys = await self._all()
        now = self._clock()
        return [
            k.public_key
            for i, k in enumerate(keys)
            if i == len(keys) - 1 or k.last_exp + LEEWAY_SECONDS > now
        ]
