"""Inbound flow control (RFC 9113 §6.9) for the whole connection: the receive window is what the
connection can still buffer (`Limits.max_connection_buffer`), and it is given back only as the
application releases the request bytes it took.

A message larger than a stream's window (`Limits.stream_window`) gets the rest of its window once
its 5-byte prefix shows its size and the buffer can hold all of it ("reserved"); until then it waits,
first come first served. So a message that was let in can always finish: two half-received large
messages never fill the buffer between them and wait for each other.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from sigserve.server.http2.errors import ConnectionFailure
from sigserve.server.http2.frames import FLOW_CONTROL_ERROR, window_update
from sigserve.server.http2.grpc_wire import MESSAGE_PREFIX
from sigserve.server.http2.stream import Stream


class ReceiveBuffer:
    __slots__ = ("_send", "budget", "buffered", "reserved", "waiting", "window")

    def __init__(self, budget: int, send: Callable[[bytes], None]) -> None:
        self.budget = budget
        self._send = send  # queues a frame for the peer
        self.window = budget  # what the peer may still send (after the first WINDOW_UPDATE)
        self.buffered = 0  # flow-controlled bytes received and not yet released
        self.reserved = 0  # bytes promised to large messages still arriving
        self.waiting: collections.OrderedDict[int, Stream] = collections.OrderedDict()

    def take(self, size: int) -> None:
        """A DATA frame of `size` flow-controlled bytes arrived."""
        self.window -= size
        if self.window < 0:
            raise ConnectionFailure(FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self.buffered += size

    def release(self, size: int) -> None:
        if size:
            self.buffered -= size
            self.refill(force=False)
        if self.waiting:
            self.grant_waiting()

    def refill(self, force: bool) -> None:
        """Give the peer back the window that the buffer has room for, in steps of at least a
        sixteenth of the buffer unless the peer is short of window (or `force`)."""
        budget = self.budget
        gap = budget - self.buffered - self.window
        if gap > 0 and (force or gap >= budget >> 4 or self.window < budget >> 1):
            self.window += gap
            self._send(window_update(0, gap))

    def make_room(self, stream: Stream, length: int, remaining: int) -> bool:
        """A message of `length` bytes with `remaining` bytes still to come: True if it may come
        (now, or once there is room: the stream waits), False if it can never fit."""
        if remaining <= stream.recv_window:
            return True
        if length + MESSAGE_PREFIX > self.budget:
            return False
        stream.waiting = remaining
        self.waiting[stream.id] = stream
        self.grant_waiting()
        return True

    def grant_waiting(self) -> None:
        while self.waiting:
            sid, stream = next(iter(self.waiting.items()))
            remaining = stream.waiting
            if self.buffered + self.reserved + remaining > self.budget:
                return
            del self.waiting[sid]
            stream.waiting = 0
            stream.reserved = remaining
            self.reserved += remaining
            increment = remaining - stream.recv_window
            stream.recv_window = remaining
            self._send(window_update(sid, increment))
            self.refill(force=True)

    def arrived(self, stream: Stream, size: int) -> None:
        """`size` bytes of a stream with a reservation arrived."""
        used = min(stream.reserved, size)
        stream.reserved -= used
        self.reserved -= used

    def forget(self, stream: Stream) -> None:
        """The stream's message will not come (refused, reset, closed)."""
        if stream.waiting:
            self.waiting.pop(stream.id, None)
            stream.waiting = 0
        if stream.reserved:
            self.reserved -= stream.reserved
            stream.reserved = 0
