"""HTTP/1.1 on the REST port: a thin asyncio protocol over httptools' parser (llhttp, Node's) that runs
the REST app, in the manner of uvicorn's httptools protocol, with three differences that are why this
module exists:

- **One call on the loop for a small predict.** An app that offers `respond_now` (RestApp does) is
  asked first, synchronously, once a request is complete: a small predict is parsed, run and encoded
  without an ASGI task, scope, receive/send coroutines or a timer; the answer goes out in one write.
  Everything else (large bodies, the pool, gzip, V2, the console, errors needing awaits) runs the app
  as ASGI, as before. Measured with wrk at concurrency 64 on a 1-row predict (bench/rest.py).
- **Bounded requests.** Header bytes and header count are capped (431), a connection that opens but
  does not finish its headers in time is answered 408 and closed, and an idle keep-alive connection
  is closed: uvicorn's httptools protocol accepted a 200 MiB header value and kept silent connections
  forever. The limits are `Limits` (flags `--rest_api_max_header_bytes`, `--rest_api_max_headers`,
  `--rest_api_header_timeout_seconds`, `--rest_api_keep_alive_timeout_seconds`).
- **Responses in one write**, headers and body together (uvicorn writes them separately: two send
  syscalls a response, ~20 % of the loop's time at concurrency 64).

Requests on a connection are answered in order (HTTP/1.1 pipelining); while one runs, reading pauses
once the next is complete, and while the client does not read its responses, none is started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

logger = logging.getLogger("sigserve.rest")

Headers = Sequence[tuple[bytes, bytes]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True)
class Limits:
    """What one HTTP/1.1 connection may cost. Defaults are generous for API clients and bound a
    hostile one: 64 KiB of request line and headers (nginx's default total is 32 KiB, Triton's
    evhtp 8 KiB per header), 100 headers (as h11, Tomcat), 30 s to send the headers, 60 s between
    two reads of a body the app waits for (nginx's client_body_timeout), 60 s idle between requests
    (what the uvicorn front end had)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 30.0
    body_timeout: float = 60.0  # a request body that is awaited and gets no byte for this long: 408
    keep_alive_timeout: float = 60.0
    sweep_interval: float = 1.0  # how often timeouts are checked: a timeout fires up to this late


class Request:
    """One request as the parser delivered it: what `respond_now` and the ASGI scope read."""

    __slots__ = (
        "began",
        "body",
        "buffered",
        "complete",
        "headers",
        "http10",
        "keep_alive",
        "method",
        "query",
        "raw_path",
    )

    def __init__(self, began: float) -> None:
        self.method = ""
        self.raw_path = b""
        self.query = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in `body`, not yet taken by the app
        self.began = began
        self.complete = False
        self.keep_alive = True
        self.http10 = False


Response = tuple[int, Headers, bytes]


class FastPath(Protocol):
    """An app that can answer some complete requests at once, on the loop, without ASGI."""

    def respond_now(self, request: Request) -> Response | Awaitable[Response] | None:
        """The response; or an awaitable of it, for an answer that waits without work on the loop
        (a request awaiting its batch); or None to run the request as ASGI. Must not block for long."""


class _HeaderLimit(Exception):
    pass


_INTERNAL: Response = (500, ((b"content-type", b"application/json"),), b'{"error": "Internal error"}')
_BODY_HIGH_WATER = 1 << 20  # request body bytes buffered for the app before reading pauses


_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode("latin-1")


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + formatdate(now, usegmt=True).encode("latin-1") + b"\r\n"
        return self._header


_CLOCK = _Clock()


def encode_response(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    keep_alive: bool,
    send_body: bool = True,
    chunked: bool = False,
    http10: bool = False,
    length: bool = True,
) -> bytes:
    """Status line, headers (a content-length is added unless given or `length` is False, or the
    chunked coding), a date, and the body. An HTTP/1.0 client is told when the connection stays."""
    parts = [_status_line(status), _CLOCK.date_header()]
    has_length = False
    for name, value in headers:
        if name == b"content-length" or (len(name) == 14 and name.lower() == b"content-length"):
            if chunked or not length:
                continue
            has_length = True
        parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif not has_length and length:
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif http10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if send_body:
        parts.append(body)
    return b"".join(parts)


def _error_response(status: int, message: str) -> bytes:
    import orjson

    body = orjson.dumps({"error": message})
    return encode_response(status, ((b"content-type", b"application/json"),), body, keep_alive=False)


class Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.local: Any = None
        self.requests: collections.deque[Request] = collections.deque()  # parsed or being parsed
        self.parsing: Request | None = None
        self.running: Request | None = None  # the request the ASGI app is answering
        self.body_waiter: asyncio.Future[None] | None = None
        self.header_bytes = 0  # request line and headers (or trailers) of the request being parsed
        self.raw_header_bytes = 0  # bytes fed while its headers were still incomplete
        self.stalled_bytes = 0  # bytes fed since the parser last reported anything (see data_received)
        self.trailers = 0  # trailer fields of the request being parsed
        self.progress = False  # set by every parser callback during one feed
        self.failure: bytes | None = None  # the error answer to write once earlier requests are answered
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.closing = False
        self.last_active = self.now = self.loop.time()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self._wake_body()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.drain_waiter = None
        self._next()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.failure is not None:
            return
        now = self.loop.time()
        # A header line is held inside the parser until it ends, out of on_header's sight: count what
        # is fed to a request whose headers began in an earlier read.
        pending = self.parsing if self.parsing is not None and not self.parsing.method else None
        self.progress = False
        self.now = now
        try:
            self.parser.feed_data(data)
        except _HeaderLimit as e:
            self._fail(431, str(e))
            return
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _HeaderLimit):
                self._fail(431, str(e.__context__))
                return
            raise
        except httptools.HttpParserUpgrade:
            # An Upgrade (websocket, h2c) is not served: answer the request as plain HTTP and close.
            # Bytes after the upgrade request are not HTTP/1.1: nothing more is read.
            upgraded = self.parsing or (self.requests[-1] if self.requests else self.running)
            if upgraded is not None:
                upgraded.keep_alive = False
            else:
                self._close()
                return
        except httptools.HttpParserError as e:
            self._fail(400, f"Invalid HTTP request: {e}")
            return
        if self.progress:
            self.last_active = now  # (bare CRLFs between requests do not keep a connection alive)
            self.stalled_bytes = 0
        elif self.parsing is not None and self.parsing.method:
            # After the headers, a trailer line or a chunk-size line that never ends is also held in
            # the parser without a callback: bytes that bring nothing are bounded like headers.
            self.stalled_bytes += len(data)
            if self.stalled_bytes > self.limits.max_header_bytes:
                self._fail(431, self._header_limit_text())
                return
        if pending is not None and pending is self.parsing and not pending.method:
            self.raw_header_bytes += len(data)
            if self.raw_header_bytes > self.limits.max_header_bytes:
                self._fail(431, self._header_limit_text())
                return
        self._next()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        request = Request(self.now)  # the time of this read
        self.parsing = request
        self.header_bytes = self.raw_header_bytes = self.trailers = 0
        self.progress = True
        self.requests.append(request)

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.raw_path += url
        self.progress = True
        self.header_bytes += len(url)
        if self.header_bytes > self.limits.max_header_bytes:
            raise _HeaderLimit(self._header_limit_text())

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.progress = True
        if request.method:
            # A trailer field (RFC 9110 §6.5): bounded like a header, not merged into the headers.
            self.trailers += 1
            if self.trailers > self.limits.max_headers:
                raise _HeaderLimit(
                    f"Too many request trailer fields (more than {self.limits.max_headers}); raise "
                    "--rest_api_max_headers if a proxy adds them"
                )
        else:
            request.headers.append((name.lower(), value))
        if len(request.headers) > self.limits.max_headers:
            raise _HeaderLimit(
                f"Too many request headers (more than {self.limits.max_headers}); raise "
                "--rest_api_max_headers if a proxy adds them"
            )
        self.header_bytes += len(name) + len(value) + 4  # (inline: called per header)
        if self.header_bytes > self.limits.max_header_bytes:
            raise _HeaderLimit(self._header_limit_text())

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.method = self.parser.get_method().decode("ascii")
        request.keep_alive = self.parser.should_keep_alive()
        request.http10 = self.parser.get_http_version() == "1.0"
        self.progress = True
        path, sep, query = request.raw_path.partition(b"?")
        if sep:
            request.raw_path, request.query = path, query
        self.header_bytes = 0

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.progress = True
        request.body.append(body)
        request.buffered += len(body) + 64  # (a piece's own cost too: many tiny chunks are not free)
        if request is self.running:
            self._wake_body()
        if request.buffered > _BODY_HIGH_WATER:
            self._pause_reading()  # until the app takes it (receive resumes)

    def on_chunk_header(self) -> None:
        self.progress = True

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        self.progress = True
        request.complete = True
        self.parsing = None
        if request is self.running:
            self._wake_body()

    def _header_limit_text(self) -> str:
        return (
            f"Request line and headers exceed {self.limits.max_header_bytes} bytes; raise "
            "--rest_api_max_header_bytes if they must be this large"
        )

    # -- answering ----------------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer what can be answered now, in order; start the app on a request that cannot."""
        requests = self.requests
        while self.running is None and requests and not self.write_paused and not self.closing:
            request = requests[0]
            if not request.method:
                break  # its headers are still coming
            if request.complete and self.server.fast is not None:
                try:
                    response = self.server.fast.respond_now(request)
                except Exception:  # a bug in the app: answer 500 and keep serving
                    logger.exception("Unexpected error answering %s %r", request.method, request.raw_path)
                    response = _INTERNAL
                if response is not None:
                    requests.popleft()
                    if type(response) is tuple:
                        self._write(request, *response)
                        continue
                    self.running = request
                    self.loop.create_task(self._answer_later(request, response))  # type: ignore[arg-type]
                    break
            requests.popleft()
            self.running = request
            self.loop.create_task(self._run_app(request))
        if self.failure is not None:
            if self.running is None and not requests and not self.closing:
                # Every request before the one that failed is answered: now its error, and close.
                assert self.transport is not None
                self.transport.write(self.failure)
                self._close()
            return
        # A pipelined request waits for the one running (or for the client to read its answers),
        # unread beyond what has arrived; with nothing to wait for, read on (a request whose headers
        # are still coming needs the rest of them).
        if requests and (self.running is not None or self.write_paused):
            self._pause_reading()
        elif self.running is None and not self.write_paused:
            self._resume_reading()

    def _write(self, request: Request, status: int, headers: Headers, body: bytes) -> None:
        keep_alive = request.keep_alive and request.complete and not self.server.stopping
        transport = self.transport
        assert transport is not None
        transport.write(
            encode_response(
                status,
                headers,
                body,
                keep_alive=keep_alive,
                send_body=request.method != "HEAD",
                http10=request.http10,
            )
        )
        self.last_active = self.loop.time()
        if not keep_alive:
            self._close()

    async def _answer_later(self, request: Request, pending: Awaitable[Response]) -> None:
        """A fast-path answer that awaits (`FastPath.respond_now`): written in its turn, as an ASGI
        answer would be, without an ASGI scope, receive or send."""
        response = _INTERNAL
        try:
            response = await pending
        except Exception:  # a bug in the app: answer 500 and keep serving
            logger.exception("Unexpected error answering %s %r", request.method, request.raw_path)
        finally:  # also when cancelled: the connection must not wait for this answer forever
            if not self.closing:
                self._write(request, *response)
            self.running = None
            self._next()

    async def _run_app(self, request: Request) -> None:
        started: list[Any] = []  # the response start message, until its body comes
        streaming = False
        done = False
        # (an HTTP/1.0 client's expectation is ignored, RFC 9110 §10.1.1)
        expect_continue = not request.http10 and any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in request.headers
        )

        async def receive() -> Message:
            nonlocal expect_continue
            while not request.body and not request.complete and not self.closing:
                if expect_continue and self.transport is not None:
                    expect_continue = False
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._resume_reading()
                self.body_waiter = self.loop.create_future()
                await self.body_waiter
            if self.closing and not request.complete and not request.body:
                return {"type": "http.disconnect"}
            body = b"".join(request.body) if len(request.body) != 1 else request.body[0]
            request.body.clear()
            request.buffered = 0
            if done:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": not request.complete}

        async def send(message: Message) -> None:
            nonlocal streaming, done
            kind = message["type"]
            transport = self.transport
            if done or transport is None or self.closing:
                return
            if kind == "http.response.start":
                started.append(message)
                return
            if kind != "http.response.body" or not started:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            start = started[0]
            if not streaming and not more:
                self._write(request, start["status"], start.get("headers", ()), body)
                done = True
                return
            head_only = request.method == "HEAD"
            if not streaming:
                # A streamed response: the chunked coding, or for an HTTP/1.0 client the body as it
                # comes and then the end of the connection.
                streaming = True
                keep_alive = request.keep_alive and not request.http10 and not self.server.stopping
                head = encode_response(
                    start["status"],
                    start.get("headers", ()),
                    b"",
                    keep_alive=keep_alive,
                    chunked=not request.http10,
                    length=False,
                )
                request.keep_alive = keep_alive
                transport.write(head)
            if body and not head_only:
                if request.http10:
                    transport.write(body)
                else:
                    transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not more:
                done = True
                if not request.http10 and not head_only:
                    transport.write(b"0\r\n\r\n")
                if not (request.keep_alive and request.complete) or self.server.stopping:
                    self._close()
            elif self.write_paused and not self.closing:
                # The client reads slower than the app writes: wait for the buffer to drain.
                self.drain_waiter = self.drain_waiter or self.loop.create_future()
                await self.drain_waiter

        try:
            await self.server.app(self._scope(request), receive, send)
        except Exception:
            logger.exception("Unexpected error answering %s %r", request.method, request.raw_path)
        finally:
            if not done and not self.closing:
                if streaming:  # a streamed response cut short: the client sees it end early
                    self._close()
                else:
                    self._write(request, *_INTERNAL)
            if not request.complete:
                self._close()  # the app answered before the body ended: the connection cannot go on
            self.running = None
            self._next()

    def _scope(self, request: Request) -> Scope:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.local,
            "client": self.peer,
            "scheme": "http",
            "method": request.method,
            "root_path": "",
            "path": unquote(request.raw_path.decode("latin-1")),
            "raw_path": request.raw_path,
            "query_string": request.query,
            "headers": request.headers,
        }

    # -- flow and lifecycle -------------------------------------------------------------------------

    def _wake_body(self) -> None:
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.body_waiter = None

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    def _fail(self, status: int, message: str) -> None:
        """A request that cannot be parsed, or is over a limit: the byte stream is lost from it on.
        Requests before it that arrived whole are still answered, in order; then its error, and the
        connection closes (`_next`)."""
        if self.closing or self.failure is not None:
            return
        self.failure = _error_response(status, message)
        self._pause_reading()
        self.parsing = None
        whole = [r for r in self.requests if r.complete]
        self.requests.clear()
        self.requests.extend(whole)
        running = self.running
        if running is not None and not running.complete:
            # The request being answered lost the rest of its body: answer it with the error now
            # (its app sees a disconnect, and anything it sends later is dropped).
            self.requests.clear()
            assert self.transport is not None
            self.transport.write(self.failure)
            self._close()
            return
        self._next()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
        self._wake_body()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def idle(self) -> bool:
        return self.running is None and not self.requests

    def unstarted(self) -> bool:
        """Nothing accepted yet: no request running, and none whose headers have all arrived."""
        return self.running is None and (not self.requests or not self.requests[0].method)

    def sweep(self, now: float) -> None:
        """Apply the timeouts: headers too slow (408), a body the app waits for that stopped coming
        (408), or idle too long (closed)."""
        if self.closing or self.failure is not None:
            return
        limits = self.limits
        if self.running is None and self.requests and not self.requests[0].method:
            if now - self.requests[0].began > limits.header_timeout:
                self._fail(
                    408,
                    f"The request headers did not arrive within {limits.header_timeout:g} s "
                    "(--rest_api_header_timeout_seconds)",
                )
        elif (
            self.body_waiter is not None
            and self.running is not None
            and not self.running.complete
            and now - self.last_active > limits.body_timeout
        ):
            self._fail(
                408,
                f"The request body stopped arriving: nothing for {limits.body_timeout:g} s "
                "(--rest_api_body_timeout_seconds)",
            )
        elif self.idle() and now - self.last_active > limits.keep_alive_timeout:
            self._close()


class Http1Server:
    """The listening socket, its connections and the timeout sweep. `stop` lets requests in flight
    finish (up to the grace period), closing each connection when its last response is written."""

    def __init__(self, app: AsgiApp, sock: socket.socket, limits: Limits, grace: float) -> None:
        self.app = app
        fast = getattr(app, "respond_now", None)
        self.fast: FastPath | None = app if callable(fast) else None  # type: ignore[assignment]
        self.sock = sock
        self.limits = limits
        self.grace = grace
        self.loop = asyncio.get_event_loop()
        self.connections: set[Connection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._forced = asyncio.Event()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: Connection(self), sock=self.sock)
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            now = self.loop.time()
            for connection in list(self.connections):
                connection.sweep(now)

    async def stop(self, force: bool = False) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            if connection.unstarted():  # (a request still sending its headers was not accepted)
                connection._close()
        deadline = self.loop.time() + (0 if force else self.grace)
        while self.connections and self.loop.time() < deadline and not self._forced.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._forced.wait(), 0.05)
            for connection in list(self.connections):
                if connection.unstarted():
                    connection._close()
        for connection in list(self.connections):
            connection._close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def force(self) -> None:
        self._forced.set()
