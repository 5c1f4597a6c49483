"""The native transport's HTTP/2 core (`sigserve.server.http2`) in-process: no socket, no server,
no TensorFlow, a clock the test moves. Every frame type, every stream state transition (RFC 9113
§5.1), flow-control accounting both ways, CONTINUATION, padding, header validation (§8.2), the gRPC
message prefix, and every limit, budget and timeout."""

from __future__ import annotations

import struct

import hpack
import pytest

from sigserve.server.http2 import frames as F
from sigserve.server.http2.connection import (
    LAST_STREAM_ID,
    SHUTDOWN_PING,
    SHUTDOWN_PING_TIMEOUT,
    SHUTDOWN_QUIET,
    ServerConnection,
)
from sigserve.server.http2.events import (
    ConnectionTerminated,
    MessageReceived,
    MessageTooLarge,
    RequestEnded,
    RequestReceived,
    StreamReset,
    StreamWritable,
)
from sigserve.server.http2.limits import Limits
from tests.http2_peer import REQUEST, Peer, kinds, message, parse_frames


def terminated(events: list[object]) -> ConnectionTerminated:
    last = events[-1]
    assert isinstance(last, ConnectionTerminated) and not last.remote, events
    return last


def reset_of(peer: Peer, stream_id: int) -> int | None:
    return next((f.code for f in peer.read() if f.kind == F.RST_STREAM and f.stream_id == stream_id), None)


# -- the connection's start -------------------------------------------------------------------------


def test_the_server_announces_its_limits_and_opens_its_window() -> None:
    limits = Limits(max_concurrent_streams=7, max_connection_buffer=8 << 20, stream_window=1 << 16)
    peer = Peer(limits)
    settings, update = peer.first
    values = dict(struct.unpack_from(">HI", settings.payload, i) for i in range(0, len(settings.payload), 6))
    assert values == {
        F.S_ENABLE_PUSH: 0,
        F.S_MAX_CONCURRENT_STREAMS: 7,
        F.S_INITIAL_WINDOW_SIZE: 1 << 16,
        F.S_MAX_FRAME_SIZE: limits.max_frame_size,
        F.S_MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
    }
    assert update.kind == F.WINDOW_UPDATE and int.from_bytes(update.payload, "big") == (8 << 20) - 65_535


@pytest.mark.parametrize(
    "first",
    [b"GET / HTTP/1.1\r\n\r\n", F.PREFACE[:10] + b"X" * 20, b"\x16\x03\x01\x02\x00"],
    ids=["http1", "bad-preface", "tls-hello"],
)
def test_a_connection_that_is_not_http2_gets_goaway_protocol_error(first: bytes) -> None:
    conn = ServerConnection(clock=lambda: 0.0)
    event = terminated(conn.receive_data(first))
    assert event.error_code == F.PROTOCOL_ERROR and conn.terminated
    assert parse_frames(conn.data_to_send())[-1].kind == F.GOAWAY


def test_the_preface_may_arrive_in_pieces_and_must_be_followed_by_settings() -> None:
    conn = ServerConnection()
    for i in range(len(F.PREFACE)):
        assert conn.receive_data(F.PREFACE[i : i + 1]) == []
    assert terminated(conn.receive_data(F.frame(F.PING, 0, 0, b"12345678"))).error_code == F.PROTOCOL_ERROR


# -- frame by frame ---------------------------------------------------------------------------------


def test_a_call_made_of_frames() -> None:
    peer = Peer()
    events = peer.call(1, b"abc")
    assert kinds(events) == ["RequestReceived", "MessageReceived"]
    request, received = events
    assert isinstance(request, RequestReceived) and request.headers[":path"] == "/pkg.Service/Method"
    assert isinstance(received, MessageReceived)
    assert (received.data, received.end_stream, received.size, received.compressed) == (
        b"abc",
        True,
        8,
        False,
    )
    peer.conn.send_unary(1, b"xyz")
    headers, data, trailers = peer.read()
    assert peer.decode(headers)[":status"] == "200" and data.payload == message(b"xyz")
    assert trailers.flags & F.END_STREAM and peer.decode(trailers) == {"grpc-status": "0"}
    assert not peer.conn.streams


def test_padding_and_priority_on_headers_and_data() -> None:
    peer = Peer()
    block = peer.block()
    headers = bytes((3,)) + struct.pack(">IB", 0, 200) + block + b"\0\0\0"
    body = message(b"padded")
    data = bytes((250,)) + body + bytes(250)
    events = peer.send(
        F.frame(F.HEADERS, F.END_HEADERS | F.PADDED | F.PRIORITY_FLAG, 1, headers),
        F.frame(F.DATA, F.PADDED | F.END_STREAM, 1, data),
    )
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"padded"]
    # The padding was given back to the connection's buffer at once; the message waits for release.
    assert peer.conn.buffered == len(body)


@pytest.mark.parametrize("kind", [F.HEADERS, F.DATA])
def test_padding_longer_than_the_frame_is_a_protocol_error(kind: int) -> None:
    peer = Peer()
    if kind == F.DATA:
        peer.send(peer.headers(1))
    assert terminated(
        peer.send(F.frame(kind, F.PADDED | F.END_HEADERS, 1, bytes((9,)) + b"abc"))
    ).error_code == (F.PROTOCOL_ERROR)


def test_continuation_carries_a_header_block_in_pieces() -> None:
    peer = Peer()
    block = peer.block(**{"x-long": "v" * 5000})
    pieces = [block[:7], block[7:100], block[100:]]
    events = peer.send(
        F.frame(F.HEADERS, 0, 1, pieces[0]),
        F.frame(F.CONTINUATION, 0, 1, pieces[1]),
        F.frame(F.CONTINUATION, F.END_HEADERS, 1, pieces[2]),
    )
    assert isinstance(events[0], RequestReceived) and events[0].headers["x-long"] == "v" * 5000


@pytest.mark.parametrize(
    "between",
    [F.frame(F.PING, 0, 0, b"12345678"), F.frame(F.CONTINUATION, F.END_HEADERS, 3, b""), F.frame(99, 0, 0)],
    ids=["other-frame", "other-stream", "unknown-type"],
)
def test_a_header_block_must_not_be_interrupted(between: bytes) -> None:
    peer = Peer()
    peer.send(F.frame(F.HEADERS, 0, 1, peer.block()[:5]))
    assert terminated(peer.send(between)).error_code == F.PROTOCOL_ERROR


def test_continuation_without_a_header_block_is_a_protocol_error() -> None:
    peer = Peer()
    assert (
        terminated(peer.send(F.frame(F.CONTINUATION, F.END_HEADERS, 1, b""))).error_code == F.PROTOCOL_ERROR
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (F.frame(F.DATA, 0, 0, b"x"), F.PROTOCOL_ERROR),
        (F.frame(F.DATA, 0, 5, b"x"), F.PROTOCOL_ERROR),  # an idle stream
        (F.frame(F.HEADERS, F.END_HEADERS, 0, b""), F.PROTOCOL_ERROR),
        (F.frame(F.HEADERS, F.END_HEADERS, 2, b""), F.PROTOCOL_ERROR),  # a server's stream id
        (F.frame(F.HEADERS, F.END_HEADERS | F.PRIORITY_FLAG, 1, b"\0\0"), F.FRAME_SIZE_ERROR),
        (F.frame(F.PRIORITY, 0, 0, bytes(5)), F.PROTOCOL_ERROR),
        (F.frame(F.RST_STREAM, 0, 0, bytes(4)), F.PROTOCOL_ERROR),
        (F.frame(F.RST_STREAM, 0, 9, bytes(4)), F.PROTOCOL_ERROR),  # an idle stream
        (F.frame(F.RST_STREAM, 0, 1, bytes(3)), F.FRAME_SIZE_ERROR),
        (F.frame(F.SETTINGS, 0, 1, b""), F.PROTOCOL_ERROR),
        (F.frame(F.SETTINGS, F.ACK, 0, bytes(6)), F.FRAME_SIZE_ERROR),
        (F.frame(F.SETTINGS, 0, 0, bytes(5)), F.FRAME_SIZE_ERROR),
        (F.settings_frame({F.S_INITIAL_WINDOW_SIZE: 2**31}), F.FLOW_CONTROL_ERROR),
        (F.settings_frame({F.S_MAX_FRAME_SIZE: 100}), F.PROTOCOL_ERROR),
        (F.settings_frame({F.S_MAX_FRAME_SIZE: 2**24}), F.PROTOCOL_ERROR),
        (F.settings_frame({F.S_ENABLE_PUSH: 2}), F.PROTOCOL_ERROR),
        (F.frame(F.PUSH_PROMISE, F.END_HEADERS, 1, bytes(4)), F.PROTOCOL_ERROR),
        (F.frame(F.PING, 0, 1, bytes(8)), F.PROTOCOL_ERROR),
        (F.frame(F.PING, 0, 0, bytes(7)), F.FRAME_SIZE_ERROR),
        (F.frame(F.GOAWAY, 0, 1, bytes(8)), F.PROTOCOL_ERROR),
        (F.frame(F.GOAWAY, 0, 0, bytes(7)), F.FRAME_SIZE_ERROR),
        (F.frame(F.WINDOW_UPDATE, 0, 0, bytes(4)), F.PROTOCOL_ERROR),  # zero increment
        (F.frame(F.WINDOW_UPDATE, 0, 0, bytes(3)), F.FRAME_SIZE_ERROR),
        (F.frame(F.WINDOW_UPDATE, 0, 0, (2**31 - 1).to_bytes(4, "big")), F.FLOW_CONTROL_ERROR),
        (F.frame(F.WINDOW_UPDATE, 0, 7, bytes((0, 0, 0, 1))), F.PROTOCOL_ERROR),  # an idle stream
        (b"\x10\x00\x01" + bytes((F.DATA, 0)) + (1).to_bytes(4, "big"), F.FRAME_SIZE_ERROR),  # > max frame
    ],
)
def test_connection_errors(frame: bytes, code: int) -> None:
    peer = Peer(Limits(max_frame_size=1 << 20))
    event = terminated(peer.send(frame))
    assert event.error_code == code
    goaway = peer.goaway()
    assert goaway is not None and goaway.code == code
    assert peer.conn.receive_data(F.frame(F.PING, 0, 0, bytes(8))) == []  # nothing more is read


def test_ping_is_answered_and_unknown_frames_and_priority_are_ignored() -> None:
    peer = Peer()
    assert (
        peer.send(
            F.frame(F.PING, 0, 0, b"abcdefgh"),
            F.frame(F.PING, F.ACK, 0, b"whatever"),
            F.frame(0x42, 0xFF, 3, b"extension"),
            F.frame(F.PRIORITY, 0, 5, struct.pack(">IB", 1, 7)),
        )
        == []
    )
    (pong,) = peer.read()
    assert (pong.kind, pong.flags, pong.payload) == (F.PING, F.ACK, b"abcdefgh")
    assert peer.call(5)  # PRIORITY did not open stream 5


def test_stream_errors_reset_the_stream_and_the_connection_goes_on() -> None:
    peer = Peer()
    events = peer.send(
        F.frame(F.HEADERS, F.END_HEADERS | F.PRIORITY_FLAG, 1, struct.pack(">IB", 1, 0) + peer.block())
    )
    assert reset_of(peer, 1) == F.PROTOCOL_ERROR and not events  # a stream depending on itself
    peer.send(peer.headers(3))
    assert kinds(peer.send(F.frame(F.PRIORITY, 0, 3, bytes(4)))) == ["StreamReset"]
    assert reset_of(peer, 3) == F.FRAME_SIZE_ERROR
    peer.send(peer.headers(5))
    assert kinds(peer.send(F.frame(F.WINDOW_UPDATE, 0, 5, bytes(4)))) == ["StreamReset"]  # zero increment
    assert reset_of(peer, 5) == F.PROTOCOL_ERROR
    peer.send(peer.headers(7))
    big = (2**31 - 1 - 65_535 + 1).to_bytes(4, "big")
    assert kinds(peer.send(F.frame(F.WINDOW_UPDATE, 0, 7, big))) == ["StreamReset"]  # overflow (§6.9.1)
    assert reset_of(peer, 7) == F.FLOW_CONTROL_ERROR
    assert kinds(peer.call(9)) == ["RequestReceived", "MessageReceived"]


def test_peer_goaway_ends_the_connection_once_its_streams_are_answered() -> None:
    peer = Peer()
    peer.call(1)
    events = peer.send(F.goaway(1, F.NO_ERROR, b"bye"))
    assert isinstance(events[0], ConnectionTerminated) and events[0].remote and events[0].message == "bye"
    assert not peer.conn.want_close
    peer.conn.send_unary(1, b"ok")
    assert peer.conn.want_close


# -- stream states (RFC 9113 §5.1) ------------------------------------------------------------------


def test_idle_to_open_to_half_closed_remote_to_closed() -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    stream = peer.conn.streams[1]
    assert stream.remote_open  # open
    peer.send(peer.data(1, message(b"a")))
    assert stream.remote_open
    peer.send(peer.data(1, b"", end=True))  # half-closed (remote)
    assert not stream.remote_open and 1 in peer.conn.streams
    peer.conn.send_unary(1, b"b")  # closed
    assert 1 not in peer.conn.streams


def test_headers_with_end_stream_open_a_half_closed_stream() -> None:
    peer = Peer()
    events = peer.send(peer.headers(1, end=True))
    assert isinstance(events[0], RequestReceived) and events[0].end_stream
    assert not peer.conn.streams[1].remote_open


def test_answering_before_the_request_ends_resets_the_rest_with_no_error() -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    peer.conn.send_status(1, 3, "no")
    frames = peer.read()
    assert frames[0].flags & F.END_STREAM and frames[1].kind == F.RST_STREAM and frames[1].code == F.NO_ERROR
    # Frames the client sent before it saw the reset are ignored (§5.1 closed), window given back.
    assert (
        peer.send(peer.data(1, b"late" * 100, end=True), F.frame(F.WINDOW_UPDATE, 0, 1, bytes((0, 0, 0, 9))))
        == []
    )
    assert peer.conn.buffered == 0 and not peer.conn.terminated


@pytest.mark.parametrize("late", ["data", "headers"])
def test_frames_on_a_half_closed_remote_stream_are_stream_closed(late: str) -> None:
    peer = Peer()
    peer.call(1)
    frame = peer.data(1, b"x") if late == "data" else peer.headers(1, end=True, **{"x-again": "1"})
    assert kinds(peer.send(frame)) == ["StreamReset"]
    assert reset_of(peer, 1) == F.STREAM_CLOSED
    # WINDOW_UPDATE, PRIORITY and RST_STREAM are allowed there; a later stream works.
    assert kinds(peer.call(3)) == ["RequestReceived", "MessageReceived"]


@pytest.mark.parametrize("late", ["data", "headers"])
def test_frames_on_a_stream_closed_by_end_stream_are_a_connection_error(late: str) -> None:
    peer = Peer()
    peer.call(1)
    peer.conn.send_unary(1, b"done")
    peer.read()
    assert (
        peer.send(F.frame(F.WINDOW_UPDATE, 0, 1, bytes((0, 0, 0, 1))), F.frame(F.PRIORITY, 0, 1, bytes(5)))
        == []
    )
    frame = peer.data(1, b"x") if late == "data" else peer.headers(1, end=True)
    assert terminated(peer.send(frame)).error_code == F.STREAM_CLOSED


def test_frames_on_a_stream_the_peer_reset_are_stream_closed() -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    events = peer.send(F.frame(F.RST_STREAM, 0, 1, F.CANCEL.to_bytes(4, "big")))
    assert isinstance(events[0], StreamReset) and events[0].remote and events[0].error_code == F.CANCEL
    peer.conn.call_ended()
    assert peer.send(peer.data(1, b"x")) == []
    assert reset_of(peer, 1) == F.STREAM_CLOSED


def test_a_stream_id_below_the_last_one_is_closed() -> None:
    peer = Peer()
    peer.call(5)
    assert terminated(peer.send(peer.headers(3))).error_code == F.STREAM_CLOSED


def test_trailers_end_the_request() -> None:
    peer = Peer()
    peer.send(peer.headers(1), peer.data(1, message(b"m")))
    trailers = bytes(peer.encoder.encode([("x-trailer", "t")]))
    events = peer.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 1, trailers))
    assert kinds(events) == ["RequestEnded"] and not peer.conn.streams[1].remote_open


@pytest.mark.parametrize(
    "trailers", [[("x-trailer", "t")], [(":path", "/x")]], ids=["no-end-stream", "pseudo-header"]
)
def test_malformed_trailers_reset_the_stream(trailers: list[tuple[str, str]]) -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    flags = F.END_HEADERS | (0 if trailers[0][0] == "x-trailer" else F.END_STREAM)
    peer.send(F.frame(F.HEADERS, flags, 1, bytes(peer.encoder.encode(trailers))))
    assert reset_of(peer, 1) == F.PROTOCOL_ERROR


# -- header validation (§8.2, §8.3) -----------------------------------------------------------------


def _without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in REQUEST if k != name]


@pytest.mark.parametrize(
    "headers",
    [
        [*REQUEST, ("X-Upper", "1")],
        [*REQUEST, ("connection", "keep-alive")],
        [*REQUEST, ("transfer-encoding", "chunked")],
        [*REQUEST, ("upgrade", "h2c")],
        [*_without("te"), ("te", "gzip")],
        [*REQUEST, (":method", "POST")],  # a pseudo-header after regular ones, and twice
        [(":status", "200"), *REQUEST],
        [(":protocol", "websocket"), *REQUEST],
        _without(":path"),
        [*_without(":path"), (":path", "")],
        _without(":method"),
        _without(":scheme"),
        [(":method", "CONNECT"), (":authority", "h"), (":path", "/x")],
        [*REQUEST, ("x-bad", "a\nb")],
        [*REQUEST, ("x-bad", " leading")],
        [*REQUEST, ("bad:name", "1")],
        [*REQUEST, ("", "empty name")],
        [*REQUEST, ("content-length", "5")],  # and no body
        [*REQUEST, ("content-length", "five")],
    ],
)
def test_malformed_requests_are_stream_errors(headers: list[tuple[str, str]]) -> None:
    peer = Peer()
    assert peer.send(peer.headers(1, end=True, block=peer.block(headers))) == []
    assert reset_of(peer, 1) == F.PROTOCOL_ERROR
    # The block was decoded, so the HPACK table is still in step: the next request works.
    assert kinds(peer.call(3)) == ["RequestReceived", "MessageReceived"]


def test_content_length_must_match_the_body() -> None:
    peer = Peer()
    peer.send(peer.headers(1, **{"content-length": "3"}), peer.data(1, b"abcd", end=True))
    assert reset_of(peer, 1) == F.PROTOCOL_ERROR
    events = peer.send(peer.headers(3, **{"content-length": "9"}), peer.data(3, message(b"abcd"), end=True))
    assert kinds(events) == ["RequestReceived", "MessageReceived"]


def test_header_values_that_are_not_utf8_are_kept_as_latin1() -> None:
    peer = Peer()
    block = peer.block() + bytes(peer.encoder.encode([(b"x-legacy", b"caf\xe9")]))
    (event,) = peer.send(peer.headers(1, end=True, block=block))
    assert isinstance(event, RequestReceived) and event.headers["x-legacy"] == "café"


def test_a_block_that_is_not_hpack_is_a_compression_error() -> None:
    peer = Peer()
    assert (
        terminated(peer.send(peer.headers(1, block=b"\xff\xff\xff\xff\xff"))).error_code
        == F.COMPRESSION_ERROR
    )


# -- the gRPC message prefix -------------------------------------------------------------------------


def test_messages_are_cut_from_any_framing() -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    wire = message(b"first") + message(b"") + message(b"third" * 1000, compressed=True)
    events = []
    for i in range(0, len(wire), 7):
        events += peer.send(peer.data(1, wire[i : i + 7]))
    events += peer.send(peer.data(1, b"", end=True))
    got = [(e.data, e.compressed) for e in events if isinstance(e, MessageReceived)]
    assert got == [(b"first", False), (b"", False), (b"third" * 1000, True)]
    assert isinstance(events[-1], RequestEnded) and events[-1].leftover == 0


def test_two_messages_in_one_frame_and_a_cut_off_third() -> None:
    peer = Peer()
    peer.send(peer.headers(1))
    events = peer.send(peer.data(1, message(b"a") + message(b"b") + message(b"ccc")[:6], end=True))
    assert kinds(events) == ["MessageReceived", "MessageReceived", "RequestEnded"]
    assert events[2].leftover == 6  # type: ignore[attr-defined]


def test_a_4_gib_declared_message_is_refused_from_its_prefix() -> None:
    peer = Peer(Limits(max_receive_message=1 << 20))
    events = peer.send(peer.headers(1), peer.data(1, b"\x00\xff\xff\xff\xff" + bytes(1000)))
    assert isinstance(events[-1], MessageTooLarge) and "4294967295 vs. 1048576" in events[-1].message
    assert peer.conn.buffered == 0  # nothing of it is held
    peer.send(*(peer.data(1, bytes(16_000)) for _ in range(10)))
    assert peer.conn.buffered == 0  # nor of what follows
    peer.conn.send_status(1, 8, events[-1].message)
    assert reset_of(peer, 1) == F.NO_ERROR  # answered; the rest of the request declined


def test_a_message_larger_than_the_connection_buffer_is_refused() -> None:
    peer = Peer(Limits(max_connection_buffer=1 << 20, stream_window=1 << 16))
    events = peer.send(peer.headers(1), peer.data(1, b"\x00" + (2 << 20).to_bytes(4, "big")))
    assert isinstance(events[-1], MessageTooLarge) and "max_connection_buffer_bytes" in events[-1].message


# -- flow control ------------------------------------------------------------------------------------


def test_the_connection_window_is_what_the_buffer_can_hold() -> None:
    limits = Limits(max_connection_buffer=1 << 20, stream_window=1 << 16)
    peer = Peer(limits)
    # 16 streams of 60,000-byte messages: each fits a stream's window; together they fill 96 % of
    # the buffer. Nothing is refilled while the application holds them.
    for sid in range(1, 33, 2):
        peer.send(peer.headers(sid), peer.data(sid, message(bytes(59_995)), end=True))
    assert peer.conn.buffered == 16 * 60_000
    assert not [f for f in peer.read() if f.kind == F.WINDOW_UPDATE]
    # What is left of the window can be sent; one byte more is a connection error.
    left = (1 << 20) - 16 * 60_000
    peer.send(peer.headers(33), peer.headers(35))
    peer.send(peer.data(33, bytes(60_000)), peer.data(35, bytes(left - 60_000)))
    assert not peer.conn.terminated
    assert terminated(peer.send(peer.data(35, b"x"))).error_code == F.FLOW_CONTROL_ERROR


def test_released_bytes_come_back_as_window_in_large_steps() -> None:
    limits = Limits(max_connection_buffer=1 << 20, stream_window=1 << 16)
    peer = Peer(limits)
    sizes = []
    for sid in range(1, 41, 2):
        (_, received) = peer.call(sid, bytes(30_000))
        assert isinstance(received, MessageReceived)
        peer.conn.release(received.size)
        sizes += [int.from_bytes(f.payload, "big") for f in peer.read() if f.kind == F.WINDOW_UPDATE]
    # Refilled once a sixteenth of the buffer had come back, in one update, not per message.
    assert sizes and all(size >= (1 << 20) // 16 for size in sizes)
    assert peer.conn.buffered == 0


def test_a_large_message_gets_its_window_when_the_buffer_can_hold_all_of_it() -> None:
    limits = Limits(max_connection_buffer=1 << 20, stream_window=1 << 16)
    peer = Peer(limits)
    size = 600_000
    first = message(bytes(size))
    peer.send(peer.headers(1), peer.data(1, first[:1000]))
    (grant,) = [f for f in peer.read() if f.kind == F.WINDOW_UPDATE and f.stream_id == 1]
    assert int.from_bytes(grant.payload, "big") == size + 5 - 1000 - (1 << 16) + 1000
    # A second one does not fit beside it: it waits (no window), so neither is left half-received.
    second = message(bytes(size))
    peer.send(peer.headers(3), peer.data(3, second[:1000]))
    assert not [f for f in peer.read() if f.kind == F.WINDOW_UPDATE and f.stream_id == 3]
    events = peer.send(*(peer.data(1, first[i : i + 16384]) for i in range(1000, len(first), 16384)))
    events += peer.send(peer.data(1, b"", end=True))
    (received,) = [e for e in events if isinstance(e, MessageReceived)]
    peer.conn.release(received.size)  # the application is done with the first: room for the second
    assert [f for f in peer.read() if f.kind == F.WINDOW_UPDATE and f.stream_id == 3]


def test_stream_windows_refill_as_a_streaming_call_takes_its_messages() -> None:
    limits = Limits(max_connection_buffer=1 << 20, stream_window=1 << 16)
    peer = Peer(limits)
    peer.send(peer.headers(1))
    peer.conn.allow_slow_request(1)
    events = peer.send(*(peer.data(1, message(bytes(10_000))) for _ in range(6)))
    assert len(events) == 6
    for event in events:
        assert isinstance(event, MessageReceived)
        peer.conn.release(event.size, 1)
    updates = [f for f in peer.read() if f.kind == F.WINDOW_UPDATE and f.stream_id == 1]
    assert sum(int.from_bytes(f.payload, "big") for f in updates) == 60_030
    peer.send(*(peer.data(1, message(bytes(10_000))) for _ in range(6)))  # within the window again
    assert not peer.conn.terminated


def test_answers_wait_for_the_peers_windows_and_frame_size() -> None:
    peer = Peer(settings={F.S_INITIAL_WINDOW_SIZE: 10})
    peer.call(1)
    peer.conn.send_unary(1, bytes(30))
    frames = peer.read()
    assert [f.kind for f in frames] == [F.HEADERS, F.DATA] and len(frames[1].payload) == 10
    peer.send(F.frame(F.WINDOW_UPDATE, 0, 1, (15).to_bytes(4, "big")))
    assert [len(f.payload) for f in peer.read()] == [15]
    peer.send(F.settings_frame({F.S_INITIAL_WINDOW_SIZE: 1000}))  # widens open streams' windows
    frames = peer.read()
    assert [f.kind for f in frames] == [F.SETTINGS, F.DATA, F.HEADERS] and len(frames[1].payload) == 10
    assert frames[2].flags & F.END_STREAM


def test_the_connection_send_window_and_max_frame_size() -> None:
    peer = Peer(settings={F.S_INITIAL_WINDOW_SIZE: 2**31 - 1})
    peer.call(1)
    peer.conn.send_unary(1, bytes(100_000))
    sent = [len(f.payload) for f in peer.read() if f.kind == F.DATA]
    assert sent == [16_384] * 3 + [65_535 - 3 * 16_384]  # the connection's 65,535 in 16 KiB frames
    peer.send(F.frame(F.WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
    frames = peer.read()
    assert sum(len(f.payload) for f in frames if f.kind == F.DATA) == 100_005 - 65_535
    assert frames[-1].kind == F.HEADERS and frames[-1].flags & F.END_STREAM


def test_a_streaming_answer_is_told_when_it_may_go_on() -> None:
    peer = Peer(settings={F.S_INITIAL_WINDOW_SIZE: 100})
    peer.call(1)
    assert peer.conn.send_message(1, bytes(50))
    assert not peer.conn.send_message(1, bytes(80))  # 45 of 85 bytes went out
    events = peer.send(F.frame(F.WINDOW_UPDATE, 0, 1, (100).to_bytes(4, "big")))
    assert kinds(events) == ["StreamWritable"] and isinstance(events[0], StreamWritable)
    peer.conn.send_status(1, 0)
    assert peer.read()[-1].flags & F.END_STREAM


def test_an_initial_window_change_that_overflows_a_stream_is_a_connection_error() -> None:
    peer = Peer()
    peer.call(1)
    peer.send(F.frame(F.WINDOW_UPDATE, 0, 1, (2**31 - 1 - 65_535).to_bytes(4, "big")))
    assert terminated(peer.send(F.settings_frame({F.S_INITIAL_WINDOW_SIZE: 65_536}))).error_code == (
        F.FLOW_CONTROL_ERROR
    )


def test_answers_larger_than_max_send_are_resource_exhausted() -> None:
    peer = Peer(Limits(max_send_message=10))
    peer.call(1)
    peer.conn.send_unary(1, bytes(11))
    (trailers,) = peer.read()
    assert peer.decode(trailers)["grpc-status"] == "8"


def test_a_non_grpc_request_gets_an_http_status() -> None:
    peer = Peer()
    peer.send(peer.headers(1, end=True))
    peer.conn.send_http_status(1, b"415", 2, "use gRPC")
    (headers,) = peer.read()
    assert peer.decode(headers)[":status"] == "415" and headers.flags & F.END_STREAM


# -- limits and budgets ------------------------------------------------------------------------------


def test_streams_past_the_limit_are_refused_and_reset_ones_keep_their_place_until_their_work_ends() -> None:
    peer = Peer(Limits(max_concurrent_streams=2))
    peer.send(peer.headers(1), peer.headers(3))
    peer.send(peer.headers(5))
    assert reset_of(peer, 5) == F.REFUSED_STREAM
    # Stream 1 is reset while its call runs: its place stays taken until the application says so.
    events = peer.conn.receive_data(F.frame(F.RST_STREAM, 0, 1, bytes(4)) + peer.headers(7))
    assert kinds(events) == ["StreamReset"] and peer.conn.paused  # stopped before stream 7
    assert kinds(peer.conn.receive_data(b"")) == []
    assert reset_of(peer, 7) == F.REFUSED_STREAM
    peer.conn.call_ended()
    assert kinds(peer.send(peer.headers(9))) == ["RequestReceived"]


def test_a_header_list_over_the_limit_is_stopped_while_decoding() -> None:
    """An HPACK bomb: one 4 KB header in the table, then a small block that refers to it a thousand
    times (4 MB decoded); hpack stops at the limit instead of building the list."""
    peer = Peer(Limits(max_header_list_size=16 << 10))
    peer.send(peer.headers(1, end=True, **{"x-big": "v" * 4000}))
    index = bytes(peer.encoder.encode([("x-big", "v" * 4000)]))
    assert len(index) == 1
    events = peer.send(peer.headers(3, end=True, block=peer.block() + index * 1000))
    assert terminated(events).error_code == F.ENHANCE_YOUR_CALM


def test_a_raw_header_block_past_four_times_the_limit_is_refused() -> None:
    peer = Peer(Limits(max_header_list_size=16 << 10))
    peer.send(F.frame(F.HEADERS, 0, 1, peer.block()))
    for _ in range(4):
        events = peer.send(F.frame(F.CONTINUATION, 0, 1, bytes(16 << 10)))
    assert terminated(events).error_code == F.ENHANCE_YOUR_CALM


@pytest.mark.parametrize(
    "flood",
    [
        F.frame(F.PING, 0, 0, bytes(8)),
        F.settings_frame({}),
        F.frame(F.PRIORITY, 0, 3, bytes(5)),
        F.frame(F.WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")),
        F.frame(F.DATA, 0, 1, b""),
        F.frame(0x0F, 0, 0, b"ext"),
    ],
    ids=["ping", "settings", "priority", "window-update", "empty-data", "unknown"],
)
def test_floods_of_frames_that_do_no_work_get_enhance_your_calm(flood: bytes) -> None:
    limits = Limits(max_control_frames=50)
    peer = Peer(limits)
    peer.send(peer.headers(1))  # one stream opened: one frame more allowed
    assert not peer.send(flood * 50) or not peer.conn.terminated
    assert terminated(peer.send(flood)).error_code == F.ENHANCE_YOUR_CALM
    assert b"control frames" in peer.goaway().payload  # type: ignore[union-attr]


def test_empty_continuation_floods_get_enhance_your_calm() -> None:
    peer = Peer(Limits(max_control_frames=100))
    peer.send(F.frame(F.HEADERS, 0, 1, peer.block()))
    events = peer.send(F.frame(F.CONTINUATION, 0, 1, b"") * 1000)
    assert terminated(events).error_code == F.ENHANCE_YOUR_CALM


def test_the_control_budget_is_per_interval_and_grows_with_work() -> None:
    limits = Limits(max_control_frames=10, budget_interval=1.0)
    peer = Peer(limits)
    ping = F.frame(F.PING, 0, 0, bytes(8))
    for _ in range(5):  # 9 pings a second, for five seconds
        peer.send(ping * 9)
        peer.clock.now += 1.0
    assert not peer.conn.terminated
    # Work earns room: streams opened and DATA frames sent.
    for sid in range(1, 41, 2):
        peer.call(sid)
        peer.conn.send_unary(sid, b"x")
    peer.send(ping * 45)
    assert not peer.conn.terminated


def test_rapid_reset_gets_enhance_your_calm() -> None:
    limits = Limits(max_reset_streams=20, max_concurrent_streams=10)
    peer = Peer(limits)
    events: list[object] = []
    for sid in range(1, 200, 2):
        events += peer.send(peer.headers(sid), F.frame(F.RST_STREAM, 0, sid, F.CANCEL.to_bytes(4, "big")))
        for _ in [e for e in events[-2:] if isinstance(e, StreamReset)]:
            peer.conn.call_ended()
        if peer.conn.terminated:
            break
    assert terminated(events).error_code == F.ENHANCE_YOUR_CALM
    assert sid == 2 * 31 - 1  # 30 resets allowed (20 + a full set of 10 streams), the 31st is not


def test_made_you_reset_gets_enhance_your_calm() -> None:
    """The server-side reset pattern (CVE-2025-8671): frames that make the server reset streams."""
    limits = Limits(max_reset_streams=20, max_concurrent_streams=10)
    peer = Peer(limits)
    events: list[object] = []
    for sid in range(1, 200, 2):
        events += peer.send(peer.headers(sid), F.frame(F.WINDOW_UPDATE, 0, sid, bytes(4)))
        for _ in [e for e in events[-2:] if isinstance(e, StreamReset)]:
            peer.conn.call_ended()
        if peer.conn.terminated:
            break
    assert terminated(events).error_code == F.ENHANCE_YOUR_CALM and sid < 100


def test_answered_calls_earn_resets() -> None:
    limits = Limits(max_reset_streams=5, max_concurrent_streams=5)
    peer = Peer(limits)
    for sid in range(1, 81, 4):
        peer.call(sid)
        peer.conn.send_unary(sid, b"ok")
        peer.send(peer.headers(sid + 2), F.frame(F.RST_STREAM, 0, sid + 2, bytes(4)))
        peer.conn.call_ended()
    assert not peer.conn.terminated


# -- timeouts ---------------------------------------------------------------------------------------


def test_a_connection_that_sends_no_preface_is_closed_after_the_handshake_timeout() -> None:
    clock = [0.0]
    conn = ServerConnection(Limits(handshake_timeout=10), clock=lambda: clock[0])
    conn.receive_data(F.PREFACE[:5])
    clock[0] = 9.9
    assert conn.expire() == [] and not conn.want_close
    clock[0] = 10.0
    assert terminated(conn.expire()).error_code == F.NO_ERROR and conn.want_close
    assert b"preface" in parse_frames(conn.data_to_send())[-1].payload


def test_a_header_block_that_never_ends_is_closed_after_the_header_timeout() -> None:
    peer = Peer(Limits(header_timeout=5))
    peer.send(F.frame(F.HEADERS, 0, 1, peer.block()[:3]))
    peer.clock.now += 4.9
    assert peer.conn.expire() == []
    peer.clock.now += 0.1
    assert terminated(peer.conn.expire()).error_code == F.NO_ERROR


def test_a_stalled_request_is_answered_deadline_exceeded() -> None:
    peer = Peer(Limits(request_stall_timeout=30))
    peer.send(peer.headers(1), peer.data(1, b"\x00\x00"))
    peer.send(peer.headers(3), peer.data(3, message(b"whole"), end=True))  # complete: never stalls
    peer.clock.now += 20
    peer.send(peer.data(1, b"\x00"))  # progress moves its deadline
    peer.clock.now += 29
    assert peer.conn.expire() == []
    peer.clock.now += 1
    events = peer.conn.expire()
    assert kinds(events) == ["StreamReset"] and events[0].stream_id == 1  # type: ignore[attr-defined]
    trailers, rst = peer.read()
    assert peer.decode(trailers)["grpc-status"] == "4" and rst.code == F.NO_ERROR
    assert 3 in peer.conn.streams


def test_a_streaming_request_may_take_its_time() -> None:
    peer = Peer(Limits(request_stall_timeout=1))
    peer.send(peer.headers(1))
    peer.conn.allow_slow_request(1)
    peer.send(peer.data(1, message(b"a")))
    peer.clock.now += 100
    assert peer.conn.expire() == []


def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    peer = Peer(Limits(idle_timeout=300))
    peer.call(1)
    peer.clock.now += 1000
    assert peer.conn.expire() == []  # a stream is open
    peer.conn.send_unary(1, b"ok")
    peer.clock.now += 299
    assert peer.conn.expire() == []
    peer.send(F.frame(F.PING, 0, 0, bytes(8)))  # pings do not count as activity
    peer.clock.now += 1
    assert terminated(peer.conn.expire()).error_code == F.NO_ERROR


# -- shutdown ----------------------------------------------------------------------------------------


def test_graceful_shutdown_serves_every_stream_the_client_sent_before_it_knew() -> None:
    peer = Peer()
    peer.call(1)
    peer.conn.start_shutdown()
    first, ping = peer.read()
    assert first.kind == F.GOAWAY and int.from_bytes(first.payload[:4], "big") == LAST_STREAM_ID
    assert ping.kind == F.PING and ping.payload == SHUTDOWN_PING
    # A stream in flight when the client read the first GOAWAY is still served.
    assert kinds(peer.call(3)) == ["RequestReceived", "MessageReceived"]
    peer.send(F.frame(F.PING, F.ACK, 0, SHUTDOWN_PING))
    # grpc's client may write the ACK ahead of a call it had started: that call is served too.
    assert kinds(peer.call(5)) == ["RequestReceived", "MessageReceived"]
    peer.conn.expire()
    assert not peer.read()  # streams open: no second GOAWAY yet
    for sid in (1, 3, 5):
        peer.conn.send_unary(sid, b"a")
    peer.read()
    peer.clock.now += SHUTDOWN_QUIET - 0.1
    peer.conn.expire()
    assert not peer.read() and not peer.conn.want_close
    peer.clock.now += 0.1
    peer.conn.expire()
    (second,) = peer.read()
    assert int.from_bytes(second.payload[:4], "big") == 5 and second.code == F.NO_ERROR
    assert peer.conn.want_close
    peer.send(peer.headers(7))
    assert reset_of(peer, 7) == F.REFUSED_STREAM


def test_a_quiet_connection_gets_the_second_goaway_soon_without_the_ping_ack() -> None:
    peer = Peer()
    peer.clock.now += 5
    peer.conn.start_shutdown()
    peer.read()
    peer.clock.now += SHUTDOWN_QUIET
    peer.conn.expire()
    (second,) = peer.read()
    assert second.kind == F.GOAWAY and peer.conn.want_close


def test_graceful_shutdown_goes_on_without_the_ping_ack() -> None:
    peer = Peer()
    peer.call(1)  # a stream open: wait the full time for the ACK
    peer.conn.start_shutdown()
    peer.read()
    peer.clock.now += SHUTDOWN_PING_TIMEOUT - 0.1
    peer.conn.expire()
    assert not peer.read()  # still waiting for the ACK
    peer.clock.now += 0.1
    peer.conn.expire()
    (second,) = peer.read()
    assert second.kind == F.GOAWAY and int.from_bytes(second.payload[:4], "big") == 1
    peer.conn.send_unary(1, b"ok")
    assert peer.conn.want_close


def test_hpack_state_follows_refused_streams() -> None:
    """A refused stream's block is decoded all the same: the next block may refer to it."""
    peer = Peer(Limits(max_concurrent_streams=1))
    encoder = hpack.Encoder()
    peer.send(F.frame(F.HEADERS, F.END_HEADERS, 1, bytes(encoder.encode([*REQUEST, ("x-n", "1")]))))
    peer.send(F.frame(F.HEADERS, F.END_HEADERS, 3, bytes(encoder.encode([*REQUEST, ("x-n", "2")]))))
    peer.conn.send_status(1, 0)
    (event,) = peer.send(
        F.frame(F.HEADERS, F.END_HEADERS, 5, bytes(encoder.encode([*REQUEST, ("x-n", "2")])))
    )
    assert isinstance(event, RequestReceived) and event.headers["x-n"] == "2"


# -- settings ----------------------------------------------------------------------------------------


def test_limits_from_channel_arguments() -> None:
    limits = Limits.from_channel_arguments(
        {
            "grpc.max_concurrent_streams": 10,
            "grpc.max_connection_idle_ms": 1500,
            "grpc.server_handshake_timeout_ms": 250,
            "grpc.http2.max_frame_size": 1,  # below the protocol's minimum: raised to it
            "sigserve.http2.max_connection_buffer_bytes": 1 << 20,
            "sigserve.http2.max_control_frames": -1,  # grpcio's "no limit": the default
            "grpc.max_receive_message_length": 2**40,
            "grpc.primary_user_agent": "ignored",
        }
    )
    assert limits.max_concurrent_streams == 10
    assert limits.idle_timeout == 1.5 and limits.handshake_timeout == 0.25
    assert limits.max_frame_size == 16_384
    assert limits.max_connection_buffer == 1 << 20 and limits.stream_window == 1 << 20  # clipped to it
    assert limits.max_control_frames == Limits.max_control_frames
    assert limits.max_receive_message == 2**31 - 1
    assert Limits.from_channel_arguments({}) == Limits()
