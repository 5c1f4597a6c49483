"""The Open Inference Protocol (V2) over REST, on the REST port: the REST app hands every `/v2` path here.

    GET  /v2                                  server metadata (name, version, extensions)
    GET  /v2/health/live                      200 {"live": true}
    GET  /v2/health/ready                     200 {"ready": true}, 503 {"ready": false}
    GET  /v2/models/{m}[/versions/{v}]        model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready  200 {"name": m, "ready": true}, 503 when not
    POST /v2/models/{m}[/versions/{v}]/infer  inference (JSON, or JSON + binary tensor data)

`{v}` is a version number or a version label. Errors are `{"error": "..."}` with the status of the
error's code (400 bad input, 404 unknown model, 413 body too large, 504 deadline), as on /v1.

Written against the REST app's request/response seam (`RestApp._read_body`, `_in_pool`, `respond`),
not against ASGI details: a small inference is parsed and run on the event loop when the service's
short path takes it, anything else (gzip, large bodies, metadata) in the REST thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_to_bytes

import orjson

from sigserve.codec.json import encode_error
from sigserve.codec.v2 import rest as codec
from sigserve.codec.v2.request import InferRequest
from sigserve.errors import Code, SigserveError, http_status, invalid_argument
from sigserve.server.v2 import PROTOCOL, OpenInference
from sigserve.service import CallContext

if TYPE_CHECKING:
    from sigserve.codec.v2.request import InferResponse
    from sigserve.server import http1
    from sigserve.server.rest import Receive, RestApp, Scope

logger = logging.getLogger("sigserve.rest")

_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?", re.ASCII)
_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")
_HEADER_LENGTH = codec.HEADER_LENGTH.encode()
_MAX_CACHED_PATHS = 1024
_PATHS = "GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{m}[/versions/{v}][/ready]; POST .../infer"

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]  # status, headers, body
T = TypeVar("T")


def _decode(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise invalid_argument(f"Failed to decode {what}: {raw[:100]}") from None


class V2Routes:
    """The /v2 paths of one `RestApp`."""

    def __init__(self, app: RestApp) -> None:
        self.app = app
        self.service = app.service
        self.v2 = OpenInference(app.service)
        self._infer_paths: dict[bytes, tuple[str, str]] = {}  # raw infer path -> (model, version)

    def respond_now(self, request: http1.Request) -> Answer | None:
        """A complete, small, plain inference answered on the loop without ASGI, as
        `RestApp.respond_now` does for /v1 predict (`http1.py` asks it first); None for anything
        else, which `handle` answers. Both end in `_run`, `_error` and the service's `record`."""
        if request.method != "POST":
            return None
        target = self._infer_paths.get(request.raw_path)
        if target is None:
            return None  # not an infer URL seen before (`handle` parses and caches it)
        header = None
        authorization = None
        for key, value in request.headers:  # the first of each, as the ASGI path reads them
            if key == _HEADER_LENGTH:
                if header is None:
                    header = value
            elif key == b"content-encoding":
                return None
            elif key == b"authorization" and authorization is None:
                authorization = value
        app = self.app
        if app.auth and not app._token_ok(authorization):
            return None  # the ASGI path answers 401
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        name, version = target
        ctx = self._infer_context(name)
        size = len(body)
        if size > app.max_body or not self.service.may_run_inline(size, ctx) or self.service.may_await(size):
            return None
        try:
            parsed = codec.parse_infer(body, header, name, version, max_depth=app.max_json_depth)
            out = self._run(ctx, parsed, name, version, True)
        except SigserveError as e:
            return self._error(ctx, e.code, http_status(e.code), e.message)
        except Exception as e:
            logger.exception("Unexpected error serving POST %s", request.raw_path[:200])
            return self._error(ctx, Code.INTERNAL, 500, f"Internal error: {type(e).__name__}: {e}")
        if out is None:
            return None  # the service wants it in the pool after all
        self.service.record(ctx, Code.OK)
        return out

    def _infer_context(self, name: str) -> CallContext:
        return CallContext(
            "REST",
            "infer",
            self.app.timeout,
            model_name=name,
            protocol=PROTOCOL,
            deadline_message=self.app._deadline_text,
        )

    async def handle(self, scope: Scope, receive: Receive, method: str, path: str) -> Answer:
        """(status, headers, body) for one /v2 request; `path` is the raw path without the query."""
        ctx: CallContext | None = None
        try:
            if path in ("/v2", "/v2/"):
                self._only(method, "GET", path)
                status, body = 200, codec.encode_server_metadata(*self.v2.server_metadata())
            elif path == "/v2/health/live":
                self._only(method, "GET", path)
                status, body = 200, b'{"live":true}'
            elif path == "/v2/health/ready":
                self._only(method, "GET", path)
                ready = not self.app.shutting_down and await self._pool(self.v2.server_ready)
                status, body = (200 if ready else 503), orjson.dumps({"ready": ready})
            else:
                match = _MODEL.fullmatch(path)
                if match is None:
                    raise SigserveError(Code.NOT_FOUND, f"Not found: {path[:200]} (the V2 API is {_PATHS})")
                name = _decode(match.group(1), "model name")
                version = _decode(match.group(2), "model version") if match.group(2) else ""
                tail = match.group(3)
                if tail == "infer":
                    self._only(method, "POST", path)
                    ctx = self._infer_context(name)
                    if len(self._infer_paths) >= _MAX_CACHED_PATHS:
                        self._infer_paths.clear()
                    self._infer_paths[path.encode("latin-1")] = (name, version)
                    return await self._infer(ctx, scope, receive, name, version)
                self._only(method, "GET", path)
                if tail == "ready":
                    ready = await self._pool(self.v2.model_ready, name, version)
                    status, body = (200 if ready else 503), orjson.dumps({"name": name, "ready": ready})
                else:
                    status, body = 200, await self._pool(self._metadata, name, version)
            return status, self._json_headers(), body
        except SigserveError as e:
            return self._error(ctx, e.code, http_status(e.code), e.message)
        except Exception as e:  # BodyTooLarge is the REST app's; anything else is a bug
            from sigserve.server.rest import BodyTooLarge

            if isinstance(e, BodyTooLarge):
                return self._error(ctx, Code.INVALID_ARGUMENT, 413, str(e))
            logger.exception("Unexpected error serving %s %s", method, path)
            return self._error(ctx, Code.INTERNAL, 500, f"Internal error: {type(e).__name__}: {e}")

    async def _pool(self, fn: Callable[..., T], *args: Any) -> T:
        """A quick manager call (readiness, metadata) off the loop, with no deadline."""
        return await asyncio.get_running_loop().run_in_executor(self.app.executor, fn, *args)

    @staticmethod
    def _only(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise invalid_argument(f"{path[:200]} takes {allowed}, not {method[:20]}")

    def _error(self, ctx: CallContext | None, code: Code, status: int, message: str) -> Answer:
        if ctx is not None:
            self.service.record(ctx, code)
        return status, self._json_headers(), encode_error(message)

    def _json_headers(self) -> Headers:
        return list(self.app.headers)  # content-type JSON, and the CORS headers when enabled

    def _metadata(self, name: str, version: str) -> bytes:
        ctx = CallContext("REST", "", None, model_name=name, protocol=PROTOCOL)
        return codec.encode_model_metadata(self.v2.model_metadata(ctx, name, version))

    # -- inference -------------------------------------------------------------------------------

    async def _infer(
        self, ctx: CallContext, scope: Scope, receive: Receive, name: str, version: str
    ) -> Answer:
        gzipped, body = await self.app._read_body(scope, receive)
        header = None
        for key, value in scope.get("headers", ()):
            if key == _HEADER_LENGTH:
                header = value
                break
        out: Answer | None = None
        if not gzipped and self.service.may_await(len(body)):
            request = codec.parse_infer(body, header, name, version, max_depth=self.app.max_json_depth)
            answer = await self.v2.infer_awaited(ctx, request, name, version)
            if answer is not None:
                out = self._encode(answer)
            elif self.service.may_run_inline(len(body), ctx):
                out = self._run(ctx, request, name, version, True)
            if out is None:
                out = await self.app._in_pool(ctx, self._run, ctx, request, name, version, False)
        elif not gzipped and self.service.may_run_inline(len(body), ctx):
            request = codec.parse_infer(body, header, name, version, max_depth=self.app.max_json_depth)
            out = self._run(ctx, request, name, version, True)
            if out is None:
                out = await self.app._in_pool(ctx, self._run, ctx, request, name, version, False)
        else:
            out = await self.app._in_pool(ctx, self._parse_and_run, ctx, body, gzipped, header, name, version)
        assert out is not None
        self.service.record(ctx, Code.OK)
        return out

    def _parse_and_run(
        self, ctx: CallContext, body: bytes, gzipped: bool, header: bytes | None, name: str, version: str
    ) -> Answer:
        if gzipped:
            from sigserve.server.rest import gunzip

            body = gunzip(body, self.app.max_body)
        request = codec.parse_infer(
            body, header, name, version, max_depth=self.app.max_json_depth, deadline=ctx.check_deadline
        )
        out = self._run(ctx, request, name, version, False)
        assert out is not None  # only a call on the loop declines
        return out

    def _run(
        self, ctx: CallContext, request: InferRequest, name: str, version: str, inline: bool
    ) -> Answer | None:
        answer = self.v2.infer(ctx, request, name, version, inline=inline)
        if answer is None:
            return None
        return self._encode(answer)

    def _encode(self, answer: InferResponse) -> Answer:
        parts, header_length = codec.encode_infer(answer)
        if header_length is None:
            return 200, self._json_headers(), parts[0]
        headers = [_BINARY, (_HEADER_LENGTH, str(header_length).encode())]
        headers += [h for h in self.app.headers if h[0] != b"content-type"]
        return 200, headers, b"".join(parts)
