"""A gRPC client made of hand-built HTTP/2 frames on a real socket, to send a running server what
grpcio never would (padding, CONTINUATION, tiny windows, resets, floods). Shared by the transport's
socket-level and hostile-peer tests; `http2_peer` is its in-process counterpart."""

from __future__ import annotations

import socket
from typing import Any

import hpack
import numpy as np

from sigserve.codec import tensor
from sigserve.protos import predict_pb2
from sigserve.server.http2 import frames
from tests.http2_peer import message as grpc_framed

PREDICT = "/tensorflow.serving.PredictionService/Predict"

__all__ = ["PREDICT", "RawH2", "frame", "grpc_framed", "predict_message"]


def predict_message(x: float = 1.0, model: str = "half_plus_two") -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tensor.from_ndarray(np.asarray([[x]], np.float32)))
    return bytes(request.SerializeToString())


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


class RawH2:
    """An HTTP/2 client made of frames, to send what grpcio never would."""

    def __init__(self, port: int, settings: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.kept: dict[int, list[Any]] = {}
        self.sock.sendall(frames.PREFACE + frame(frames.SETTINGS, 0, 0, settings))

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def headers_block(
        self, path: str = PREDICT, content_type: str = "application/grpc", **extra: str
    ) -> bytes:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", content_type),
            ("te", "trailers"),
            *extra.items(),
        ]
        return bytes(self.encoder.encode(headers))

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame, or None once the server has closed the connection."""
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags = self.buffer[3], self.buffer[4]
        stream_id = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
        payload = self.buffer[9 : 9 + length]
        self.buffer = self.buffer[9 + length :]
        return kind, flags, stream_id, payload

    def response(self, stream_id: int, on_data: Any = None) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, body, trailers) of one stream; `on_data(size)` is called for each DATA frame.
        Frames of other streams read meanwhile are kept for their own call."""
        blocks: list[dict[str, str]] = []
        body = b""
        while True:
            kept = self.kept.get(stream_id)
            got = kept.pop(0) if kept else self.read_frame()
            assert got is not None, "the server closed the connection"
            kind, flags, sid, payload = got
            if kind == frames.HEADERS:
                # Decoded in arrival order, as HPACK requires, whichever stream it belongs to.
                payload = dict(self.decoder.decode(payload)) if isinstance(payload, bytes) else payload
            if sid != stream_id:
                if sid != 0:
                    self.kept.setdefault(sid, []).append((kind, flags, sid, payload))
                continue
            if kind == frames.HEADERS:
                blocks.append(payload)
            elif kind == frames.DATA:
                body += payload
                if on_data is not None:
                    on_data(len(payload))
            elif kind == frames.RST_STREAM:
                raise AssertionError(f"stream reset: {int.from_bytes(payload, 'big')}")
            if flags & frames.END_STREAM:
                break
        if len(blocks) == 1:  # Trailers-Only
            return blocks[0], body, blocks[0]
        return blocks[0], body, blocks[-1]
