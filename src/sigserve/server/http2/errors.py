"""The two kinds of HTTP/2 error (RFC 9113 §5.4), as the core raises them while reading."""

from __future__ import annotations


class ConnectionFailure(Exception):
    """A connection error (§5.4.1): GOAWAY with `code`, then the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamFailure(Exception):
    """A stream error (§5.4.2) found while reading a frame: RST_STREAM with `code`; the connection
    goes on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code
