"""sigserve's own gRPC transport (`grpc_h2`) at the HTTP/2 level: hand-built frames on a raw socket
(padding, CONTINUATION, tiny flow-control windows, PING, RST_STREAM, bad prefaces, hostile bytes),
and grpcio clients for compression, health Watch, limits and graceful shutdown. The RPCs themselves
are covered for both transports in test_grpc_api.py."""

from __future__ import annotations

import gzip
import pathlib
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import grpc
import hpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigserve.codec import tensor
from sigserve.errors import SigserveError
from sigserve.protos import predict_pb2
from sigserve.server import grpc_h2
from sigserve.server.http2 import frames, grpc_wire
from sigserve.server.http2 import headers as h2headers
from sigserve.server.http2.limits import Limits
from tests.grpc_servers import (
    export_spin_model,
    fixture_models,
    grpc_target,
    rpc_error,
    start_server,
    tf_stubs,
)
from tests.raw_h2 import PREDICT, RawH2, frame, grpc_framed, predict_message
from tests.servers import ServerProcess

MAX_RECEIVE = 2 << 20

# -- the pure pieces -------------------------------------------------------------------------------


@given(st.integers(0, 16), st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=3000))
def test_status_block_decodes_to_the_status_and_message(code: int, message: str) -> None:
    for trailers_only in (False, True):
        block = grpc_wire.status_block(code, message, trailers_only=trailers_only)
        headers = dict(hpack.Decoder().decode(block))
        assert headers["grpc-status"] == str(code)
        assert urllib.parse.unquote(headers.get("grpc-message", "")) == message
        assert all(0x20 <= ord(c) < 0x7F for c in headers.get("grpc-message", ""))
        if trailers_only:
            assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
        assert h2headers.table_neutral(block)


@given(st.integers(0, 99_999_999), st.sampled_from("HMSmun"))
def test_grpc_timeout_units(value: int, unit: str) -> None:
    seconds = grpc_wire.parse_timeout(f"{value}{unit}")
    scale = {"H": 3600, "M": 60, "S": 1, "m": 1e-3, "u": 1e-6, "n": 1e-9}[unit]
    assert seconds == pytest.approx(value * scale)


@given(st.text(max_size=12))
def test_malformed_grpc_timeouts_read_as_none(text: str) -> None:
    digits = text[:-1]
    valid = 2 <= len(text) <= 9 and digits.isascii() and digits.isdigit() and text[-1] in "HMSmun"
    assert (grpc_wire.parse_timeout(text) is None) != valid


def test_a_non_ascii_digit_in_grpc_timeout_is_ignored() -> None:
    assert grpc_wire.parse_timeout("\u00b2S") is None  # "²".isdigit() is True, int("²") fails


header_lists = st.lists(
    st.tuples(st.sampled_from([":path", "grpc-timeout", "x-user", "te"]), st.text("abcxyz0123", max_size=20)),
    min_size=1,
    max_size=6,
)


@given(header_lists)
def test_table_neutral_blocks_are_the_ones_that_leave_the_table_alone(headers: list[tuple[str, str]]) -> None:
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    for _ in range(2):  # the second time, every header is already in the encoder's table
        block = encoder.encode(headers)
        before = list(decoder.header_table.dynamic_entries)
        decoded = decoder.decode(block)
        unchanged = list(decoder.header_table.dynamic_entries) == before
        assert decoded == headers
        if h2headers.table_neutral(block):
            assert unchanged
    assert h2headers.table_neutral(encoder.encode(headers))


@given(st.binary(max_size=64))
def test_table_neutral_never_raises(block: bytes) -> None:
    assert h2headers.table_neutral(block) in (True, False)


def test_a_host_name_is_bound_on_each_of_its_addresses() -> None:
    from tests.servers import free_port

    port = free_port()
    sockets = grpc_h2.bind(f"localhost:{port}")
    try:
        bound = {sock.getsockname()[0] for sock in sockets}
        assert "127.0.0.1" in bound
        assert {sock.getsockname()[1] for sock in sockets} == {port}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        for sock in sockets:
            sock.close()


def test_grpcio_unlimited_channel_arguments_mean_the_defaults() -> None:
    import concurrent.futures

    arguments = {
        "grpc.max_receive_message_length": -1,
        "grpc.max_send_message_length": -1,
        "grpc.max_concurrent_streams": 0,
    }
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        server = grpc_h2.create({}, pool, ["127.0.0.1:0"], tls=None, channel_arguments=arguments)
        for _, sock in server.sockets:
            sock.close()
    assert server.limits.max_receive_message == server.limits.max_send_message == 2**31 - 1
    assert server.limits.max_concurrent_streams == Limits.max_concurrent_streams


def test_tls_context_offers_h2_and_verifies_clients_when_asked() -> None:
    import ssl

    from tests.grpc_servers import make_pki

    pki = make_pki()
    key, cert, ca = pki.server_key_pem.decode(), pki.server_cert_pem.decode(), pki.ca_pem.decode()
    assert grpc_h2.tls_context(key, cert, ca, True).verify_mode == ssl.CERT_REQUIRED
    assert grpc_h2.tls_context(key, cert, "", False).verify_mode == ssl.CERT_NONE
    with pytest.raises(SigserveError, match="not a usable PEM pair"):
        grpc_h2.tls_context(key, ca, "", False)  # a certificate that is not the key's


# -- a server and a raw HTTP/2 client --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("grpc_h2")
    spin = export_spin_model(base / "models")
    proc = start_server(
        base / "models.config",
        [*fixture_models(fixtures_dir), ("spin", spin, {})],
        [
            "--enable_grpc_healthcheck_service",
            f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_RECEIVE}",
        ],
    )
    try:
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


def decoded_predict(body: bytes) -> float:
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    response = predict_pb2.PredictResponse.FromString(body[5:])
    return float(tensor.to_ndarray(response.outputs["y"])[0, 0])


@pytest.fixture()
def raw(server: ServerProcess) -> Iterator[RawH2]:
    client = RawH2(server.grpc_port)
    yield client
    client.close()


def test_a_plain_call_made_of_frames(raw: RawH2) -> None:
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 1, raw.headers_block()))
    raw.send(frame(frames.DATA, frames.END_STREAM, 1, grpc_framed(predict_message(3.0))))
    headers, body, trailers = raw.response(1)
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert trailers["grpc-status"] == "0"
    assert decoded_predict(body) == 3.5


def test_padding_priority_and_continuation(raw: RawH2) -> None:
    block = raw.headers_block(**{"x-long": "v" * 3000})
    first, rest = block[:10], block[10:]
    padded = bytes((7,)) + struct.pack(">IB", 0, 16) + first + b"\0" * 7  # pad length, priority, padding
    raw.send(frame(frames.HEADERS, frames.PADDED | frames.PRIORITY_FLAG, 3, padded))
    raw.send(frame(frames.CONTINUATION, 0, 3, rest[:100]))
    raw.send(frame(frames.CONTINUATION, frames.END_HEADERS, 3, rest[100:]))
    data = grpc_framed(predict_message(5.0))
    raw.send(frame(frames.DATA, frames.PADDED, 3, bytes((3,)) + data[:4] + b"\0\0\0"))
    raw.send(frame(frames.DATA, 0, 3, data[4:9]))
    raw.send(frame(frames.PRIORITY, 0, 3, struct.pack(">IB", 0, 1)))  # ignored
    raw.send(frame(frames.DATA, frames.END_STREAM, 3, data[9:]))
    _, body, trailers = raw.response(3)
    assert trailers["grpc-status"] == "0" and decoded_predict(body) == 4.5


def test_header_values_that_are_not_utf8_are_carried(raw: RawH2) -> None:
    block = raw.headers_block() + bytes(raw.encoder.encode([(b"x-legacy", b"caf\xe9 \xff")]))
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 1, block))
    raw.send(frame(frames.DATA, frames.END_STREAM, 1, grpc_framed(predict_message(1.0))))
    _, body, trailers = raw.response(1)
    assert trailers["grpc-status"] == "0" and decoded_predict(body) == 2.5


def test_many_streams_in_one_write(raw: RawH2) -> None:
    out = b""
    for i, sid in enumerate(range(1, 200, 2)):
        out += frame(frames.HEADERS, frames.END_HEADERS, sid, raw.headers_block())
        out += frame(frames.DATA, frames.END_STREAM, sid, grpc_framed(predict_message(float(i))))
    raw.send(out)
    for i, sid in enumerate(range(1, 200, 2)):
        _, body, trailers = raw.response(sid)
        assert trailers["grpc-status"] == "0" and decoded_predict(body) == 0.5 * i + 2


def test_the_answer_waits_for_the_clients_flow_control_window(server: ServerProcess) -> None:
    # A 10-byte initial window and 16 KiB frames: the answer (~40 bytes) comes in pieces, each
    # after the window update that allows it.
    client = RawH2(server.grpc_port, settings=struct.pack(">HI", frames.S_INITIAL_WINDOW_SIZE, 10))
    try:
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 1, client.headers_block()))
        client.send(frame(frames.DATA, frames.END_STREAM, 1, grpc_framed(predict_message(7.0))))
        sizes: list[int] = []

        def allow_more(size: int) -> None:
            sizes.append(size)
            client.send(frame(frames.WINDOW_UPDATE, 0, 1, struct.pack(">I", 10)))

        _, body, trailers = client.response(1, on_data=allow_more)
        assert trailers["grpc-status"] == "0" and decoded_predict(body) == 5.5
        assert len(sizes) > 1 and max(sizes) <= 10
    finally:
        client.close()


def test_a_large_answer_in_a_wide_window_arrives_whole(server: ServerProcess) -> None:
    # ~1.6 MB out: about a hundred 16 KiB frames, written to the transport as they are made.
    settings = struct.pack(">HI", frames.S_INITIAL_WINDOW_SIZE, 2**31 - 1)
    client = RawH2(server.grpc_port, settings=settings)
    try:
        client.send(frame(frames.WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535)))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        x = np.arange(400_000, dtype=np.float32).reshape(-1, 1)
        request.inputs["x"].CopyFrom(tensor.from_ndarray(x, tensor_content=True))
        body = grpc_framed(request.SerializeToString())
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 1, client.headers_block()))
        for start in range(0, len(body), 16_384):
            end_stream = frames.END_STREAM if start + 16_384 >= len(body) else 0
            client.send(frame(frames.DATA, end_stream, 1, body[start : start + 16_384]))
        sizes: list[int] = []
        _, answer, trailers = client.response(1, on_data=sizes.append)
        assert trailers["grpc-status"] == "0"
        assert len(sizes) > 64 and max(sizes) <= 16_384
        response = predict_pb2.PredictResponse.FromString(answer[5:])
        np.testing.assert_array_equal(tensor.to_ndarray(response.outputs["y"]), 0.5 * x + 2)
    finally:
        client.close()


def test_a_repeated_end_of_request_resets_the_stream_and_the_connection_goes_on(
    server: ServerProcess,
) -> None:
    """The answer waits for window (0) while the client ends the request a second time: HEADERS on
    a half-closed (remote) stream is a stream error STREAM_CLOSED (RFC 9113 §5.1; this transport used
    to ignore it). The HPACK block is still decoded, so the next call on the connection works."""
    client = RawH2(server.grpc_port, settings=struct.pack(">HI", frames.S_INITIAL_WINDOW_SIZE, 0))
    try:
        block = client.headers_block()
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 1, block))
        client.send(frame(frames.DATA, frames.END_STREAM, 1, grpc_framed(predict_message(3.0))))
        client.send(
            frame(
                frames.HEADERS,
                frames.END_HEADERS | frames.END_STREAM,
                1,
                client.headers_block(**{"x-a": "b"}),
            )
        )
        reset = None
        while reset is None:
            got = client.read_frame()
            assert got is not None
            kind, _, sid, payload = got
            if kind == frames.HEADERS:
                client.decoder.decode(payload)
            if sid == 1 and kind == frames.RST_STREAM:
                reset = struct.unpack(">I", payload)[0]
        assert reset == frames.STREAM_CLOSED
        client.send(frame(frames.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)))
        client.send(frame(frames.SETTINGS, 0, 0, struct.pack(">HI", frames.S_INITIAL_WINDOW_SIZE, 1 << 20)))
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 3, client.headers_block(**{"x-a": "b"})))
        client.send(frame(frames.DATA, frames.END_STREAM, 3, grpc_framed(predict_message(3.0))))
        assert decoded_predict(client.response(3)[1]) == 3.5
    finally:
        client.close()


def test_ping_is_answered_with_its_payload(raw: RawH2) -> None:
    raw.send(frame(frames.PING, 0, 0, b"12345678"))
    while True:
        got = raw.read_frame()
        assert got is not None
        if got[0] == frames.PING:
            assert got[1] == frames.ACK and got[3] == b"12345678"
            return


@pytest.mark.parametrize(
    ("method", "content_type", "status"),
    [("POST", "application/json", "415"), ("GET", "application/grpc", "405")],
)
def test_requests_that_are_not_grpc_get_an_http_status(
    raw: RawH2, method: str, content_type: str, status: str
) -> None:
    block = bytes(
        raw.encoder.encode(
            [(":method", method), (":scheme", "http"), (":path", PREDICT), ("content-type", content_type)]
        )
    )
    raw.send(frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, 1, block))
    headers, _, _ = raw.response(1)
    assert headers[":status"] == status
    assert "application/grpc" in urllib.parse.unquote(headers["grpc-message"])


def test_reset_stream_is_forgotten_and_the_connection_goes_on(raw: RawH2) -> None:
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 1, raw.headers_block()))
    raw.send(frame(frames.DATA, 0, 1, grpc_framed(predict_message())[:3]))
    raw.send(frame(frames.RST_STREAM, 0, 1, struct.pack(">I", frames.CANCEL)))
    raw.send(frame(frames.DATA, frames.END_STREAM, 1, b"late"))  # after the reset: dropped
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 3, raw.headers_block()))
    raw.send(frame(frames.DATA, frames.END_STREAM, 3, grpc_framed(predict_message(1.0))))
    _, body, trailers = raw.response(3)
    assert trailers["grpc-status"] == "0" and decoded_predict(body) == 2.5


@pytest.mark.parametrize(
    ("extra", "body", "code", "needle"),
    [
        ({"grpc-timeout": "1n"}, grpc_framed(predict_message()), 4, "Deadline"),
        ({"grpc-encoding": "snappy"}, grpc_framed(predict_message(), compressed=True), 12, "snappy"),
        ({"grpc-encoding": "gzip"}, grpc_framed(b"not gzip", compressed=True), 13, "decompress"),
        (
            {"grpc-encoding": "gzip"},
            grpc_framed(gzip.compress(predict_message())[:-9], compressed=True),
            13,
            "truncated",
        ),
        # 8 KB that would inflate to 32 MB: stopped at the limit, not inflated.
        (
            {"grpc-encoding": "gzip"},
            grpc_framed(gzip.compress(bytes(16 * MAX_RECEIVE)), compressed=True),
            8,
            "max",
        ),
        ({}, grpc_framed(predict_message())[:-1], 13, "one request message"),
        ({}, grpc_framed(predict_message()) * 2, 13, "one request message"),
        ({}, b"", 13, "got none"),
        ({}, grpc_framed(b"x" * (MAX_RECEIVE + 1)), 8, f"vs. {MAX_RECEIVE}"),
    ],
)
def test_bad_calls_get_a_grpc_status(
    raw: RawH2, extra: dict[str, str], body: bytes, code: int, needle: str
) -> None:
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 1, raw.headers_block(**extra)))
    for start in range(0, len(body), 16_384):
        raw.send(frame(frames.DATA, 0, 1, body[start : start + 16_384]))
    raw.send(frame(frames.DATA, frames.END_STREAM, 1, b""))
    _, _, trailers = raw.response(1)
    assert trailers["grpc-status"] == str(code), trailers
    assert needle in urllib.parse.unquote(trailers["grpc-message"])


def test_gzip_request_message(raw: RawH2) -> None:
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, 1, raw.headers_block(**{"grpc-encoding": "gzip"})))
    body = grpc_framed(gzip.compress(predict_message(9.0)), compressed=True)
    raw.send(frame(frames.DATA, frames.END_STREAM, 1, body))
    _, body, trailers = raw.response(1)
    assert trailers["grpc-status"] == "0" and decoded_predict(body) == 6.5


def test_not_http2_gets_goaway_and_the_server_keeps_serving(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert bytes((frames.GOAWAY,)) in data  # after our SETTINGS: GOAWAY, then the close
    assert struct.pack(">I", frames.PROTOCOL_ERROR) in data
    stubs = tf_stubs(grpc_target(server))
    try:
        from tests.test_grpc_api import x_request

        assert stubs.prediction.Predict(x_request(), timeout=30).model_spec.version.value == 123
    finally:
        stubs.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 7), st.binary(max_size=40)))
)
def test_hostile_frames_never_take_the_server_down(server: ServerProcess, sent: list[Any]) -> None:
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30) as sock:
        data = frames.PREFACE + b"".join(
            frame(kind, flags, sid, payload) for kind, flags, sid, payload in sent
        )
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(65536):
                pass
        except (ConnectionError, TimeoutError):
            pass
    assert server.proc.poll() is None
    client = RawH2(server.grpc_port)
    try:
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 1, client.headers_block()))
        client.send(frame(frames.DATA, frames.END_STREAM, 1, grpc_framed(predict_message(1.0))))
        assert decoded_predict(client.response(1)[1]) == 2.5
    finally:
        client.close()


def test_streams_past_the_limit_are_refused(raw: RawH2) -> None:
    # The default limit (1000) is advertised and enforced: open streams that never end, then one more.
    limit = Limits.max_concurrent_streams
    block = raw.headers_block()
    raw.send(b"".join(frame(frames.HEADERS, frames.END_HEADERS, 2 * i + 1, block) for i in range(limit + 1)))
    refused = 2 * limit + 1
    while True:
        got = raw.read_frame()
        assert got is not None
        if got[0] == frames.SETTINGS and not got[1] & frames.ACK:
            settings = {
                struct.unpack_from(">H", got[3], i)[0]: struct.unpack_from(">I", got[3], i + 2)[0]
                for i in range(0, len(got[3]), 6)
            }
            assert settings[frames.S_MAX_CONCURRENT_STREAMS] == limit
        if got[0] == frames.RST_STREAM:
            assert got[2] == refused and struct.unpack(">I", got[3])[0] == frames.REFUSED_STREAM
            break
    # Resetting the open ones frees the connection for new calls.
    raw.send(
        b"".join(
            frame(frames.RST_STREAM, 0, 2 * i + 1, struct.pack(">I", frames.CANCEL)) for i in range(limit)
        )
    )
    sid = refused + 2
    raw.send(frame(frames.HEADERS, frames.END_HEADERS, sid, block))
    raw.send(frame(frames.DATA, frames.END_STREAM, sid, grpc_framed(predict_message(1.0))))
    assert decoded_predict(raw.response(sid)[1]) == 2.5


def test_reset_calls_still_running_count_against_the_stream_limit(tmp_path: pathlib.Path) -> None:
    """Rapid reset: a call reset while TensorFlow runs it keeps its place until it ends, so opening
    and resetting streams cannot queue unbounded work; a reset call still queued never runs."""
    spin = export_spin_model(tmp_path / "models")
    proc = start_server(
        tmp_path / "models.config",
        [("spin", spin, {})],
        ["--grpc_max_threads=1", "--grpc_channel_arguments=grpc.max_concurrent_streams=2"],
    )
    client = RawH2(proc.grpc_port)
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "spin"
        request.inputs["n"].CopyFrom(tensor.from_ndarray(np.asarray(10**13, np.int64)))
        long_call = grpc_framed(request.SerializeToString())
        block = client.headers_block(**{"grpc-timeout": "3S"})
        for sid in (1, 3):  # one runs (for 3 s, its deadline), one waits for the only worker
            client.send(frame(frames.HEADERS, frames.END_HEADERS, sid, block))
            client.send(frame(frames.DATA, frames.END_STREAM, sid, long_call))
        time.sleep(0.5)
        client.send(frame(frames.RST_STREAM, 0, 1, struct.pack(">I", frames.CANCEL)))
        client.send(frame(frames.RST_STREAM, 0, 3, struct.pack(">I", frames.CANCEL)))
        started = time.monotonic()
        # The running call holds one of the two places: one new stream is taken, a second refused.
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 5, block))
        client.send(frame(frames.HEADERS, frames.END_HEADERS, 7, block))
        while True:
            got = client.read_frame()
            assert got is not None
            if got[0] == frames.RST_STREAM:
                assert got[2] == 7 and struct.unpack(">I", got[3])[0] == frames.REFUSED_STREAM
                break
        # Stream 5's short call waits for the worker that the orphan holds, then runs at once: the
        # reset call that was queued (stream 3) never ran.
        short = predict_pb2.PredictRequest()
        short.model_spec.name = "spin"
        short.inputs["n"].CopyFrom(tensor.from_ndarray(np.asarray(10, np.int64)))
        client.send(frame(frames.DATA, frames.END_STREAM, 5, grpc_framed(short.SerializeToString())))
        trailers = client.response(5)[2]
        waited = time.monotonic() - started
        assert trailers["grpc-status"] == "0", trailers
        assert 1.0 < waited < 5.0, waited
    finally:
        client.close()
        proc.stop()
        proc.cleanup()


# -- with grpcio clients ---------------------------------------------------------------------------


def test_grpcio_client_with_gzip_compression(server: ServerProcess) -> None:
    from tests.test_grpc_api import x_request

    stubs = tf_stubs(grpc_target(server))
    try:
        response = stubs.prediction.Predict(x_request(), timeout=30, compression=grpc.Compression.Gzip)
        assert response.model_spec.version.value == 123
    finally:
        stubs.close()


def test_grpclib_client(server: ServerProcess) -> None:
    """grpclib: a second, independent gRPC implementation (pure Python, on the h2 package)."""
    import asyncio

    from grpclib.client import Channel
    from grpclib.const import Cardinality, Status
    from grpclib.exceptions import GRPCError

    async def predict(channel: Channel, x: np.ndarray, model: str = "half_plus_two") -> np.ndarray:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["x"].CopyFrom(tensor.from_ndarray(x))
        async with channel.request(
            PREDICT,
            Cardinality.UNARY_UNARY,
            predict_pb2.PredictRequest,
            predict_pb2.PredictResponse,
            timeout=60,
        ) as stream:
            await stream.send_message(request, end=True)
            response = await stream.recv_message()
            await stream.recv_trailing_metadata()
        assert response is not None
        return tensor.to_ndarray(response.outputs["y"])

    async def main() -> None:
        channel = Channel("127.0.0.1", server.grpc_port)
        try:
            assert (await predict(channel, np.asarray([[1.0]], np.float32))).tolist() == [[2.5]]
            many = await asyncio.gather(
                *(predict(channel, np.asarray([[float(i)]], np.float32)) for i in range(100))
            )
            assert [float(y[0, 0]) for y in many] == [0.5 * i + 2 for i in range(100)]
            big = np.ones((400_000, 1), np.float32)
            np.testing.assert_array_equal(await predict(channel, big), big * 0.5 + 2)
            with pytest.raises(GRPCError) as e:
                await predict(channel, np.asarray([[1.0]], np.float32), model="nope")
            assert e.value.status == Status.NOT_FOUND
            assert e.value.message == "Servable not found for request: Latest(nope)"
        finally:
            channel.close()

    asyncio.run(main())


def test_message_over_the_receive_limit_is_resource_exhausted(server: ServerProcess) -> None:
    from tests.test_grpc_api import x_request

    stubs = tf_stubs(grpc_target(server))
    try:
        big = x_request(values=[[1.0]] * (MAX_RECEIVE // 4))
        error = rpc_error(stubs.prediction.Predict, big)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"vs. {MAX_RECEIVE}" in str(error.details())
        assert stubs.prediction.Predict(x_request(), timeout=30).model_spec.version.value == 123
    finally:
        stubs.close()


def test_health_watch_streams_the_status(server: ServerProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(grpc_target(server))
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service, status in (
            ("PredictionService", health_pb2.HealthCheckResponse.SERVING),
            ("NoSuchService", health_pb2.HealthCheckResponse.SERVICE_UNKNOWN),
        ):
            watch = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert next(watch).status == status
            watch.cancel()
    finally:
        channel.close()


def test_sigterm_lets_an_in_flight_call_finish(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A call that spins for ~2.5 s is answered in full during the shutdown grace; a call after the
    GOAWAY is refused; the server exits 0."""
    from tests.test_grpc_api import outputs_of, predict_request

    spin = export_spin_model(tmp_path / "models")
    proc = start_server(tmp_path / "models.config", [("spin", spin, {})], ["--shutdown_grace_seconds=30"])
    stubs = tf_stubs(grpc_target(proc))

    def spin_for(n: int) -> Any:
        return stubs.prediction.Predict(predict_request("spin", n=np.asarray(n, np.int64)), timeout=60)

    outcome: dict[str, Any] = {}

    def call(n: int) -> None:
        try:
            outcome["count"] = int(outputs_of(spin_for(n))["i"].reshape(-1)[0])
        except grpc.RpcError as e:
            outcome["code"] = e.code()
        except Exception as e:  # shown by the assertion below
            outcome["error"] = repr(e)

    try:
        started = time.monotonic()
        spin_for(300_000)
        n = int(300_000 * 2.5 / max(time.monotonic() - started, 1e-3))
        thread = threading.Thread(target=call, args=(n,))
        thread.start()
        time.sleep(0.5)
        proc.proc.terminate()
        time.sleep(0.5)
        late = tf_stubs(grpc_target(proc))
        try:
            error = rpc_error(late.prediction.Predict, predict_request("spin", n=np.asarray(1, np.int64)), 10)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            late.close()
        thread.join(60)
        assert outcome == {"count": n}
        assert proc.proc.wait(60) == 0, proc.output()[-3000:]
    finally:
        stubs.close()
        proc.stop()
        proc.cleanup()


def test_calls_racing_the_sigterm_goaway_are_served_or_never_sent(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Eight clients send 1 MB Predicts back to back while the server gets SIGTERM. The first
    GOAWAY names the largest stream id, so every call the clients sent before they read it is
    served; calls after it find the listener closed. None may fail with its stream removed by a
    GOAWAY (what a GOAWAY naming only the streams already read did to calls in flight)."""
    from tests.test_grpc_api import x_request

    proc = start_server(
        tmp_path / "models.config",
        [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
        ["--shutdown_grace_seconds=30"],
    )
    stubs = tf_stubs(grpc_target(proc))
    big = x_request(values=[[1.0]] * 250_000)
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                stubs.prediction.Predict(big, timeout=30)
                outcomes.append("ok")
            except grpc.RpcError as e:
                outcomes.append(f"{e.code().name}: {e.details()}")
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    return

    try:
        stubs.prediction.Predict(x_request(), timeout=30)
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        proc.proc.terminate()
        for thread in threads:
            thread.join(60)
        stop.set()
        assert proc.proc.wait(60) == 0, proc.output()[-3000:]
        failures = [o for o in outcomes if o != "ok"]
        assert outcomes.count("ok") > 8
        wrong = [f for f in failures if "GOAWAY" in f or "removed" in f or not f.startswith("UNAVAILABLE")]
        assert not wrong, (wrong, proc.output()[-4000:])
    finally:
        stop.set()
        stubs.close()
        proc.stop()
        proc.cleanup()
