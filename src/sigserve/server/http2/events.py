"""What a client's bytes amount to, as `ServerConnection.receive_data` and `expire` report it.

Plain classes with slots: one or two per call on the hot path, so no dataclass machinery.
"""

from __future__ import annotations

from sigserve.server.http2.headers import Headers


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


class RequestReceived(Event):
    """A new stream's validated request headers. `end_stream`: the request has no body."""

    __slots__ = ("end_stream", "headers", "stream_id")

    def __init__(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream


class MessageReceived(Event):
    """One whole gRPC message (without its 5-byte prefix). Its bytes count against the
    connection's buffer until the application calls `release(size)` (`size` includes the prefix);
    `end_stream`: the request ended with it."""

    __slots__ = ("compressed", "data", "end_stream", "size", "stream_id")

    def __init__(self, stream_id: int, data: bytes, compressed: bool, end_stream: bool, size: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.compressed = compressed
        self.end_stream = end_stream
        self.size = size


class RequestEnded(Event):
    """The request ended with no message in its last frame. `leftover`: bytes of an unfinished
    message that the end cut off (0 normally)."""

    __slots__ = ("leftover", "stream_id")

    def __init__(self, stream_id: int, leftover: int) -> None:
        self.stream_id = stream_id
        self.leftover = leftover


class MessageTooLarge(Event):
    """A message's prefix declared more than the stream may receive: its bytes are dropped as they
    arrive and the application answers RESOURCE_EXHAUSTED with `message`."""

    __slots__ = ("message", "stream_id")

    def __init__(self, stream_id: int, message: str) -> None:
        self.stream_id = stream_id
        self.message = message


class StreamReset(Event):
    """The stream ended without an answer: reset by the peer (`remote`), or by this side for a
    stream error or a stalled request. Any call still running for it is not wanted; the stream's
    place stays taken until the application calls `call_ended()` for it."""

    __slots__ = ("error_code", "remote", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class StreamWritable(Event):
    """Everything queued on the stream went out: a streaming answer may send its next message."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class ConnectionTerminated(Event):
    """GOAWAY. `remote`: the peer sent it and opens no more streams (the ones up to
    `last_stream_id` go on). Otherwise this side ended the connection with `error_code`: write
    what `data_to_send()` holds, then close."""

    __slots__ = ("error_code", "last_stream_id", "message", "remote")

    def __init__(self, error_code: int, last_stream_id: int, message: str, remote: bool) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.message = message
        self.remote = remote
