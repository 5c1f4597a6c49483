"""One request stream's state (RFC 9113 §5.1), its windows, and the gRPC message being assembled.

A server stream starts `open` (HEADERS received) or `half-closed (remote)` (HEADERS with
END_STREAM), goes to `half-closed (remote)` when the request ends, and is closed when the answer
ends (END_STREAM sent) or either side resets it. A server that answers before the request has
ended would be `half-closed (local)`; this one resets the rest of the request with
RST_STREAM(NO_ERROR) at that moment (RFC 9113 §8.1), so that state is never kept.
"""

from __future__ import annotations

# How a stream was closed, for frames that arrive on it afterwards (§5.1 "closed").
RESET_SENT, RESET_RECEIVED = 1, 2


class Stream:
    __slots__ = (
        "compressed",
        "content_length",
        "discard",
        "have",
        "head",
        "headers_sent",
        "id",
        "need",
        "parts",
        "pending",
        "pending_end",
        "received",
        "recv_window",
        "remote_open",
        "reserved",
        "send_window",
        "stall_deadline",
        "waiting",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.remote_open = True  # the peer may still send (open); False: half-closed (remote)
        self.headers_sent = False
        self.send_window = send_window
        self.recv_window = recv_window
        # Send side: DATA not yet sent (flow control), and the trailers block that follows it.
        self.pending: memoryview | None = None
        self.pending_end: bytes | None = None
        # Receive side: the message being assembled. `head`: prefix bytes so far; `need`: the body
        # length once the prefix is complete (-1 before); `parts`/`have`: body bytes so far.
        self.head = b""
        self.need = -1
        self.parts: list[bytes] = []
        self.have = 0
        self.compressed = False
        self.discard = False  # a message was too large: drop what arrives
        self.received = 0  # DATA payload bytes received, padding excluded
        self.content_length: int | None = None  # the request's content-length, if it sent one
        self.reserved = 0  # connection buffer reserved for the rest of a large message
        self.waiting = 0  # bytes of a large message waiting for buffer room (0: not waiting)
        self.stall_deadline: float | None = None

    @property
    def partial(self) -> int:
        """Bytes of an unfinished message held for this stream."""
        return len(self.head) + self.have
