"""Request header blocks: HPACK decoding (the `hpack` package) with the list-size limit applied
while decoding, a cache for blocks that only reference the table, and RFC 9113 §8.2/§8.3
validation.

A client that has sent a header set once sends it again as a few table references; such a block
decodes to the same headers until the table changes, so it is decoded and validated once per
connection. That is most of the per-call header cost gone for a client in a loop.
"""

from __future__ import annotations

import re

import hpack

HEADER_CACHE_ENTRIES = 512
HEADER_CACHE_MAX_BLOCK = 4 << 10  # larger blocks are decoded each time, never kept

Headers = dict[str, str]


class MalformedHeaders(Exception):
    """A header block that decodes but is not a valid request (RFC 9113 §8.1.1: a stream error of
    type PROTOCOL_ERROR; the connection and its HPACK state go on)."""


# §8.2.1: no control characters, no uppercase, no DEL or non-ASCII, and no colon except the
# leading one of a pseudo-header.
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff:]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_EDGE_WHITESPACE = (b" ", b"\t")
# §8.2.2: connection-specific header fields.
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))


def _check_field(name: bytes, value: bytes) -> None:
    if not name:
        raise MalformedHeaders("a header with an empty name")
    bad = _BAD_NAME.search(name, 1 if name[0] == 0x3A else 0)
    if bad is not None:
        raise MalformedHeaders(f"header name {name!r} has the character {bad.group()!r} (§8.2.1)")
    if _BAD_VALUE.search(value) is not None:
        raise MalformedHeaders(f"header {name!r} has NUL, CR or LF in its value (§8.2.1)")
    if value[:1] in _EDGE_WHITESPACE or value[-1:] in _EDGE_WHITESPACE:
        raise MalformedHeaders(f"header {name!r} has a value that starts or ends with white space")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedHeaders(f"connection-specific header {name.decode('latin-1')!r} (§8.2.2)")
    if name == b"te" and value != b"trailers":
        raise MalformedHeaders(f"te: {value.decode('latin-1')!r}; only 'trailers' is allowed (§8.2.2)")


def validate_request(pairs: list[tuple[bytes, bytes]]) -> Headers:
    """A request's headers as {name: value} (repeated names joined with ","), or MalformedHeaders."""
    headers: Headers = {}
    regular = False
    for name, value in pairs:
        _check_field(name, value)
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if name[0] == 0x3A:
            if regular:
                raise MalformedHeaders(f"pseudo-header {key} after a regular header (§8.3)")
            if name not in _REQUEST_PSEUDO:
                raise MalformedHeaders(f"pseudo-header {key} is not a request pseudo-header (§8.3.1)")
            if key in headers:
                raise MalformedHeaders(f"pseudo-header {key} twice (§8.3)")
            headers[key] = text
            continue
        regular = True
        if key in headers:
            headers[key] += "," + text
        else:
            headers[key] = text
    method = headers.get(":method")
    if method is None:
        raise MalformedHeaders("request without :method (§8.3.1)")
    if method == "CONNECT":
        if ":scheme" in headers or ":path" in headers or ":authority" not in headers:
            raise MalformedHeaders("CONNECT takes :authority and neither :scheme nor :path (§8.5)")
    elif ":scheme" not in headers or not headers.get(":path"):
        raise MalformedHeaders("request without :scheme or with an empty or missing :path (§8.3.1)")
    return headers


def validate_trailers(pairs: list[tuple[bytes, bytes]]) -> Headers:
    headers: Headers = {}
    for name, value in pairs:
        _check_field(name, value)
        if name[0] == 0x3A:
            raise MalformedHeaders(f"pseudo-header {name.decode('latin-1')} in trailers (§8.1)")
        headers[name.decode("latin-1")] = value.decode("latin-1")
    return headers


def table_neutral(block: bytes) -> bool:
    """True if decoding `block` leaves the HPACK dynamic table as it was: it has only indexed fields
    and literals without indexing. Such a block always decodes to the same headers until the table
    changes, so its decoding can be cached."""
    i, n = 0, len(block)
    try:
        while i < n:
            b = block[i]
            if b & 0x80:  # indexed field
                i = _skip_int(block, i, 7)
            elif b & 0xE0 in (0x00, 0x10):  # literal without indexing / never indexed
                name_index = b & 0x0F
                i = _skip_int(block, i, 4)
                if name_index == 0:
                    i = _skip_string(block, i)
                i = _skip_string(block, i)
            else:  # incremental indexing or a table size update
                return False
    except IndexError:
        return False
    return i == n


def _skip_int(block: bytes, i: int, prefix_bits: int) -> int:
    if block[i] & ((1 << prefix_bits) - 1) != (1 << prefix_bits) - 1:
        return i + 1
    i += 1
    while block[i] & 0x80:
        i += 1
    return i + 1


def _read_int(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _skip_string(block: bytes, i: int) -> int:
    length, i = _read_int(block, i, 7)
    if i + length > len(block):
        raise IndexError("string past the end of the block")
    return i + length


class HeaderDecoder:
    """One connection's HPACK decoder. Every block must pass through it in arrival order, even
    one whose stream is refused, or the table goes out of step with the peer's.

    `max_header_list_size` (RFC 7541 §4.1 sizes: name + value + 32 per field) is enforced by hpack
    as it decodes, so a small block that would inflate to megabytes stops at the limit with
    `hpack.OversizedHeaderListError`."""

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._cache: dict[bytes, Headers] = {}

    def _pairs(self, block: bytes) -> list[tuple[bytes, bytes]]:
        if not table_neutral(block):
            self._cache.clear()  # entries may refer to what the table held
        try:
            pairs = self._decoder.decode(block, raw=True)
        except (IndexError, TypeError, ValueError) as e:  # garbage that hpack does not name
            raise hpack.HPACKDecodingError(f"{type(e).__name__}: {e}") from None
        return [(bytes(name), bytes(value)) for name, value in pairs]

    def request(self, block: bytes) -> Headers:
        """A new stream's headers, validated (MalformedHeaders); the returned dict may be shared
        with other streams and must not be changed."""
        headers = self._cache.get(block)
        if headers is not None:
            return headers
        headers = validate_request(self._pairs(block))
        if len(block) <= HEADER_CACHE_MAX_BLOCK and table_neutral(block):
            if len(self._cache) >= HEADER_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[block] = headers
        return headers

    def trailers(self, block: bytes) -> Headers:
        return validate_trailers(self._pairs(block))

    def discard(self, block: bytes) -> None:
        """Decode a block only to keep the table in step (a stream that is refused or closed)."""
        if block not in self._cache:
            self._pairs(block)
