"""The vault's keys: 32-byte AES-256 keys with ids (`k_<8 hex>`), one active, older ones kept
until no row uses them. Where they come from is `keyring_sources.py`.

Problems with a keyring are configuration errors (`KeyringError`): the vault exits 78 with
a message that names the file or key and the fix.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from services.common.config import ConfigError

KEY_BYTES = 32
KEY_ID = re.compile(r"k_[0-9a-f]{8}")


class KeyringError(ConfigError):
    """The keyring is missing, malformed or unsafe; the message names it and the fix."""


@dataclass(frozen=True)
class Key:
    """One AES-256 key: its id (stored on every row it encrypts) and its 32 bytes."""

    id: str
    material: bytes = field(repr=False)


def generate_key(taken: Iterable[str] = ()) -> Key:
    """A fresh random key whose id is not in `taken`."""
    used = set(taken)
    while True:
        key_id = f"k_{secrets.token_hex(4)}"
        if key_id not in used:
            return Key(key_id, secrets.token_bytes(KEY_BYTES))


@dataclass(frozen=True)
class Keyring:
    """A consistent set of keys, oldest first, and the one new rows are encrypted under."""

    keys: tuple[Key, ...]
    active_id: str

    def __post_init__(self) -> None:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringError(f"keyring: duplicate key ids in {ids}")
        if self.active_id not in ids:
            raise KeyringError(f"keyring: the active key {self.active_id!r} is not in it")

    @property
    def active(self) -> Key:
        """The key new rows are encrypted under."""
        key = self.get(self.active_id)
        assert key is not None  # checked in __post_init__
        return key

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, oldest first."""
        return tuple(k.id for k in self.keys)

    def get(self, key_id: str) -> Key | None:
        """The key with id `key_id`, if the keyring holds it."""
        return next((k for k in self.keys if k.id == key_id), None)

    def with_active(self, key: Key) -> Keyring:
        """This keyring plus `key`, which becomes the active key."""
        return Keyring((*self.keys, key), key.id)

    def without(self, key_ids: Iterable[str]) -> Keyring:
        """This keyring minus the (non-active) keys `key_ids`."""
        drop = set(key_ids) - {self.active_id}
        return Keyring(tuple(k for k in self.keys if k.id not in drop), self.active_id)


class KeyringSource(Protocol):
    """Where a keyring is loaded from (and, if writable, saved to)."""

    description: str
    """Names the source in messages and logs (a path or a variable; never key material)."""
    writable: bool
    """Whether RotateKey may add keys here and Rewrap may retire them."""
    read_only_procedure: str
    """For a read-only source: how an operator rotates the key by hand."""

    def load(self) -> Keyring:
        """Read (for a missing file: create) the keyring; KeyringError when unusable."""
        ...

    def save(self, keyring: Keyring) -> None:
        """Replace the stored keyring atomically (writable sources only)."""
        ...
