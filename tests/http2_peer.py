"""A client made of hand-built frames, talking to an in-process `ServerConnection` (no socket, no
TensorFlow), with a clock the test moves. Shared by the core's tests."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import hpack

from sigserve.server.http2 import frames as F
from sigserve.server.http2.connection import ServerConnection
from sigserve.server.http2.events import Event
from sigserve.server.http2.limits import Limits

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Service/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def code(self) -> int:
        """The error code of a RST_STREAM or GOAWAY."""
        if self.kind == F.GOAWAY:
            return int(struct.unpack_from(">I", self.payload, 4)[0])
        return int(struct.unpack(">I", self.payload)[0])


def parse_frames(data: bytes) -> list[Frame]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        out.append(
            Frame(
                data[pos + 3],
                data[pos + 4],
                int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF,
                data[pos + 9 : pos + 9 + length],
            )
        )
        pos += 9 + length
    return out


def message(data: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + len(data).to_bytes(4, "big") + data


class Peer:
    """The client side: frames in, the server's frames and events out."""

    def __init__(self, limits: Limits | None = None, settings: dict[int, int] | None = None) -> None:
        self.clock = Clock()
        self.conn = ServerConnection(limits or Limits(), clock=self.clock)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.first = self.read()  # the server's SETTINGS and window update
        self.events = self.send(F.PREFACE, F.settings_frame(settings or {}))
        self.read()  # its SETTINGS ACK

    def send(self, *pieces: bytes) -> list[Event]:
        events: list[Event] = []
        events += self.conn.receive_data(b"".join(pieces))
        while self.conn.paused:
            for event in events:
                if type(event).__name__ == "StreamReset":
                    self.conn.call_ended()  # nothing ran for it here
            events += self.conn.receive_data(b"")
        return events

    def read(self) -> list[Frame]:
        """What the server has written since the last read."""
        return parse_frames(self.conn.data_to_send())

    def block(self, headers: list[tuple[str, str]] | None = None, **extra: str) -> bytes:
        return bytes(self.encoder.encode([*(headers or REQUEST), *extra.items()]))

    def headers(
        self, stream_id: int, *, end: bool = False, block: bytes | None = None, **extra: str
    ) -> bytes:
        flags = F.END_HEADERS | (F.END_STREAM if end else 0)
        return F.frame(F.HEADERS, flags, stream_id, self.block(**extra) if block is None else block)

    @staticmethod
    def data(stream_id: int, payload: bytes, *, end: bool = False) -> bytes:
        return F.frame(F.DATA, F.END_STREAM if end else 0, stream_id, payload)

    def call(self, stream_id: int, body: bytes = b"hello") -> list[Event]:
        return self.send(self.headers(stream_id), self.data(stream_id, message(body), end=True))

    def goaway(self) -> Frame | None:
        return next((f for f in self.read() if f.kind == F.GOAWAY), None)

    def decode(self, frame: Frame) -> dict[str, str]:
        return {k: v for k, v in self.decoder.decode(frame.payload)}


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
