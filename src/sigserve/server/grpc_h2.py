"""gRPC over HTTP/2 on asyncio: sigserve's own transport for unary RPCs (the default; grpcio's
server stays available with `--grpc_transport=grpcio`).

Why not grpcio: measured with h2load (1-row Predict, one connection, 64 streams) on the 2-CPU
benchmark machine, a grpc.aio handler that only parses the request and makes the TensorFlow call
served 2,500-4,400 req/s, and grpcio's bare echo 5,500-6,900; this protocol with the same handler
served 40,000-46,000. Each grpcio call crosses threads (C-core's poller, a wake-up of the loop)
and holds a GIL hand-off around the TensorFlow call; here a read of 64 multiplexed requests is
parsed, run and answered in one pass of the loop with one write.

What is implemented (RFC 9113 and gRPC's PROTOCOL-HTTP2): prior-knowledge h2c and h2 over TLS
(ALPN), HPACK decoding with the `hpack` package (a block made only of table references, which is
what a client sends once its headers are indexed, is decoded once per connection), CONTINUATION,
padding, flow control both ways (peers' windows and frame size honoured on send; our window is
replenished as data arrives), PING, SETTINGS, RST_STREAM (cancels the stream), GOAWAY both ways,
graceful shutdown, `grpc-timeout`, gzip/deflate request messages, and the status in trailers with
`grpc-message` percent-encoded. Responses use no HPACK dynamic table, so they are fixed bytes.
Server streaming exists only for grpc.health.v1 Watch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import logging
import os
import socket
import ssl
import stat
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeAlias

import hpack

from sigserve.errors import Code, SigserveError, invalid_argument, unavailable
from sigserve.server.grpc_methods import Method, call_method, rpc_status

logger = logging.getLogger("sigserve.grpc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings identifiers.
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE = 1, 2, 3, 4
S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 5, 6
# Error codes (§7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
# Frames we accept: large DATA frames mean fewer frames for a 256 MB tensor.
OUR_MAX_FRAME = 1 << 20
# Replenish the connection's receive window once this much of it is used.
WINDOW_REFILL = 1 << 28
# gRPC's own clients send at most 16 KiB of metadata (C-core's hard limit).
MAX_HEADER_LIST = 64 << 10
HEADER_CACHE_ENTRIES = 512
HEADER_CACHE_MAX_BLOCK = 4 << 10  # larger blocks are decoded each time, never kept
# Streams one connection may have open, counting calls still running in the pool for streams the
# peer has reset: without that, opening and resetting streams queues unbounded work (the "rapid
# reset" attack). grpc.max_concurrent_streams in --grpc_channel_arguments replaces it.
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
# Answers buffered for a peer before we stop reading its requests (pause_writing).
WRITE_BUFFER_HIGH = 4 << 20


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
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


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as "literal without indexing, new name" (§6.2.2): touches no dynamic table."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


def _literal_indexed_name(index: int, value: bytes) -> bytes:
    return _hpack_int(index, 4, 0) + _hpack_int(len(value), 7, 0) + value


_STATUS_200 = b"\x88"  # static table entry 8
_CONTENT_TYPE_GRPC = _literal_indexed_name(31, b"application/grpc")
RESPONSE_HEADERS = (
    _STATUS_200 + _CONTENT_TYPE_GRPC + _literal(b"grpc-accept-encoding", b"identity,deflate,gzip")
)
TRAILERS_OK = _literal(b"grpc-status", b"0")

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
    block = _literal(b"grpc-status", str(code).encode())
    if message:
        block += _literal(b"grpc-message", percent_encode(message))
    return (_STATUS_200 + _CONTENT_TYPE_GRPC + block) if trailers_only else block


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """`grpc-timeout` (1-8 digits and a unit) in seconds; None if malformed, as if absent."""
    digits = value[:-1]
    if 2 <= len(value) <= 9 and digits.isascii() and digits.isdigit() and value[-1] in _TIMEOUT_UNITS:
        return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
    return None


def _table_neutral(block: bytes) -> bool:
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


class ConnectionError_(Exception):
    """A connection error (RFC 9113 §5.4.1): answered with GOAWAY, then the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# A stream's call: a pool call, or (batching on) the task that awaits its batch.
_Call: TypeAlias = "concurrent.futures.Future[bytes] | asyncio.Future[bytes]"


class _Stream:
    """One request stream: headers, request bytes as they arrive, and what is left to send."""

    __slots__ = (
        "call",
        "chunks",
        "closed",
        "headers",
        "headers_sent",
        "id",
        "pending",
        "pending_end",
        "received_all",
        "send_window",
        "size",
        "started",
        "watch",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.headers: dict[str, str] = {}
        self.headers_sent = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.received_all = False
        self.send_window = send_window
        self.pending: memoryview | None = None  # DATA not yet sent (flow control)
        self.pending_end = b""  # the trailers block that follows it
        self.closed = False  # answered in full, or reset
        self.started = time.monotonic()
        self.watch: asyncio.Task[None] | None = None
        self.call: _Call | None = None  # its pool call (queued or running) or its awaiting task


class Services:
    """What the connections serve: the method table, the pool, limits and the health answers."""

    def __init__(
        self,
        methods: dict[str, Method],
        executor: concurrent.futures.Executor,
        *,
        max_receive: int,
        max_send: int,
        max_concurrent_streams: int,
        health: dict[str, int] | None,
    ) -> None:
        self.methods = methods
        self.executor = executor
        self.max_receive = max_receive
        self.max_send = max_send
        self.max_concurrent_streams = max_concurrent_streams
        self.health = health


class GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection serving unary gRPC calls."""

    def __init__(self, services: Services, server: GrpcH2Server) -> None:
        self.services = services
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface_seen = False
        self.streams: dict[int, _Stream] = {}
        self.last_stream_id = 0
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.header_cache: dict[bytes, dict[str, str]] = {}
        self.continuation: tuple[int, int, bytearray] | None = None  # (stream, flags, block so far)
        # Send side: the peer's settings and windows.
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME
        self.send_window = DEFAULT_WINDOW
        self.blocked: dict[int, _Stream] = {}  # streams waiting for window
        # Receive side: bytes taken since the last connection WINDOW_UPDATE.
        self.unacked = 0
        self.going_away = False
        self.closed = False
        self.orphans = 0  # pool calls still running for streams that are gone
        self.out: list[bytes] = []  # frames to write at the end of this read

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.server.connections.add(self)
        settings = struct.pack(">HI", S_ENABLE_PUSH, 0) + struct.pack(
            ">HI", S_INITIAL_WINDOW_SIZE, MAX_WINDOW
        )
        settings += struct.pack(">HI", S_MAX_FRAME_SIZE, OUR_MAX_FRAME)
        settings += struct.pack(">HI", S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST)
        settings += struct.pack(">HI", S_MAX_CONCURRENT_STREAMS, self.services.max_concurrent_streams)
        transport.write(
            _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )
        if self.server.stopping:
            self.going_away = True
            transport.write(_frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))

    def pause_writing(self) -> None:
        # The peer is not reading its answers: stop taking its requests until it does, so that a
        # client that only sends cannot grow our write buffer without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._forget(stream)
        self.server.connection_done()

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except ConnectionError_ as e:
            self._fail(e.code, str(e))
        except hpack.HPACKError as e:
            self._fail(COMPRESSION_ERROR, f"HPACK: {e}")
        except Exception as e:  # a bug: end this connection, keep serving the others
            logger.exception("Unexpected error on a gRPC connection")
            self._fail(INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        self._flush()

    # -- reading frames --------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            buf: bytes | bytearray = self.buffer
        else:
            buf = data
        pos = 0
        if not self.preface_seen:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.buffer = bytearray(buf)
                return
            if bytes(buf[: len(PREFACE)]) != PREFACE:
                raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.preface_seen = True
            pos = len(PREFACE)
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - pos >= 9 and not self.closed:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                if length > OUR_MAX_FRAME:
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - pos - 9 < length:
                    break
                kind = buf[pos + 3]
                flags = buf[pos + 4]
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(view[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame_received(kind, flags, stream_id, payload)
        finally:
            view.release()
        if pos == end:
            self.buffer = bytearray()
        elif buf is self.buffer:
            del self.buffer[:pos]
        else:
            self.buffer = bytearray(buf[pos:])

    def _frame_received(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuation is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self.continuation is None or self.continuation[0] != stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
            block = self.continuation[2]
            block += payload
            if len(block) > MAX_HEADER_LIST:
                raise ConnectionError_(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                first_flags = self.continuation[1]
                self.continuation = None
                self._header_block(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if stream_id != 0 or len(payload) != 8:
                raise ConnectionError_(PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.out.append(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == RST_STREAM:
            self._reset_by_peer(stream_id)
        elif kind == GOAWAY:
            self.going_away = True
            self._close_if_idle()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client cannot push")
        # PRIORITY and unknown frame types are ignored (§5.5).

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ConnectionError_(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self.continuation = (stream_id, flags, bytearray(block))

    def _decode(self, block: bytes) -> dict[str, str]:
        headers = self.header_cache.get(block)
        if headers is not None:
            return headers
        headers = {}
        # raw=True, then Latin-1: a header value that is not UTF-8 (custom metadata) must not end
        # the connection; the headers gRPC itself reads are ASCII.
        for raw_name, raw_value in self.decoder.decode(block, raw=True):
            name, value = bytes(raw_name).decode("latin-1"), bytes(raw_value).decode("latin-1")
            if name in headers:
                headers[name] += "," + value
            else:
                headers[name] = value
        if len(block) <= HEADER_CACHE_MAX_BLOCK and _table_neutral(block):
            if len(self.header_cache) >= HEADER_CACHE_ENTRIES:
                self.header_cache.clear()
            self.header_cache[block] = headers
        else:
            self.header_cache.clear()  # entries may refer to what the table held
        return headers

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)  # always, to keep the HPACK table in step
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: the request ends
            if flags & END_STREAM and not stream.received_all:
                self._end_of_request(stream)
            return
        if stream_id <= self.last_stream_id:
            return  # a stream we already closed
        self.last_stream_id = stream_id
        if self.going_away:
            self.out.append(_frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        if len(self.streams) + self.orphans >= self.services.max_concurrent_streams:
            self.out.append(_frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        stream = _Stream(stream_id, self.peer_initial_window)
        stream.headers = headers
        self.streams[stream_id] = stream
        self.server.active_streams += 1
        if flags & END_STREAM:
            self._end_of_request(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.unacked += len(payload)
        if self.unacked >= WINDOW_REFILL:
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.received_all:
            if stream_id == 0 or stream_id > self.last_stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we reset or answered already: drop
        data = self._unpad(flags, payload)
        if data and not stream.closed:
            stream.size += len(data)
            if stream.size > self.services.max_receive + 5:
                self._answer_error(
                    stream,
                    Code.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({stream.size - 5} vs. {self.services.max_receive})",
                )
                stream.chunks = []
            else:
                stream.chunks.append(data)
        if flags & END_STREAM:
            self._end_of_request(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS length")
        wider = False
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    for stream in self.streams.values():
                        stream.send_window += delta
                wider = wider or delta > 0
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "max frame size out of range")
                self.peer_max_frame = value
        self.out.append(_frame(SETTINGS, ACK, 0))
        if wider:
            self._send_blocked()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if increment == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
        if stream_id == 0:
            was = self.send_window
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")
            if was <= 0:  # only then can a stream be waiting for the connection's window
                self._send_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.id in self.blocked:
                self._send_data(stream)

    def _reset_by_peer(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._forget(stream)

    # -- running calls ---------------------------------------------------------------------------

    def _end_of_request(self, stream: _Stream) -> None:
        stream.received_all = True
        if stream.closed:
            return
        headers = stream.headers
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not headers.get("content-type", "").startswith(
            "application/grpc"
        ):
            self._answer_http(stream, b"415" if headers.get(":method") == "POST" else b"405")
            return
        timeout_header = headers.get("grpc-timeout")
        deadline = None
        if timeout_header is not None:
            seconds = parse_timeout(timeout_header)
            if seconds is not None:
                deadline = stream.started + seconds
        try:
            message = self._message(stream)
        except SigserveError as e:
            self._answer_error(stream, e.code, e.message)
            return
        service, _, method_name = path[1:].partition("/")
        if service == "grpc.health.v1.Health" and self.services.health is not None:
            self._health(stream, method_name, message)
            return
        method = self.services.methods.get(path)
        if method is None:
            self._answer_error(stream, Code.UNIMPLEMENTED, "Method not found!")
            return
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                self._answer_error(stream, Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
                return
        ctx = method.context(timeout, headers)
        if method.awaited is not None:
            # Batching on: the call awaits its batch in a task on this loop (then, if its servable
            # does not batch, goes on to the short path or the pool from there), holding no thread.
            task = asyncio.get_running_loop().create_task(
                call_method(method, message, ctx, self.services.executor)
            )
            stream.call = task
            task.add_done_callback(functools.partial(self._pool_done, stream))
            return
        if method.inline is not None:
            try:
                out = method.inline(message, ctx)
            except Exception as e:
                code, text = rpc_status(e)
                self._answer_error(stream, code, text)
                return
            if out is not None:
                self._answer(stream, out)
                return
        loop = asyncio.get_running_loop()
        try:
            future = self.services.executor.submit(method.body, message, ctx)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._answer_error(stream, Code.UNAVAILABLE, "The server is shutting down")
            return
        stream.call = future

        def done(f: concurrent.futures.Future[bytes]) -> None:  # in the worker thread
            try:
                loop.call_soon_threadsafe(self._pool_done, stream, f)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        future.add_done_callback(done)

    def _pool_done(self, stream: _Stream, future: _Call) -> None:
        if stream.call is None:  # the stream went first
            if not future.cancelled():  # an orphan (see _forget)
                self.orphans -= 1
                future.exception()  # retrieved: the caller is gone
            return
        stream.call = None
        if stream.closed or self.closed:
            return
        if future.cancelled():
            self._answer_error(stream, Code.CANCELLED, "Cancelled")
        else:
            error = future.exception()
            if error is None:
                self._answer(stream, future.result())
            else:
                code, text = rpc_status(error)
                self._answer_error(stream, code, text)
        self._flush()

    def _message(self, stream: _Stream) -> bytes:
        """The one request message of a unary call, decompressed."""
        body = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        stream.chunks = []
        if len(body) < 5:
            raise SigserveError(Code.INTERNAL, "Expected one request message, got none")
        compressed = body[0]
        length = int.from_bytes(body[1:5], "big")
        if len(body) != 5 + length:
            raise SigserveError(Code.INTERNAL, "Expected exactly one request message")
        message = body[5:] if len(body) > 5 else b""
        if compressed:
            message = self._decompress(message, stream.headers.get("grpc-encoding", "identity"))
        if len(message) > self.services.max_receive:
            raise SigserveError(
                Code.RESOURCE_EXHAUSTED,
                f"Received message larger than max ({len(message)} vs. {self.services.max_receive})",
            )
        return message

    def _decompress(self, message: bytes, encoding: str) -> bytes:
        """A gzip/deflate request message, inflated no further than the receive limit: a few KB
        that inflate to gigabytes must not be inflated at all."""
        if encoding not in ("gzip", "deflate"):
            raise SigserveError(
                Code.UNIMPLEMENTED,
                f"Compression algorithm '{encoding}' is not supported; use gzip, deflate or none",
            )
        limit = self.services.max_receive
        inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(message, limit + 1)
        except zlib.error as e:
            raise SigserveError(Code.INTERNAL, f"Could not decompress the request message: {e}") from None
        if len(out) > limit:
            raise SigserveError(
                Code.RESOURCE_EXHAUSTED, f"Received message larger than max (more than {limit} vs. {limit})"
            )
        if not inflater.eof:
            raise SigserveError(Code.INTERNAL, "Could not decompress the request message: it is truncated")
        return out

    # -- grpc.health.v1 --------------------------------------------------------------------------

    def _health(self, stream: _Stream, method: str, message: bytes) -> None:
        assert self.services.health is not None
        service = health_check_service(message)
        if service is None:
            self._answer_error(stream, Code.INVALID_ARGUMENT, "Could not parse a HealthCheckRequest")
            return
        status = self.services.health.get(service)
        if method == "Check":
            if status is None:
                self._answer_error(stream, Code.NOT_FOUND, f"unknown service {service!r}")
            else:
                self._answer(stream, health_check_response(status))
        elif method == "Watch":
            # One message now; the status never changes while serving, so the stream then stays
            # open until the client cancels it or the server stops.
            answer = health_check_response(SERVICE_UNKNOWN if status is None else status)
            self.out.append(_frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
            stream.headers_sent = True
            self._queue_data(stream, b"\x00" + len(answer).to_bytes(4, "big") + answer, None)

            async def wait() -> None:
                await self.server.stopped.wait()

            stream.watch = asyncio.get_running_loop().create_task(wait())
            stream.watch.add_done_callback(lambda _: self._end_watch(stream))
        else:
            self._answer_error(stream, Code.UNIMPLEMENTED, "Method not found!")

    def _end_watch(self, stream: _Stream) -> None:
        if not stream.closed and not self.closed:
            ending = status_block(int(Code.UNAVAILABLE), "The server is shutting down", trailers_only=False)
            if stream.pending is not None:  # its message still waits for window: trailers after it
                stream.pending_end = ending
            else:
                self._queue_data(stream, b"", ending)
            self._flush()

    # -- writing answers -------------------------------------------------------------------------

    def _answer(self, stream: _Stream, message: bytes) -> None:
        if stream.closed:
            return
        if len(message) > self.services.max_send:
            self._answer_error(
                stream,
                Code.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(message)} vs. {self.services.max_send})",
            )
            return
        self.out.append(_frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
        stream.headers_sent = True
        self._queue_data(stream, b"\x00" + len(message).to_bytes(4, "big") + message, TRAILERS_OK)

    def _answer_error(self, stream: _Stream, code: int, message: str) -> None:
        if stream.closed:
            return
        self._send_headers(stream.id, END_STREAM, status_block(int(code), message, trailers_only=True))
        self._finish(stream)

    def _answer_http(self, stream: _Stream, status: bytes) -> None:
        """A request that is not gRPC: a plain HTTP status (gRPC's PROTOCOL-HTTP2: 415 for a wrong
        content-type)."""
        block = _literal_indexed_name(8, status) + _CONTENT_TYPE_GRPC
        block += _literal(b"grpc-status", str(int(Code.UNKNOWN)).encode())
        block += _literal(
            b"grpc-message", b"sigserve serves gRPC here: POST with content-type application/grpc"
        )
        self._send_headers(stream.id, END_STREAM, block)
        self._finish(stream)

    def _send_headers(self, stream_id: int, flags: int, block: bytes) -> None:
        limit = self.peer_max_frame
        if len(block) <= limit:
            self.out.append(_frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        self.out.append(_frame(HEADERS, flags, stream_id, block[:limit]))
        rest = block[limit:]
        while rest:
            piece, rest = rest[:limit], rest[limit:]
            self.out.append(_frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece))

    def _queue_data(self, stream: _Stream, data: bytes, trailers: bytes | None) -> None:
        """Send `data`, then `trailers` (None: keep the stream open), as the windows allow."""
        stream.pending = memoryview(data)
        stream.pending_end = trailers if trailers is not None else b""
        self._send_data(stream)

    def _send_data(self, stream: _Stream) -> None:
        pending = stream.pending
        if pending is None:
            return
        sid = stream.id
        if len(pending) <= min(self.send_window, stream.send_window, self.peer_max_frame):  # the usual case
            size = len(pending)
            if size:
                self.out.append(_frame(DATA, 0, sid, bytes(pending)))
            self.send_window -= size
            stream.send_window -= size
        else:
            sent = 0
            while sent < len(pending):
                size = min(len(pending) - sent, self.send_window, stream.send_window, self.peer_max_frame)
                if size <= 0:
                    break
                self.out.append(_frame(DATA, 0, sid, bytes(pending[sent : sent + size])))
                self.send_window -= size
                stream.send_window -= size
                sent += size
                if len(self.out) >= 64:  # a large answer: hand it to the transport as it goes
                    self._flush()  # (which replaces self.out: never keep a reference to it)
            if sent < len(pending):
                stream.pending = pending[sent:]
                self.blocked[sid] = stream
                return
        stream.pending = None
        self.blocked.pop(sid, None)
        if stream.pending_end:
            self._send_headers(sid, END_STREAM, stream.pending_end)
            self._finish(stream)

    def _send_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._send_data(stream)

    def _finish(self, stream: _Stream) -> None:
        """The stream is answered in full: forget it."""
        if not stream.received_all:  # answered before the request ended: the rest is not wanted
            self.out.append(_frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
        self._forget(stream)
        self._close_if_idle()

    def _forget(self, stream: _Stream) -> None:
        if stream.closed and stream.id not in self.streams:
            return
        stream.closed = True
        stream.pending = None
        stream.chunks = []
        self.blocked.pop(stream.id, None)
        if self.streams.pop(stream.id, None) is not None:
            self.server.active_streams -= 1
            self.server.stream_done()
        if stream.watch is not None and not stream.watch.done():
            stream.watch.cancel()
        call, stream.call = stream.call, None
        if call is not None and not call.cancel():
            # Still queued, it was cancelled and never runs. Running (TensorFlow cannot be
            # interrupted) or done but not yet seen by _pool_done: it counts against this
            # connection's streams until _pool_done takes it off.
            self.orphans += 1

    def _close_if_idle(self) -> None:
        if self.going_away and not self.streams and self.transport is not None:
            self._flush()
            self.transport.close()

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            out = self.out
            self.out = []
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        else:
            self.out.clear()

    def _close_soon(self) -> None:
        """Close, and drop the connection a second later if the peer has not read what is left
        (close() alone waits for the write buffer to drain)."""
        if self.transport is not None:
            self.transport.close()
            asyncio.get_running_loop().call_later(1.0, self.transport.abort)

    def _fail(self, code: int, message: str) -> None:
        logger.info("Closing a gRPC connection: %s", message)
        self.out.append(
            _frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, code) + message.encode()[:256])
        )
        self._flush()
        self.closed = True
        self._close_soon()

    # -- shutdown --------------------------------------------------------------------------------

    def go_away(self) -> None:
        """Refuse streams after the last one seen; close once those are answered."""
        if self.closed or self.going_away:
            return
        self.going_away = True
        self.out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, NO_ERROR)))
        self._flush()
        self._close_if_idle()

    def abort(self) -> None:
        """Grace is over: cancel what is still running and drop the connection."""
        for stream in list(self.streams.values()):
            if stream.headers_sent:  # an answer is half out (flow control, Watch): reset it
                self.out.append(_frame(RST_STREAM, 0, stream.id, CANCEL.to_bytes(4, "big")))
                self._forget(stream)
            else:
                self._answer_error(stream, Code.UNAVAILABLE, "The server is shutting down")
        self._flush()
        self._close_soon()


# -- the server ------------------------------------------------------------------------------------


def tls_context(server_key: str, server_cert: str, custom_ca: str, client_verify: bool) -> ssl.SSLContext:
    """A TLS server context offering HTTP/2 by ALPN, as gRPC clients require."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a key pair only from files: a private temporary file, removed at once.
    fd, path = tempfile.mkstemp(prefix="sigserve-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(server_key.strip() + "\n" + server_cert.strip() + "\n")
        context.load_cert_chain(path)
    except ssl.SSLError as e:
        raise invalid_argument(
            f"--ssl_config_file: server_key / server_cert are not a usable PEM pair: {e}"
        ) from None
    finally:
        os.unlink(path)
    if custom_ca:
        try:
            context.load_verify_locations(cadata=custom_ca)
        except ssl.SSLError as e:
            raise invalid_argument(
                f"--ssl_config_file: custom_ca is not a usable PEM certificate: {e}"
            ) from None
    context.verify_mode = ssl.CERT_REQUIRED if client_verify else ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


def bind(address: str) -> list[socket.socket]:
    """Listening sockets for `host:port`, `[v6]:port` or `unix:path`, bound now so that a busy
    address fails `sigserve serve` at start-up. A name is bound on every address it resolves to
    (`localhost`: 127.0.0.1 and ::1), as grpcio does."""
    try:
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a socket left by an earlier server
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.listen(1024)
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
            return [sock]
        host, _, port = address.rpartition(":")
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as e:
        raise unavailable(f"Could not bind the gRPC API to {address}: {e}") from None
    sockets: list[socket.socket] = []
    errors: list[str] = []
    seen: set[Any] = set()
    for family, kind, proto, _, sockaddr in infos:
        if sockaddr in seen:
            continue
        seen.add(sockaddr)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                continue  # e.g. ::1 on a host without IPv6
            errors.append(str(e))
            break
        sock.setblocking(False)
        sockets.append(sock)
    if errors or not sockets:
        for sock in sockets:
            sock.close()
        reason = errors[0] if errors else "no usable address"
        raise unavailable(f"Could not bind the gRPC API to {address}: {reason}")
    return sockets


class GrpcH2Server:
    """The native gRPC front end as the serve wiring drives it: `await start()`, `await stop(grace)`."""

    def __init__(
        self,
        services: Services,
        sockets: list[tuple[str, socket.socket]],
        tls: ssl.SSLContext | None,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self.services = services
        self.sockets = sockets
        self.addresses = list(dict.fromkeys(address for address, _ in sockets))
        self.tls = tls
        self.executor = executor
        self.connections: set[GrpcConnection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.active_streams = 0
        self.stopping = False
        self.stopped = asyncio.Event()
        self._idle = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = lambda: GrpcConnection(self.services, self)  # noqa: E731
        for address, sock in self.sockets:
            if address.startswith("unix:"):
                listener = await loop.create_unix_server(factory, sock=sock, ssl=self.tls)
            else:
                listener = await loop.create_server(factory, sock=sock, ssl=self.tls)
            self.listeners.append(listener)

    def stream_done(self) -> None:
        if self.stopping and self.active_streams == 0:
            self._idle.set()

    def connection_done(self) -> None:
        if self.stopping and not self.connections:
            self._idle.set()

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections):
            connection.go_away()
        self.stopped.set()  # ends health Watch streams
        await asyncio.sleep(0)
        if self.connections and self.active_streams:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=grace or 0)
            except asyncio.TimeoutError:
                pass
        for connection in list(self.connections):
            connection.abort()
        # A cancelled RPC's TensorFlow call cannot be interrupted; its worker finishes on its own.
        self.executor.shutdown(wait=False, cancel_futures=True)
        for address in self.addresses:
            if address.startswith("unix:"):
                try:
                    os.unlink(address[len("unix:") :])
                except OSError:
                    pass


# grpc.health.v1: HealthCheckRequest {string service = 1}, HealthCheckResponse {ServingStatus status
# = 1}. Two one-field messages, coded here so that the health service needs no extra package.
SERVING, SERVICE_UNKNOWN = 1, 3


def health_check_service(message: bytes) -> str | None:
    """The `service` of a HealthCheckRequest, or None if `message` is not one."""
    service = ""
    i, n = 0, len(message)
    try:
        while i < n:
            key, i = _varint(message, i)
            wire = key & 7
            if wire == 0:
                _, i = _varint(message, i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                length, i = _varint(message, i)
                if key >> 3 == 1:
                    service = message[i : i + length].decode("utf-8")
                i += length
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    return service if i == n else None


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def health_check_response(status: int) -> bytes:
    return bytes((0x08, status))


def health_statuses(names: list[str]) -> dict[str, int]:
    return dict.fromkeys(names, SERVING)


def create(
    methods: dict[str, Method],
    executor: concurrent.futures.ThreadPoolExecutor,
    addresses: list[str],
    *,
    tls: ssl.SSLContext | None,
    channel_arguments: dict[str, Any],
    health_names: list[str] | None,
) -> GrpcH2Server:
    def limit(key: str, default: int) -> int:
        """A channel argument as a limit; grpcio reads -1 (any value < 1 for streams) as none."""
        value = int(channel_arguments.get(key, default))
        return min(value, MAX_WINDOW) if value > 0 else default

    services = Services(
        methods,
        executor,
        max_receive=limit("grpc.max_receive_message_length", MAX_WINDOW),
        max_send=limit("grpc.max_send_message_length", MAX_WINDOW),
        max_concurrent_streams=limit("grpc.max_concurrent_streams", DEFAULT_MAX_CONCURRENT_STREAMS),
        health=health_statuses(health_names) if health_names is not None else None,
    )
    sockets: list[tuple[str, socket.socket]] = []
    try:
        for address in addresses:
            sockets.extend((address, sock) for sock in bind(address))
    except BaseException:
        for _, sock in sockets:
            sock.close()
        raise
    return GrpcH2Server(services, sockets, tls, executor)
