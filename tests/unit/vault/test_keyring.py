"""Where keys come from: a 0600 file (created when missing, refused when wider), a mounted
directory, or the environment — and which of them RotateKey may write."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from services.common.config import VaultConfig
from services.vault.keyring import Keyring, KeyringError, generate_key
from services.vault.keyring_sources import (
    DirectoryKeyring,
    EnvKeyring,
    FileKeyring,
    keyring_source,
)


def test_a_missing_keyring_file_is_created_0600_with_one_active_key(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "keyring.json"
    keyring = FileKeyring(path).load()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert keyring.ids == (keyring.active_id,)
    assert len(keyring.active.material) == 32
    assert FileKeyring(path).load() == keyring  # the second start reads the same key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700])
def test_a_keyring_file_wider_than_0600_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keyring.json"
    FileKeyring(path).load()
    path.chmod(mode)
    with pytest.raises(KeyringError) as err:
        FileKeyring(path).load()
    assert str(path) in str(err.value)
    assert f"chmod 600 {path}" in str(err.value)
    path.chmod(0o600)
    FileKeyring(path).load()  # positive control
    path.chmod(0o400)
    FileKeyring(path).load()  # narrower is fine


def test_rotation_saves_atomically_and_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    source = FileKeyring(path)
    first = source.load()
    rotated = first.with_active(generate_key(first.ids))
    source.save(rotated)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = source.load()
    assert again == rotated
    assert again.ids == (first.active_id, rotated.active_id)
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temporary left


def test_the_active_key_is_never_retired() -> None:
    old, new = generate_key(), generate_key()
    keyring = Keyring((old,), old.id).with_active(new)
    assert keyring.without([old.id, new.id]).ids == (new.id,)


def test_a_malformed_keyring_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(KeyringError, match="not a readable Saga keyring"):
        FileKeyring(path).load()
    key = generate_key()
    path.write_text(
        json.dumps(
            {"active": key.id, "keys": [{"id": key.id, "key": base64.b64encode(b"short").decode()}]}
        )
    )
    with pytest.raises(KeyringError, match="not 32 bytes"):
        FileKeyring(path).load()


def _secret_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    directory = tmp_path / "secret"
    directory.mkdir()
    raw, encoded = generate_key(), generate_key()
    (directory / raw.id).write_bytes(raw.material)
    (directory / encoded.id).write_text(base64.b64encode(encoded.material).decode() + "\n")
    (directory / "active").write_text(encoded.id + "\n")
    (directory / "..data").mkdir()  # what a Kubernetes secret mount adds
    return directory, [raw.id, encoded.id]


def test_a_mounted_directory_gives_a_read_only_keyring(tmp_path: Path) -> None:
    directory, ids = _secret_dir(tmp_path)
    source = DirectoryKeyring(directory)
    keyring = source.load()
    assert set(keyring.ids) == set(ids)
    assert keyring.active_id == ids[1]
    assert source.writable is False
    assert "restart the vault, then call Rewrap" in source.read_only_procedure
    with pytest.raises(KeyringError):
        source.save(keyring)


def test_a_directory_whose_active_key_is_missing_is_refused(tmp_path: Path) -> None:
    directory, _ = _secret_dir(tmp_path)
    (directory / "active").write_text("k_0badc0de")
    with pytest.raises(KeyringError, match="has no key file"):
        DirectoryKeyring(directory).load()
    (directory / "active").unlink()
    with pytest.raises(KeyringError, match="missing or empty"):
        DirectoryKeyring(directory).load()


def test_a_directory_with_a_stray_or_short_file_is_refused(tmp_path: Path) -> None:
    directory, _ = _secret_dir(tmp_path)
    (directory / "notes.txt").write_text("hi")
    with pytest.raises(KeyringError, match="unexpected entry"):
        DirectoryKeyring(directory).load()
    (directory / "notes.txt").unlink()
    (directory / "k_00000001").write_text("c2hvcnQ=")
    with pytest.raises(KeyringError, match="not a 32-byte key"):
        DirectoryKeyring(directory).load()


def test_environment_keys_put_the_active_key_first() -> None:
    new, old = generate_key(), generate_key()
    value = ",".join(f"{k.id}:{base64.b64encode(k.material).decode()}" for k in (new, old))
    keyring = EnvKeyring(value).load()
    assert keyring.active_id == new.id
    assert keyring.get(old.id) == old
    with pytest.raises(KeyringError, match="expected k_<8 hex>:<base64>"):
        EnvKeyring(base64.b64encode(new.material).decode()).load()
    with pytest.raises(KeyringError, match="not a key id"):
        EnvKeyring("key1:" + base64.b64encode(new.material).decode()).load()


def test_the_source_follows_the_configuration(tmp_path: Path) -> None:
    default = keyring_source(VaultConfig(), tmp_path, {})
    assert isinstance(default, FileKeyring)
    assert default.path == tmp_path / "vault" / "keyring.json"
    with pytest.raises(KeyringError, match=r"vault\.keyring_dir: missing key"):
        keyring_source(VaultConfig(keyring="directory"), tmp_path, {})
    assert isinstance(
        keyring_source(VaultConfig(keyring="directory", keyring_dir="/x"), tmp_path, {}),
        DirectoryKeyring,
    )


def test_environment_keys_are_accepted_only_from_the_environment(tmp_path: Path) -> None:
    key = generate_key()
    value = f"{key.id}:{base64.b64encode(key.material).decode()}"
    config = VaultConfig(keyring="env", keys=value)
    source = keyring_source(config, tmp_path, {"SAGA_VAULT__KEYS": value})
    assert isinstance(source, EnvKeyring)
    assert source.load().active == key
    with pytest.raises(KeyringError, match=r"set in saga\.toml"):
        keyring_source(config, tmp_path, {})
    with pytest.raises(KeyringError, match="ignores it"):
        keyring_source(VaultConfig(keys=value), tmp_path, {"SAGA_VAULT__KEYS": value})
