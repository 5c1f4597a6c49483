"""Every limit of the native gRPC transport: one named setting each, with its default, set from
`--grpc_channel_arguments` under grpcio's key where grpcio has the same setting and under a
`sigserve.http2.` key where it has none (`LIMIT_KEYS`; README "Reliability" lists them all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sigserve.server.http2.frames import DEFAULT_FRAME, MAX_FRAME_LIMIT, MAX_WINDOW


@dataclasses.dataclass(frozen=True)
class Limits:
    # Streams one connection may have open, counting calls still running for streams that were
    # reset (against "rapid reset"). grpcio: no limit.
    max_concurrent_streams: int = 1000
    # TF Serving's message limits (INT32_MAX both ways).
    max_receive_message: int = MAX_WINDOW
    max_send_message: int = MAX_WINDOW
    # Decoded size of a request's header block (RFC 7541 sizes), enforced while decoding.
    # grpcio: 8 KiB soft / 16 KiB hard.
    max_header_list_size: int = 64 << 10
    # Largest frame we accept (SETTINGS_MAX_FRAME_SIZE): large DATA frames mean fewer frames for a
    # 256 MB tensor. grpcio: 16 KiB.
    max_frame_size: int = 1 << 20
    # Request bytes one connection holds (received, not yet answered), the connection's receive
    # window: a message larger than this is RESOURCE_EXHAUSTED. grpcio: its resource quota.
    max_connection_buffer: int = 512 << 20
    # Receive window of a new stream (SETTINGS_INITIAL_WINDOW_SIZE). A larger message gets the rest
    # of its window once its prefix shows its size and the connection's buffer has room for all of it.
    stream_window: int = 1 << 20
    # Connections open at once; at the limit a new connection takes the place of the one idle the
    # longest, or is refused if none is idle. grpcio: no limit.
    max_connections: int = 4096
    # Seconds for the TLS handshake, the client's preface and its first SETTINGS. grpcio: 120.
    handshake_timeout: float = 10.0
    # Seconds a header block split over CONTINUATION frames may take to complete.
    header_timeout: float = 10.0
    # Seconds a unary request that has not arrived in full may go without any of its bytes
    # arriving before it is answered DEADLINE_EXCEEDED (slowloris streams).
    request_stall_timeout: float = 30.0
    # Seconds a connection with no stream open is kept. grpcio: no limit.
    idle_timeout: float = 300.0
    # Frames that do no work (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA and header
    # fragments, unknown types) per `budget_interval`, beyond one per stream opened and per DATA
    # frame sent; past it the connection gets GOAWAY(ENHANCE_YOUR_CALM).
    max_control_frames: int = 1000
    # Streams reset by the peer, or by this side for the peer's errors or refused, per
    # `budget_interval`, beyond `max_concurrent_streams` (a client may cancel every call it has) and
    # one per call answered; past it GOAWAY(ENHANCE_YOUR_CALM).
    max_reset_streams: int = 200
    budget_interval: float = 1.0

    def __post_init__(self) -> None:
        if not DEFAULT_FRAME <= self.max_frame_size <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame_size must be in [{DEFAULT_FRAME}, {MAX_FRAME_LIMIT}]")
        if self.stream_window > self.max_connection_buffer:
            raise ValueError("stream_window may not exceed max_connection_buffer")

    @classmethod
    def from_channel_arguments(cls, arguments: Mapping[str, Any]) -> Limits:
        """The limits `--grpc_channel_arguments` sets. A value below 1 means the default, as grpcio
        reads -1 as "no limit" (ours are finite)."""
        values: dict[str, Any] = {}
        for key, (field, scale) in LIMIT_KEYS.items():
            if key not in arguments:
                continue
            raw = int(arguments[key])
            if raw < 1:
                continue
            default = getattr(cls, field)
            values[field] = raw * scale if isinstance(default, float) else raw
        values.setdefault("max_frame_size", cls.max_frame_size)
        values["max_frame_size"] = min(max(values["max_frame_size"], DEFAULT_FRAME), MAX_FRAME_LIMIT)
        for field in ("max_receive_message", "max_send_message", "max_connection_buffer"):
            if field in values:
                values[field] = min(values[field], MAX_WINDOW)
        buffer = values.get("max_connection_buffer", cls.max_connection_buffer)
        values["stream_window"] = min(values.get("stream_window", cls.stream_window), buffer)
        return cls(**values)


# --grpc_channel_arguments key -> (Limits field, scale to the field's unit).
LIMIT_KEYS: dict[str, tuple[str, float]] = {
    "grpc.max_concurrent_streams": ("max_concurrent_streams", 1),
    "grpc.max_receive_message_length": ("max_receive_message", 1),
    "grpc.max_send_message_length": ("max_send_message", 1),
    "grpc.max_metadata_size": ("max_header_list_size", 1),
    "grpc.http2.max_frame_size": ("max_frame_size", 1),
    "grpc.max_allowed_incoming_connections": ("max_connections", 1),
    "grpc.server_handshake_timeout_ms": ("handshake_timeout", 1e-3),
    "grpc.max_connection_idle_ms": ("idle_timeout", 1e-3),
    "sigserve.http2.max_connection_buffer_bytes": ("max_connection_buffer", 1),
    "sigserve.http2.stream_window_bytes": ("stream_window", 1),
    "sigserve.http2.header_timeout_ms": ("header_timeout", 1e-3),
    "sigserve.http2.request_stall_timeout_ms": ("request_stall_timeout", 1e-3),
    "sigserve.http2.max_control_frames": ("max_control_frames", 1),
    "sigserve.http2.max_reset_streams": ("max_reset_streams", 1),
    "sigserve.http2.budget_interval_ms": ("budget_interval", 1e-3),
}
