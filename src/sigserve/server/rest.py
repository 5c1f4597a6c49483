"""TF Serving's REST API as a raw ASGI application (tfserving-api.md §1), served by `http1.py`
(sigserve's HTTP/1.1 protocol; any ASGI server, e.g. Ray Serve's proxy, can host it too).

No web framework: the routing is TF Serving's two regular expressions (`urls.py`), and a framework's
per-request machinery would cost more than the routing does. Whatever may take long (large or gzipped
bodies, metadata, classify/regress, slow models, batching) runs in a bounded thread pool
(`--rest_api_num_threads`), so the event loop keeps moving bytes. A small predict on a model whose
TensorFlow call is known to take well under the cost of the hop to the pool runs on the loop itself
(`inline.py` has the rules and the measurements behind them).

Paths: `/v1/...` is the TF Serving API; `/v2` and `/v2/...` the Open Inference Protocol (`v2_rest.py`,
over the same service); `/healthz` (alive), `/readyz` (every configured model has an
AVAILABLE version) and the Prometheus page (`--monitoring_config_file`) are exact-path handlers that
take priority, as TF Serving's metrics page does. sigserve adds `/openapi.json` and
`/v1/models/<m>[/versions/<v>]/openapi.json` (documents built from the served signatures, `openapi/`)
and the web console at `/` and `/ui` (`console/`, off with --disable_web_console). Anything else is
a plain 404, not JSON (as libevent).

With --auth_token_file, every API path (and the metrics page, unless --public_metrics) asks the
service's token check first; the probes, CORS preflights and the console's static files stay open
(the page asks for the token itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import zlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeVar

import orjson

from sigserve.errors import Code, SigserveError, http_status, invalid_argument
from sigserve.interfaces import Servable
from sigserve.server import eager, http1, rest_config, rest_metadata, urls
from sigserve.server.options import ServerOptions, worker_threads
from sigserve.service import CallContext, ModelSpec, PredictionService, PredictRequest

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
_CORS_AUTH = (*_CORS[:2], (b"access-control-allow-headers", b"Content-Type, Authorization"))
_CHALLENGE = (b"www-authenticate", b'Bearer realm="sigserve"')
# The console's files: nothing but this server's own scripts and styles may run or load.
_STATIC_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
)
_MAX_CACHED_URLS = 1024
_AWAITED = frozenset(("predict", "classify", "regress"))  # what awaits its batch on the loop
T = TypeVar("T")
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
    return worker_threads(options.rest_api_num_threads)


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


class JsonInputs:
    """A REST predict body's `instances` / `inputs`, decoded with the signature's dtypes once the
    servable is resolved (TF Serving's REST handler looks the signature up for exactly that, with its
    own error texts). Remembers which format the request used: the answer is written the same way."""

    __slots__ = ("body", "row_format")

    def __init__(self, body: Any) -> None:
        self.body = body
        self.row_format = True

    def decode(self, servable: Servable, signature_name: str) -> dict[str, Any]:
        sig = servable.signatures.get(signature_name)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def')
        if not sig.inputs:
            requested = self.body.signature_name
            raise invalid_argument(f"Failed to get input map for signature: {requested or 'DEFAULT'}")
        inputs, self.row_format = self.body.to_inputs({k: v.dtype for k, v in sig.inputs.items()})
        return inputs  # type: ignore[no-any-return]


class RestApp:
    """The ASGI application. `create_app` builds one; `close()` stops its thread pool."""

    def __init__(
        self,
        service: PredictionService,
        options: ServerOptions,
        *,
        metrics_path: str | None = DEFAULT_METRICS_PATH,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self.service = service
        self.metrics = service.metrics
        self.options = options
        self.metrics_path = metrics_path
        self.max_body = int(options.max_request_body_bytes)
        self.max_json_depth = int(options.max_request_json_depth)
        timeout_ms = int(options.rest_api_timeout_in_ms)
        self.timeout: float | None = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.cors = bool(options.rest_api_enable_cors_support)
        self.auth = service.authenticator is not None
        self.cors_headers = (_CORS_AUTH if self.auth else _CORS) if self.cors else ()
        self.headers: tuple[tuple[bytes, bytes], ...] = (_JSON, *self.cors_headers)
        self.public_metrics = bool(options.public_metrics)
        self.console: dict[str, tuple[bytes, bytes]] | None = None
        if not options.disable_web_console:
            from sigserve import console

            self.console = console.assets()
        self._deadline_text = (
            f"Deadline exceeded: the request took longer than --rest_api_timeout_in_ms="
            f"{options.rest_api_timeout_in_ms}"
        )
        # (method, path) -> ApiCall for paths that parsed; most traffic repeats a handful of URLs.
        self._calls: dict[tuple[str, str], urls.ApiCall] = {}
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=num_rest_threads(options), thread_name_prefix="sigserve-rest"
        )
        self.shutting_down = False
        self.management = bool(options.enable_model_management_api)
        # Imported here, not at module level, so that `sigserve --help` stays fast.
        from sigserve.codec import example as codec_example
        from sigserve.codec import json as codec_json

        self._json = codec_json
        self._example = codec_example
        from sigserve.server.v2_rest import V2Routes

        self.v2 = V2Routes(self)

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
            if self.auth and not self.public_metrics and not await self._authenticated(scope, send, False):
                return
            await self._prometheus(path_only, query, send)
            return
        if path_only == "/healthz" and not query:
            await _respond(send, 200, b'{"status": "alive"}', (_JSON,))
            return
        if path_only == "/readyz" and not query:
            await self._readyz(send)
            return
        if method == "GET" and not query:
            asset = self.console.get(path_only) if self.console is not None else None
            if asset is not None:
                await _respond(send, 200, asset[1], ((b"content-type", asset[0]), *_STATIC_HEADERS))
                return
            if path_only == "/openapi.json":
                if self.auth and not await self._authenticated(scope, send, True):
                    return
                await self._server_document(send)
                return

        if path_only == rest_config.PATH and self.management:
            if self.auth and not await self._authenticated(scope, send, True):
                return
            await self._config(scope, receive, send, method)
            return

        if path_only == "/v2" or path_only.startswith("/v2/"):
            if method == "OPTIONS":
                await self._preflight(scope, send)
                return
            # V2's probes (server live/ready, model ready) stay open, as /healthz and /readyz do.
            probe = path_only.startswith("/v2/health/") or path_only.endswith("/ready")
            if self.auth and not probe and not await self._authenticated(scope, send, True):
                return
            status, headers, body = await self.v2.handle(scope, receive, method, path_only)
            await _respond(send, status, body, headers)
            return
        full_path = path_only + ("?" + query.decode("latin-1") if query else "")
        if not urls.is_api_path(full_path):
            await _respond(send, 404, _NOT_FOUND_BODY, ((b"content-type", b"text/html"),))
            return
        if method == "OPTIONS":
            await self._preflight(scope, send)
            return
        if self.auth and not await self._authenticated(scope, send, True):
            return
        await self._api(scope, receive, send, method, full_path)

    # -- the loop's short path ---------------------------------------------------------------------

    def respond_now(self, request: http1.Request) -> http1.Response | Awaitable[http1.Response] | None:
        """A complete, small, plain predict on /v1, answered on the loop without ASGI (`http1.py`
        asks this first): at once, or with batching on as an awaitable of the answer (the request
        awaits its batch); None for anything else, which the ASGI path below answers. Both end in
        `_predict` / `_awaited`, `_failure` and the service's `record`, so the two answer alike."""
        if request.method != "POST" or request.query:
            return None
        if request.raw_path.startswith(b"/v2/"):
            return self.v2.respond_now(request)
        path = request.raw_path.decode("latin-1")
        call = self._calls.get(("POST", path))
        if call is None or call.kind != "predict" or path == self.metrics_path:
            return None  # not a predict URL seen before (the ASGI path parses and caches it)
        authorization = None
        for name, value in request.headers:
            if name == b"content-encoding":
                return None
            if name == b"authorization" and authorization is None:  # the first, as the ASGI path
                authorization = value
        if self.auth and not self._token_ok(authorization):
            return None  # the ASGI path answers 401
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        ctx = CallContext(
            "REST", "predict", self.timeout, model_name=call.model_name, deadline_message=self._deadline_text
        )
        if len(body) > self.max_body or not self.service.may_run_inline(len(body), ctx):
            return None
        if self.service.may_await(len(body)):
            # Batching on: started here; on an idle loop the batch runs at once (`eager.py`).
            pending = eager.start(
                asyncio.get_running_loop(), self._answer_awaited(ctx, call, body, path, request.headers)
            )
            return pending.result() if pending.done() else pending
        try:
            parsed = self._json.parse_predict(body, max_depth=self.max_json_depth)
            out = self._predict(ctx, self._predict_request(call, parsed), True)
            if out is None:
                return None  # the service wants it in the pool after all
            code, status = Code.OK, 200
        except Exception as e:
            code, status, out = self._failure(e, ctx, "POST", path, request.headers)
        self.service.record(ctx, code)
        return status, self.headers, out

    async def _answer_awaited(
        self,
        ctx: CallContext,
        call: urls.ApiCall,
        body: bytes,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> http1.Response:
        """`respond_now`'s answer with batching on: the ASGI path's `_awaited`, without ASGI."""
        try:
            out = await self._awaited(ctx, call, body)
            code, status = Code.OK, 200
        except Exception as e:
            code, status, out = self._failure(e, ctx, "POST", path, headers)
        self.service.record(ctx, code)
        return status, self.headers, out

    def _failure(
        self,
        error: Exception,
        ctx: CallContext,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> tuple[Code, int, bytes]:
        """(code, HTTP status, JSON body) of a failed /v1 call; an unexpected error is logged."""
        if isinstance(error, BodyTooLarge):
            return Code.INVALID_ARGUMENT, 413, self._json.encode_error(str(error))
        if isinstance(error, SigserveError):
            return error.code, http_status(error.code), self._json.encode_error(error.message)
        logger.error(  # a bug: answer INTERNAL and keep serving
            "Unexpected error serving %s %s",
            method,
            path,
            exc_info=error,
            extra={"model": ctx.model_name or None, "request_id": _request_id(headers)},
        )
        return Code.INTERNAL, 500, self._json.encode_error(f"Internal error: {type(error).__name__}: {error}")

    def _token_ok(self, authorization: bytes | None) -> bool:
        try:
            self._authenticate(authorization)
        except SigserveError:
            return False
        return True

    def _authenticate(self, authorization: bytes | None) -> None:
        metadata = {"authorization": authorization.decode("latin-1")} if authorization is not None else {}
        self.service.authenticate(CallContext("REST", "", metadata=metadata))

    async def _authenticated(self, scope: Scope, send: Send, json: bool) -> bool:
        """The service's token check on this request's Authorization header; on failure answers 401
        (`{"error": ...}`, or text for the metrics page) with a Bearer challenge and returns False.
        Refused calls are not counted in the request metrics (no model was named yet), on any
        protocol."""
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value
                break
        try:
            self._authenticate(authorization)
        except SigserveError as e:
            if json:
                body, kind = self._json.encode_error(e.message), _JSON
            else:
                body, kind = e.message.encode(), (b"content-type", b"text/plain; charset=utf-8")
            await _respond(send, http_status(e.code), body, (kind, _CHALLENGE, *self.cors_headers))
            return False
        return True

    # -- /v1 -------------------------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send, method: str, full_path: str) -> None:
        ctx = CallContext("REST", "", self.timeout, deadline_message=self._deadline_text)
        try:
            call = self._calls.get((method, full_path))
            if call is None:
                call = self._parse_url(method, full_path)
            ctx.model_name = call.model_name
            ctx.api = call.kind if call.kind in urls.VERBS else ""
            gzipped = False
            body = b""
            if method == "POST":
                gzipped, body = await self._read_body(scope, receive)
            if call.kind in _AWAITED and not gzipped and self.service.may_await(len(body)):
                out = await self._awaited(ctx, call, body)
            elif call.kind == "predict" and not gzipped and self.service.may_run_inline(len(body), ctx):
                out = await self._small_predict(ctx, call, body)
            else:
                out = await self._in_pool(ctx, self._process, ctx, call, body, gzipped)
            code = Code.OK
            status = 200
        except Exception as e:
            code, status, out = self._failure(e, ctx, method, full_path, scope.get("headers", ()))
        self.service.record(ctx, code)
        await _respond(send, status, out, self.headers)

    def _parse_url(self, method: str, full_path: str) -> urls.ApiCall:
        call = urls.parse(method, full_path)  # raises on a malformed path: those are not cached
        if len(self._calls) >= _MAX_CACHED_URLS:
            self._calls.clear()
        self._calls[(method, full_path)] = call
        return call

    async def _in_pool(self, ctx: CallContext, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        try:
            result = await asyncio.wait_for(future, ctx.timeout)
        except asyncio.TimeoutError:
            raise ctx.deadline_exceeded() from None
        # The call's deadline runs from its arrival: a result that came back after it (the loop
        # was busy when the timer was due, or the body took a while) is late all the same.
        if ctx.overdue():
            raise ctx.deadline_exceeded()
        return result

    async def _small_predict(self, ctx: CallContext, call: urls.ApiCall, body: bytes) -> bytes:
        """A predict with a small plain body: parsed here (bounded by the size), then run on the loop
        when the service's short path takes it, else in the pool."""
        request = self._predict_request(call, self._json.parse_predict(body, max_depth=self.max_json_depth))
        out = self._predict(ctx, request, True)
        if out is not None:
            return out
        return await self._in_pool(ctx, self._pool_predict, ctx, request)

    async def _awaited(self, ctx: CallContext, call: urls.ApiCall, body: bytes) -> bytes:
        """Batching on: a small predict, classify or regress is parsed here and awaits its batch on
        the loop (`PredictionService.predict_awaited`); a servable that does not batch sends it on to
        the short path or the pool, as without batching."""
        if call.kind == "predict":
            parsed = self._json.parse_predict(body, max_depth=self.max_json_depth)
            request = self._predict_request(call, parsed)
            result = await self.service.predict_awaited(ctx, request)
            if result is None:
                out = self._predict(ctx, request, self.service.may_run_inline(len(body), ctx))
                return out if out is not None else await self._in_pool(ctx, self._pool_predict, ctx, request)
            inputs = request.inputs
            assert isinstance(inputs, JsonInputs)
            return self._json.encode_predict(result.outputs, inputs.row_format)
        examples = self._json.parse_examples(body, call.kind, max_depth=self.max_json_depth)
        spec = ModelSpec(call.model_name, call.version, call.label, examples.signature_name)
        if call.kind == "classify":
            classified = await self.service.classify_awaited(ctx, spec, examples.input)
            if classified is not None:
                return self._json.encode_classify(classified[0])
        else:
            regressed = await self.service.regress_awaited(ctx, spec, examples.input)
            if regressed is not None:
                return self._json.encode_regress(regressed[0])
        return await self._in_pool(ctx, self._process, ctx, call, body, False)

    @staticmethod
    def _predict_request(call: urls.ApiCall, body: Any) -> PredictRequest:
        spec = ModelSpec(call.model_name, call.version, call.label, body.signature_name)
        return PredictRequest(spec, JsonInputs(body))

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

    def _process(self, ctx: CallContext, call: urls.ApiCall, body: bytes, gzipped: bool) -> bytes:
        """Runs in the REST thread pool: parse, then the service, then encode."""
        if gzipped:
            body = gunzip(body, self.max_body)
        kind = call.kind
        if kind == "predict":
            parsed = self._json.parse_predict(
                body, max_depth=self.max_json_depth, deadline=ctx.check_deadline
            )
            return self._pool_predict(ctx, self._predict_request(call, parsed))
        if kind == "classify" or kind == "regress":
            return self._classify_or_regress(ctx, call, body)
        if not call.model_name:
            raise invalid_argument("Missing model name in request.")
        if kind == "status":
            # A label does not narrow the status (TF Serving ignores it); a version does.
            return rest_metadata.status_json(self.service.model_status(ctx, call.model_name, call.version))
        if kind == "openapi":
            return self._model_document(ctx, call)
        metadata = self.service.model_metadata(ctx, ModelSpec(call.model_name, call.version, call.label))
        return rest_metadata.metadata_json(metadata.name, metadata.version, metadata.signatures)

    def _predict(self, ctx: CallContext, request: PredictRequest, inline: bool) -> bytes | None:
        result = self.service.predict(ctx, request, inline=inline)
        if result is None:
            return None
        inputs = request.inputs
        assert isinstance(inputs, JsonInputs)
        return self._json.encode_predict(result.outputs, inputs.row_format, ctx.check_deadline)

    def _pool_predict(self, ctx: CallContext, request: PredictRequest) -> bytes:
        out = self._predict(ctx, request, False)
        assert out is not None  # only a call on the loop declines
        return out

    def _classify_or_regress(self, ctx: CallContext, call: urls.ApiCall, body: bytes) -> bytes:
        request = self._json.parse_examples(
            body, call.kind, max_depth=self.max_json_depth, deadline=ctx.check_deadline
        )
        spec = ModelSpec(call.model_name, call.version, call.label, request.signature_name)
        if call.kind == "classify":
            result, _ = self.service.classify(ctx, spec, request.input)
            return self._json.encode_classify(result)
        regression, _ = self.service.regress(ctx, spec, request.input)
        return self._json.encode_regress(regression)

    # -- OpenAPI documents -----------------------------------------------------------------------

    def _document_options(self) -> Any:
        from sigserve import __version__, openapi

        return openapi.Options(
            method_name_check=bool(self.options.enable_signature_method_name_check),
            auth=self.auth,
            public_metrics=self.public_metrics,
            metrics_path=self.metrics_path,
            version=__version__,
        )

    def _model_document(self, ctx: CallContext, call: urls.ApiCall) -> bytes:
        """`/v1/models/<m>[/versions/<v> | /labels/<l>]/openapi.json`, built from what is served now
        (so it follows hot reloads): the model's latest and every version, or the one named."""
        from sigserve import openapi

        # Resolving first gives TF Serving's errors for a model, version or label that is not served.
        resolved = self.service.model_metadata(ctx, ModelSpec(call.model_name, call.version, call.label))
        versions = self.service.served_versions(call.model_name).get(call.model_name) or [resolved]
        model = openapi.ServedModel(
            call.model_name, [openapi.ServedVersion(m.version, m.signatures) for m in versions]
        )
        explicit = None if call.version is None and call.label is None else resolved.version
        return orjson.dumps(openapi.model_document(model, explicit, self._document_options()))

    def _server_document_bytes(self) -> bytes:
        from sigserve import openapi

        models = [
            openapi.ServedModel(name, [openapi.ServedVersion(m.version, m.signatures) for m in versions])
            for name, versions in self.service.served_versions().items()
        ]
        return orjson.dumps(openapi.server_document(models, self._document_options()))

    async def _server_document(self, send: Send) -> None:
        """`/openapi.json`: every served model, as served now."""
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.executor, self._server_document_bytes)
        except Exception as e:  # a bug: answer INTERNAL and keep serving
            logger.exception("Unexpected error building /openapi.json")
            await _respond(send, 500, self._json.encode_error(f"Internal error: {e}"), self.headers)
            return
        await _respond(send, 200, body, self.headers)

    # -- exact-path handlers ---------------------------------------------------------------------

    async def _config(self, scope: Scope, receive: Receive, send: Send, method: str) -> None:
        """`/v1/config`: GET the served ModelServerConfig, POST a new one (`rest_config.py`). A reload
        is not cancellable (as over gRPC), so it is not cut off by --rest_api_timeout_in_ms."""
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())
        }
        content_type = b"application/json"
        try:
            loop = asyncio.get_running_loop()
            if method == "GET":
                config = await loop.run_in_executor(self.executor, self.service.current_config)
                out, content_type = rest_config.encode(config, headers.get("accept", ""))
            elif method == "POST":
                gzipped, body = await self._read_body(scope, receive)
                if gzipped:
                    body = gunzip(body, self.max_body)
                new = rest_config.parse(body, headers.get("content-type", "").lower())
                ctx = CallContext("REST", "ReloadConfig")
                await loop.run_in_executor(None, self.service.reload_config, ctx, new)
                out = rest_config.RELOADED
            else:
                raise invalid_argument(f"{method} is not supported on {rest_config.PATH}: use GET or POST")
            status = 200
        except BodyTooLarge as e:
            status, out = 413, self._json.encode_error(str(e))
        except SigserveError as e:
            status, out = http_status(e.code), self._json.encode_error(e.message)
        except Exception as e:  # a bug: answer INTERNAL and keep serving
            logger.exception("Unexpected error serving %s %s", method, rest_config.PATH)
            status, out = 500, self._json.encode_error(f"Internal error: {type(e).__name__}: {e}")
        await _respond(send, status, out, ((b"content-type", content_type),))

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """OPTIONS on /v1: a CORS preflight. 200 when `Origin` is an http(s) URL, else 400; no body."""
        origin = b""
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value
                break
        ok = origin.lower().startswith((b"http://", b"https://"))
        await _respond(send, 200 if ok else 400, b"", self.cors_headers)

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
        readiness = await loop.run_in_executor(self.executor, self.service.readiness)
        status = "ready" if readiness.ready else "not ready"
        body = orjson.dumps({"status": status, "models": readiness.models})
        await _respond(send, 200 if readiness.ready else 503, body, (_JSON,))


def _request_id(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The request's `X-Request-Id` header, for the log line of a failed request."""
    for name, value in headers:
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    return None


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
    service: PredictionService, options: ServerOptions, *, metrics_path: str | None = DEFAULT_METRICS_PATH
) -> RestApp:
    """The REST front end of `service`, as an ASGI application. `metrics_path` is where the Prometheus
    page is served (None disables it)."""
    return RestApp(service, options, metrics_path=metrics_path)
