"""Where the vault's keyring comes from.

* `FileKeyring` — a JSON file (default `<data_dir>/vault/keyring.json`), created 0600 when
  missing; the vault refuses to start when its mode is wider than 0600. The only writable
  source: RotateKey adds a key to it and Rewrap retires unused ones.
* `DirectoryKeyring` — a mounted Kubernetes secret: one file per key, named by its id,
  holding the 32 bytes raw or base64, and a file `active` naming the active key. Read-only.
* `EnvKeyring` — `vault.keys` (`SAGA_VAULT__KEYS`): `k_…:<base64>,…`, the first active.
  Read-only and weaker: the environment is readable by anything that can inspect the process
  (`/proc/<pid>/environ`, child processes, crash reports).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from services.common.config import VaultConfig, env_name
from services.vault.keyring import (
    KEY_BYTES,
    KEY_ID,
    Key,
    Keyring,
    KeyringError,
    KeyringSource,
    generate_key,
)

ACTIVE_FILE = "active"
_FILE_FORMAT = 1


def _check_id(key_id: str, where: str) -> str:
    if not KEY_ID.fullmatch(key_id):
        raise KeyringError(f"{where}: {key_id!r} is not a key id. Fix: name keys k_<8 hex digits>.")
    return key_id


def _decode(data: bytes, where: str) -> bytes:
    """32 key bytes given raw or base64 (with or without padding and a trailing newline)."""
    if len(data) == KEY_BYTES:
        return data
    try:
        text = data.strip()
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != KEY_BYTES:
        raise KeyringError(
            f"{where}: not a {KEY_BYTES}-byte key (raw, or base64). "
            f"Fix: generate one with `head -c {KEY_BYTES} /dev/urandom | base64`."
        )
    return decoded


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file at `path` and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileKeyring:
    """A keyring in a JSON file only this user may read (see the module docstring)."""

    writable = True
    read_only_procedure = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    def load(self) -> Keyring:
        """Read the file, creating it with one new key when it does not exist."""
        if not self.path.exists():
            self._create()
        self._check_mode()
        try:
            data = json.loads(self.path.read_bytes())
            keys = tuple(
                Key(_check_id(str(k["id"]), str(self.path)), base64.b64decode(k["key"]))
                for k in data["keys"]
            )
            active = _check_id(str(data["active"]), str(self.path))
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as error:
            raise KeyringError(
                f"{self.path}: not a readable Saga keyring ({type(error).__name__}). "
                "Fix: restore it from your backup; a new keyring cannot read existing secrets."
            ) from None
        for key in keys:
            if len(key.material) != KEY_BYTES:
                raise KeyringError(f"{self.path}: key {key.id} is not {KEY_BYTES} bytes.")
        return Keyring(keys, active)

    def save(self, keyring: Keyring) -> None:
        """Write `keyring` to a temporary 0600 file and rename it over the old one."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        _write_private(temporary, self._encode(keyring))
        os.replace(temporary, self.path)
        _fsync_dir(self.path.parent)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        temporary.unlink(missing_ok=True)
        key = generate_key()
        _write_private(temporary, self._encode(Keyring((key,), key.id)))
        try:
            # link, not rename: if another process created the keyring meanwhile, keep its.
            os.link(temporary, self.path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        _fsync_dir(self.path.parent)

    def _check_mode(self) -> None:
        info = self.path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyringError(f"{self.path}: not a regular file. Fix: point keyring_file at one.")
        mode = stat.S_IMODE(info.st_mode)
        if mode & ~0o600:
            raise KeyringError(
                f"{self.path}: mode {mode:04o} is wider than 0600, so other users may read the "
                f"vault's keys; the vault refuses to start. Fix: chmod 600 {self.path} (and "
                "consider the keys exposed: rotate and rewrap)."
            )

    @staticmethod
    def _encode(keyring: Keyring) -> bytes:
        return json.dumps(
            {
                "format": _FILE_FORMAT,
                "active": keyring.active_id,
                "keys": [
                    {"id": k.id, "key": base64.b64encode(k.material).decode()} for k in keyring.keys
                ],
            },
            indent=2,
        ).encode()


class _ReadOnly:
    """A source only the operator changes (see `read_only_procedure`)."""

    writable = False
    description: str

    def save(self, keyring: Keyring) -> None:
        """Refuse: callers check `writable` first."""
        raise KeyringError(f"{self.description}: read-only keyring")


class DirectoryKeyring(_ReadOnly):
    """A mounted secret: one file per key plus `active` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)
        self.read_only_procedure = (
            f"the keyring is a mounted directory ({path}): add a file named k_<8 hex digits> "
            f"holding 32 random bytes (e.g. `head -c 32 /dev/urandom | base64`) to the secret, "
            f"set the file `{ACTIVE_FILE}` to its name, restart the vault, then call Rewrap"
        )

    def load(self) -> Keyring:
        """Read every key file and the active key's name."""
        if not self.path.is_dir():
            raise KeyringError(
                f"vault.keyring_dir: {self.path} is not a directory. Fix: mount the keyring "
                "secret there, or use vault.keyring = 'file'."
            )
        keys: list[Key] = []
        active = ""
        # Kubernetes adds `..data` and timestamped directories next to the files: skip them.
        for entry in sorted(p for p in self.path.iterdir() if not p.name.startswith(".")):
            if entry.name == ACTIVE_FILE:
                active = entry.read_text().strip()
            elif KEY_ID.fullmatch(entry.name) and entry.is_file():
                keys.append(Key(entry.name, _decode(entry.read_bytes(), str(entry))))
            else:
                raise KeyringError(
                    f"{entry}: unexpected entry in the keyring directory. Fix: only key files "
                    f"named k_<8 hex digits> and `{ACTIVE_FILE}` belong there."
                )
        if not keys:
            raise KeyringError(f"{self.path}: no key files. Fix: add one (k_<8 hex digits>).")
        if not active:
            raise KeyringError(
                f"{self.path / ACTIVE_FILE}: missing or empty. Fix: write the active key's id."
            )
        if active not in {k.id for k in keys}:
            raise KeyringError(
                f"{self.path / ACTIVE_FILE}: names {active!r}, which has no key file. "
                "Fix: add the key file or correct the name."
            )
        return Keyring(tuple(keys), active)


class EnvKeyring(_ReadOnly):
    """Keys from `vault.keys` (the environment; see the module docstring)."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.description = env_name("vault.keys")
        self.read_only_procedure = (
            f"the keyring comes from the environment ({self.description}): put a new entry "
            f"k_<8 hex digits>:<base64 of 32 random bytes> first in {self.description}, "
            "restart the vault, then call Rewrap"
        )

    def load(self) -> Keyring:
        """Parse `id:base64` entries; the first is active."""
        keys: list[Key] = []
        for i, entry in enumerate(e.strip() for e in self.value.split(",") if e.strip()):
            key_id, sep, encoded = entry.partition(":")
            where = f"{self.description} entry {i + 1}"
            if not sep:
                raise KeyringError(f"{where}: expected k_<8 hex>:<base64>. Fix: add the key id.")
            keys.append(Key(_check_id(key_id, where), _decode(encoded.encode(), where)))
        if not keys:
            raise KeyringError(
                f"{self.description}: empty while vault.keyring = 'env'. Fix: set it."
            )
        return Keyring(tuple(keys), keys[0].id)


def keyring_source(
    config: VaultConfig, data_path: Path, environ: Mapping[str, str]
) -> KeyringSource:
    """The keyring source `config` selects; KeyringError when it is misconfigured."""
    if config.keyring == "directory":
        if not config.keyring_dir:
            raise KeyringError(
                "vault.keyring_dir: missing key (vault.keyring is 'directory'). Fix: set it to "
                "the mounted secret's path."
            )
        return DirectoryKeyring(Path(config.keyring_dir))
    if config.keyring == "env":
        variable = env_name("vault.keys")
        if config.keys and environ.get(variable) != config.keys:
            raise KeyringError(
                f"vault.keys: set in saga.toml; keys belong in no file that is copied around. "
                f"Fix: remove it there and set {variable}, or use vault.keyring = 'file'."
            )
        return EnvKeyring(config.keys)
    if config.keys:
        raise KeyringError(
            f"vault.keys: set while vault.keyring is {config.keyring!r}, which ignores it. "
            f"Fix: unset {env_name('vault.keys')}, or set vault.keyring = 'env'."
        )
    return FileKeyring(Path(config.keyring_file or data_path / "vault" / "keyring.json"))
