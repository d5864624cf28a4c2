"""A minimal raw HTTP/2 gRPC client, for requests no grpc library would send (header bytes
that are not UTF-8, say). HPACK literals without indexing or Huffman; one unary request on
stream 1; the reply's bytes are returned whole."""

from __future__ import annotations

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def grpc_call(port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Send one gRPC request to 127.0.0.1:`port` with `headers` as given; the raw reply."""
    pseudo = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    block = b"".join(_literal(n, v) for n, v in [*pseudo, *headers])
    message = b"\x00" + struct.pack(">I", len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            PREFACE
            + _frame(SETTINGS, 0, 0, b"")
            + _frame(HEADERS, END_HEADERS, 1, block)
            + _frame(DATA, END_STREAM, 1, message)
        )
        reply = b""
        while b"grpc-status" not in reply:
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply
