"""JSON logs, one object per line, with the service name and the current trace and span ids.

Fields passed as `extra={...}` become top-level keys. Secrets must never be passed at all,
not even in part: log what identifies them without revealing them (an id, an HMAC).

As a second line of defence every line is scrubbed before it is written: bearer credentials,
Saga API keys and JWTs are replaced by `[redacted]`, and in records of grpc's own loggers
every bytes literal is, too — grpc logs a metadata value it cannot decode (an `authorization`
header with one non-UTF-8 byte) whole, which would put a live key in the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from opentelemetry import trace

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CREDENTIAL = re.compile(
    r"(?i:(bearer\s+))[^\s'\"\\,;]+"  # an authorization value, whatever it holds
    r"|saga_[a-z]{2}_[A-Za-z0-9_-]{8,}"  # Saga API keys (saga_ak_…)
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs
)
_BYTES_LITERAL = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def scrub(text: str, *, bytes_literals: bool = False) -> str:
    """`text` with credentials (and, if asked, every bytes literal) replaced by [redacted]."""
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1) or ''}[redacted]", text)
    if bytes_literals:
        text = _BYTES_LITERAL.sub("b'[redacted]'", text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        from_grpc = record.name.startswith("grpc")
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(out, default=str), bytes_literals=from_grpc)


def setup_logging(service: str, level: str) -> None:
    """Send every log record of this process to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
