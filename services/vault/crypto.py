"""Sealing one secret row: AES-256-GCM bound to the row it belongs to.

The associated data is the canonical encoding of (owner, name, version, key id), so a
ciphertext authenticates only in the row it was written for: copied to another owner, name
or version, or relabelled with another key id, it fails to open — where Fernet (the seeds'
choice) would decrypt it anywhere. Every seal draws a fresh 12-byte random nonce; with at most
a few million rows per key, the 2^-32 collision bound of random GCM nonces is far away, and
Rewrap moves rows to a new key long before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.errors import DataLoss
from services.vault.keyring import Key

NONCE_BYTES = 12
_AAD_DOMAIN = b"saga.vault.v1/secret\x00"


class SecretCorrupt(DataLoss):
    """A stored ciphertext does not authenticate for its row: tampered with, moved from
    another row, or damaged. Never answered with whatever the bytes decrypt to."""

    default_reason = "SECRET_CORRUPT"


@dataclass(frozen=True)
class RowId:
    """What a ciphertext is bound to (besides its key id)."""

    owner: str
    name: str
    version: int


@dataclass(frozen=True)
class Sealed:
    """A row's encrypted payload as stored: key id, nonce, ciphertext with its GCM tag."""

    key_id: str
    nonce: bytes
    ciphertext: bytes = field(repr=False)


def associated_data(row: RowId, key_id: str) -> bytes:
    """The canonical bytes of (owner, name, version, key id): each text length-prefixed, so
    no two different rows encode alike (("ab", "c") is not ("a", "bc"))."""
    parts = (row.owner.encode(), row.name.encode(), key_id.encode())
    framed = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return _AAD_DOMAIN + row.version.to_bytes(8, "big") + framed


def seal(key: Key, row: RowId, plaintext: bytes) -> Sealed:
    """Encrypt `plaintext` for `row` under `key`."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key.material).encrypt(nonce, plaintext, associated_data(row, key.id))
    return Sealed(key.id, nonce, ciphertext)


def unseal(key: Key, row: RowId, sealed: Sealed) -> bytes:
    """Decrypt `sealed` as stored in `row`; SecretCorrupt when it does not authenticate."""
    if key.id != sealed.key_id:
        raise ValueError(f"key {key.id} given for a row sealed under {sealed.key_id}")
    try:
        return AESGCM(key.material).decrypt(
            sealed.nonce, sealed.ciphertext, associated_data(row, sealed.key_id)
        )
    except (InvalidTag, ValueError):
        # ValueError: a nonce of the wrong length, i.e. a damaged row.
        raise SecretCorrupt(
            f"version {row.version} of the secret does not authenticate under key "
            f"{sealed.key_id}: it was altered or moved; restore it or write it again",
            metadata={"version": str(row.version), "keyId": sealed.key_id},
        ) from None
