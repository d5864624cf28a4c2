"""AES-256-GCM sealing bound to the row: what a stolen or moved ciphertext cannot do."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.errors import Code
from services.vault.crypto import RowId, Sealed, SecretCorrupt, associated_data, seal, unseal
from services.vault.keyring import generate_key

KEY = generate_key()
ROW = RowId("provider:openai", "api_key", 3)
PLAINTEXT = b"sk-live-0123456789abcdef"


def test_a_sealed_row_opens_with_its_key_and_row() -> None:
    assert unseal(KEY, ROW, seal(KEY, ROW, PLAINTEXT)) == PLAINTEXT


def test_stored_bytes_do_not_contain_the_plaintext() -> None:
    sealed = seal(KEY, ROW, PLAINTEXT)
    assert PLAINTEXT not in sealed.ciphertext
    assert PLAINTEXT[:8] not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert len(sealed.ciphertext) == len(PLAINTEXT) + 16  # the GCM tag


def test_the_same_plaintext_sealed_twice_differs() -> None:
    first, second = seal(KEY, ROW, PLAINTEXT), seal(KEY, ROW, PLAINTEXT)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_every_flipped_byte_fails_to_open() -> None:
    sealed = seal(KEY, ROW, PLAINTEXT)
    for i in range(len(sealed.ciphertext)):
        damaged = bytearray(sealed.ciphertext)
        damaged[i] ^= 0x01
        with pytest.raises(SecretCorrupt) as err:
            unseal(KEY, ROW, dataclasses.replace(sealed, ciphertext=bytes(damaged)))
        assert (err.value.code, err.value.reason) == (Code.DATA_LOSS, "SECRET_CORRUPT")
    for i in range(len(sealed.nonce)):
        nonce = bytearray(sealed.nonce)
        nonce[i] ^= 0x80
        with pytest.raises(SecretCorrupt):
            unseal(KEY, ROW, dataclasses.replace(sealed, nonce=bytes(nonce)))
    assert unseal(KEY, ROW, sealed) == PLAINTEXT  # the untouched row still opens


@pytest.mark.parametrize(
    "moved",
    [
        RowId("user:mallory", ROW.name, ROW.version),
        RowId(ROW.owner, "other_key", ROW.version),
        RowId(ROW.owner, ROW.name, ROW.version + 1),
    ],
    ids=["owner", "name", "version"],
)
def test_a_ciphertext_moved_to_another_row_fails(moved: RowId) -> None:
    sealed = seal(KEY, ROW, PLAINTEXT)
    with pytest.raises(SecretCorrupt):
        unseal(KEY, moved, sealed)
    assert unseal(KEY, ROW, sealed) == PLAINTEXT


def test_a_row_relabelled_with_another_key_id_fails() -> None:
    sealed = seal(KEY, ROW, PLAINTEXT)
    # Same key material under another id: the id is bound too.
    other = dataclasses.replace(KEY, id="k_00000000")
    with pytest.raises(SecretCorrupt):
        unseal(other, ROW, Sealed(other.id, sealed.nonce, sealed.ciphertext))


def test_another_key_cannot_open_a_row() -> None:
    sealed = seal(KEY, ROW, PLAINTEXT)
    impostor = dataclasses.replace(generate_key(), id=KEY.id)
    with pytest.raises(SecretCorrupt):
        unseal(impostor, ROW, sealed)


def test_associated_data_frames_each_field() -> None:
    assert associated_data(RowId("ab", "c", 1), "k_1") != associated_data(
        RowId("a", "bc", 1), "k_1"
    )
    assert associated_data(RowId("a", "b", 1), "k_1") == associated_data(RowId("a", "b", 1), "k_1")
