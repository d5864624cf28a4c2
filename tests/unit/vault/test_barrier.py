"""The barrier over real storage, on SQLite and PostgreSQL: what is stored, what a tampered or
moved row does, compare-and-set under concurrency, rotation, rewrap and sealing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.errors import Code, SagaError
from services.vault.barrier import Barrier
from services.vault.keyring import KeyringSource
from services.vault.keyring_sources import DirectoryKeyring, FileKeyring
from services.vault.rotation import rewrap, rotate_key, status
from services.vault.store import SecretStore
from tests.conftest import Backend

PAYLOAD = b"sk-test-secret-payload-0123456789"


@dataclass
class Vault:
    """A barrier on a fresh database and keyring file, and how to reopen it."""

    barrier: Barrier
    backend: Backend
    data: Path

    @property
    def store(self) -> SecretStore:
        return self.barrier.store

    async def reopen(self, source: KeyringSource | None = None) -> Barrier:
        """A second barrier on the same database (as after a restart)."""
        source = source or FileKeyring(self.data / "keyring.json")
        store = await SecretStore.open(self.backend.url, self.backend.namespace, self.data)
        return await Barrier.open(store, source, source.load())


@pytest.fixture
async def vault(backend: Backend, tmp_path: Path) -> AsyncIterator[Vault]:
    source = FileKeyring(tmp_path / "keyring.json")
    store = await SecretStore.open(backend.url, backend.namespace, tmp_path)
    barrier = await Barrier.open(store, source, source.load())
    try:
        yield Vault(barrier, backend, tmp_path)
    finally:
        await store.close()


async def failure(call: Awaitable[object]) -> SagaError:
    """The SagaError an awaitable ends with."""
    with pytest.raises(SagaError) as err:
        await call
    return err.value


async def raw_row(store: SecretStore, owner: str, name: str, version: int) -> dict[str, object]:
    row = await store.db.fetchrow(
        "SELECT key_id, nonce, ciphertext FROM secrets "
        "WHERE owner = $1 AND name = $2 AND version = $3",
        owner,
        name,
        version,
    )
    assert row is not None
    return row


async def test_stored_bytes_differ_from_the_plaintext(vault: Vault) -> None:
    await vault.barrier.put("provider:openai", "api_key", PAYLOAD, {"kind": "static"})
    row = await raw_row(vault.store, "provider:openai", "api_key", 1)
    assert PAYLOAD not in bytes(row["ciphertext"])  # type: ignore[arg-type]
    assert row["key_id"] == vault.barrier.keyring.active_id
    secret = await vault.barrier.get("provider:openai", "api_key")
    assert (secret.payload, secret.version, dict(secret.metadata)) == (
        PAYLOAD,
        1,
        {"kind": "static"},
    )


async def test_one_flipped_byte_fails_the_read(vault: Vault) -> None:
    await vault.barrier.put("o", "tampered", PAYLOAD, {})
    await vault.barrier.put("o", "untouched", PAYLOAD, {})
    row = await raw_row(vault.store, "o", "tampered", 1)
    damaged = bytearray(row["ciphertext"])  # type: ignore[arg-type]
    damaged[5] ^= 0x01
    await vault.store.db.execute(
        "UPDATE secrets SET ciphertext = $1 WHERE owner = 'o' AND name = 'tampered'",
        bytes(damaged),
    )
    error = await failure(vault.barrier.get("o", "tampered"))
    assert (error.code, error.reason) == (Code.DATA_LOSS, "SECRET_CORRUPT")
    assert PAYLOAD.decode() not in error.message
    assert (await vault.barrier.get("o", "untouched")).payload == PAYLOAD


async def test_a_ciphertext_moved_to_another_owner_and_name_fails(vault: Vault) -> None:
    await vault.barrier.put("user:alice", "token", b"alice's token", {})
    await vault.barrier.put("user:mallory", "token", b"mallory's token", {})
    alice = await raw_row(vault.store, "user:alice", "token", 1)
    # Mallory's row gets Alice's ciphertext, nonce and key id: a copy inside the database.
    await vault.store.db.execute(
        "UPDATE secrets SET key_id = $1, nonce = $2, ciphertext = $3 "
        "WHERE owner = 'user:mallory' AND name = 'token'",
        alice["key_id"],
        alice["nonce"],
        alice["ciphertext"],
    )
    error = await failure(vault.barrier.get("user:mallory", "token"))
    assert error.reason == "SECRET_CORRUPT"
    assert (await vault.barrier.get("user:alice", "token")).payload == b"alice's token"


async def test_the_same_plaintext_stored_twice_differs(vault: Vault) -> None:
    await vault.barrier.put("o", "a", PAYLOAD, {})
    await vault.barrier.put("o", "a", PAYLOAD, {})
    first, second = await raw_row(vault.store, "o", "a", 1), await raw_row(vault.store, "o", "a", 2)
    assert first["ciphertext"] != second["ciphertext"]
    assert first["nonce"] != second["nonce"]


async def test_compare_and_set_versions(vault: Vault) -> None:
    b = vault.barrier
    assert await b.put("o", "s", b"v1", {}, expected=0) == 1
    error = await failure(b.put("o", "s", b"again", {}, expected=0))
    assert (error.code, error.reason, error.metadata["currentVersion"]) == (
        Code.ABORTED,
        "VERSION_CONFLICT",
        "1",
    )
    error = await failure(b.put("o", "s", b"stale", {}, expected=5))
    assert error.reason == "VERSION_CONFLICT"
    assert await b.put("o", "s", b"v2", {}, expected=1) == 2
    assert await b.put("o", "s", b"v3", {}) == 3  # unconditional
    assert (await b.get("o", "s")).payload == b"v3"
    assert (await b.get("o", "s", 1)).payload == b"v1"  # history stays readable
    missing = await failure(b.get("o", "s", 9))
    assert (missing.code, missing.reason) == (Code.NOT_FOUND, "SECRET_NOT_FOUND")
    missing = await failure(b.get("o", "nothing"))
    assert missing.reason == "SECRET_NOT_FOUND"


async def test_twenty_concurrent_writers_with_one_expected_version_one_wins(vault: Vault) -> None:
    b = vault.barrier
    await b.put("o", "raced", b"start", {})
    results = await asyncio.gather(
        *(b.put("o", "raced", f"writer {i}".encode(), {}, expected=1) for i in range(20)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if not isinstance(r, int)]
    assert won == [2]
    assert len(lost) == 19
    assert all(isinstance(e, SagaError) and e.reason == "VERSION_CONFLICT" for e in lost)
    assert {e.metadata["currentVersion"] for e in lost if isinstance(e, SagaError)} == {"2"}
    assert (await b.get("o", "raced")).payload.startswith(b"writer ")


async def test_concurrent_unconditional_writers_all_land(vault: Vault) -> None:
    versions = await asyncio.gather(
        *(vault.barrier.put("o", "busy", f"{i}".encode(), {}) for i in range(20))
    )
    assert sorted(versions) == list(range(1, 21))
    for v in versions:
        # Each version holds exactly what its writer wrote: nothing mixed.
        payload = (await vault.barrier.get("o", "busy", v)).payload
        assert versions[int(payload)] == v


async def test_delete_tombstones_every_version_and_drops_ciphertext(vault: Vault) -> None:
    b = vault.barrier
    await b.put("o", "gone", b"v1", {})
    await b.put("o", "gone", b"v2", {})
    stale = await failure(b.delete("o", "gone", expected=1))
    assert (stale.code, stale.reason) == (Code.ABORTED, "VERSION_CONFLICT")
    await b.delete("o", "gone", expected=2)
    for version in (0, 1, 2):
        assert (await failure(b.get("o", "gone", version))).reason == "SECRET_NOT_FOUND"
    rows = await vault.store.db.fetch(
        "SELECT ciphertext, deleted FROM secrets WHERE owner = 'o' AND name = 'gone'"
    )
    assert [(bytes(r["ciphertext"]), bool(r["deleted"])) for r in rows] == [(b"", True)] * 2
    assert (await failure(b.delete("o", "gone"))).reason == "SECRET_NOT_FOUND"
    # Recreated: must-not-exist holds again, and versions are never reused.
    assert await b.put("o", "gone", b"back", {}, expected=0) == 3
    assert (await b.get("o", "gone")).payload == b"back"


async def test_list_pages_by_name_without_payloads(vault: Vault) -> None:
    b = vault.barrier
    for name in ["c", "a", "b", "d", "e"]:
        await b.put("lister", name, PAYLOAD, {"label": name})
    await b.put("lister", "b", PAYLOAD, {"label": "b2"})
    await b.put("someone-else", "z", PAYLOAD, {})
    await b.delete("lister", "e")
    first, token = await b.list("lister", page_size=2)
    assert [(i.name, i.version, dict(i.metadata)) for i in first] == [
        ("a", 1, {"label": "a"}),
        ("b", 2, {"label": "b2"}),
    ]
    assert token
    second, token = await b.list("lister", page_size=2, page_token=token)
    assert [i.name for i in second] == ["c", "d"]
    assert token == ""
    assert not any(hasattr(i, "payload") for i in first + second)
    bad = await failure(b.list("lister", page_token="!!"))  # noqa: S106 (not a password)
    assert (bad.code, bad.reason) == (Code.INVALID_ARGUMENT, "SECRET_INVALID")


async def test_bounds_are_enforced_with_field_violations(vault: Vault) -> None:
    b = vault.barrier
    # At the limits: accepted.
    await b.put("o", "n" * 256, b"x" * 65536, {f"k{i}": "v" for i in range(32)})
    cases = [
        (b.put("o", "n" * 257, b"", {}), "name"),
        (b.put("o", "n", b"x" * 65537, {}), "payload"),
        (b.put("o", "n", b"", {f"k{i}": "v" for i in range(33)}), "metadata"),
        (b.put("", "n", b"", {}), "owner"),
        (b.put("o", "bad\x00name", b"", {}), "name"),
        (b.put("o", "n", b"", {}, expected=-1), "expected_version"),
        (b.get("o", "n", -2), "version"),
        (b.list("o", page_size=-1), "page_size"),
    ]
    for call, field in cases:
        error = await failure(call)
        assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "SECRET_INVALID")
        assert [v.field for v in error.field_violations] == [field]


async def test_after_rotation_old_rows_read_and_rewrap_retires_the_old_key(vault: Vault) -> None:
    b = vault.barrier
    old = b.keyring.active_id
    for i in range(5):
        await b.put("o", f"s{i}", f"payload {i}".encode(), {})
    new = await rotate_key(b)
    assert new != old
    assert (await b.get("o", "s0")).payload == b"payload 0"  # old rows still read
    await b.put("o", "s5", b"payload 5", {})
    assert (await raw_row(vault.store, "o", "s5", 1))["key_id"] == new
    before = await status(b)
    assert set(before.key_ids_in_use) == {old, new}
    assert before.rows_by_key == {old: 5, new: 1}

    reports = [p async for p in rewrap(b, 2)]
    assert [(p.rows_done, p.done) for p in reports] == [
        (2, False),
        (4, False),
        (5, False),
        (5, True),
    ]
    assert {p.rows_total for p in reports} == {5}
    after = await status(b)
    assert after.key_ids_in_use == (new,)
    assert after.rows_by_key == {new: 6}
    # Retired: gone from the keyring file too.
    assert FileKeyring(vault.data / "keyring.json").load().ids == (new,)
    for i in range(6):
        assert (await b.get("o", f"s{i}")).payload == f"payload {i}".encode()
    # A restart with the smaller keyring is not sealed: the canary moved as well.
    again = await vault.reopen()
    try:
        assert not again.sealed
    finally:
        await again.store.close()


async def test_an_interrupted_rewrap_resumes_where_it_stopped(vault: Vault) -> None:
    b = vault.barrier
    for i in range(4):
        await b.put("o", f"s{i}", b"p", {})
    old = b.keyring.active_id
    new = await rotate_key(b)
    stream = rewrap(b, 1)
    first = await anext(stream)
    await stream.aclose()  # the client went away after one batch
    assert (first.rows_total, first.rows_done) == (4, 1)
    midway = await status(b)
    assert midway.rows_by_key == {old: 3, new: 1}
    assert old in FileKeyring(vault.data / "keyring.json").load().ids  # still in use
    reports = [p async for p in rewrap(b, 10)]
    assert (reports[-1].rows_total, reports[-1].rows_done, reports[-1].done) == (3, 3, True)
    assert (await status(b)).key_ids_in_use == (new,)


async def test_a_rewrap_with_nothing_to_do_reports_done(vault: Vault) -> None:
    reports = [p async for p in rewrap(vault.barrier, 10)]
    assert [(p.rows_total, p.rows_done, p.done) for p in reports] == [(0, 0, True)]


async def test_a_read_only_keyring_refuses_rotation_with_the_procedure(
    vault: Vault, tmp_path: Path
) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    keyring = vault.barrier.keyring
    (directory / keyring.active_id).write_bytes(keyring.active.material)
    (directory / "active").write_text(keyring.active_id)
    mounted = await vault.reopen(DirectoryKeyring(directory))
    try:
        assert not mounted.sealed  # the same key, so the canary opens
        error = await failure(rotate_key(mounted))
        assert (error.code, error.reason) == (Code.FAILED_PRECONDITION, "KEYRING_READ_ONLY")
        assert "restart the vault, then call Rewrap" in error.message
        assert str(directory) in error.message
    finally:
        await mounted.store.close()
    assert await rotate_key(vault.barrier)  # positive control: the file keyring rotates


async def test_a_wrong_keyring_seals_the_vault(vault: Vault, tmp_path: Path) -> None:
    await vault.barrier.put("o", "s", PAYLOAD, {})
    right = await vault.reopen()
    try:
        assert not right.sealed  # positive control: the keyring it was written with
        assert (await right.get("o", "s")).payload == PAYLOAD
    finally:
        await right.store.close()

    wrong = await vault.reopen(FileKeyring(tmp_path / "other" / "keyring.json"))
    try:
        assert wrong.sealed
        assert "lacks key" in wrong.sealed_reason
        for call in (
            wrong.get("o", "s"),
            wrong.put("o", "s", b"x", {}),
            wrong.delete("o", "s"),
            wrong.list("o"),
            rotate_key(wrong),
            anext(rewrap(wrong, 1)),
        ):
            error = await failure(call)
            assert (error.code, error.reason) == (Code.FAILED_PRECONDITION, "VAULT_SEALED")
        assert (await status(wrong)).sealed_reason == wrong.sealed_reason
    finally:
        await wrong.store.close()


async def test_a_keyring_with_the_right_ids_but_other_bytes_seals_the_vault(
    vault: Vault, tmp_path: Path
) -> None:
    directory = tmp_path / "impostor"
    directory.mkdir()
    active = vault.barrier.keyring.active_id
    (directory / active).write_bytes(b"\x00" * 32)
    (directory / "active").write_text(active)
    impostor = await vault.reopen(DirectoryKeyring(directory))
    try:
        assert impostor.sealed
        assert "does not decrypt the canary" in impostor.sealed_reason
    finally:
        await impostor.store.close()


async def test_a_keyring_missing_a_key_rows_use_seals_the_vault(
    vault: Vault, tmp_path: Path
) -> None:
    b = vault.barrier
    canary_key = b.keyring.active
    await rotate_key(b)
    await b.put("o", "under-new-key", PAYLOAD, {})
    # Only the canary's key: rows under the new key could not be read.
    directory = tmp_path / "partial"
    directory.mkdir()
    (directory / canary_key.id).write_bytes(canary_key.material)
    (directory / "active").write_text(canary_key.id)
    partial = await vault.reopen(DirectoryKeyring(directory))
    try:
        assert partial.sealed
        assert b.keyring.active_id in partial.sealed_reason
    finally:
        await partial.store.close()
