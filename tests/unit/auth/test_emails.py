"""Emails are stored normalised (trimmed, NFKC, domain lower-cased) and refused with a
precise field violation when no mail system would deliver to them."""

from __future__ import annotations

import pytest

from services.auth.emails import normalise_email
from services.common.errors import InvalidArgument


def fullwidth(text: str) -> str:
    """`text` in full-width forms (U+FF01…U+FF5E), which NFKC folds back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM \n", "ada.lovelace@example.com"),  # one case
        (fullwidth("ada@example.com"), "ada@example.com"),  # full-width forms (NFKC)
        ("ada+saga@sub.example.co.uk", "ada+saga@sub.example.co.uk"),
        ("josé@exämple.de", "josé@exämple.de"),  # internationalised (RFC 6531)
        ("o'brien@x-y.example", "o'brien@x-y.example"),
    ],
)
def test_addresses_are_normalised(raw: str, stored: str) -> None:
    assert normalise_email(raw) == stored


def test_normalising_is_idempotent() -> None:
    once = normalise_email(f"  {fullwidth('ADA')}@ExAmple.ORG")
    assert normalise_email(once) == once


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ada",
        "@example.com",
        "ada@",
        "ada@localhost",  # no dot
        "ada@example..com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exa_mple.com",
        "ada@[127.0.0.1]",
        "ada@127.0.0.1",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        '"ada"@example.com',
        "a da@example.com",
        "ada\x00@example.com",
        "a" * 65 + "@example.com",
        "ada@" + "a" * 64 + ".com",
        "ada@" + ".".join(["a" * 60] * 5) + ".com",  # over 254 characters
        "x" * 5000,
    ],
)
def test_undeliverable_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalise_email(raw)
    assert err.value.reason == "EMAIL_INVALID"
    assert [v.field for v in err.value.field_violations] == ["email"]


def test_the_longest_parts_are_accepted() -> None:
    local = "a" * 64
    assert normalise_email(f"{local}@example.com") == f"{local}@example.com"
    label = "b" * 63
    assert normalise_email(f"ada@{label}.com") == f"ada@{label}.com"
