"""The audit log names the caller, the owner and the outcome, and the secret's name only as
an HMAC under a key derived from the keyring — on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.vault.audit import AuditLog
from services.vault.keyring import generate_key
from services.vault.keyring_sources import FileKeyring
from services.vault.store import SecretStore
from tests.conftest import Backend


async def test_audit_rows_carry_an_hmac_of_the_name_never_the_name(
    backend: Backend, tmp_path: Path
) -> None:
    keyring = FileKeyring(tmp_path / "keyring.json").load()
    store = await SecretStore.open(backend.url, backend.namespace, tmp_path)
    try:
        audit = AuditLog(store, lambda: keyring)
        await audit.record("auth", "GetSecret", "user:alice", "entra-refresh-token", "OK")
        await audit.record("auth", "GetSecret", "user:alice", "entra-refresh-token", "NOPE")
        await audit.record("gateway", "GetStatus", "", "", "OK")
        status, second, first = await audit.recent()
        assert (first.caller, first.operation, first.owner, first.outcome) == (
            "auth",
            "GetSecret",
            "user:alice",
            "OK",
        )
        assert second.outcome == "NOPE"
        assert first.name_hmac == second.name_hmac  # the same name tags alike: accesses link up
        assert first.hmac_key_id == keyring.active_id
        # An investigator holding the keyring recomputes the tag of a name.
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"saga.vault.v1/audit-name-hmac"
        ).derive(keyring.active.material)
        expected = hmac.new(derived, b"entra-refresh-token", hashlib.sha256).hexdigest()
        assert first.name_hmac == expected
        rows = await store.db.fetch("SELECT * FROM audit")
        assert "entra-refresh-token" not in repr(rows)
        assert (status.name_hmac, status.hmac_key_id, status.caller) == ("", "", "gateway")

        rotated = keyring.with_active(generate_key(keyring.ids))
        other = AuditLog(store, lambda: rotated)
        tag, key_id = other.name_tag("entra-refresh-token")
        assert (tag != expected, key_id) == (True, rotated.active_id)
    finally:
        await store.close()
