"""gRPC over HTTP/2 on asyncio: sigserve's own transport (the default; grpcio's server stays
available with `--grpc_transport=grpcio`).

Why not grpcio: measured with h2load (1-row Predict, one connection, 64 streams) on the 2-CPU
benchmark machine, a grpc.aio handler that only parses the request and makes the TensorFlow call
served 2,500-4,400 req/s, and grpcio's bare echo 5,500-6,900; this transport with the same handler
served 40,000-46,000. Each grpcio call crosses threads (C-core's poller, a wake-up of the loop)
and holds a GIL hand-off around the TensorFlow call; here a read of 64 multiplexed requests is
parsed, run and answered in one pass of the loop with one write.

This module is the adapter, in the manner of uvicorn's protocol classes: it owns the sockets, TLS,
the thread pool, deadlines, the calls on the loop and the routing to the method table. Everything
HTTP/2 decides (framing, HPACK, stream states, flow control, every limit and timeout) is in the
I/O-free `sigserve.server.http2` package, which this drives: bytes in, events out, answers in, bytes
out. Unary methods run inline on the loop or in the pool (`grpc_methods.Method`); streaming methods
(health Watch, reflection) are async generators on the loop (`grpc_methods.StreamMethod`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import functools
import logging
import os
import socket
import ssl
import stat
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

from sigserve.errors import Code, SigserveError, invalid_argument, unavailable
from sigserve.server import eager
from sigserve.server.grpc_methods import Method, StreamMethod, call_method, rpc_status
from sigserve.server.http2 import frames
from sigserve.server.http2.connection import ServerConnection
from sigserve.server.http2.events import (
    ConnectionTerminated,
    MessageReceived,
    MessageTooLarge,
    RequestEnded,
    RequestReceived,
    StreamReset,
    StreamWritable,
)
from sigserve.server.http2.grpc_wire import parse_timeout
from sigserve.server.http2.limits import Limits

logger = logging.getLogger("sigserve.grpc")

# Answers buffered for a peer before we stop reading its requests (pause_writing).
WRITE_BUFFER_HIGH = 4 << 20
TICK_SECONDS = 1.0  # how often the timeouts are applied

AnyMethod = Method | StreamMethod
# What runs a unary call: a pool call, or (batching on) the task that awaits its batch.
_Running: TypeAlias = "concurrent.futures.Future[bytes] | asyncio.Future[bytes]"


class _Call:
    """One call: its method, headers and deadline, then its request message, then what runs it
    (a pool future or, for a streaming call, a task and its request inbox)."""

    __slots__ = (
        "compressed",
        "deadline",
        "future",
        "headers",
        "held",
        "id",
        "inbox",
        "message",
        "method",
        "orphan",
        "task",
        "timer",
        "writable",
    )

    def __init__(
        self, stream_id: int, method: AnyMethod, headers: dict[str, str], deadline: float | None
    ) -> None:
        self.id = stream_id
        self.method = method
        self.headers = headers
        self.deadline = deadline
        self.message: bytes | None = None
        self.compressed = False
        self.held = 0  # request bytes the connection counts until this call lets them go
        self.future: _Running | None = None
        self.orphan = False  # its stream is gone while its pool call runs
        self.task: asyncio.Task[None] | None = None
        self.inbox: _Inbox | None = None
        self.writable: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None


class _Inbox:
    """A streaming call's request messages as they arrive, for its async generator. Taking one
    gives its bytes back to the connection's buffer and the stream's window."""

    def __init__(self, protocol: GrpcConnection, stream_id: int) -> None:
        self._protocol = protocol
        self._stream_id = stream_id
        self._items: collections.deque[tuple[bytes, int]] = collections.deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, data: bytes, size: int) -> None:
        self._items.append((data, size))
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def held(self) -> int:
        return sum(size for _, size in self._items)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def messages(self) -> AsyncIterator[bytes]:
        while True:
            if self._items:
                data, size = self._items.popleft()
                self._protocol.release(size, self._stream_id)
                yield data
            elif self._ended:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter


class GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection: feeds the bytes to a `ServerConnection` and runs the calls."""

    def __init__(self, server: GrpcH2Server) -> None:
        self.server = server
        self.conn = ServerConnection(server.limits)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.closed = False
        self._flush_scheduled = False
        # Within one read: whether events follow the one being handled, and how many awaited calls
        # it started (a call that is not alone in its read starts as a task: see `_run`).
        self._more_events = False
        self._awaited_this_read = 0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        server = self.server
        if len(server.connections) >= server.limits.max_connections and not server.make_room():
            message = "connection limit reached (grpc.max_allowed_incoming_connections)"
            self.conn.close(frames.ENHANCE_YOUR_CALM, message)
            self._flush()
            self._close_soon()
            return
        server.connections.add(self)
        if server.stopping:
            self.conn.start_shutdown()
        self._flush()

    def pause_writing(self) -> None:
        # The peer is not reading its answers: stop taking its requests until it does, so that a
        # client that only sends cannot grow our write buffer without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            self._drop(call)
        self.calls.clear()
        self.server.connection_done()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        self._awaited_this_read = 0
        try:
            self._handle(conn.receive_data(data))
            while conn.paused:  # resets to settle before a new stream (see ServerConnection.orphans)
                self._handle(conn.receive_data(b""))
        except Exception as e:  # a bug: end this connection, keep serving the others
            logger.exception("Unexpected error on a gRPC connection")
            conn.close(frames.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        self._flush()
        if conn.want_close:
            self._close()

    # -- events ----------------------------------------------------------------------------------

    def _handle(self, events: list[Any]) -> None:
        last = len(events) - 1
        for index, event in enumerate(events):
            self._more_events = index < last
            kind = type(event)
            if kind is MessageReceived:
                self._message(event)
            elif kind is RequestReceived:
                self._request(event)
            elif kind is RequestEnded:
                self._request_ended(event)
            elif kind is StreamReset:
                call = self.calls.pop(event.stream_id, None)
                if call is None or not self._drop(call, counted=True):
                    self.conn.call_ended()
            elif kind is StreamWritable:
                call = self.calls.get(event.stream_id)
                if call is not None and call.writable is not None and not call.writable.done():
                    call.writable.set_result(None)
            elif kind is MessageTooLarge:
                self._fail(event.stream_id, Code.RESOURCE_EXHAUSTED, event.message)
            elif kind is ConnectionTerminated and not event.remote:
                logger.info("Closing a gRPC connection: %s", event.message)

    def _request(self, event: RequestReceived) -> None:
        sid, headers = event.stream_id, event.headers
        conn = self.conn
        post = headers.get(":method") == "POST"
        if not post or not headers.get("content-type", "").startswith("application/grpc"):
            text = "sigserve serves gRPC here: POST with content-type application/grpc"
            conn.send_http_status(sid, b"415" if post else b"405", int(Code.UNKNOWN), text)
            return
        method = self.server.methods.get(headers[":path"])
        if method is None:
            conn.send_status(sid, int(Code.UNIMPLEMENTED), "Method not found!")
            return
        deadline = None
        timeout_header = headers.get("grpc-timeout")
        if timeout_header is not None:
            seconds = parse_timeout(timeout_header)
            if seconds is not None:
                deadline = time.monotonic() + seconds
        call = _Call(sid, method, headers, deadline)
        self.calls[sid] = call
        if type(method) is StreamMethod and method.client_streaming:
            conn.allow_slow_request(sid)
            self._start_stream(call, None)
            if event.end_stream:
                assert call.inbox is not None
                call.inbox.end()
        elif event.end_stream:
            self._fail(sid, Code.INTERNAL, "Expected one request message, got none")

    def _message(self, event: MessageReceived) -> None:
        call = self.calls.get(event.stream_id)
        if call is None:  # answered already (e.g. an error before its request ended)
            self.conn.release(event.size)
            return
        if call.inbox is not None:
            data = event.data
            if event.compressed:
                try:
                    data = self._decompress(data, call.headers.get("grpc-encoding", "identity"))
                except SigserveError as e:
                    self.conn.release(event.size)
                    self._fail(call.id, e.code, e.message)
                    return
            call.inbox.put(data, event.size)
            if event.end_stream:
                call.inbox.end()
            return
        if call.message is not None:
            self.conn.release(event.size)
            self._fail(call.id, Code.INTERNAL, "Expected exactly one request message")
            return
        call.message = event.data
        call.compressed = event.compressed
        call.held = event.size
        if event.end_stream:
            self._run(call)

    def _request_ended(self, event: RequestEnded) -> None:
        call = self.calls.get(event.stream_id)
        if call is None:
            return
        if call.inbox is not None:
            call.inbox.end()
        elif event.leftover:
            self._fail(call.id, Code.INTERNAL, "Expected exactly one request message")
        elif call.message is None:
            self._fail(call.id, Code.INTERNAL, "Expected one request message, got none")
        else:
            self._run(call)

    # -- unary calls -----------------------------------------------------------------------------

    def _run(self, call: _Call) -> None:
        """The request is whole: answer on the loop if the method can, else in the pool."""
        sid = call.id
        message = call.message
        assert message is not None
        method = call.method
        if call.compressed:
            try:
                message = self._decompress(message, call.headers.get("grpc-encoding", "identity"))
            except SigserveError as e:
                self._fail(sid, e.code, e.message)
                return
        timeout = None
        if call.deadline is not None:
            timeout = call.deadline - time.monotonic()
            if timeout <= 0:
                self._fail(sid, Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
                return
        if type(method) is StreamMethod:  # server streaming: the one request has arrived
            self._start_stream(call, message)
            return
        assert isinstance(method, Method)
        ctx = method.context(timeout, call.headers)
        if method.awaited is not None:
            # Batching on: the call awaits its batch on this loop (then, if its servable does not
            # batch, goes on to the short path or the pool from there), holding no thread. A call
            # alone on its connection and in its read is started here, so that on an idle loop its
            # batch runs at once (`eager.py`); calls that arrive together (one read of a connection
            # with many streams) start as tasks, so that they meet in one batch.
            coro = call_method(method, message, ctx, self.server.executor)
            loop = asyncio.get_running_loop()
            alone = len(self.calls) == 1 and not self._more_events and not self._awaited_this_read
            self._awaited_this_read += 1
            task = eager.start(loop, coro) if alone else loop.create_task(coro)
            call.future = task
            call.message = None
            if task.done():
                self._pool_done(call, task)
            else:
                task.add_done_callback(functools.partial(self._pool_done, call))
            return
        if method.inline is not None:
            try:
                out = method.inline(message, ctx)
            except Exception as e:
                code, text = rpc_status(e)
                self._fail(sid, code, text)
                return
            if out is not None:
                del self.calls[sid]
                self.conn.send_unary(sid, out)
                self.conn.release(call.held)
                return
        try:
            future = self.server.executor.submit(method.body, message, ctx)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._fail(sid, Code.UNAVAILABLE, "The server is shutting down")
            return
        call.future = future
        call.message = None  # the pool call holds it now
        loop = asyncio.get_running_loop()

        def done(f: concurrent.futures.Future[bytes]) -> None:  # in the worker thread
            try:
                loop.call_soon_threadsafe(self._pool_done, call, f)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        future.add_done_callback(done)

    def _pool_done(self, call: _Call, future: _Running) -> None:
        self.conn.release(call.held)
        if call.orphan:  # its stream went first (see _drop)
            self.conn.call_ended()
            if not future.cancelled():
                future.exception()  # retrieved: the caller is gone
            self._flush()
            return
        if self.calls.get(call.id) is not call:
            return
        del self.calls[call.id]
        if future.cancelled():
            self.conn.send_status(call.id, int(Code.CANCELLED), "Cancelled")
        else:
            error = future.exception()
            if error is None:
                self.conn.send_unary(call.id, future.result())
            else:
                code, text = rpc_status(error)
                self.conn.send_status(call.id, code, text)
        self._flush()
        if self.conn.want_close:
            self._close()

    def _fail(self, stream_id: int, code: int, message: str) -> None:
        """End a call that has not started (or a streaming one) with a status."""
        call = self.calls.pop(stream_id, None)
        if call is not None:
            self._drop(call)
        self.conn.send_status(stream_id, int(code), message)

    def _drop(self, call: _Call, counted: bool = False) -> bool:
        """Forget a call whose stream is gone: stop what runs for it, give back what it holds.
        True if its pool call runs on (an orphan, holding a stream place until it ends; `counted`:
        the connection already holds that place, as it does for a reset stream)."""
        if call.timer is not None:
            call.timer.cancel()
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.inbox is not None:
            self.conn.release(call.inbox.held())
        future, call.future = call.future, None
        if future is not None:
            if not future.cancel():
                # Running (TensorFlow cannot be interrupted), or done but not yet seen by
                # _pool_done: it counts against this connection's streams until then.
                call.orphan = True
                if not counted:
                    self.conn.orphans += 1
                return True
            # Cancelled while queued: it never runs; _pool_done gives back its bytes.
        elif call.message is not None:
            self.conn.release(call.held)
            call.message = None
        return False

    def _decompress(self, message: bytes, encoding: str) -> bytes:
        """A gzip/deflate request message, inflated no further than the receive limit: a few KB
        that inflate to gigabytes must not be inflated at all."""
        if encoding not in ("gzip", "deflate"):
            raise SigserveError(
                Code.UNIMPLEMENTED,
                f"Compression algorithm '{encoding}' is not supported; use gzip, deflate or none",
            )
        limit = self.conn.limits.max_receive_message
        inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(message, limit + 1)
        except zlib.error as e:
            raise SigserveError(Code.INTERNAL, f"Could not decompress the request message: {e}") from None
        if len(out) > limit:
            raise SigserveError(
                Code.RESOURCE_EXHAUSTED, f"Received message larger than max (more than {limit} vs. {limit})"
            )
        if not inflater.eof:
            raise SigserveError(Code.INTERNAL, "Could not decompress the request message: it is truncated")
        return out

    # -- streaming calls -------------------------------------------------------------------------

    def _start_stream(self, call: _Call, message: bytes | None) -> None:
        """Run a StreamMethod's generator in a task: `message` is the one request of a server-
        streaming call; a client-streaming call's requests come through its inbox."""
        method = call.method
        assert isinstance(method, StreamMethod)
        loop = asyncio.get_running_loop()
        if message is None:
            call.inbox = _Inbox(self, call.id)
            requests = call.inbox.messages()
        else:
            self.conn.release(call.held)
            call.message = None
            requests = _one(message)
        timeout = None if call.deadline is None else max(call.deadline - time.monotonic(), 0.0)
        ctx = method.context(timeout, call.headers)
        call.task = loop.create_task(self._pump(call, method.body(requests, ctx)))
        if call.deadline is not None:
            call.timer = loop.call_at(loop.time() + (call.deadline - time.monotonic()), self._expired, call)

    async def _pump(self, call: _Call, answers: AsyncIterator[bytes]) -> None:
        conn, sid = self.conn, call.id
        try:
            async for answer in answers:
                if self.calls.get(sid) is not call:
                    return
                if not conn.send_message(sid, answer):
                    call.writable = asyncio.get_running_loop().create_future()
                    self._flush()
                    await call.writable
                    call.writable = None
                self._flush()
            if self.calls.get(sid) is call:
                del self.calls[sid]
                conn.send_status(sid, 0)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self.calls.get(sid) is call:
                del self.calls[sid]
                code, text = rpc_status(e)
                conn.send_status(sid, code, text)
        finally:
            if call.timer is not None:
                call.timer.cancel()
            if not self.closed:
                self._flush()
                if conn.want_close:
                    self._close()

    def _expired(self, call: _Call) -> None:
        if self.calls.get(call.id) is call:
            call.timer = None
            self._fail(call.id, Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self._flush()

    def release(self, size: int, stream_id: int = 0) -> None:
        """Request bytes a streaming call has taken: the window update goes out soon."""
        self.conn.release(size, stream_id)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    # -- output and closing ----------------------------------------------------------------------

    def _flush(self) -> None:
        out = self.conn.frames_to_send()
        if out and self.transport is not None and not self.closed:
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)

    def tick(self) -> None:
        """The timeouts, about once a second (the server's timer)."""
        if self.closed:
            return
        self._handle(self.conn.expire())
        self._flush()
        if self.conn.want_close:
            self._close()

    def _close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.server.stopping:
            logger.info(
                "gRPC connection closed for the shutdown: last stream %d, %d refused",
                self.conn.last_stream_id,
                self.conn.refused,
            )
        if self.conn.terminated:
            self._close_soon()
        elif self.transport is not None:
            self.transport.close()

    def _close_soon(self) -> None:
        """Close, and drop the connection a second later if the peer has not read what is left
        (close() alone waits for the write buffer to drain)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            asyncio.get_running_loop().call_later(1.0, transport.abort)

    @property
    def idle(self) -> bool:
        return not self.calls and not self.conn.streams and not self.conn.orphans

    def evict(self) -> None:
        """Make room for a new connection (the server is at its connection limit)."""
        self.conn.close(frames.NO_ERROR, "idle connection closed: the server is at its connection limit")
        self._flush()
        self._close_soon()
        self.server.connections.discard(self)

    def go_away(self) -> None:
        """Refuse new streams; close once those already sent are answered."""
        if self.closed:
            return
        self.conn.start_shutdown()
        self._flush()
        if self.conn.want_close:
            self._close()

    def abort(self) -> None:
        """Grace is over: cancel what is still running and drop the connection."""
        for sid, call in list(self.calls.items()):
            if call.inbox is not None or call.task is not None:
                self.conn.reset_stream(sid, frames.CANCEL)
                del self.calls[sid]
                self._drop(call)
            else:
                self._fail(sid, Code.UNAVAILABLE, "The server is shutting down")
        self.conn.close(frames.NO_ERROR, "the server is shutting down")
        self._flush()
        self._close_soon()


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message


# -- the server ------------------------------------------------------------------------------------


def tls_context(server_key: str, server_cert: str, custom_ca: str, client_verify: bool) -> ssl.SSLContext:
    """A TLS server context offering HTTP/2 by ALPN, as gRPC clients require."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a key pair only from files: a private temporary file, removed at once.
    fd, path = tempfile.mkstemp(prefix="sigserve-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(server_key.strip() + "\n" + server_cert.strip() + "\n")
        context.load_cert_chain(path)
    except ssl.SSLError as e:
        raise invalid_argument(
            f"--ssl_config_file: server_key / server_cert are not a usable PEM pair: {e}"
        ) from None
    finally:
        os.unlink(path)
    if custom_ca:
        try:
            context.load_verify_locations(cadata=custom_ca)
        except ssl.SSLError as e:
            raise invalid_argument(
                f"--ssl_config_file: custom_ca is not a usable PEM certificate: {e}"
            ) from None
    context.verify_mode = ssl.CERT_REQUIRED if client_verify else ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


def address_in_use(address: str, reason: str) -> SigserveError:
    """A busy gRPC port at start-up: what failed, TF Serving's words for it, and what to do."""
    port = address.rpartition(":")[2]
    other = f"--port={int(port) + 1}" if port.isdigit() else "--port=8510"
    return unavailable(
        f"Could not bind the gRPC API to {address}: {reason} (TF Serving: Failed to BuildAndStart "
        f"gRPC server). Is another sigserve or TF Serving using port {port}? Stop it, or serve gRPC "
        f"on another port, e.g. {other} (--port=0 serves REST only)"
    )


def bind(address: str) -> list[socket.socket]:
    """Listening sockets for `host:port`, `[v6]:port` or `unix:path`, bound now so that a busy
    address fails `sigserve serve` at start-up. A name is bound on every address it resolves to
    (`localhost`: 127.0.0.1 and ::1), as grpcio does."""
    try:
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a socket left by an earlier server
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.listen(1024)
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
            return [sock]
        host, _, port = address.rpartition(":")
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as e:
        raise unavailable(f"Could not bind the gRPC API to {address}: {e}") from None
    sockets: list[socket.socket] = []
    errors: list[str] = []
    in_use = False
    seen: set[Any] = set()
    for family, kind, proto, _, sockaddr in infos:
        if sockaddr in seen:
            continue
        seen.add(sockaddr)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                continue  # e.g. ::1 on a host without IPv6
            in_use = e.errno == errno.EADDRINUSE
            errors.append(e.strerror or str(e))
            break
        sock.setblocking(False)
        sockets.append(sock)
    if errors or not sockets:
        for sock in sockets:
            sock.close()
        reason = errors[0] if errors else "no usable address"
        if errors and in_use:
            raise address_in_use(address, reason)
        raise unavailable(f"Could not bind the gRPC API to {address}: {reason}")
    return sockets


class GrpcH2Server:
    """The native gRPC front end as the serve wiring drives it: `await start()`, `await stop(grace)`.

    `methods` maps a method path (`/tensorflow.serving.PredictionService/Predict`) to what runs it;
    `on_stop` runs when a stop begins (health turns NOT_SERVING and ends its Watch streams)."""

    def __init__(
        self,
        methods: dict[str, AnyMethod],
        executor: concurrent.futures.ThreadPoolExecutor,
        sockets: list[tuple[str, socket.socket]],
        *,
        tls: ssl.SSLContext | None,
        limits: Limits,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.methods = methods
        self.executor = executor
        self.sockets = sockets
        self.addresses = list(dict.fromkeys(address for address, _ in sockets))
        self.tls = tls
        self.limits = limits
        self.on_stop = on_stop
        self.connections: set[GrpcConnection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.stopping = False
        self._idle = asyncio.Event()
        self._ticker: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = lambda: GrpcConnection(self)  # noqa: E731
        handshake = self.limits.handshake_timeout if self.tls is not None else None
        for address, sock in self.sockets:
            if address.startswith("unix:"):
                listener = await loop.create_unix_server(
                    factory, sock=sock, ssl=self.tls, ssl_handshake_timeout=handshake
                )
            else:
                listener = await loop.create_server(
                    factory, sock=sock, ssl=self.tls, ssl_handshake_timeout=handshake
                )
            self.listeners.append(listener)
        self._ticker = loop.call_later(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        for connection in list(self.connections):
            connection.tick()
        self._ticker = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def make_room(self) -> bool:
        """At the connection limit: close the connection idle the longest (one that never finished
        its handshake first) to let a new one in; False if every connection is busy."""
        idle = [c for c in self.connections if c.idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c.conn.handshaken, c.conn.idle_since))
        victim.evict()
        return True

    def connection_done(self) -> None:
        if self.stopping and not self.connections:
            self._idle.set()

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        if self.on_stop is not None:
            await self.on_stop()
        for connection in list(self.connections):
            connection.go_away()
        await asyncio.sleep(0)
        if self.connections:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=grace or 0)
            except asyncio.TimeoutError:
                pass
        for connection in list(self.connections):
            connection.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        # A cancelled RPC's TensorFlow call cannot be interrupted; its worker finishes on its own.
        self.executor.shutdown(wait=False, cancel_futures=True)
        for address in self.addresses:
            if address.startswith("unix:"):
                try:
                    os.unlink(address[len("unix:") :])
                except OSError:
                    pass


def create(
    methods: dict[str, AnyMethod],
    executor: concurrent.futures.ThreadPoolExecutor,
    addresses: list[str],
    *,
    tls: ssl.SSLContext | None,
    channel_arguments: dict[str, Any],
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> GrpcH2Server:
    limits = Limits.from_channel_arguments(channel_arguments)
    sockets: list[tuple[str, socket.socket]] = []
    try:
        for address in addresses:
            sockets.extend((address, sock) for sock in bind(address))
    except BaseException:
        for _, sock in sockets:
            sock.close()
        raise
    return GrpcH2Server(methods, executor, sockets, tls=tls, limits=limits, on_stop=on_stop)
