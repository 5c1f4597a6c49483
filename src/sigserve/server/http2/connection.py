"""The server side of one HTTP/2 connection carrying gRPC, with no I/O: bytes in, events out
(`receive_data`), answers in (`send_unary`, `send_message`, `send_status`, ...), bytes out
(`data_to_send`). The asyncio adapter (`server/grpc_h2.py`) owns the socket, the clock's timer and
the calls; everything the protocol decides is here, so it is tested without a server.

What it enforces (RFC 9113 unless noted): the preface and a first SETTINGS; frame sizes; stream
states (§5.1) and stream ids; HPACK in order with the header-list limit applied while decoding
(RFC 7541); request header validity (§8.2, §8.3); padding; flow control both ways (§6.9), with a
receive window that is what the connection can still buffer (`Limits.max_connection_buffer`) and is
given back as the application releases what it took; the gRPC message prefix (a message larger than
allowed is refused from its 5-byte prefix, before its bytes arrive); budgets on frames that do no
work and on reset streams (GOAWAY ENHANCE_YOUR_CALM); the handshake, header-block, stalled-request
and idle timeouts (`expire`); and graceful shutdown with two GOAWAYs and a PING between them (§6.8).

Errors that end the connection become a GOAWAY and a `ConnectionTerminated` event; errors that end
a stream become RST_STREAM and a `StreamReset` event.
"""

from __future__ import annotations

import collections
import struct
import time
from collections.abc import Callable

import hpack

from sigserve.server.http2.budget import Budget
from sigserve.server.http2.errors import ConnectionFailure, StreamFailure
from sigserve.server.http2.events import (
    ConnectionTerminated,
    Event,
    MessageReceived,
    MessageTooLarge,
    RequestEnded,
    RequestReceived,
    StreamReset,
    StreamWritable,
)
from sigserve.server.http2.frames import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_FRAME_LIMIT,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    S_ENABLE_PUSH,
    S_INITIAL_WINDOW_SIZE,
    S_MAX_CONCURRENT_STREAMS,
    S_MAX_FRAME_SIZE,
    S_MAX_HEADER_LIST_SIZE,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    frame_header,
    goaway,
    rst_stream,
    settings_frame,
    window_update,
)
from sigserve.server.http2.grpc_wire import (
    MESSAGE_PREFIX,
    RESPONSE_HEADERS,
    TRAILERS_OK,
    http_status_block,
    status_block,
)
from sigserve.server.http2.headers import HeaderDecoder, MalformedHeaders
from sigserve.server.http2.limits import Limits
from sigserve.server.http2.stream import RESET_RECEIVED, RESET_SENT, Stream
from sigserve.server.http2.windows import ReceiveBuffer

DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = 4, 8  # gRPC status codes the transport itself answers
SHUTDOWN_PING = b"sigserve"  # the PING between the two GOAWAYs of a graceful shutdown
# Seconds to wait for that PING's ACK before the second GOAWAY. The ACK is exact (it comes after
# every frame the client sent before it read the first GOAWAY, however much DATA is queued ahead of
# it), so this is only for clients that never answer a PING; a short timer would refuse calls still
# queued behind large requests.
SHUTDOWN_PING_TIMEOUT = 10.0
# ... unless nothing at all has arrived since the first GOAWAY and no stream is open: then there is
# nothing in flight to wait for after this long. Once the ACK has come, the second GOAWAY waits until
# no stream is open and this long has passed since the ACK: grpc's C-core client writes a PING ACK
# ahead of the HEADERS of a call it had already started, in the same write, so such a call arrives
# just after the ACK and must still be served (refusing it fails the call "Stream removed").
SHUTDOWN_QUIET = 1.0
RESET_MEMORY = 1024  # reset streams remembered, to tell late frames from a peer's mistakes
LAST_STREAM_ID = MAX_WINDOW  # the first GOAWAY of a shutdown: every stream the client sent goes on


# The parts of a unary answer's first and last frames before their stream id.
_RESPONSE_HEADERS_FRAME = frame_header(HEADERS, END_HEADERS, 0, len(RESPONSE_HEADERS))[:5]
_TRAILERS_OK_FRAME = frame_header(HEADERS, END_HEADERS | END_STREAM, 0, len(TRAILERS_OK))[:5]


class ServerConnection:
    """One connection's protocol state. Single-threaded: call it from one thread (the loop)."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits = limits or Limits()
        self._clock = clock
        now = clock()
        self._started = now
        self._last_active = now
        self._last_receive = now
        self._buffer = bytearray()
        self._offset = 0  # where reading resumes in _buffer after a pause
        self._preface_seen = False
        self._settings_seen = False
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        # Streams reset while the application may still be working on them: each `StreamReset`
        # event holds its stream's place until the application calls `call_ended()` (at once if
        # nothing ran for it, else when its work ends), so that opening and resetting streams cannot
        # start unbounded work ("rapid reset"). Counted here, not by the application, because the
        # frames after a reset in the same read are judged before the application sees the event.
        self.orphans = 0
        self.refused = 0  # streams refused (over the limit, or after the last GOAWAY)
        self._unsettled = 0  # StreamReset events of this read, not yet seen by the application
        # Reading stopped before a new stream, for the application to settle the resets before it
        # (call `receive_data(b"")` again).
        self.paused = False
        self._decoder = HeaderDecoder(limits.max_header_list_size)
        # A header block still arriving: (stream, flags, block so far, priority bytes, since when).
        self._continuation: tuple[int, int, bytearray, bytes, float] | None = None
        self._reset_ids: collections.OrderedDict[int, int] = collections.OrderedDict()
        # Send side: the peer's settings and windows.
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_FRAME
        self._send_window = DEFAULT_WINDOW
        self._blocked: dict[int, Stream] = {}  # streams waiting for window
        # Receive side: the connection's window is what it can still buffer.
        self._rx = ReceiveBuffer(limits.max_connection_buffer, self._send)
        self._budget = Budget(limits, now)
        # Lifecycle.
        self.terminated = False  # GOAWAY with an error sent (or the peer's connection error)
        self.going_away = False  # the last GOAWAY sent: no new streams
        self.peer_going_away = False
        self._shutdown_at: float | None = None
        self._shutdown_acked_at: float | None = None  # when the shutdown PING's ACK came
        self._events: list[Event] = []
        self._out: list[bytes | memoryview] = [
            settings_frame(
                {
                    S_ENABLE_PUSH: 0,
                    S_MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                    S_INITIAL_WINDOW_SIZE: limits.stream_window,
                    S_MAX_FRAME_SIZE: limits.max_frame_size,
                    S_MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                }
            )
        ]
        if limits.max_connection_buffer > DEFAULT_WINDOW:
            self._out.append(window_update(0, limits.max_connection_buffer - DEFAULT_WINDOW))

    # -- output ----------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, as one string (empty when nothing is)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 and isinstance(out[0], bytes) else b"".join(out)

    def frames_to_send(self) -> list[bytes | memoryview]:
        """The same as a list of pieces (large DATA payloads are views of the answer, not copies),
        for `transport.writelines`."""
        out, self._out = self._out, []
        return out

    @property
    def handshaken(self) -> bool:
        """The client's preface and first SETTINGS have arrived."""
        return self._settings_seen

    @property
    def idle_since(self) -> float:
        """When the last stream opened or closed (or the connection started)."""
        return self._last_active

    @property
    def want_close(self) -> bool:
        """Nothing more will happen on this connection: close it once the output is written."""
        return self.terminated or ((self.going_away or self.peer_going_away) and not self.streams)

    # -- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer; returns what they amount to, in order. If `paused` is then
        set, handle the events and call again (with b"") for the rest."""
        if self.terminated:
            return []
        events: list[Event] = []
        self._events = events
        self._unsettled = 0
        self.paused = False
        now = self._clock()
        self._budget.roll(now)
        self._last_receive = now
        try:
            self._receive(data, now)
        except ConnectionFailure as e:
            self._terminate(e.code, str(e))
        except hpack.OversizedHeaderListError as e:
            self._terminate(ENHANCE_YOUR_CALM, f"header list too large: {e}")
        except hpack.HPACKError as e:
            self._terminate(COMPRESSION_ERROR, f"HPACK: {e}")
        return events

    def _receive(self, data: bytes, now: float) -> None:
        buffer = self._buffer
        pos = 0
        if buffer:  # a partial frame from before, or what a pause left
            if data:
                if self._offset:
                    del buffer[: self._offset]
                    self._offset = 0
                buffer += data
            else:
                pos = self._offset
            buf: bytes | bytearray = buffer
        else:
            buf = data
        if not self._preface_seen:
            size = len(PREFACE)
            if len(buf) < size:
                if not PREFACE.startswith(bytes(buf)):
                    raise ConnectionFailure(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer = bytearray(buf)
                return
            if bytes(buf[:size]) != PREFACE:
                raise ConnectionFailure(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface_seen = True
            pos = size
        end = len(buf)
        max_frame = self.limits.max_frame_size
        view = memoryview(buf)
        try:
            while end - pos >= 9 and not self.terminated:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                if length > max_frame:
                    raise ConnectionFailure(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - pos - 9 < length:
                    break
                kind = buf[pos + 3]
                flags = buf[pos + 4]
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if (
                    self._unsettled
                    and kind == HEADERS
                    and stream_id > self.last_stream_id
                    and len(self.streams) + self.orphans >= self.limits.max_concurrent_streams
                ):
                    # Whether this stream has a place depends on the resets before it: stop here
                    # until the application has said which of them left work running.
                    self.paused = True
                    break
                payload = bytes(view[pos + 9 : pos + 9 + length])
                pos += 9 + length
                try:
                    self._frame(kind, flags, stream_id, payload, now)
                except StreamFailure as e:
                    self._stream_error(e.stream_id, e.code)
        finally:
            view.release()
        if pos == end:
            self._buffer = bytearray()
            self._offset = 0
        elif self.paused:  # resumed soon with b"": keep the place instead of moving the bytes
            if buf is not self._buffer:
                self._buffer = bytearray(buf)
            self._offset = pos
        elif buf is self._buffer:
            del self._buffer[:pos]
            self._offset = 0
        else:
            self._buffer = bytearray(buf[pos:])
            self._offset = 0

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        if not self._settings_seen:
            if kind != SETTINGS or flags & ACK:
                raise ConnectionFailure(PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
            self._settings_seen = True
        if self._continuation is not None and kind != CONTINUATION:
            raise ConnectionFailure(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._on_data(flags, stream_id, payload, now)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload, now)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload, now)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == PRIORITY:
            self._budget.control_frame()
            if stream_id == 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise StreamFailure(stream_id, FRAME_SIZE_ERROR, "PRIORITY length")
            self._check_dependency(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id != 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "GOAWAY length")
            last, code = struct.unpack_from(">II", payload)
            self.peer_going_away = True
            message = payload[8:].decode("utf-8", "replace")
            self._events.append(ConnectionTerminated(code, last & 0x7FFFFFFF, message, True))
        elif kind == PUSH_PROMISE:
            raise ConnectionFailure(PROTOCOL_ERROR, "a client cannot push")
        else:  # unknown frame types are ignored (§5.5), but they do no work
            self._budget.control_frame()

    # -- headers -----------------------------------------------------------------------------------

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionFailure(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - payload[0]]
        return payload

    @staticmethod
    def _check_dependency(stream_id: int, priority: bytes) -> None:
        if int.from_bytes(priority[:4], "big") & 0x7FFFFFFF == stream_id:
            raise StreamFailure(stream_id, PROTOCOL_ERROR, "a stream cannot depend on itself")

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ConnectionFailure(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            priority, block = block[:5], block[5:]
        else:
            priority = b""
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block, priority, now)
        else:
            if not block:
                self._budget.control_frame()
            self._continuation = (stream_id, flags, bytearray(block), priority, now)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        pending = self._continuation
        if pending is None or pending[0] != stream_id:
            raise ConnectionFailure(PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        if not payload and not flags & END_HEADERS:
            self._budget.control_frame()
        block = pending[2]
        block += payload
        if len(block) > 4 * self.limits.max_header_list_size:
            raise ConnectionFailure(ENHANCE_YOUR_CALM, f"header block of more than {len(block)} bytes")
        if flags & END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, pending[1], bytes(block), pending[3], now)

    def _header_block(self, stream_id: int, flags: int, block: bytes, priority: bytes, now: float) -> None:
        decoder = self._decoder
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers: the request ends
            headers_or_error: MalformedHeaders | None = None
            try:
                decoder.trailers(block)
            except MalformedHeaders as e:
                headers_or_error = e
            if priority:
                self._check_dependency(stream_id, priority)
            if not stream.remote_open:
                raise StreamFailure(stream_id, STREAM_CLOSED, "HEADERS after the request ended")
            if headers_or_error is not None or not flags & END_STREAM:
                raise StreamFailure(stream_id, PROTOCOL_ERROR, "trailers without END_STREAM or malformed")
            if stream.content_length is not None and stream.received != stream.content_length:
                raise StreamFailure(stream_id, PROTOCOL_ERROR, "less DATA than content-length")
            self._remote_end(stream)
            if not stream.parts and not stream.head:
                self._events.append(RequestEnded(stream_id, 0))
            else:
                self._events.append(RequestEnded(stream_id, stream.partial))
            return
        if stream_id <= self.last_stream_id:
            decoder.discard(block)
            how = self._reset_ids.get(stream_id)
            if how == RESET_SENT:
                return  # frames in flight when we reset it (§5.1)
            if how == RESET_RECEIVED:
                raise StreamFailure(stream_id, STREAM_CLOSED, "HEADERS after RST_STREAM")
            raise ConnectionFailure(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) + self.orphans >= self.limits.max_concurrent_streams:
            decoder.discard(block)
            self._out.append(rst_stream(stream_id, REFUSED_STREAM))
            self.refused += 1
            self._remember_reset(stream_id, RESET_SENT)
            self._budget.reset_stream()
            return
        try:
            headers = decoder.request(block)
        except MalformedHeaders as e:
            raise StreamFailure(stream_id, PROTOCOL_ERROR, str(e)) from None
        if priority:
            self._check_dependency(stream_id, priority)
        stream = Stream(stream_id, self._peer_initial_window, self.limits.stream_window)
        self.streams[stream_id] = stream
        self._last_active = now
        self._budget.credits += 1
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                del self.streams[stream_id]
                raise StreamFailure(stream_id, PROTOCOL_ERROR, "content-length is not a number")
            stream.content_length = int(length)
        end = bool(flags & END_STREAM)
        if end:
            stream.remote_open = False
            if stream.content_length:
                del self.streams[stream_id]
                raise StreamFailure(stream_id, PROTOCOL_ERROR, "content-length and no body")
        else:
            stream.stall_deadline = now + self.limits.request_stall_timeout
        self._events.append(RequestReceived(stream_id, headers, end))

    # -- data --------------------------------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        if stream_id == 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._rx.take(size)
        stream = self.streams.get(stream_id)
        if stream is None:
            self._rx.release(size)
            if stream_id > self.last_stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            how = self._reset_ids.get(stream_id)
            if how == RESET_SENT:
                return
            if how == RESET_RECEIVED:
                raise StreamFailure(stream_id, STREAM_CLOSED, "DATA after RST_STREAM")
            raise ConnectionFailure(STREAM_CLOSED, f"DATA on closed stream {stream_id}")
        if not stream.remote_open:
            self._rx.release(size)
            raise StreamFailure(stream_id, STREAM_CLOSED, "DATA after the request ended")
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise ConnectionFailure(FLOW_CONTROL_ERROR, f"DATA beyond stream {stream_id}'s window")
        if stream.reserved:
            self._rx.arrived(stream, size)
        if flags & PADDED:
            data = self._unpad(flags, payload)
            padding = size - len(data)
            self._rx.release(padding)
            if padding and not flags & END_STREAM:
                stream.recv_window += padding
                self._out.append(window_update(stream_id, padding))
        else:
            data = payload
        end = bool(flags & END_STREAM)
        if not data and not end:
            self._budget.control_frame()
        stream.received += len(data)
        if stream.content_length is not None and stream.received > stream.content_length:
            raise StreamFailure(stream_id, PROTOCOL_ERROR, "more DATA than content-length")
        if end:
            if stream.content_length is not None and stream.received != stream.content_length:
                raise StreamFailure(stream_id, PROTOCOL_ERROR, "less DATA than content-length")
            self._remote_end(stream)
        elif stream.stall_deadline is not None:
            stream.stall_deadline = now + self.limits.request_stall_timeout
        if stream.discard:
            self._rx.release(len(data))
            if end:
                self._events.append(RequestEnded(stream_id, 0))
            return
        self._take(stream, data, end)

    def _take(self, stream: Stream, data: bytes, end: bool) -> None:
        """Cut `data` (the stream's next request bytes) into gRPC messages."""
        limit = self.limits.max_receive_message
        events = self._events
        sid = stream.id
        n = len(data)
        if stream.need < 0 and not stream.head and n >= MESSAGE_PREFIX:  # a frame holding one message
            length = int.from_bytes(data[1:5], "big")
            if n == length + MESSAGE_PREFIX and length <= limit:
                events.append(MessageReceived(sid, data[5:], data[0] != 0, end, n))
                return
        pos = 0
        ended_with_message = False
        while pos < n:
            ended_with_message = False
            if stream.need < 0:
                take = min(MESSAGE_PREFIX - len(stream.head), n - pos)
                stream.head += data[pos : pos + take]
                pos += take
                if len(stream.head) < MESSAGE_PREFIX:
                    break
                length = int.from_bytes(stream.head[1:5], "big")
                stream.compressed = stream.head[0] != 0
                stream.need = length
                if length > limit:
                    text = f"Received message larger than max ({length} vs. {limit})"
                    self._too_large(stream, n - pos, text)
                    return
                if not self._rx.make_room(stream, length, length - (n - pos)):
                    self._too_large(stream, n - pos, self._too_large_for_buffer(length))
                    return
            take = min(stream.need - stream.have, n - pos)
            if take:
                stream.parts.append(data if take == n else data[pos : pos + take])
                stream.have += take
                pos += take
            if stream.have == stream.need:
                parts = stream.parts
                message = parts[0] if len(parts) == 1 else b"".join(parts)
                size = stream.need + MESSAGE_PREFIX
                stream.head, stream.parts, stream.have, stream.need = b"", [], 0, -1
                events.append(MessageReceived(sid, message, stream.compressed, end and pos == n, size))
                ended_with_message = True
        if end and not ended_with_message:
            events.append(RequestEnded(sid, stream.partial))

    def _too_large_for_buffer(self, length: int) -> str:
        buffer = self.limits.max_connection_buffer
        return (
            f"Received message larger than max ({length} vs. {buffer - MESSAGE_PREFIX}): a connection "
            "buffers at most sigserve.http2.max_connection_buffer_bytes of requests"
        )

    def _too_large(self, stream: Stream, rest: int, message: str) -> None:
        """Refuse the message being assembled: drop what we hold of it, and what follows."""
        self._rx.release(stream.partial + rest)
        stream.head, stream.parts, stream.have, stream.need = b"", [], 0, -1
        stream.discard = True
        self._rx.forget(stream)
        self._events.append(MessageTooLarge(stream.id, message))

    def release(self, size: int, stream_id: int = 0) -> None:
        """The application is done with `size` bytes that a MessageReceived gave it: the connection
        may buffer that much again. With `stream_id`, a stream that still receives gets its window
        back too (streaming requests)."""
        self._rx.release(size)
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.remote_open:
                window = self.limits.stream_window
                if stream.recv_window < window // 2:
                    self._out.append(window_update(stream_id, window - stream.recv_window))
                    stream.recv_window = window

    @property
    def buffered(self) -> int:
        """Request bytes the connection holds (received, not released)."""
        return self._rx.buffered

    def _send(self, frame_bytes: bytes) -> None:
        self._out.append(frame_bytes)

    # -- control frames ------------------------------------------------------------------------------

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._budget.control_frame()
        if stream_id != 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS length")
        wider = False
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionFailure(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                if delta:
                    for stream in self.streams.values():
                        stream.send_window += delta
                        if stream.send_window > MAX_WINDOW:
                            raise ConnectionFailure(FLOW_CONTROL_ERROR, "a stream's window overflows")
                wider = wider or delta > 0
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= MAX_FRAME_LIMIT:
                    raise ConnectionFailure(PROTOCOL_ERROR, "max frame size out of range")
                self._peer_max_frame = value
            elif key == S_ENABLE_PUSH:
                if value > 1:
                    raise ConnectionFailure(PROTOCOL_ERROR, "ENABLE_PUSH is neither 0 nor 1")
        self._out.append(frame(SETTINGS, ACK, 0))
        if wider:
            self._send_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        self._budget.control_frame()
        if len(payload) != 4:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
            was = self._send_window
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ConnectionFailure(FLOW_CONTROL_ERROR, "connection window overflow")
            if was <= 0:  # only then can a stream be waiting for the connection's window
                self._send_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: allowed for a while after it closed (§5.1)
        if increment == 0:
            raise StreamFailure(stream_id, PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise StreamFailure(stream_id, FLOW_CONTROL_ERROR, "stream window overflow")
        if stream_id in self._blocked:
            self._drain(stream)

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "RST_STREAM length")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            self._budget.control_frame()  # a stream that is gone already: no work, but it happens in races
            return
        code = int.from_bytes(payload, "big")
        self._close(stream, RESET_RECEIVED)
        self._reset_event(stream_id, code, True)
        self._budget.reset_stream()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._budget.control_frame()
        if stream_id != 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "PING length")
        if not flags & ACK:
            self._out.append(frame(PING, ACK, 0, payload))
        elif payload == SHUTDOWN_PING and self._shutdown_at is not None and self._shutdown_acked_at is None:
            self._shutdown_acked_at = self._clock()

    # -- closing streams -------------------------------------------------------------------------

    def _remember_reset(self, stream_id: int, how: int) -> None:
        ids = self._reset_ids
        ids[stream_id] = how
        if len(ids) > RESET_MEMORY:
            ids.popitem(last=False)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_open = False
        stream.stall_deadline = None

    def _close(self, stream: Stream, how: int) -> None:
        """Forget a stream: answered in full (how=0) or reset (`RESET_SENT` / `RESET_RECEIVED`)."""
        sid = stream.id
        streams = self.streams
        if streams.pop(sid, None) is None:
            return
        if not streams:
            self._last_active = self._clock()
        if how:
            self._remember_reset(sid, how)
        if stream.pending is not None:
            self._blocked.pop(sid, None)
            stream.pending = None
        if stream.reserved or stream.waiting:
            self._rx.forget(stream)
        if stream.need >= 0 or stream.head:
            held = stream.partial
            stream.head, stream.parts, stream.have, stream.need = b"", [], 0, -1
            self._rx.release(held)
        if self._rx.waiting:
            self._rx.grant_waiting()

    def _reset_event(self, stream_id: int, code: int, remote: bool) -> None:
        self.orphans += 1
        self._unsettled += 1
        self._events.append(StreamReset(stream_id, code, remote))

    def call_ended(self) -> None:
        """The work for a stream that a `StreamReset` reported has ended (or never ran)."""
        self.orphans -= 1

    def _stream_error(self, stream_id: int, code: int) -> None:
        """A stream error found while reading: reset it and tell the application."""
        self._out.append(rst_stream(stream_id, code))
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._close(stream, RESET_SENT)
            self._reset_event(stream_id, code, False)
        else:
            self._remember_reset(stream_id, RESET_SENT)
        self._budget.reset_stream()

    def _local_end(self, stream: Stream) -> None:
        """END_STREAM went out: the stream is closed, and if the request had not ended, the rest of
        it is declined with RST_STREAM(NO_ERROR) (§8.1)."""
        if stream.remote_open:
            self._out.append(rst_stream(stream.id, NO_ERROR))
            self._close(stream, RESET_SENT)
        else:
            self._budget.answered += 1
            self._close(stream, 0)

    # -- sending -----------------------------------------------------------------------------------

    def send_headers(self, stream_id: int) -> None:
        """gRPC response headers (`:status: 200`, `content-type: application/grpc`)."""
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.headers_sent:
            self._out.append(frame(HEADERS, END_HEADERS, stream_id, RESPONSE_HEADERS))
            stream.headers_sent = True

    def send_unary(self, stream_id: int, message: bytes) -> None:
        """A whole unary answer: headers, the message, OK trailers (or RESOURCE_EXHAUSTED if the
        message is larger than `max_send_message`)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        size = len(message)
        if size > self.limits.max_send_message:
            self.send_status(
                stream_id,
                RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({size} vs. {self.limits.max_send_message})",
            )
            return
        stream.headers_sent = True
        total = size + MESSAGE_PREFIX
        if total <= self._send_window and total <= stream.send_window and total <= self._peer_max_frame:
            # The usual case, as one string: headers, the message, OK trailers.
            sid = stream_id.to_bytes(4, "big")
            self._out.append(
                b"".join(
                    (
                        _RESPONSE_HEADERS_FRAME,
                        sid,
                        RESPONSE_HEADERS,
                        total.to_bytes(3, "big"),
                        b"\x00\x00",  # DATA, no flags
                        sid,
                        b"\x00",  # not compressed
                        size.to_bytes(4, "big"),
                        message,
                        _TRAILERS_OK_FRAME,
                        sid,
                        TRAILERS_OK,
                    )
                )
            )
            self._send_window -= total
            stream.send_window -= total
            self._budget.credits += 1
            self._local_end(stream)
            return
        self._out.append(frame(HEADERS, END_HEADERS, stream_id, RESPONSE_HEADERS))
        self._queue(stream, b"\x00" + size.to_bytes(4, "big") + message, TRAILERS_OK)

    def send_message(self, stream_id: int, message: bytes) -> bool:
        """One message of a streaming answer (headers first if not sent). True if it went out
        whole; False: it waits for window, and `StreamWritable` says when it has gone."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return True
        if len(message) > self.limits.max_send_message:
            self.send_status(
                stream_id,
                RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(message)} vs. {self.limits.max_send_message})",
            )
            return True
        if not stream.headers_sent:
            self.send_headers(stream_id)
        self._queue(stream, b"\x00" + len(message).to_bytes(4, "big") + message, None)
        return stream.pending is None

    def send_status(self, stream_id: int, code: int, message: str = "") -> None:
        """End the call with a gRPC status: trailers after what is queued, or Trailers-Only."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not stream.headers_sent:
            self._send_block(stream_id, END_STREAM, status_block(code, message, trailers_only=True))
            stream.headers_sent = True
            self._local_end(stream)
            return
        self._queue(stream, b"", status_block(code, message, trailers_only=False))

    def send_http_status(self, stream_id: int, status: bytes, grpc_code: int, message: str) -> None:
        """A request that is not gRPC: a plain HTTP status (and the gRPC status, for gRPC clients)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.headers_sent:
            return
        self._send_block(stream_id, END_STREAM, http_status_block(status, grpc_code, message))
        stream.headers_sent = True
        self._local_end(stream)

    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        self._out.append(rst_stream(stream_id, code))
        self._close(stream, RESET_SENT)

    def pending_bytes(self, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        return 0 if stream is None or stream.pending is None else len(stream.pending)

    def _send_block(self, stream_id: int, flags: int, block: bytes) -> None:
        limit = self._peer_max_frame
        if len(block) <= limit:
            self._out.append(frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        self._out.append(frame(HEADERS, flags, stream_id, block[:limit]))
        rest = block[limit:]
        while rest:
            piece, rest = rest[:limit], rest[limit:]
            self._out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece))

    def _queue(self, stream: Stream, data: bytes, trailers: bytes | None) -> None:
        """Send `data`, then `trailers` (None: keep the stream open), as the windows allow."""
        if stream.pending is not None:
            if data:
                stream.pending = memoryview(bytes(stream.pending) + data)
        else:
            stream.pending = memoryview(data)
        if trailers is not None:
            stream.pending_end = trailers
        self._drain(stream)

    def _drain(self, stream: Stream) -> None:
        pending = stream.pending
        if pending is None:
            return
        sid = stream.id
        out = self._out
        sent, total = 0, len(pending)
        while sent < total:
            size = min(total - sent, self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                break
            out.append(frame_header(DATA, 0, sid, size))
            out.append(pending[sent : sent + size] if size > 4096 else bytes(pending[sent : sent + size]))
            self._send_window -= size
            stream.send_window -= size
            self._budget.credits += 1
            sent += size
        if sent < total:
            stream.pending = pending[sent:]
            self._blocked[sid] = stream
            return
        stream.pending = None
        was_blocked = self._blocked.pop(sid, None) is not None
        if stream.pending_end is not None:
            self._send_block(sid, END_STREAM, stream.pending_end)
            self._local_end(stream)
        elif was_blocked:
            self._events.append(StreamWritable(sid))

    def _send_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._drain(stream)

    # -- the connection's end ------------------------------------------------------------------------

    def _terminate(self, code: int, message: str) -> None:
        self._out.append(goaway(self.last_stream_id, code, message.encode()))
        self.terminated = True
        self._events.append(ConnectionTerminated(code, self.last_stream_id, message, False))

    def close(self, code: int = NO_ERROR, message: str = "") -> None:
        """End the connection now with GOAWAY(`code`)."""
        if not self.terminated:
            self._out.append(goaway(self.last_stream_id, code, message.encode()))
            self.terminated = True

    def start_shutdown(self) -> None:
        """A graceful shutdown (§6.8): GOAWAY with the largest stream id, so that streams the client
        sent before it read this are still served, and a PING; once its ACK is back, no stream is
        open and `SHUTDOWN_QUIET` has passed since the ACK (or after `SHUTDOWN_PING_TIMEOUT` without
        it), the GOAWAY that names the last stream read (`finish_shutdown`, from `expire`)."""
        if self.terminated or self.going_away or self._shutdown_at is not None:
            return
        self._shutdown_at = self._clock()
        if not self._preface_seen:  # nothing sent yet: nothing to wait for
            self.finish_shutdown()
            return
        self._out.append(goaway(LAST_STREAM_ID, NO_ERROR))
        self._out.append(frame(PING, 0, 0, SHUTDOWN_PING))

    def finish_shutdown(self) -> None:
        if self.terminated or self.going_away:
            return
        self.going_away = True
        self._out.append(goaway(self.last_stream_id, NO_ERROR))

    def expire(self) -> list[Event]:
        """Apply the timeouts as of now; call it about once a second."""
        if self.terminated:
            return []
        events: list[Event] = []
        self._events = events
        now = self._clock()
        limits = self.limits
        if not self._settings_seen:
            if now - self._started >= limits.handshake_timeout:
                seconds = limits.handshake_timeout
                self._terminate(NO_ERROR, f"no HTTP/2 preface and SETTINGS within {seconds:g} s")
            return events
        pending = self._continuation
        if pending is not None and now - pending[4] >= limits.header_timeout:
            self._terminate(NO_ERROR, f"header block not finished within {limits.header_timeout:g} s")
            return events
        if self._shutdown_at is not None and not self.going_away:
            acked = self._shutdown_acked_at
            if acked is not None:
                if not self.streams and now - acked >= SHUTDOWN_QUIET:
                    self.finish_shutdown()
            else:
                quiet = self._last_receive < self._shutdown_at and not self.streams
                if now - self._shutdown_at >= (SHUTDOWN_QUIET if quiet else SHUTDOWN_PING_TIMEOUT):
                    self.finish_shutdown()
        for stream in [s for s in self.streams.values() if s.stall_deadline is not None]:
            if stream.stall_deadline is not None and now >= stream.stall_deadline:
                sid = stream.id
                self.send_status(
                    sid,
                    DEADLINE_EXCEEDED,
                    f"The request stalled: no bytes of it for {limits.request_stall_timeout:g} s",
                )
                self._reset_event(sid, CANCEL, False)
        if (
            not self.streams
            and not self.orphans
            and not self.going_away
            and now - self._last_active >= limits.idle_timeout
        ):
            self._terminate(NO_ERROR, f"idle for {limits.idle_timeout:g} s")
        return events

    def allow_slow_request(self, stream_id: int) -> None:
        """The stream's requests may take their time (a streaming call): no stall timeout."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.stall_deadline = None


__all__ = ["GOAWAY", "ConnectionFailure", "ServerConnection"]
