"""The HTTP/1.1 front end (server/http1.py) against raw sockets: limits, timeouts, pipelining,
100-continue, chunked bodies, malformed requests. A small ASGI app stands in for RestApp, so these run
without TensorFlow; tests/test_rest_*.py cover the real app over the same server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Iterator

import pytest

from sigserve.server.http1 import Http1Server, Limits, Request, Response


class EchoApp:
    """ASGI: answers with the method, path, query and body it received. `respond_now` answers
    `GET /fast` at once, so both paths are exercised."""

    def __init__(self) -> None:
        self.fast_calls = 0

    def respond_now(self, request: Request) -> Response | Awaitable[Response] | None:
        if request.raw_path == b"/fast":
            self.fast_calls += 1
            return 200, ((b"content-type", b"text/plain"),), b"fast"
        if request.raw_path == b"/fast-bug":
            raise RuntimeError("a bug in the fast path")
        if request.raw_path.startswith(b"/later"):
            return self._later(request.raw_path)
        return None

    async def _later(self, path: bytes) -> Response:
        """An answer that awaits (as a request awaiting its batch does): `/later-slow` waits 50 ms,
        `/later-bug` raises after waiting."""
        await asyncio.sleep(0.05 if path == b"/later-slow" else 0)
        if path == b"/later-bug":
            raise RuntimeError("a bug in an awaited fast path")
        self.fast_calls += 1
        return 200, ((b"content-type", b"text/plain"),), path

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/boom":
            raise RuntimeError("a bug in the app")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)
        payload = json.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "body": body.decode("latin-1"),
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class Running:
    def __init__(self, app: EchoApp, limits: Limits) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.server: Http1Server | None = None
        started = threading.Event()

        async def main() -> None:
            self.server = Http1Server(app, self.sock, limits, grace=1.0)
            await self.server.start()
            started.set()

        self.thread = threading.Thread(target=self._run, args=(main,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, main) -> None:  # type: ignore[no-untyped-def]
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def connections(self) -> int:
        assert self.server is not None
        return len(self.server.connections)

    def stop(self) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def serve(**limits: float) -> Iterator[Running]:
    running = Running(EchoApp(), Limits(**limits))  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
def server() -> Iterator[Running]:
    yield from serve()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def read_response(s: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from `s` (content-length or chunked); leftover bytes stay in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response; got {bytes(buffer)!r}")
        buffer += data
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    del buffer[: len(head) + 4]
    if status == 100:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer:
                buffer += s.recv(65536)
            size_line, _, _ = bytes(buffer).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buffer) < len(size_line) + 2 + size + 2:
                buffer += s.recv(65536)
            body += bytes(buffer[len(size_line) + 2 : len(size_line) + 2 + size])
            del buffer[: len(size_line) + 2 + size + 2]
            if size == 0:
                return status, headers, body
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        data = s.recv(65536)
        if not data:
            break
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def closed(s: socket.socket) -> bool:
    """True once the server closed the connection (blocks until it does, or the socket times out)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_get_and_post_keep_the_connection_alive(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /a/b%20c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(s, buffer)
    assert status == 200 and "date" in headers and "connection" not in headers
    assert json.loads(body) == {"method": "GET", "path": "/a/b c", "query": "x=1", "body": ""}
    s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    status, _, body = read_response(s, buffer)
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_the_fast_path_answers_without_asgi(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    for _ in range(3):
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s, buffer)[2] == b"fast"
    assert server.app.fast_calls == 3


def test_a_bug_answers_500_and_the_connection_goes_on(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    for path in (b"/fast-bug", b"/boom"):
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(s, buffer)
        assert status == 500 and "error" in json.loads(body)
    s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(s, buffer)[2] == b"fast"


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    paths = [b"/slow", b"/fast", b"/one", b"/slow", b"/two"]
    s.sendall(b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: t\r\n\r\n" for p in paths))
    answers = []
    for _ in paths:
        _, _, body = read_response(s, buffer)
        answers.append(b"/fast" if body == b"fast" else json.loads(body)["path"].encode())
    assert answers == paths


def test_awaited_fast_answers_keep_their_turn(server: Running) -> None:
    """A fast-path answer that awaits holds its place in the pipeline: a slow one is not overtaken
    by the quick ones behind it, and a bug in one answers 500 and the connection goes on."""
    s, buffer = connect(server.port), bytearray()
    paths = [b"/later-slow", b"/later", b"/fast", b"/later-bug", b"/one", b"/later-slow"]
    s.sendall(b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: t\r\n\r\n" for p in paths))
    answers = []
    for _ in paths:
        status, _, body = read_response(s, buffer)
        if status == 500:
            answers.append(b"500")
        elif body.startswith(b"/later") or body == b"fast":
            answers.append(b"/fast" if body == b"fast" else body)
        else:
            answers.append(json.loads(body)["path"].encode())
    assert answers == [b"/later-slow", b"/later", b"/fast", b"500", b"/one", b"/later-slow"]
    assert server.app.fast_calls == 4


def test_head_has_no_body(server: Running) -> None:
    s = connect(server.port)
    s.sendall(b"HEAD /fast HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    raw = bytearray()
    while not raw.endswith(b"fast"):
        raw += s.recv(65536)
    # Two responses, both saying content-length 4, and one body: HEAD's carries none.
    assert raw.count(b"HTTP/1.1 200 OK") == 2 and raw.count(b"content-length: 4") == 2
    assert raw.count(b"fast") == 1


def test_chunked_request_body(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = read_response(s, buffer)
    assert status == 200 and json.loads(body)["body"] == "hello world"


def test_streamed_response_is_chunked(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(s, buffer)
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"one,two,three"
    s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(s, buffer)[2] == b"fast"


def test_expect_100_continue(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = read_response(s, buffer)
    assert status == 100  # the server asks for the body before the client sends it
    s.sendall(b"data")
    status, _, body = read_response(s, buffer)
    assert status == 200 and json.loads(body)["body"] == "data"


def test_large_body_arrives_whole(server: Running) -> None:
    payload = bytes(range(97, 123)) * (3 * 1024 * 1024 // 26)  # over the 1 MiB read pause
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    status, _, body = read_response(s, buffer)
    assert status == 200 and json.loads(body)["body"].encode("latin-1") == payload


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_get_400_and_close(server: Running, request_bytes: bytes) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(request_bytes)
    status, headers, body = read_response(s, buffer)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body)["error"].startswith("Invalid HTTP request")
    assert closed(s)


def test_header_bytes_over_the_limit_get_431() -> None:
    for running in serve(max_header_bytes=4096):
        for value in (b"x" * 5000, b"x" * 2000):  # one big header; or many in separate reads
            s, buffer = connect(running.port), bytearray()
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
            if len(value) > 4096:
                s.sendall(b"X-Big: " + value + b"\r\n")
            else:
                for i in range(3):
                    s.sendall(b"X-%d: " % i + value + b"\r\n")
                    time.sleep(0.01)  # separate reads, so the parser holds partial lines
            s.sendall(b"\r\n")
            status, _, body = read_response(s, buffer)
            assert status == 431 and "--rest_api_max_header_bytes" in json.loads(body)["error"]
            assert closed(s)
        # Under the limit is fine.
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\nX-Ok: " + b"y" * 3000 + b"\r\n\r\n")
        assert read_response(s, buffer)[0] == 200


def test_a_header_line_that_never_ends_is_bounded() -> None:
    for running in serve(max_header_bytes=4096):
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        try:
            for _ in range(100):  # 100 KiB without a line end: stopped at 4 KiB
                s.sendall(b"z" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = read_response(s, buffer)
        assert status == 431


def test_too_many_headers_get_431() -> None:
    for running in serve(max_headers=10):
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n")
        status, _, body = read_response(s, buffer)
        assert status == 431 and "--rest_api_max_headers" in json.loads(body)["error"]


def test_slow_headers_get_408() -> None:
    for running in serve(header_timeout=0.3, sweep_interval=0.05):
        s, buffer = connect(running.port), bytearray()
        began = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        status, _, body = read_response(s, buffer)
        assert status == 408 and "--rest_api_header_timeout_seconds" in json.loads(body)["error"]
        assert 0.3 <= time.monotonic() - began < 5
        assert closed(s)


def test_idle_keep_alive_connections_are_closed() -> None:
    for running in serve(keep_alive_timeout=0.3, sweep_interval=0.05):
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s, buffer)[0] == 200
        began = time.monotonic()
        assert closed(s)  # blocks until the server closes the idle connection
        assert 0.3 <= time.monotonic() - began < 5


def test_connection_close_and_http_1_0_close_after_the_response(server: Running) -> None:
    for request in (
        b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /fast HTTP/1.0\r\n\r\n",
    ):
        s, buffer = connect(server.port), bytearray()
        s.sendall(request)
        status, headers, body = read_response(s, buffer)
        assert (status, headers["connection"], body) == (200, "close", b"fast")
        assert closed(s)


def test_upgrade_is_answered_as_plain_http_and_closed(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    status, headers, body = read_response(s, buffer)
    assert (status, body) == (200, b"fast") and headers["connection"] == "close"


def test_stop_closes_connections() -> None:
    running = Running(EchoApp(), Limits())
    s, buffer = connect(running.port), bytearray()
    s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(s, buffer)[0] == 200
    assert running.connections() == 1
    running.stop()
    assert closed(s)


# -- found by review: bounds that hold under pipelining, trailers and slow bodies --------------------


def test_pipelined_requests_from_a_client_that_does_not_read_stay_bounded() -> None:
    for running in serve():
        s = connect(running.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        chunk = b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n" * 2000
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 40_000_000:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)  # both socket buffers are full: the server stopped reading
        assert sent < 40_000_000  # it stopped reading long before 40 MB
        assert running.server is not None
        queued = max((len(c.requests) for c in running.server.connections), default=0)
        assert queued < 30_000  # what one 256 KiB read can hold, not everything sent


def test_a_trailer_line_that_never_ends_is_bounded() -> None:
    for running in serve(max_header_bytes=4096):
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: ")
        try:
            for _ in range(200):  # 200 KiB of one trailer value: stopped at 4 KiB
                s.sendall(b"z" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(s, buffer)
        assert status == 431 and "--rest_api_max_header_bytes" in json.loads(body)["error"]


def test_trailers_are_not_merged_into_the_headers() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    class Headers(EchoApp):
        async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            while (await receive()).get("more_body"):
                pass
            seen.append(list(scope["headers"]))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    running = Running(Headers(), Limits())
    try:
        s, buffer = connect(running.port), bytearray()
        s.sendall(
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\na\r\n0\r\nAuthorization: Bearer sneaky\r\n\r\n"
        )
        assert read_response(s, buffer)[2] == b"ok"
        assert [name for name, _ in seen[0]] == [b"host", b"transfer-encoding"]
    finally:
        running.stop()


def test_a_body_that_stops_arriving_gets_408() -> None:
    for running in serve(body_timeout=0.3, keep_alive_timeout=0.3, sweep_interval=0.05):
        s, buffer = connect(running.port), bytearray()
        began = time.monotonic()
        s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
        status, _, body = read_response(s, buffer)
        assert status == 408 and "--rest_api_body_timeout_seconds" in json.loads(body)["error"]
        assert 0.3 <= time.monotonic() - began < 5
        assert closed(s)


def test_a_pipelined_request_whose_headers_come_later_is_answered(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHo")
    assert json.loads(read_response(s, buffer)[2])["path"] == "/slow"
    s.sendall(b"st: t\r\n\r\n")
    assert read_response(s, buffer)[2] == b"fast"  # at once, not after the header timeout


def test_requests_before_a_malformed_one_are_answered_first(server: Running) -> None:
    for gap in (0.0, 0.01):
        s, buffer = connect(server.port), bytearray()
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\nGET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(gap)  # the garbage in the same read as the requests, or in the next one
        s.sendall(b"GARBAGE\r\n\r\n")
        assert read_response(s, buffer)[2] == b"fast"
        assert json.loads(read_response(s, buffer)[2])["path"] == "/slow"
        status, headers, _ = read_response(s, buffer)
        assert status == 400 and headers["connection"] == "close"
        assert closed(s)


def test_head_of_a_streamed_response_has_no_body(server: Running) -> None:
    s = connect(server.port)
    s.sendall(b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    raw = bytearray()
    while not raw.endswith(b"fast"):
        raw += s.recv(65536)
    assert b"one," not in raw and raw.count(b"HTTP/1.1 200 OK") == 2


def test_http_1_0_gets_a_plain_streamed_body_and_keep_alive_when_asked(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    raw = bytearray()
    while True:
        data = s.recv(65536)
        if not data:
            break
        raw += data
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == b"one,two,three"  # ended by the close
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = read_response(s, buffer)
    assert (status, headers.get("connection"), body) == (200, "keep-alive", b"fast")
    s.sendall(b"GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert read_response(s, buffer)[2] == b"fast"


def test_expect_100_continue_is_case_insensitive_and_not_for_http_1_0(server: Running) -> None:
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-Continue\r\n\r\n")
    assert read_response(s, buffer)[0] == 100
    s.sendall(b"ok")
    assert read_response(s, buffer)[0] == 200
    s, buffer = connect(server.port), bytearray()
    s.sendall(b"POST /e HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    s.sendall(b"ok")
    status, _, body = read_response(s, buffer)
    assert status == 200 and json.loads(body)["body"] == "ok"


def test_bare_line_ends_do_not_keep_an_idle_connection_open() -> None:
    for running in serve(keep_alive_timeout=0.3, sweep_interval=0.05):
        s, buffer = connect(running.port), bytearray()
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s, buffer)[0] == 200
        began = time.monotonic()
        s.setblocking(False)
        while time.monotonic() - began < 5:
            try:
                s.send(b"\r\n")
                if s.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        assert time.monotonic() - began < 5  # closed after the keep-alive timeout all the same
