"""Differential test of the HTTP/2 core against python-hyper's `h2` (the reference sans-IO
implementation): Hypothesis generates client frame sequences — valid calls and every kind of
mistake (stream ids out of order, frames on closed streams, malformed headers, bad SETTINGS,
window overflows, stray CONTINUATION, flow-control violations) — and feeds the same bytes, frame
by frame, to `ServerConnection` and to h2's server-side `H2Connection`. After each frame the two
must agree on which requests arrived (headers), how many body bytes and whether they ended, which
streams the peer reset, which streams the server reset and with what code, and whether and how the
connection ended.

Where the two disagree by design, the disagreement must be one of `DIFFERENCES`, each with the RFC
text that decides it; the example stops comparing there (the two states have parted). Any other
disagreement fails the test.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sigserve.server.http2 import events as ours
from sigserve.server.http2 import frames as F
from sigserve.server.http2.connection import ServerConnection
from sigserve.server.http2.limits import Limits
from tests.http2_peer import REQUEST, message, parse_frames

MAX_STREAMS = 5
WINDOW = 65_535

# (what sigserve did, what h2 did) -> why they differ. "stream:CODE" is RST_STREAM(CODE) on the
# frame's stream, "conn:CODE" a GOAWAY(CODE), "ignored" nothing at all.
DIFFERENCES: dict[tuple[str, str], str] = {
    ("stream:PROTOCOL_ERROR", "conn:PROTOCOL_ERROR"): (
        "A malformed request (RFC 9113 §8.1.1: 'MUST be treated as a stream error of type "
        "PROTOCOL_ERROR'), trailers without END_STREAM (§8.1), a stream depending on itself (§5.3.1) "
        "or a zero WINDOW_UPDATE increment on a stream (§6.9: 'stream error') reset the stream; h2 "
        "ends the connection."
    ),
    ("conn:COMPRESSION_ERROR", "conn:PROTOCOL_ERROR"): (
        "A header block that does not decode is COMPRESSION_ERROR (§4.3: 'MUST treat ... as a "
        "connection error of type COMPRESSION_ERROR'); h2 says PROTOCOL_ERROR."
    ),
    ("stream:REFUSED_STREAM", "conn:PROTOCOL_ERROR"): (
        "A stream over SETTINGS_MAX_CONCURRENT_STREAMS is refused (§5.1.2: 'stream error of type "
        "PROTOCOL_ERROR or REFUSED_STREAM'; REFUSED_STREAM tells the client it may retry); h2 ends "
        "the connection."
    ),
    ("stream:FLOW_CONTROL_ERROR", "conn:FLOW_CONTROL_ERROR"): (
        "A WINDOW_UPDATE that overflows a stream's window resets that stream (§6.9.1: 'terminate "
        "either the stream or the connection, as appropriate'); h2 ends the connection."
    ),
    ("conn:STREAM_CLOSED", "stream:STREAM_CLOSED"): (
        "DATA on a stream closed by END_STREAM both ways is a connection error (§5.1 'closed': "
        "'MAY treat ... as a connection error of type STREAM_CLOSED'); h2 resets the stream."
    ),
    ("conn:STREAM_CLOSED", "conn:PROTOCOL_ERROR"): (
        "DATA or HEADERS on a stream that was implicitly closed (a lower id than one already "
        "opened, §5.1.1) is STREAM_CLOSED, as for any closed stream; h2 says PROTOCOL_ERROR."
    ),
    ("ignored", "stream:STREAM_CLOSED"): (
        "Frames on a stream this side reset are ignored (§5.1: 'MUST ignore frames that it "
        "receives on closed streams after it has sent a RST_STREAM frame'); h2 resets it again."
    ),
    ("conn:STREAM_CLOSED", "stream:STREAM_CLOSED+conn:STREAM_CLOSED"): (
        "The same, for a stream h2 also ends the connection over."
    ),
    ("stream:STREAM_CLOSED", "conn:STREAM_CLOSED"): (
        "HEADERS on a half-closed (remote) stream is a stream error (§5.1 'half-closed (remote)': "
        "'MUST respond with a stream error of type STREAM_CLOSED'); h2 ends the connection."
    ),
    ("stream:STREAM_CLOSED", "conn:PROTOCOL_ERROR"): ("The same, where h2 says PROTOCOL_ERROR."),
    ("conn:PROTOCOL_ERROR", "ignored"): (
        "RST_STREAM or WINDOW_UPDATE on an idle stream is a connection error (§6.4: 'If a RST_STREAM "
        "frame identifying an idle stream is received, the recipient MUST treat this as a connection "
        "error of type PROTOCOL_ERROR'; §5.1 'idle'); h2 ignores it."
    ),
    ("ignored", "conn:PROTOCOL_ERROR"): (
        "A frame on a stream this side refused or reset is ignored (§5.1); h2 ends the connection."
    ),
}

CODE_NAMES = F.ERROR_NAMES


@dataclasses.dataclass
class Outcome:
    """What one frame did, as both implementations report it."""

    opened: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    body: dict[int, int] = dataclasses.field(default_factory=dict)
    ended: set[int] = dataclasses.field(default_factory=set)
    peer_resets: set[int] = dataclasses.field(default_factory=set)
    server_resets: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    connection_error: int | None = None

    def merge(self, other: Outcome) -> None:
        self.opened += other.opened
        for sid, size in other.body.items():
            self.body[sid] = self.body.get(sid, 0) + size
        self.ended |= other.ended
        self.peer_resets |= other.peer_resets
        self.server_resets |= other.server_resets
        if self.connection_error is None:
            self.connection_error = other.connection_error

    def action(self, stream_id: int) -> str:
        """The server's own reaction, in DIFFERENCES' terms."""
        parts = [f"stream:{CODE_NAMES[code]}" for sid, code in sorted(self.server_resets) if sid == stream_id]
        if self.connection_error is not None:
            parts.append(f"conn:{CODE_NAMES[self.connection_error]}")
        return "+".join(parts) or "ignored"


class Ours:
    def __init__(self) -> None:
        limits = Limits(
            max_concurrent_streams=MAX_STREAMS,
            max_connection_buffer=WINDOW,
            stream_window=WINDOW,
            max_frame_size=16_384,
            max_header_list_size=65_536,
            max_control_frames=10**9,
            max_reset_streams=10**9,
        )
        self.conn = ServerConnection(limits, clock=lambda: 0.0)
        self.conn.data_to_send()

    def feed(self, data: bytes) -> Outcome:
        out = Outcome()
        events = self.conn.receive_data(data)
        while self.conn.paused:
            events += self.conn.receive_data(b"")
        for e in events:
            if isinstance(e, ours.RequestReceived):
                out.opened.append((e.stream_id, dict(e.headers)))
                if e.end_stream:
                    out.ended.add(e.stream_id)
            elif isinstance(e, ours.MessageReceived):
                out.body[e.stream_id] = out.body.get(e.stream_id, 0) + e.size
                if e.end_stream:
                    out.ended.add(e.stream_id)
            elif isinstance(e, ours.RequestEnded):
                out.ended.add(e.stream_id)
                if e.leftover:
                    out.body[e.stream_id] = out.body.get(e.stream_id, 0) + e.leftover
            elif isinstance(e, ours.StreamReset):
                self.conn.call_ended()
                if e.remote:
                    out.peer_resets.add(e.stream_id)
            elif isinstance(e, ours.ConnectionTerminated) and not e.remote:
                out.connection_error = e.error_code
        _frames_into(out, self.conn.data_to_send())
        return out

    def answer(self, stream_id: int) -> None:
        self.conn.send_unary(stream_id, b"answer")
        self.conn.data_to_send()


class Theirs:
    def __init__(self) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings.max_concurrent_streams = MAX_STREAMS
        self.conn.initiate_connection()
        self.conn.data_to_send()
        self.dead = False

    def feed(self, data: bytes) -> Outcome:
        out = Outcome()
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            events = []
            out.connection_error = int(e.error_code)
            self.dead = True
        for e in events:
            if isinstance(e, h2.events.RequestReceived):
                headers: dict[str, str] = {}
                for name, value in e.headers:
                    key, text = bytes(name).decode("latin-1"), bytes(value).decode("latin-1")
                    headers[key] = headers[key] + "," + text if key in headers else text
                out.opened.append((e.stream_id, headers))
            elif isinstance(e, h2.events.DataReceived) and e.data:
                out.body[e.stream_id] = out.body.get(e.stream_id, 0) + len(e.data)
            elif isinstance(e, h2.events.StreamEnded):
                out.ended.add(e.stream_id)
            elif isinstance(e, h2.events.StreamReset) and e.remote_reset:
                out.peer_resets.add(e.stream_id)
        _frames_into(out, self.conn.data_to_send())
        return out

    def answer(self, stream_id: int) -> None:
        self.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        self.conn.send_data(stream_id, message(b"answer"))
        self.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        self.conn.data_to_send()


def _frames_into(out: Outcome, data: bytes) -> None:
    for f in parse_frames(data):
        if f.kind == F.RST_STREAM:
            out.server_resets.add((f.stream_id, f.code))
        elif f.kind == F.GOAWAY and f.code != F.NO_ERROR and out.connection_error is None:
            out.connection_error = f.code


# -- the frames a client sends -----------------------------------------------------------------------

# Choices repeat to weigh them: mostly well-formed traffic, so that sequences get deep before the
# mistake that ends them.
NEW_STREAMS = ["new"] * 6 + ["last"] * 2 + ["older", "zero", "even", "future"]
OPEN_STREAMS = ["last"] * 6 + ["older"] * 3 + ["new", "zero", "even", "future"]
HEADER_KINDS = (
    ["valid"] * 6
    + ["extra"] * 2
    + [
        "upper",
        "connection",
        "te",
        "no-path",
        "late-pseudo",
        "trailers",
        "bad-value",
        "garbage",
    ]
)
SETTINGS_KINDS = ["empty", "window", "frame-size"] * 2 + ["window-big", "frame-size-bad", "push-bad", "ack"]

streams = st.sampled_from(OPEN_STREAMS)
headers_op = st.tuples(
    st.just("headers"),
    st.sampled_from(NEW_STREAMS),
    st.booleans(),
    st.sampled_from(HEADER_KINDS),
    st.integers(0, 2),
)
data_op = st.tuples(st.just("data"), streams, st.booleans(), st.sampled_from([0, 1, 100, 16_000]))
answer_op = st.tuples(st.just("answer"))
rst_op = st.tuples(st.just("rst"), streams, st.sampled_from([F.NO_ERROR, F.CANCEL]))
window_op = st.tuples(st.just("window_update"), streams, st.sampled_from([0, 1, 1_000, 2**31 - 1]))
operations = st.one_of(
    *[headers_op] * 8,
    *[data_op] * 8,
    *[answer_op] * 4,
    rst_op,
    rst_op,
    window_op,
    window_op,
    st.tuples(st.just("priority"), st.sampled_from(NEW_STREAMS), st.booleans()),
    st.tuples(st.just("settings"), st.sampled_from(SETTINGS_KINDS)),
    st.tuples(st.just("ping"), st.booleans()),
    st.tuples(st.sampled_from(["continuation", "unknown"])),
)
# A few calls first, so that the mistakes land among streams in every state.
call = st.tuples(st.just("headers"), st.just("new"), st.booleans(), st.just("valid"), st.integers(0, 1))
opening = st.lists(
    st.one_of(call, st.tuples(st.just("data"), st.just("last"), st.booleans(), st.sampled_from([1, 100]))),
    max_size=5,
).map(lambda ops: [("headers", "new", False, "valid", 0), *ops])
sequences = st.tuples(opening, st.lists(operations, max_size=25)).map(lambda parts: parts[0] + parts[1])


class Client:
    """Turns operations into frames, choosing stream ids the way a confused client might."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.last = 0
        self.opened: list[int] = []

    def stream(self, choice: str, opens: bool = False) -> int:
        """A stream id; `opens`: the frame is HEADERS, so a new id becomes the "last" stream."""
        if choice in ("last", "older") and not self.opened:
            choice = "new"
        if choice == "new":
            self.last = self.last + 2 if self.last else 1
            if opens:
                self.opened.append(self.last)
            return self.last
        if choice == "last":
            return self.opened[-1]
        if choice == "older":
            return self.opened[0]
        return {"zero": 0, "even": 2, "future": self.last + 20}[choice]

    def block(self, kind: str, stream_id: int) -> bytes:
        request = [*REQUEST, ("x-stream", str(stream_id))]
        headers: list[tuple[str, str]] = {
            "valid": request,
            "extra": [*request, ("x-extra", "a" * 50), ("cookie", "a=1")],
            "upper": [*request, ("X-Upper", "1")],
            "connection": [*request, ("connection", "close")],
            "te": [*request[:5], ("te", "gzip")],
            "no-path": [h for h in request if h[0] != ":path"],
            "late-pseudo": [*request[1:], request[0]],
            "trailers": [("x-trailer", "t")],
            "bad-value": [*request, ("x-bad", "a\x00b")],
        }.get(kind, [])
        if kind == "garbage":
            return b"\xff\xfe\xfd"
        return bytes(self.encoder.encode(headers))

    def frames(self, op: tuple[Any, ...]) -> list[bytes]:
        kind = op[0]
        if kind == "headers":
            _, choice, end, header_kind, pieces = op
            sid = self.stream(choice, opens=True)
            block = self.block(header_kind, sid)
            flags = F.END_STREAM if end else 0
            if pieces == 0 or len(block) < 3:
                return [F.frame(F.HEADERS, flags | F.END_HEADERS, sid, block)]
            cuts = [0, *sorted({len(block) // 3, 2 * len(block) // 3}), len(block)]
            parts = [block[a:b] for a, b in itertools.pairwise(cuts)]
            out = [F.frame(F.HEADERS, flags, sid, parts[0])]
            for i, part in enumerate(parts[1:]):
                out.append(F.frame(F.CONTINUATION, F.END_HEADERS if i == len(parts) - 2 else 0, sid, part))
            return out
        if kind == "data":
            _, choice, end, size = op
            payload = message(bytes(size)) if size else b""
            return [F.frame(F.DATA, F.END_STREAM if end else 0, self.stream(choice), payload)]
        if kind == "rst":
            return [F.frame(F.RST_STREAM, 0, self.stream(op[1]), op[2].to_bytes(4, "big"))]
        if kind == "window_update":
            return [F.frame(F.WINDOW_UPDATE, 0, self.stream(op[1]), op[2].to_bytes(4, "big"))]
        if kind == "priority":
            sid = self.stream(op[1])
            return [F.frame(F.PRIORITY, 0, sid, struct.pack(">IB", sid if op[2] else 0, 15))]
        if kind == "settings":
            values = {
                "empty": {},
                "window": {F.S_INITIAL_WINDOW_SIZE: 100_000},
                "window-big": {F.S_INITIAL_WINDOW_SIZE: 2**31},
                "frame-size": {F.S_MAX_FRAME_SIZE: 32_768},
                "frame-size-bad": {F.S_MAX_FRAME_SIZE: 10},
                "push-bad": {F.S_ENABLE_PUSH: 3},
            }
            if op[1] == "ack":
                return [F.frame(F.SETTINGS, F.ACK, 0)]
            return [F.settings_frame(values[op[1]])]
        if kind == "ping":
            return [F.frame(F.PING, F.ACK if op[1] else 0, 0, b"12345678")]
        if kind == "continuation":
            return [F.frame(F.CONTINUATION, F.END_HEADERS, max(self.last, 1), b"")]
        if kind == "unknown":
            return [F.frame(0x21, 0, 0, b"extension")]
        return []


def _differs(a: Outcome, b: Outcome) -> bool:
    return (
        a.opened != b.opened
        or a.body != b.body
        or a.ended != b.ended
        or a.peer_resets != b.peer_resets
        or a.server_resets != b.server_resets
        or a.connection_error != b.connection_error
    )


def run(operations_list: list[tuple[Any, ...]]) -> str:
    """Feed both; returns 'same' or the DIFFERENCES entry where they parted."""
    mine, theirs, client = Ours(), Theirs(), Client()
    for outcome_pair in [(mine.feed(F.PREFACE), theirs.feed(F.PREFACE))]:
        assert not _differs(*outcome_pair)
    # The client's SETTINGS, and its ACK of the server's (h2 applies its own limits from then on).
    for first in (F.settings_frame({}), F.frame(F.SETTINGS, F.ACK, 0)):
        assert not _differs(mine.feed(first), theirs.feed(first))
    ended: set[int] = set()
    reset: set[int] = set()
    for op in operations_list:
        if op[0] == "answer":
            ready = sorted(ended - reset)
            if ready:
                sid = ready[0]
                mine.answer(sid)
                theirs.answer(sid)
                reset.add(sid)  # closed: not answered twice
            continue
        # A header block's frames are one step: where in the block an error is noticed may differ.
        pieces = client.frames(op)
        a, b = Outcome(), Outcome()
        for data in pieces:
            if a.connection_error is None:
                a.merge(mine.feed(data))
            if b.connection_error is None:
                b.merge(theirs.feed(data))
        if _differs(a, b):
            stream_id = int.from_bytes(pieces[0][5:9], "big") & 0x7FFFFFFF
            key = (a.action(stream_id), b.action(stream_id))
            assert key in DIFFERENCES, (
                f"undocumented difference on {parse_frames(pieces[0])[0]} after {operations_list}:\n"
                f"  sigserve: {a}\n  h2:       {b}"
            )
            return key[0] + " vs " + key[1]
        ended |= a.ended
        reset |= a.peer_resets | {sid for sid, _ in a.server_resets}
        if a.connection_error is not None:
            return f"same ({CODE_NAMES[a.connection_error]})"
    return "same"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences)
def test_the_core_agrees_with_h2_or_differs_as_documented(operations_list: list[tuple[Any, ...]]) -> None:
    event(run(operations_list))


def test_a_plain_exchange_is_the_same() -> None:
    ops: list[tuple[Any, ...]] = [
        ("headers", "new", False, "valid", 0),
        ("data", "last", False, 100),
        ("data", "last", True, 16_000),
        ("headers", "new", True, "extra", 2),
        ("answer",),
        ("ping", False),
        ("window_update", "zero", 1_000),
        ("priority", "new", False),
    ]
    assert run(ops) == "same"


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([("headers", "new", False, "upper", 0)], ("stream:PROTOCOL_ERROR", "conn:PROTOCOL_ERROR")),
        ([("headers", "new", False, "garbage", 0)], ("conn:COMPRESSION_ERROR", "conn:PROTOCOL_ERROR")),
        (
            [("headers", "new", False, "valid", 0)] * (MAX_STREAMS + 1),
            ("stream:REFUSED_STREAM", "conn:PROTOCOL_ERROR"),
        ),
        (
            [("headers", "new", True, "valid", 0), ("answer",), ("data", "last", False, 1)],
            ("conn:STREAM_CLOSED", "stream:STREAM_CLOSED"),
        ),
    ],
)
def test_each_documented_difference_happens(ops: list[tuple[Any, ...]], expected: tuple[str, str]) -> None:
    assert run(ops) == " vs ".join(expected)
