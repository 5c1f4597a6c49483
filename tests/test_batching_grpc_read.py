"""gRPC with the batching loop lane: unary calls that arrive in one read of one connection meet in
one batch. Only a call alone in its read (and on its connection) is started eagerly, so that it
runs at once on an idle loop (`server/eager.py`); had every call started eagerly, each would have
found the loop idle and run alone.

A real `GrpcH2Server` on loopback, a raw HTTP/2 client that writes four calls in one `sendall`, and
a numpy runner behind a zero-timeout `BatchingRunner` already in the loop lane (no TensorFlow).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import Any

import numpy as np

from sigserve.batching import BatchScheduler, parse_batching_parameters
from sigserve.batching.scheduler import LOOP_WINDOW
from sigserve.server import grpc_h2
from sigserve.server.grpc_methods import Method
from sigserve.server.http2 import frames
from sigserve.server.http2.limits import Limits
from tests.raw_h2 import RawH2, frame, grpc_framed
from tests.test_batching_awaited import Inner

PATH = "/pkg.Service/Method"


def test_calls_in_one_read_share_one_batch() -> None:
    scheduler = BatchScheduler(
        parse_batching_parameters(
            "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }"
        )
    )
    inner = Inner()
    runner: Any = scheduler.wrapper()(inner)

    async def awaited(data: bytes, ctx: Any) -> bytes:
        out = await runner.run_awaited({"x": np.array([[float(data[0])]])}, ["y"])
        return bytes([int(out[0][0, 0]) % 256])

    method = Method(lambda data, ctx: b"pool", awaited=awaited)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    done: list[asyncio.Event] = []
    executor = concurrent.futures.ThreadPoolExecutor(2)

    async def serve() -> None:
        for _ in range(LOOP_WINDOW + 2):  # the key's steps are known short: the loop lane is on
            await runner.run_awaited({"x": np.array([[1.0]])}, ["y"])
        server = grpc_h2.GrpcH2Server(
            {PATH: method}, executor, [("127.0.0.1", sock)], tls=None, limits=Limits()
        )
        await server.start()
        done.append(asyncio.Event())
        ready.set()
        await done[0].wait()
        await server.stop(0)

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        inner.batch_rows.clear()
        client = RawH2(port)
        streams = (1, 3, 5, 7)
        burst = b"".join(
            frame(frames.HEADERS, frames.END_HEADERS, sid, client.headers_block(path=PATH))
            + frame(frames.DATA, frames.END_STREAM, sid, grpc_framed(bytes([sid])))
            for sid in streams
        )
        client.send(burst)
        answers = [client.response(sid)[1] for sid in streams]
        client.close()
        # y = 3x + 1 per row, answered to each stream (5 bytes of gRPC framing + 1 byte)
        assert [a[5:] for a in answers] == [bytes([(3 * sid + 1) % 256]) for sid in streams]
        assert inner.batch_rows == [4]
    finally:
        loop.call_soon_threadsafe(lambda: done and done[0].set())
        thread.join(10)
        loop.close()
        scheduler.stop()
        executor.shutdown()
