"""How the CLI prints: aligned tables and readable values for people, JSON for scripts.

Every command prints its reply one of two ways. For people: a table (or a few `label value`
lines) with enum names, dollars and dates. With `--json`: the reply itself in proto3 JSON
(`google.protobuf.json_format`, every field present, enum names, int64 as strings), one
document per reply; a streaming command prints one compact document per line (JSON Lines).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from saga.router.v1 import providers_pb2
from saga.vault.v1 import status_pb2

_CIRCUIT: dict[int, str] = {
    providers_pb2.CIRCUIT_STATE_CLOSED: "closed",
    providers_pb2.CIRCUIT_STATE_OPEN: "open",
    providers_pb2.CIRCUIT_STATE_HALF_OPEN: "half-open",
}
_VAULT: dict[int, str] = {
    status_pb2.VAULT_STATE_SERVING: "serving",
    status_pb2.VAULT_STATE_SEALED: "sealed",
}


def to_json(message: Message, *, compact: bool = False) -> str:
    """`message` in proto3 JSON, with fields at their default values included (a script
    should not have to know that an absent `healthy` means false)."""
    return json_format.MessageToJson(
        message, always_print_fields_with_no_presence=True, indent=None if compact else 2
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """`rows` under `headers`, columns two spaces apart; the columns in `right` (numbers) are
    right-aligned. No trailing spaces, so the output diffs and greps cleanly."""
    cells = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    flush_right = set(right)
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if i in flush_right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def circuit_name(state: int) -> str:
    """`closed`, `open` or `half-open` (`unknown` for a state this CLI does not know)."""
    return _CIRCUIT.get(state, "unknown")


def vault_state_name(state: int) -> str:
    """`serving` or `sealed` (`unknown` for a state this CLI does not know)."""
    return _VAULT.get(state, "unknown")


def dollars(micro_usd: int, *, places: int = 2) -> str:
    """Micro-USD as dollars with at least `places` decimals and no lost precision:
    150_000 -> `$0.15`, 75_000 -> `$0.075`, 10_000_000 -> `$10.00`."""
    sign = "-" if micro_usd < 0 else ""
    whole, micro = divmod(abs(micro_usd), 1_000_000)
    fraction = f"{micro:06d}".rstrip("0").ljust(places, "0")
    return f"{sign}${whole}.{fraction}" if fraction else f"{sign}${whole}"


def count(value: int) -> str:
    """An integer with thousands separators (`1,048,576`)."""
    return f"{value:,}"


def limits(limits: providers_pb2.Limits) -> str:
    """A provider's rate limits in one cell (`8 concurrent, 600 rpm, 90,000 tpm`)."""
    parts = [
        f"{count(value)} {unit}"
        for value, unit in (
            (limits.max_concurrency, "concurrent"),
            (limits.rpm, "rpm"),
            (limits.tpm, "tpm"),
        )
        if value
    ]
    return ", ".join(parts) or "unlimited"


def timeouts(limits: providers_pb2.Limits) -> str:
    """A provider's timeouts in one cell (`first 30 s, idle 15 s, total 300 s`)."""
    return (
        ", ".join(
            f"{label} {ms / 1000:g} s"
            for label, ms in (
                ("first", limits.first_token_timeout_ms),
                ("idle", limits.idle_timeout_ms),
                ("total", limits.total_timeout_ms),
            )
            if ms
        )
        or "—"
    )


def when(stamp: timestamp_pb2.Timestamp, unset: str = "—") -> str:
    """A timestamp to the minute, in UTC (`2027-01-01 00:00Z`); `unset` when it is not set."""
    if not stamp.seconds and not stamp.nanos:
        return unset
    return f"{stamp.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%MZ}"


def is_past(stamp: timestamp_pb2.Timestamp, now: datetime) -> bool:
    """Whether a set timestamp lies before `now`."""
    return bool(stamp.seconds or stamp.nanos) and stamp.ToDatetime(tzinfo=UTC) <= now
