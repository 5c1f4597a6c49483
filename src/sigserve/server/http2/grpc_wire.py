"""What gRPC puts on HTTP/2 (gRPC's PROTOCOL-HTTP2.md): the response header blocks, the status in
trailers, `grpc-timeout`, and the 5-byte message prefix.

Responses are HPACK-encoded by hand with no dynamic table ("literal without indexing", RFC 7541
§6.2.2), so a response's header block is fixed bytes that cost nothing per call and leave the
peer's decoder table as it was.
"""

from __future__ import annotations

MESSAGE_PREFIX = 5  # compressed flag (1 byte) + message length (4 bytes, big-endian)


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with `first`'s high bits above a `prefix_bits`-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header as "literal without indexing, new name" (§6.2.2): touches no dynamic table."""
    return b"\x00" + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


def literal_indexed_name(index: int, value: bytes) -> bytes:
    return hpack_int(index, 4, 0) + hpack_int(len(value), 7, 0) + value


STATUS_200 = b"\x88"  # static table entry 8
CONTENT_TYPE_GRPC = literal_indexed_name(31, b"application/grpc")
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE_GRPC + literal(b"grpc-accept-encoding", b"identity,deflate,gzip")
TRAILERS_OK = literal(b"grpc-status", b"0")

# Bytes gRPC leaves as they are in grpc-message; everything else is %XX (PROTOCOL-HTTP2.md).
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    raw = message.encode("utf-8", "replace")
    if all(b in _UNRESERVED for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def status_block(code: int, message: str, *, trailers_only: bool) -> bytes:
    """The HPACK block ending a call: grpc-status and grpc-message, preceded by :status and
    content-type when the call sends no response headers first ("Trailers-Only")."""
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", percent_encode(message))
    return (STATUS_200 + CONTENT_TYPE_GRPC + block) if trailers_only else block


def http_status_block(status: bytes, grpc_code: int, message: str) -> bytes:
    """A plain HTTP status for a request that is not gRPC (PROTOCOL-HTTP2: 415 for a wrong
    content-type), with a grpc-status for gRPC clients that read it anyway."""
    return (
        literal_indexed_name(8, status)
        + CONTENT_TYPE_GRPC
        + literal(b"grpc-status", str(grpc_code).encode())
        + literal(b"grpc-message", percent_encode(message))
    )


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """`grpc-timeout` (1-8 digits and a unit) in seconds; None if malformed, as if absent."""
    digits = value[:-1]
    if 2 <= len(value) <= 9 and digits.isascii() and digits.isdigit() and value[-1] in _TIMEOUT_UNITS:
        return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
    return None


def framed(message: bytes) -> bytes:
    """One uncompressed gRPC message with its prefix."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
