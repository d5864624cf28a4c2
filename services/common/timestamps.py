"""Stored instants as `google.protobuf.Timestamp`: the two encodings stores use
(`services.common.database`: integer microseconds since the epoch, or ISO 8601 text)."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2


def from_micros(micros: int) -> timestamp_pb2.Timestamp:
    """The Timestamp of `micros` microseconds since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def from_iso(iso: str) -> timestamp_pb2.Timestamp:
    """The Timestamp of an ISO 8601 instant with its offset."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.datetime.fromisoformat(iso))
    return stamp
