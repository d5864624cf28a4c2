"""The API key itself (SPEC 3.2): its format, checksum, hash and ids, and the records auth
keeps about keys and users.

A key reads `saga_ak_` + 32 random base62 characters + 6 base62 characters of a CRC32 over
everything before them, so a mistyped key is refused without a database lookup. Auth never
stores a key: only its SHA-256, a public id (`key_<16 hex>`) and a display prefix.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from dataclasses import dataclass, field

PREFIX = "saga_ak_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 32  # 32 base62 characters: ~190 bits, beyond guessing
CHECKSUM_LENGTH = 6  # 62**6 > 2**32: any CRC32 fits
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_LENGTH = 12
_ALPHABET_SET = frozenset(ALPHABET)


@dataclass(frozen=True)
class User:
    """A Saga user. `email` is empty for the first-start admin (who has no password)."""

    user_id: str
    tenant: str
    created_at: float
    email: str | None = None


@dataclass(frozen=True)
class KeyLimits:
    """An API key's own Execute limits, set by an admin; 0 = the deployment's default."""

    requests_per_minute: int = 0
    concurrent_executions: int = 0


@dataclass(frozen=True)
class ApiKey:
    """What auth knows about a key, without its secret (all times in Unix seconds)."""

    key_id: str
    user_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    limits: KeyLimits = field(default_factory=lambda: KeyLimits())


@dataclass(frozen=True)
class Principal:
    """Who an authenticated credential (an API key or an access token) speaks for."""

    user_id: str
    tenant: str
    scopes: tuple[str, ...]
    credential_id: str
    expires_at: float | None
    kind: str = "api_key"
    """"api_key" or "jwt"."""
    limits: KeyLimits = field(default_factory=lambda: KeyLimits())
    """The API key's own limits (a JWT has none of its own)."""


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    """The checksum characters for `body` (the prefix and the random part)."""
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate_key() -> str:
    """A new random API key."""
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + checksum(body)


def is_well_formed(key: str) -> bool:
    """Whether `key` has the prefix, the length, the alphabet and a matching checksum."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    if not _ALPHABET_SET.issuperset(key[len(PREFIX) :]):
        return False
    body, check = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    return secrets.compare_digest(checksum(body), check)


def hash_key(key: str) -> str:
    """What is stored and looked up instead of the key: its SHA-256, hex. The key carries
    ~190 random bits, so a fast unsalted hash is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The visible start of a key, to recognise it in a listing."""
    return key[:DISPLAY_LENGTH]


def new_key_id() -> str:
    """A public id for a key (`key_<16 hex>`)."""
    return f"key_{secrets.token_hex(8)}"


def new_user_id(label: str = "") -> str:
    """A user id (`usr_<hex>`; `label` marks special users such as the first admin)."""
    return f"usr_{label}_{secrets.token_hex(6)}" if label else f"usr_{secrets.token_hex(8)}"
