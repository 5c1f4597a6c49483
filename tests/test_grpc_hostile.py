"""Hostile peers against a running `sigserve serve` (native gRPC transport, TensorFlow loaded), on
loopback, each attack bounded in count and time. For each: the server stays up, a Predict from
another client succeeds within 1 s while the attack runs, the server's RSS stays under a stated
bound, and every attacking connection is closed with the right error. README "Reliability" lists
the results.

Attacks repeat for `ATTACK_SECONDS` (a new connection each time the server closes one), with a
well-behaved client calling Predict every 50 ms throughout."""

from __future__ import annotations

import pathlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sigserve.server.http2 import frames as F
from tests.grpc_servers import grpc_target, serving, tf_stubs
from tests.raw_h2 import RawH2, frame, grpc_framed, predict_message
from tests.servers import ServerProcess
from tests.test_grpc_api import x_request

pytestmark = pytest.mark.slow

ATTACK_SECONDS = 2.0
RSS_GROWTH_MB = 100  # the bound stated in README "Reliability"
TIMEOUTS = (
    "sigserve.http2.request_stall_timeout_ms=1500,sigserve.http2.header_timeout_ms=1500,"
    "grpc.server_handshake_timeout_ms=2000,grpc.max_allowed_incoming_connections=1000"
)


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("grpc_hostile")
    with serving(
        base / "models.config",
        [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
        [f"--grpc_channel_arguments={TIMEOUTS}"],
    ) as proc:
        yield proc


def rss_mb(server: ServerProcess) -> float:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@dataclass
class Closed:
    """How the server ended one attacking connection."""

    goaway: int | None = None  # its GOAWAY's error code
    debug: bytes = b""
    resets: dict[int, int] = field(default_factory=dict)  # stream -> RST_STREAM code
    statuses: dict[int, str] = field(default_factory=dict)  # stream -> grpc-status
    eof: bool = False


def read_until_closed(client: RawH2, seconds: float = 10.0) -> Closed:
    out = Closed()
    client.sock.settimeout(seconds)
    try:
        while True:
            got = client.read_frame()
            if got is None:
                out.eof = True
                return out
            kind, _, sid, payload = got
            if kind == F.GOAWAY:
                out.goaway = struct.unpack_from(">I", payload, 4)[0]
                out.debug = payload[8:]
            elif kind == F.RST_STREAM:
                out.resets[sid] = struct.unpack(">I", payload)[0]
            elif kind == F.HEADERS:
                headers = dict(client.decoder.decode(payload))
                if "grpc-status" in headers:
                    out.statuses[sid] = headers["grpc-status"]
    except (TimeoutError, ConnectionError):
        return out


def under_attack(
    server: ServerProcess, attack: Callable[[RawH2], Closed], *, seconds: float = ATTACK_SECONDS
) -> list[Closed]:
    """Run `attack` on fresh connections for `seconds` while a good client calls Predict every
    50 ms: every call must succeed within 1 s and the server's RSS must grow less than the bound.
    Returns how each attacking connection ended."""
    stubs = tf_stubs(grpc_target(server))
    try:
        stubs.prediction.Predict(x_request(), timeout=30)  # connected and warm before the attack
        before = rss_mb(server)
        peak = before
        results: list[Closed] = []
        errors: list[BaseException] = []
        deadline = time.monotonic() + seconds

        def attacker() -> None:
            try:
                while time.monotonic() < deadline:
                    client = RawH2(server.grpc_port)
                    try:
                        results.append(attack(client))
                    finally:
                        client.close()
            except BaseException as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=attacker)
        thread.start()
        latencies = []
        while thread.is_alive():
            started = time.monotonic()
            response = stubs.prediction.Predict(x_request(), timeout=1.0)
            latencies.append(time.monotonic() - started)
            assert response.model_spec.version.value == 123
            peak = max(peak, rss_mb(server))
            time.sleep(0.05)
        thread.join()
        assert not errors, errors
        assert server.proc.poll() is None, server.output()[-3000:]
        assert latencies and max(latencies) < 1.0, latencies
        assert peak - before < RSS_GROWTH_MB, (before, peak)
        assert results
        # One line per attack for README "Reliability" (shown with pytest -s).
        print(
            f"\n[hostile] {len(results)} attacking connections; Predict max {max(latencies) * 1e3:.1f} ms "
            f"over {len(latencies)} calls; RSS {before:.0f} -> peak {peak:.0f} MB"
        )
        return results
    finally:
        stubs.close()


def flood(client: RawH2, unit: bytes, *, batch: int = 1000, limit: int = 200) -> Closed:
    """Send `unit` over and over until the server closes the connection (at most `limit` batches)."""
    chunk = unit * batch
    try:
        for _ in range(limit):
            client.send(chunk)
    except ConnectionError:
        pass
    return read_until_closed(client)


def reset_burst(second: int, payload: bytes) -> Callable[[RawH2], Closed]:
    """10,000 streams, each opened and at once followed by a `second` frame that ends it."""

    def attack(client: RawH2) -> Closed:
        block = client.headers_block()
        unit = b"".join(
            frame(F.HEADERS, F.END_HEADERS, sid, block) + frame(second, 0, sid, payload)
            for sid in range(1, 20_001, 2)
        )
        return flood(client, unit, batch=1, limit=1)

    return attack


def test_rapid_reset(server: ServerProcess) -> None:
    for closed in under_attack(server, reset_burst(F.RST_STREAM, bytes(4))):
        assert closed.goaway == F.ENHANCE_YOUR_CALM and b"reset streams" in closed.debug, closed


def test_made_you_reset(server: ServerProcess) -> None:
    """CVE-2025-8671: frames that make the server reset the streams (a zero window increment)."""
    for closed in under_attack(server, reset_burst(F.WINDOW_UPDATE, bytes(4))):
        assert closed.goaway == F.ENHANCE_YOUR_CALM and b"reset streams" in closed.debug, closed
        assert set(closed.resets.values()) == {F.PROTOCOL_ERROR}


@pytest.mark.parametrize(
    "unit",
    [
        frame(F.SETTINGS, 0, 0, struct.pack(">HI", F.S_ENABLE_PUSH, 0)),
        frame(F.PING, 0, 0, b"12345678"),
        frame(F.WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")),
        frame(F.PRIORITY, 0, 1, bytes(5)),
    ],
    ids=["settings", "ping", "window-update", "priority"],
)
def test_control_frame_floods(server: ServerProcess, unit: bytes) -> None:
    for closed in under_attack(server, lambda client: flood(client, unit)):
        assert closed.goaway == F.ENHANCE_YOUR_CALM and b"control frames" in closed.debug, closed


def test_continuation_flood(server: ServerProcess) -> None:
    def attack(client: RawH2) -> Closed:
        client.send(frame(F.HEADERS, 0, 1, client.headers_block()))
        return flood(client, frame(F.CONTINUATION, 0, 1, b""))

    for closed in under_attack(server, attack):
        assert closed.goaway == F.ENHANCE_YOUR_CALM, closed


def test_slowloris_streams_that_never_end(server: ServerProcess) -> None:
    """100 streams whose request never ends: each is answered DEADLINE_EXCEEDED once it has stalled
    for the stall timeout (1.5 s here), freeing its place."""

    def attack(client: RawH2) -> Closed:
        block = client.headers_block()
        started = time.monotonic()
        client.send(
            b"".join(
                frame(F.HEADERS, F.END_HEADERS, sid, block) + frame(F.DATA, 0, sid, b"\x00\x00\x00")
                for sid in range(1, 201, 2)
            )
        )
        closed = Closed()
        client.sock.settimeout(5)
        while len(closed.statuses) < 100:
            got = client.read_frame()
            assert got is not None
            if got[0] == F.HEADERS:
                closed.statuses[got[2]] = dict(client.decoder.decode(got[3]))["grpc-status"]
        assert 1.4 < time.monotonic() - started < 4.5
        return closed

    for closed in under_attack(server, attack, seconds=1.0):
        assert set(closed.statuses.values()) == {"4"} and len(closed.statuses) == 100


def test_slowloris_header_block_that_never_ends(server: ServerProcess) -> None:
    def attack(client: RawH2) -> Closed:
        client.send(frame(F.HEADERS, 0, 1, client.headers_block()[:4]))
        started = time.monotonic()
        closed = read_until_closed(client)
        assert 1.4 < time.monotonic() - started < 4.5
        return closed

    for closed in under_attack(server, attack, seconds=1.0):
        assert closed.goaway == F.NO_ERROR and b"header block" in closed.debug and closed.eof, closed


def test_window_update_overflow(server: ServerProcess) -> None:
    def attack(client: RawH2) -> Closed:
        client.send(frame(F.HEADERS, F.END_HEADERS, 1, client.headers_block()))
        client.send(frame(F.WINDOW_UPDATE, 0, 1, (2**31 - 1).to_bytes(4, "big")))  # the stream's
        client.send(frame(F.WINDOW_UPDATE, 0, 0, (2**31 - 1).to_bytes(4, "big")))  # the connection's
        return read_until_closed(client)

    for closed in under_attack(server, attack):
        assert closed.resets == {1: F.FLOW_CONTROL_ERROR} and closed.goaway == F.FLOW_CONTROL_ERROR, closed


def test_a_4_gib_declared_message(server: ServerProcess) -> None:
    """A prefix declaring 2^32-1 bytes is refused from the prefix, before anything is buffered;
    the megabytes that follow are dropped as they come."""

    def attack(client: RawH2) -> Closed:
        client.send(frame(F.HEADERS, F.END_HEADERS, 1, client.headers_block()))
        client.send(frame(F.DATA, 0, 1, b"\x00\xff\xff\xff\xff" + bytes(60_000)))
        try:
            for _ in range(50):
                client.send(frame(F.DATA, 0, 1, bytes(16_384)))
        except ConnectionError:
            pass
        closed = Closed()
        client.sock.settimeout(5)
        while 1 not in closed.statuses:
            got = client.read_frame()
            assert got is not None
            if got[0] == F.HEADERS:
                headers = dict(client.decoder.decode(got[3]))
                closed.statuses[got[2]] = headers["grpc-status"]
                closed.debug = headers.get("grpc-message", "").encode()
        return closed

    for closed in under_attack(server, attack):
        assert closed.statuses == {1: "8"} and b"4294967295" in closed.debug, closed


def test_garbage_preface(server: ServerProcess) -> None:
    def attack(client: RawH2) -> Closed:
        raw = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
        client.sock.close()
        client.sock = raw
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 10)
        return read_until_closed(client)

    for closed in under_attack(server, attack):
        assert closed.goaway == F.PROTOCOL_ERROR and closed.eof, closed


def test_2000_idle_connections(server: ServerProcess) -> None:
    """2,000 connections that send nothing, against a limit of 1,000: new ones take the places of
    the idle ones (GOAWAY NO_ERROR), the rest time out after the 2 s handshake timeout, and a new
    well-behaved client still gets in."""
    sockets: list[socket.socket] = []

    def attack(client: RawH2) -> Closed:
        for _ in range(2000 - len(sockets)):
            sockets.append(socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10))
        client.send(frame(F.HEADERS, F.END_HEADERS, 1, client.headers_block()))
        client.send(frame(F.DATA, F.END_STREAM, 1, grpc_framed(predict_message(1.0))))
        return read_until_closed(client, seconds=2.0)  # the attacker's own call was answered

    try:
        under_attack(server, attack, seconds=0.5)
        codes = []
        for sock in sockets:
            sock.settimeout(5)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            goaways = [f for f in _frames(data) if f[0] == F.GOAWAY]
            assert goaways, data[:100]
            codes.append(struct.unpack_from(">I", goaways[-1][3], 4)[0])
        assert set(codes) == {F.NO_ERROR}
    finally:
        for sock in sockets:
            sock.close()


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        out.append(
            (
                data[pos + 3],
                data[pos + 4],
                int.from_bytes(data[pos + 5 : pos + 9], "big"),
                data[pos + 9 : pos + 9 + length],
            )
        )
        pos += 9 + length
    return out
