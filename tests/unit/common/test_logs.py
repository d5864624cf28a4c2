"""Log lines are scrubbed of credentials before they are written."""

from __future__ import annotations

import json
import logging

from services.auth.api_keys import generate_key
from services.common.logs import JsonFormatter, scrub


def test_credentials_are_redacted_and_other_text_is_kept() -> None:
    key = generate_key()
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLWJ5dGVz"
    line = f"key {key} token {jwt} header Bearer sk-live-123 exe_0123 done"
    scrubbed = scrub(line)
    assert key not in scrubbed
    assert jwt not in scrubbed
    assert "sk-live-123" not in scrubbed
    assert scrubbed == "key [redacted] token [redacted] header Bearer [redacted] exe_0123 done"
    assert scrub("an ordinary line, exe_0123, 42 tokens") == "an ordinary line, exe_0123, 42 tokens"


def test_grpc_records_lose_every_bytes_literal() -> None:
    formatter = JsonFormatter("gateway")
    value = b"opaque-secret-value\xff"
    for name, kept in (("grpc._cython.cygrpc", False), ("saga.gateway", True)):
        record = logging.makeLogRecord(
            {"name": name, "msg": "Invalid encoding on %r", "args": (value,), "levelno": 40}
        )
        out = json.loads(formatter.format(record))
        assert ("opaque-secret-value" in out["msg"]) is kept, out
