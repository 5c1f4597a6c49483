"""TF Serving's REST API as a raw ASGI application (tfserving-api.md §1), served by uvicorn.

No web framework: the routing is TF Serving's two regular expressions (`urls.py`), and a framework's
per-request machinery would cost more than the routing does. Whatever may take long (large or gzipped
bodies, metadata, classify/regress, slow models, batching) runs in a bounded thread pool
(`--rest_api_num_threads`), so the event loop keeps moving bytes. A small predict on a model whose
TensorFlow call is known to take well under the cost of the hop to the pool runs on the loop itself
(`inline.py` has the rules and the measurements behind them).

Paths: `/v1/...` is the TF Serving API; `/healthz` (alive), `/readyz` (every configured model has an
AVAILABLE version) and the Prometheus page (`--monitoring_config_file`) are exact-path handlers that
take priority, as TF Serving's metrics page does. Anything else is a plain 404, not JSON (as libevent).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

from sigserve.errors import Code, SigserveError, http_status, invalid_argument
from sigserve.server import rest_metadata, urls
from sigserve.server.inline import InlinePolicy, Route
from sigserve.server.metrics import Metrics
from sigserve.server.options import ServerOptions

logger = logging.getLogger("sigserve.rest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"

_JSON = (b"content-type", b"application/json")
_CORS = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
)
_MAX_CACHED_URLS = 1024
_NOT_FOUND_BODY = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"


class BodyTooLarge(Exception):
    """A request body (after gzip decoding) above `--max_request_body_bytes`: answered with 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Request body is larger than the limit of {limit} bytes "
            f"(set --max_request_body_bytes to raise it, e.g. --max_request_body_bytes={limit * 2})"
        )


def num_rest_threads(options: ServerOptions) -> int:
    """`--rest_api_num_threads`, where 0 means TF Serving's default of 4 × schedulable CPUs."""
    if options.rest_api_num_threads > 0:
        return options.rest_api_num_threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 4 * max(1, cpus)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip request body without ever holding more than `limit` bytes of output."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit:
            raise BodyTooLarge(limit)
        if not d.eof:
            raise invalid_argument("Failed to decompress the gzip request body: the gzip stream is truncated")
    except zlib.error as e:
        raise invalid_argument(f"Failed to decompress the gzip request body: {e}") from None
    return out


class RestApp:
    """The ASGI application. `create_app` builds one; `close()` stops its thread pool."""

    def __init__(
        self,
        core: Any,
        options: ServerOptions,
        metrics: Metrics,
        *,
        metrics_path: str | None = DEFAULT_METRICS_PATH,
        model_names: Callable[[], Sequence[str]] | None = None,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
        inline: InlinePolicy | None = None,
    ) -> None:
        self.core = core
        self.options = options
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.model_names = model_names
        self.max_body = int(options.max_request_body_bytes)
        timeout_ms = int(options.rest_api_timeout_in_ms)
        self.timeout: float | None = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.cors = bool(options.rest_api_enable_cors_support)
        self.headers: tuple[tuple[bytes, bytes], ...] = (_JSON, *_CORS) if self.cors else (_JSON,)
        self.inline = inline if inline is not None else InlinePolicy()
        self._inline_timeout_ok = self.inline.allows_timeout(self.timeout)
        # (method, path) -> ApiCall for paths that parsed; most traffic repeats a handful of URLs.
        self._calls: dict[tuple[str, str], urls.ApiCall] = {}
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=num_rest_threads(options), thread_name_prefix="sigserve-rest"
        )
        self.shutting_down = False
        # Imported here, not at module level, so that `sigserve --help` stays fast.
        from sigserve.codec import example as codec_example
        from sigserve.codec import json as codec_json

        self._json = codec_json
        self._example = codec_example

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    # -- ASGI entry point ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        path_only = raw_path.decode("latin-1")
        method: str = scope["method"]

        if self.metrics_path is not None and path_only == self.metrics_path:
            await self._prometheus(path_only, query, send)
            return
        if path_only == "/healthz" and not query:
            await _respond(send, 200, b'{"status": "alive"}', (_JSON,))
            return
        if path_only == "/readyz" and not query:
            await self._readyz(send)
            return

        full_path = path_only + ("?" + query.decode("latin-1") if query else "")
        if not urls.is_api_path(full_path):
            await _respond(send, 404, _NOT_FOUND_BODY, ((b"content-type", b"text/html"),))
            return
        if method == "OPTIONS":
            await self._preflight(scope, send)
            return
        await self._api(scope, receive, send, method, full_path)

    # -- /v1 -------------------------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send, method: str, full_path: str) -> None:
        start = time.perf_counter()
        model_name = ""
        api = ""
        signature = ""
        try:
            call = self._calls.get((method, full_path))
            if call is None:
                call = self._parse_url(method, full_path)
            model_name = call.model_name
            api = call.kind if call.kind in urls.VERBS else ""
            gzipped = False
            body = b""
            if method == "POST":
                gzipped, body = await self._read_body(scope, receive)
            if (
                call.kind == "predict"
                and not gzipped
                and len(body) <= self.inline.max_body
                and self._inline_timeout_ok
            ):
                out, signature = await self._small_predict(call, body, start)
            else:
                out, signature = await self._in_pool(self._process, call, body, gzipped)
            code = Code.OK
            status = 200
        except BodyTooLarge as e:
            code, status, out = Code.INVALID_ARGUMENT, 413, self._json.encode_error(str(e))
        except SigserveError as e:
            code, status, out = e.code, http_status(e.code), self._json.encode_error(e.message)
        except Exception as e:  # a bug: answer INTERNAL and keep serving
            logger.exception("Unexpected error serving %s %s", method, full_path)
            code, status = Code.INTERNAL, 500
            out = self._json.encode_error(f"Internal error: {type(e).__name__}: {e}")
        self.metrics.observe_request(
            model_name=model_name,
            api=api,
            entrypoint="REST",
            signature=signature,
            code=code,
            latency_seconds=time.perf_counter() - start,
        )
        await _respond(send, status, out, self.headers)

    def _parse_url(self, method: str, full_path: str) -> urls.ApiCall:
        call = urls.parse(method, full_path)  # raises on a malformed path: those are not cached
        if len(self._calls) >= _MAX_CACHED_URLS:
            self._calls.clear()
        self._calls[(method, full_path)] = call
        return call

    async def _in_pool(self, fn: Callable[..., tuple[bytes, str]], *args: Any) -> tuple[bytes, str]:
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise self._deadline_exceeded() from None

    def _deadline_exceeded(self) -> SigserveError:
        return SigserveError(
            Code.DEADLINE_EXCEEDED,
            f"Deadline exceeded: the request took longer than --rest_api_timeout_in_ms="
            f"{self.options.rest_api_timeout_in_ms}",
        )

    async def _small_predict(self, call: urls.ApiCall, body: bytes, start: float) -> tuple[bytes, str]:
        """A predict with a small plain body: parsed here (bounded by the size), then run on the loop
        when its route qualifies (`inline.py`), else in the pool."""
        request = self._json.parse_predict(body)
        route: Route = (call.model_name, call.version, call.label, request.signature_name)
        if self.inline.likely(route):
            result = self._run_predict(call, request, route, inline=True)
            if result is not None:
                # The call could not be abandoned at the deadline; it is still answered 504 after it.
                if self.timeout is not None and time.perf_counter() - start > self.timeout:
                    raise self._deadline_exceeded()
                return result
        return await self._in_pool(self._predict, call, request, route)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bool, bytes]:
        """(whether the body is gzip-encoded, the body as sent), refusing one over the size limit."""
        limit = self.max_body
        gzipped = False
        length_seen = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and not length_seen:
                length_seen = True
                try:
                    declared = int(value)
                except ValueError:
                    continue
                if declared > limit:
                    raise BodyTooLarge(limit)
            elif name == b"content-encoding" and b"gzip" in value.lower():
                gzipped = True
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise SigserveError(Code.CANCELLED, "The client closed the connection")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return gzipped, chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _process(self, call: urls.ApiCall, body: bytes, gzipped: bool) -> tuple[bytes, str]:
        """Runs in the REST thread pool: parse, resolve the model, run TensorFlow, encode."""
        if gzipped:
            body = gunzip(body, self.max_body)
        kind = call.kind
        if kind == "predict":
            return self._predict(call, self._json.parse_predict(body), None)
        if kind == "classify" or kind == "regress":
            return self._classify_or_regress(call, body)
        if not call.model_name:
            raise invalid_argument("Missing model name in request.")
        if kind == "status":
            # A label does not narrow the status (TF Serving ignores it); a version does.
            return rest_metadata.status_json(self.core.model_status(call.model_name, call.version)), ""
        with self.core.handle(call.model_name, call.version, call.label) as servable:
            return rest_metadata.metadata_json(call.model_name, servable.version, servable.signatures), ""

    def _predict(self, call: urls.ApiCall, request: Any, route: Route | None) -> tuple[bytes, str]:
        result = self._run_predict(call, request, route, inline=False)
        assert result is not None  # only an inline call declines
        return result

    def _run_predict(
        self, call: urls.ApiCall, request: Any, route: Route | None, inline: bool
    ) -> tuple[bytes, str] | None:
        """Resolve the model, run TensorFlow, encode. `inline`: on the event loop, where it declines
        (returns None) unless the route's history allows this very servable (`inline.py`)."""
        requested = request.signature_name
        signame = requested or DEFAULT_SIGNATURE
        with self.core.handle(call.model_name, call.version, call.label) as servable:
            if inline and not self.inline.allows(route, servable):  # type: ignore[arg-type]
                return None
            sig = servable.signatures.get(signame)
            if sig is None:
                raise invalid_argument(f'Serving signature name: "{signame}" not found in signature def')
            if not sig.inputs:
                raise invalid_argument(f"Failed to get input map for signature: {requested or 'DEFAULT'}")
            inputs, row_format = request.to_inputs({k: v.dtype for k, v in sig.inputs.items()})
            # On the loop, the deadline is checked when the step returns (`_small_predict`).
            outputs, runtime = self.inline.predict(
                route, servable, inputs, signature_name=signame, timeout=self.timeout, inline=inline
            )
            self.metrics.observe_runtime(
                model_name=call.model_name, api="predict", signature=signame, latency_seconds=runtime
            )
        return self._json.encode_predict(outputs, row_format), signame

    def _classify_or_regress(self, call: urls.ApiCall, body: bytes) -> tuple[bytes, str]:
        request = self._json.parse_examples(body, call.kind)
        signame = request.signature_name or DEFAULT_SIGNATURE
        with self.core.handle(call.model_name, call.version, call.label) as servable:
            self.metrics.observe_examples(
                model_name=call.model_name, count=self._example.num_examples(request.input)
            )
            started = time.perf_counter()
            if call.kind == "classify":
                result = servable.classify(request.input, signature_name=signame, timeout=self.timeout)
            else:
                result = servable.regress(request.input, signature_name=signame, timeout=self.timeout)
            self.metrics.observe_runtime(
                model_name=call.model_name,
                api=call.kind,
                signature=signame,
                latency_seconds=time.perf_counter() - started,
            )
        if call.kind == "classify":
            return self._json.encode_classify(result), signame
        return self._json.encode_regress(result), signame

    # -- exact-path handlers ---------------------------------------------------------------------

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """OPTIONS on /v1: a CORS preflight. 200 when `Origin` is an http(s) URL, else 400; no body."""
        origin = b""
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value
                break
        ok = origin.lower().startswith((b"http://", b"https://"))
        await _respond(send, 200 if ok else 400, b"", _CORS if self.cors else ())

    async def _prometheus(self, path: str, query: bytes, send: Send) -> None:
        headers = ((b"content-type", b"text/plain; version=0.0.4"),)
        if query:
            full = path + "?" + query.decode("latin-1")
            body = f"Unexpected path: {full}. Should be {self.metrics_path}".encode()
            await _respond(send, 400, body, headers)
            return
        await _respond(send, 200, self.metrics.render(), headers)

    async def _readyz(self, send: Send) -> None:
        if self.shutting_down:
            await _respond(send, 503, b'{"status": "shutting down"}', (_JSON,))
            return
        loop = asyncio.get_running_loop()
        ready, detail = await loop.run_in_executor(self.executor, self._readiness)
        if ready:
            await _respond(send, 200, orjson.dumps({"status": "ready", "models": detail}), (_JSON,))
        else:
            body = orjson.dumps({"status": "not ready", "models": detail})
            await _respond(send, 503, body, (_JSON,))

    def _readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether every configured model has an AVAILABLE version, and each model's best state."""
        detail: dict[str, str] = {}
        names = list(self.model_names()) if self.model_names is not None else []
        for name in names:
            try:
                states = [s.state for s in self.core.model_status(name).model_version_status]
            except SigserveError as e:
                detail[name] = f"NOT_FOUND: {e.message}"
                continue
            detail[name] = _best_state(states)
        ready = bool(self.core.ready())
        if not names:
            return ready, detail
        return ready and all(s == "AVAILABLE" for s in detail.values()), detail


def _best_state(states: Sequence[int]) -> str:
    from sigserve.protos import get_model_status_pb2

    enum = get_model_status_pb2.ModelVersionStatus.State
    if not states:
        return "START"
    if enum.Value("AVAILABLE") in states:
        return "AVAILABLE"
    return str(enum.Name(max(states, key=lambda s: (s != enum.Value("END"), s))))


async def _respond(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    core: Any,
    options: ServerOptions,
    metrics: Metrics,
    *,
    metrics_path: str | None = DEFAULT_METRICS_PATH,
    model_names: Callable[[], Sequence[str]] | None = None,
) -> RestApp:
    """The REST front end for `core` (a `sigserve.manager.ServerCore`), as an ASGI application.

    `metrics_path` is where the Prometheus page is served (None disables it); `model_names` lists the
    configured models for `/readyz`'s report.
    """
    return RestApp(core, options, metrics, metrics_path=metrics_path, model_names=model_names)
