"""Protobuf wire helpers that let a token cross the runtime without being decoded and rebuilt.

The router's `ReasonResponse` is a bare `oneof`: a `Delta` arrives as field 3 (the chain's
`token`), a `Switched` as field 4 (`provider_switched`) and a `Skipped` as field 9
(`providers_skipped`), and their payloads are wire-compatible with `Token`,
`ProviderSwitched` and `ProvidersSkipped` (a `ToolCallDelta`, field 30, with
`ToolCallToken`) except for field 1, `step_id`, which they
reserve. So the runtime turns a router event into a `RunPatternResponse` by writing the
step id in front of the payload, re-framing it under the same field number and appending the
sequence (field 16): protobuf parsers accept fields in any order. See "Relaying bytes" in
docs/architecture.md.
"""

from __future__ import annotations

TOKEN = 3
"""Field number of `token` in the chain responses and of `delta` in `ReasonResponse`."""
PROVIDER_SWITCHED = 4
"""Field number of `provider_switched` in the chain responses and `switched` in the router's."""
PROVIDERS_SKIPPED = 9
"""Field number of `providers_skipped` in the chain responses and `skipped` in the router's."""
TOOL_CALL_TOKEN = 30
"""Field number of `tool_call_token` in the chain responses and `tool_call_delta` in the
router's."""
RELAYED_FIELDS = frozenset((TOKEN, PROVIDER_SWITCHED, PROVIDERS_SKIPPED, TOOL_CALL_TOKEN))

_LENGTH_DELIMITED = 2
_STEP_ID_TAG = b"\x0a"  # field 1, length-delimited
_SEQUENCE_TAG = b"\x80\x01"  # field 16, varint


def varint(value: int) -> bytes:
    """`value` (non-negative) as a protobuf base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def single_field(message: bytes) -> tuple[int, bytes] | None:
    """(field number, payload) when `message` consists of exactly one length-delimited field
    (a message whose only set field is a message member of a `oneof`); None otherwise."""
    try:
        key, position = _read_varint(message, 0)
        if key & 7 != _LENGTH_DELIMITED:
            return None
        length, position = _read_varint(message, position)
    except (IndexError, ValueError):
        return None
    if position + length != len(message):
        return None
    return key >> 3, message[position:]


def step_event(field: int, step_id: str, payload: bytes, sequence: int) -> bytes:
    """A serialized chain response whose `oneof` member `field` is `payload` with `step_id`
    written in front, and whose `sequence` is `sequence`."""
    sid = step_id.encode()
    sid_length = varint(len(sid))
    inner_length = 1 + len(sid_length) + len(sid) + len(payload)
    return b"".join(
        (
            varint(field << 3 | _LENGTH_DELIMITED),
            varint(inner_length),
            _STEP_ID_TAG,
            sid_length,
            sid,
            payload,
            _SEQUENCE_TAG,
            varint(sequence),
        )
    )
