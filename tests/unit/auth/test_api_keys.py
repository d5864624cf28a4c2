"""The API key format: prefix, length, alphabet and a checksum that catches typos offline;
stored as a hash, never as the key."""

from __future__ import annotations

import re

import pytest

from services.auth import api_keys
from services.auth.api_keys import ALPHABET, KEY_LENGTH, PREFIX

KEY_SHAPE = re.compile(r"saga_ak_[0-9A-Za-z]{38}")


def test_a_new_key_has_the_documented_shape_and_round_trips() -> None:
    key = api_keys.generate_key()
    assert KEY_SHAPE.fullmatch(key)
    assert len(key) == KEY_LENGTH == 46
    assert api_keys.is_well_formed(key)
    assert api_keys.display_prefix(key) == key[:12]
    assert api_keys.display_prefix(key).startswith(PREFIX)


def test_keys_are_random() -> None:
    assert len({api_keys.generate_key() for _ in range(100)}) == 100


def test_every_one_character_typo_is_malformed() -> None:
    key = api_keys.generate_key()
    assert api_keys.is_well_formed(key)  # positive control
    for i in range(len(PREFIX), len(key)):
        for replacement in "0aZ":
            if replacement == key[i]:
                continue
            typo = key[:i] + replacement + key[i + 1 :]
            assert not api_keys.is_well_formed(typo), (i, replacement)


def test_swapped_neighbours_are_malformed() -> None:
    key = api_keys.generate_key()
    body = len(PREFIX)
    swaps = [
        key[:i] + key[i + 1] + key[i] + key[i + 2 :]
        for i in range(body, len(key) - 1)
        if key[i] != key[i + 1]
    ]
    assert swaps
    assert not any(api_keys.is_well_formed(s) for s in swaps)


@pytest.mark.parametrize(
    "credential",
    [
        "",
        "saga_ak_",
        "sk-" + "a" * 43,
        "saga_xx_" + "a" * 38,  # another type prefix
        "SAGA_AK_" + "a" * 38,
    ],
)
def test_wrong_prefix_or_length_is_malformed(credential: str) -> None:
    assert not api_keys.is_well_formed(credential)


def test_a_valid_checksum_over_a_wrong_length_is_malformed() -> None:
    body = PREFIX + "a" * 31
    assert not api_keys.is_well_formed(body + api_keys.checksum(body))
    body = PREFIX + "a" * 32
    assert api_keys.is_well_formed(body + api_keys.checksum(body))  # positive control


def test_characters_outside_base62_are_malformed() -> None:
    body = PREFIX + "a" * 31 + "-"
    assert not api_keys.is_well_formed(body + api_keys.checksum(body))
    assert all(c in ALPHABET for c in api_keys.checksum(body))


def test_the_stored_hash_is_not_the_key_and_is_stable() -> None:
    key = api_keys.generate_key()
    digest = api_keys.hash_key(key)
    assert digest != key
    assert key not in digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert api_keys.hash_key(key) == digest
    assert api_keys.hash_key(api_keys.generate_key()) != digest


def test_ids_have_their_documented_shapes() -> None:
    assert re.fullmatch(r"key_[0-9a-f]{16}", api_keys.new_key_id())
    assert re.fullmatch(r"usr_[0-9a-f]{16}", api_keys.new_user_id())
    assert re.fullmatch(r"usr_admin_[0-9a-f]{12}", api_keys.new_user_id("admin"))
