"""Limits on what callers may store, checked before anything is read or written; a breach is
INVALID_ARGUMENT `SECRET_INVALID` with one field violation per bad field."""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Mapping

from services.common.errors import FieldViolation, InvalidArgument

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NAME_CHARS = 256
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH_SIZE = 10_000
MAX_VERSION = 2**62


def _text(field: str, value: str, limit: int, *, required: bool = True) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "must not be empty")] if required else []
    if len(value) > limit:
        return [FieldViolation(field, f"{len(value)} characters; at most {limit}")]
    # Control characters (NUL above all, which PostgreSQL TEXT refuses) have no place in
    # identifiers or labels, and make logs and audit trails ambiguous.
    if any(unicodedata.category(c) == "Cc" for c in value):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def _version(field: str, value: int | None) -> list[FieldViolation]:
    if value is not None and not 0 <= value <= MAX_VERSION:
        return [FieldViolation(field, f"{value} is not a version (0 to {MAX_VERSION})")]
    return []


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="SECRET_INVALID",
            field_violations=violations,
        )


def check_ref(owner: str, name: str, version: int | None = None, version_field: str = "") -> None:
    """A secret's owner and name (and a version, when given) are well-formed."""
    _raise(
        _text("owner", owner, MAX_NAME_CHARS)
        + _text("name", name, MAX_NAME_CHARS)
        + _version(version_field or "version", version)
    )


def check_owner(owner: str) -> None:
    """An owner is well-formed (for listing)."""
    _raise(_text("owner", owner, MAX_NAME_CHARS))


def check_put(
    owner: str, name: str, payload: bytes, metadata: Mapping[str, str], expected: int | None
) -> None:
    """A PutSecret request is within bounds."""
    violations = _text("owner", owner, MAX_NAME_CHARS) + _text("name", name, MAX_NAME_CHARS)
    if len(payload) > MAX_PAYLOAD_BYTES:
        violations.append(
            FieldViolation("payload", f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
        )
    if len(metadata) > MAX_METADATA_ENTRIES:
        violations.append(
            FieldViolation("metadata", f"{len(metadata)} entries; at most {MAX_METADATA_ENTRIES}")
        )
    else:
        for key, value in metadata.items():
            violations += _text(f"metadata[{key[:64]!r}]", key, MAX_METADATA_KEY_CHARS)
            violations += _text(
                f"metadata[{key[:64]!r}]", value, MAX_METADATA_VALUE_CHARS, required=False
            )
    _raise(violations + _version("expected_version", expected))


def page_size(requested: int) -> int:
    """The page size to use for a ListSecrets `page_size` (0 = default, capped)."""
    if requested < 0:
        _raise([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_name: str) -> str:
    """The opaque token of the page after `last_name`."""
    return base64.urlsafe_b64encode(last_name.encode()).decode()


def decode_page_token(token: str) -> str:
    """The name a page token continues after ("" for the first page)."""
    if not token:
        return ""
    try:
        name = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        name = ""
    if not name or len(name) > MAX_NAME_CHARS:
        _raise([FieldViolation("page_token", "not a token this service issued")])
    return name


def batch_size(requested: int, default: int) -> int:
    """The batch size to use for a Rewrap `batch_size` (0 = the configured default)."""
    if not 0 <= requested <= MAX_BATCH_SIZE:
        raise InvalidArgument(
            f"batch_size: {requested}; use 0 (default) to {MAX_BATCH_SIZE}",
            reason="BATCH_SIZE_INVALID",
            field_violations=[FieldViolation("batch_size", f"0 to {MAX_BATCH_SIZE}")],
        )
    return requested or default
