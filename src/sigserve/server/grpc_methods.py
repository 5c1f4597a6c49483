"""The gRPC methods as transport-neutral callables: method path → what runs, and the one mapping from
`SigserveError` to a gRPC status.

Both gRPC transports (`grpc_h2.py`, the default, and grpcio's server in `grpc_server.py`) serve this
one table, so a method, its metrics and its error texts are the same whichever carries the bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from sigserve.errors import Code, SigserveError
from sigserve.protos import INFERENCE_SERVICE, MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server.grpc_handlers import PredictionServices
from sigserve.server.v2 import PROTOCOL as V2
from sigserve.server.v2 import OpenInference
from sigserve.server.v2_grpc import InferenceServices
from sigserve.service import CallContext
from sigserve.service.metrics import PROTOCOL_TFSERVING

logger = logging.getLogger("sigserve.grpc")

MAX_ERROR_MESSAGE = 1024  # grpc_status_util.cc
_NO_METADATA: Mapping[str, str] = {}

Body = Callable[[bytes, CallContext], bytes]
InlineBody = Callable[[bytes, CallContext], "bytes | None"]
StreamBody = Callable[[AsyncIterator[bytes], CallContext], AsyncIterator[bytes]]
AwaitedBody = Callable[[bytes, CallContext], "Awaitable[bytes | None]"]


@dataclass(frozen=True)
class Method:
    """One unary method. `body(request, ctx)` runs in the `--grpc_max_threads` pool: parsing a
    256 MB request, TensorFlow and serializing the answer would otherwise stall every connection.
    `inline`, if set, is tried on the event loop first and returns None (having done nothing) to send
    the call to the pool: for a step of a few µs the hop to a worker and back costs more than the call.
    `api` is the method's name, the request metrics' API label, `protocol` their protocol label; the
    transport builds each call's `CallContext` (`context`) from the client's deadline and metadata.
    `awaited`, set only when the server batches, is tried first, on the loop: a call that waits for
    its batch is a future there, not a pool thread; None (nothing done) sends the call on as above."""

    body: Body
    inline: InlineBody | None = None
    awaited: AwaitedBody | None = None
    api: str = ""
    protocol: str = PROTOCOL_TFSERVING

    def context(self, timeout: float | None, metadata: Mapping[str, str] = _NO_METADATA) -> CallContext:
        """The call's context: `timeout` is the seconds left before the client's deadline, or None."""
        return CallContext("GRPC", self.api, timeout, metadata=metadata, protocol=self.protocol)


@dataclass(frozen=True)
class StreamMethod:
    """One streaming method (server streaming, or bidirectional with `client_streaming`):
    `body(requests, ctx)` is an async generator on the event loop that takes the request messages
    as they arrive and yields the answers; raising `SigserveError` ends the call with its status. It
    runs on the loop, so it must only await, never block (health Watch waits for status changes;
    reflection answers from a descriptor pool). Without `client_streaming`, `requests` holds
    exactly one message."""

    body: StreamBody
    client_streaming: bool = False
    api: str = ""

    def context(self, timeout: float | None, metadata: Mapping[str, str] = _NO_METADATA) -> CallContext:
        return CallContext("GRPC", self.api, timeout, metadata=metadata)


async def call_method(
    method: Method, data: bytes, ctx: CallContext, executor: concurrent.futures.Executor | None
) -> bytes:
    """One call of `method` from an event loop: on the loop if its `inline` body takes it, else
    `body` in `executor`; its `awaited` body first, if set. Raises what the body raises (`rpc_status`
    maps it)."""
    if method.awaited is not None:
        answer = await method.awaited(data, ctx)
        if answer is not None:
            return answer
    if method.inline is not None:
        out = method.inline(data, ctx)
        if out is not None:
            return out
    return await asyncio.get_running_loop().run_in_executor(executor, method.body, data, ctx)


def truncate_message(message: str) -> str:
    """TF Serving's ToGRPCStatus: at most 1024 characters, then `...TRUNCATED`."""
    if len(message) > MAX_ERROR_MESSAGE:
        return message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
    return message


def rpc_status(error: BaseException) -> tuple[int, str]:
    """The gRPC status (code number, message) that answers `error`: TensorFlow's codes are gRPC's
    codes, so a `SigserveError` passes through; anything else is a bug, answered INTERNAL and logged."""
    if isinstance(error, SigserveError):
        return int(error.code), truncate_message(error.message)
    logger.error("Unexpected error in a gRPC call", exc_info=error)
    return int(Code.INTERNAL), truncate_message(f"{type(error).__name__}: {error}")


def method_table(services: PredictionServices) -> dict[str, dict[str, Method]]:
    """{service name: {method name: Method}} for PredictionService, ModelService and the Open Inference
    Protocol's GRPCInferenceService. Predict, Classify, Regress and ModelInfer are counted in the
    request metrics (by the service), as in TF Serving's prediction_service_impl.cc; the others are
    not. Every body first checks the call's access token (`PredictionService.guard`, a no-op without
    --auth_token_file) except the probes: V2's ServerLive/ServerReady/ModelReady, like gRPC health,
    stay open."""
    service = services.service
    guard = service.guard
    v2 = InferenceServices(OpenInference(service))
    batching = service.batching  # only then are the awaited bodies worth their try
    return {
        PREDICTION_SERVICE: {
            "Classify": Method(
                guard(services.classify),
                api="Classify",
                awaited=guard(services.classify_awaited) if batching else None,
            ),
            "Regress": Method(
                guard(services.regress),
                api="Regress",
                awaited=guard(services.regress_awaited) if batching else None,
            ),
            "Predict": Method(
                guard(services.predict),
                guard(services.predict_inline),
                api="Predict",
                awaited=guard(services.predict_awaited) if batching else None,
            ),
            "MultiInference": Method(guard(services.multi_inference), api="MultiInference"),
            "GetModelMetadata": Method(guard(services.get_model_metadata), api="GetModelMetadata"),
        },
        MODEL_SERVICE: {
            "GetModelStatus": Method(guard(services.get_model_status), api="GetModelStatus"),
            "HandleReloadConfigRequest": Method(
                guard(services.handle_reload_config_request), api="HandleReloadConfigRequest"
            ),
        },
        INFERENCE_SERVICE: {
            "ServerLive": Method(v2.server_live, api="ServerLive", protocol=V2),
            "ServerReady": Method(v2.server_ready, api="ServerReady", protocol=V2),
            "ModelReady": Method(v2.model_ready, api="ModelReady", protocol=V2),
            "ServerMetadata": Method(guard(v2.server_metadata), api="ServerMetadata", protocol=V2),
            "ModelMetadata": Method(guard(v2.model_metadata), api="ModelMetadata", protocol=V2),
            "ModelInfer": Method(
                guard(v2.model_infer),
                guard(v2.model_infer_inline),
                api="ModelInfer",
                protocol=V2,
                awaited=guard(v2.model_infer_awaited) if batching else None,
            ),
        },
    }
